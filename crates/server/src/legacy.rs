//! The endpoints of the project DiffuGen grew from, kept for the users and scripts that already call them:
//! `POST /generate` (any model), `/generate/stable` (Stable Diffusion families), `/generate/flux` (FLUX families),
//! `GET /models`, `GET /images`, and the streaming twins (`.../stream`, `/v1/images/generations/stream`) that send
//! `event: progress` from sd.cpp's real steps, a heartbeat comment every 15 s, `event: complete` (or `error`), and
//! `event: done` last.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use diffugen_engine::{GenerateRequest, JobEvent, Output, Stage};
use diffugen_jobs::Outcome;
use diffugen_models::{Family, Role};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::LegacyBody;
use crate::error::LegacyError;
use crate::fields::{encode, DropIfQueued, OutputFormat};
use crate::native::{enqueue_tuned, job_events};
use crate::{ApiError, AppState};

/// Which models a route may use.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Any,
    Stable,
    Flux,
}

impl Kind {
    pub(crate) fn accepts(self, family: Family) -> bool {
        match self {
            Kind::Any => true,
            Kind::Stable => matches!(
                family,
                Family::Sd1 | Family::Sd2 | Family::Sdxl | Family::Sdxs | Family::Sd3
            ),
            Kind::Flux => matches!(family, Family::Flux | Family::Flux2 | Family::Chroma),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Any => "any",
            Kind::Stable => "Stable Diffusion",
            Kind::Flux => "FLUX",
        }
    }
}

/// Picks the model: the requested one (checked against the route's families) or the first installed one that fits.
pub(crate) fn choose_model(
    state: &AppState,
    kind: Kind,
    requested: Option<String>,
) -> Result<String, ApiError> {
    match requested.filter(|m| !m.trim().is_empty()) {
        // Its family is checked once it is resolved (`submit`).
        Some(model) => {
            crate::model_id("model", model.trim())?;
            Ok(model.trim().to_string())
        }
        None if kind == Kind::Any => Ok(state.model_for(None)?),
        None => state
            .library()
            .scan()
            .into_iter()
            .filter(|e| e.error.is_none() && e.role == Role::Checkpoint)
            .find(|e| kind.accepts(e.family))
            .map(|e| e.id)
            .ok_or_else(|| {
                ApiError::invalid("model", format!("no {} model is installed", kind.name()))
                    .code("model_not_found")
            }),
    }
}

/// A request to the original project's routes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LegacyRequest {
    prompt: Option<String>,
    model: Option<String>,
    negative_prompt: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    steps: Option<u32>,
    cfg_scale: Option<f32>,
    /// The original name of the sampler field; `sampler` is accepted too.
    sampling_method: Option<String>,
    sampler: Option<String>,
    seed: Option<i64>,
    /// `WIDTHxHEIGHT`, read by the OpenAI-shaped streaming twin only.
    size: Option<String>,
}

fn request_from(
    state: &AppState,
    kind: Kind,
    body: LegacyRequest,
) -> Result<GenerateRequest, ApiError> {
    let prompt = body.prompt.filter(|p| !p.trim().is_empty());
    let prompt =
        prompt.ok_or_else(|| ApiError::invalid("prompt", "is required and must not be empty"))?;
    Ok(GenerateRequest {
        model: choose_model(state, kind, body.model)?,
        prompt,
        negative_prompt: body.negative_prompt,
        width: body.width,
        height: body.height,
        steps: body.steps,
        cfg_scale: body.cfg_scale,
        sampler: body.sampling_method.or(body.sampler),
        seed: body.seed,
        ..GenerateRequest::default()
    })
}

/// Our field names as the original routes' clients know them.
fn legacy_field(field: &str) -> &str {
    if field == "sampler" {
        "sampling_method"
    } else {
        field
    }
}

/// Validates a legacy body and queues it; errors name the fields as legacy clients send them.
fn submit(state: &AppState, kind: Kind, body: LegacyRequest) -> Result<String, ApiError> {
    let request = request_from(state, kind, body)?;
    enqueue_tuned(state, request, "legacy", legacy_field, |request, model| {
        require_family(kind, "this route", request, model)
    })
}

/// Refuses a model outside the families `kind` takes, naming what it is.
pub(crate) fn require_family(
    kind: Kind,
    door: &str,
    request: &GenerateRequest,
    model: &diffugen_models::ResolvedModel,
) -> Result<(), ApiError> {
    if kind.accepts(model.family) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "model",
            format!(
                "'{}' is a {} model; {door} generates with {} models",
                request.model,
                model.family,
                kind.name()
            ),
        ))
    }
}

/// A prompt as markdown alt text: on one line, its markdown characters escaped, so it cannot close the image
/// link or add markup of its own.
fn markdown_text(prompt: &str) -> String {
    let mut out = String::with_capacity(prompt.len());
    for c in prompt.chars() {
        match c {
            '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '`' | '<' | '>' | '!' | '#' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn result(state: &AppState, base: &str, id: &str, output: &Output) -> Value {
    let file = std::path::Path::new(&output.path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let url = format!("{base}/images/{file}");
    let job = state.jobs().get(id).ok();
    let prompt = job.as_ref().map(|j| j.prompt.clone()).unwrap_or_default();
    json!({
        "success": true,
        "image_path": output.path,
        "image_url": url,
        "markdown_response": format!("![{}]({url})", markdown_text(&prompt)),
        "model": job.as_ref().map(|j| j.model.clone()),
        "prompt": prompt,
        "parameters": { "width": output.width, "height": output.height, "seed": output.seed },
    })
}

async fn generate(
    state: AppState,
    headers: HeaderMap,
    kind: Kind,
    body: LegacyRequest,
) -> Result<Json<Value>, LegacyError> {
    let id = submit(&state, kind, body)?;
    let _guard = DropIfQueued {
        jobs: state.jobs().clone(),
        id: id.clone(),
    };
    match state.jobs().wait(&id).await.map_err(ApiError::from)? {
        Outcome::Done(outputs) => {
            let output = outputs
                .first()
                .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no image"))?;
            Ok(Json(result(
                &state,
                &crate::base_url(&headers),
                &id,
                output,
            )))
        }
        Outcome::Failed { error, kind } => Err(ApiError::job_failed(&error, kind).into()),
        Outcome::Cancelled(reason) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason).into())
        }
    }
}

/// `{phase, progress (0..100), message, step, total_steps, eta_seconds}` for one engine event.
fn progress(event: &JobEvent) -> Value {
    let (step, total, message) = match &event.stage {
        Stage::Queued { position } => (0, 0, format!("queued ({position} ahead)")),
        Stage::LoadingModel {
            tensors_loaded,
            tensors_total,
            ..
        } => (
            0,
            0,
            format!("loading model weights {tensors_loaded}/{tensors_total}"),
        ),
        Stage::EncodingPrompt => (0, 0, "encoding the prompt".to_string()),
        Stage::Sampling { step, steps, .. } => {
            (*step, *steps, format!("sampling step {step}/{steps}"))
        }
        Stage::Decoding => (0, 0, "decoding the image".to_string()),
        Stage::Saving => (0, 0, "saving".to_string()),
        Stage::Preparing { message }
        | Stage::FreeingVram { message, .. }
        | Stage::Warning { message } => (0, 0, message.clone()),
        other => (0, 0, other.name().to_string()),
    };
    json!({
        "phase": event.stage.name(),
        "progress": event.percent.unwrap_or(0.0),
        "message": message,
        "step": step,
        "total_steps": total,
        "eta_seconds": event.eta_seconds,
    })
}

/// The streaming twin of a route: `complete` carries what the plain route would have answered.
fn stream(
    state: AppState,
    base: String,
    id: String,
    events: impl Stream<Item = JobEvent> + Send + 'static,
    openai: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let guard = DropIfQueued {
        jobs: state.jobs().clone(),
        id: id.clone(),
    };
    let sse = events.flat_map(move |event| {
        let _alive = &guard;
        let mut out = Vec::new();
        match &event.stage {
            Stage::Preview { .. } => {}
            Stage::Done { outputs } => {
                let complete = if openai {
                    let data: Vec<Value> = outputs
                        .iter()
                        .filter_map(|o| encode(&o.path, OutputFormat::Png, None).ok())
                        .map(|bytes| json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(bytes) }))
                        .collect();
                    let size = outputs.first().map(|o| format!("{}x{}", o.width, o.height));
                    json!({ "created": event.elapsed_seconds as u64, "data": data, "output_format": "png", "size": size })
                } else {
                    outputs.first().map(|o| result(&state, &base, &id, o)).unwrap_or(Value::Null)
                };
                out.push(Event::default().event("progress").json_data(progress(&event)));
                out.push(Event::default().event("complete").json_data(complete));
                out.push(Ok(Event::default().event("done").data("{}")));
            }
            Stage::Failed { error, .. } | Stage::Cancelled { reason: error } => {
                out.push(Event::default().event("error").json_data(json!({ "success": false, "error": error })));
                out.push(Ok(Event::default().event("done").data("{}")));
            }
            _ => out.push(Event::default().event("progress").json_data(progress(&event))),
        }
        futures_util::stream::iter(out.into_iter().map(|e| Ok(e.unwrap_or_default())))
    });
    Sse::new(sse).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("heartbeat"),
    )
}

async fn generate_stream(
    state: AppState,
    headers: HeaderMap,
    kind: Kind,
    openai: bool,
    mut body: LegacyRequest,
) -> Result<Response, LegacyError> {
    if openai {
        // The OpenAI-shaped twin takes `size` instead of width/height.
        if let Some((w, h)) = body.size.as_deref().and_then(|s| s.split_once('x')) {
            if let (Ok(w), Ok(h)) = (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
                body.width = Some(w);
                body.height = Some(h);
            }
        }
    }
    let id = submit(&state, kind, body)?;
    let events = job_events(&state, &id).map_err(ApiError::from)?;
    Ok(stream(state, crate::base_url(&headers), id, events, openai).into_response())
}

/// The original project's routes.
pub fn routes() -> Router<AppState> {
    let plain = |kind: Kind| {
        post(
            move |State(state): State<AppState>,
                  headers: HeaderMap,
                  LegacyBody(body): LegacyBody<LegacyRequest>| {
                generate(state, headers, kind, body)
            },
        )
    };
    let streaming = |kind: Kind, openai: bool| {
        post(
            move |State(state): State<AppState>,
                  headers: HeaderMap,
                  LegacyBody(body): LegacyBody<LegacyRequest>| {
                generate_stream(state, headers, kind, openai, body)
            },
        )
    };
    Router::new()
        .route("/generate", plain(Kind::Any))
        .route("/generate/stable", plain(Kind::Stable))
        .route("/generate/flux", plain(Kind::Flux))
        .route("/generate/stream", streaming(Kind::Any, false))
        .route("/generate/stable/stream", streaming(Kind::Stable, false))
        .route("/generate/flux/stream", streaming(Kind::Flux, false))
        .route("/v1/images/generations/stream", streaming(Kind::Any, true))
        .route("/models", get(models))
        .route("/images", get(images))
}

/// `GET /models`: every model with its family, and the default.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let models = state.library().scan();
    Json(json!({ "models": models, "default_model": state.model_for(None).ok() }))
}

/// `GET /images`: the generated images, newest first.
pub async fn images(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let base = crate::base_url(&headers);
    if let Some(listing) = crate::gallery::legacy_list(&state, &base).await {
        return Json(listing);
    }
    let mut files: Vec<(std::time::SystemTime, String)> =
        std::fs::read_dir(state.runtime.outputs_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let modified = e.metadata().ok()?.modified().ok()?;
                        (name.ends_with(".png") && !name.starts_with('.'))
                            .then_some((modified, name))
                    })
                    .collect()
            })
            .unwrap_or_default();
    files.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    let images: Vec<Value> = files
        .into_iter()
        .map(|(modified, name)| {
            let created = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            json!({ "file": name, "url": format!("{base}/images/{name}"), "created": created })
        })
        .collect();
    Json(json!({ "images": images }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_cannot_break_out_of_the_markdown_image_it_labels() {
        let text = markdown_text("a cat](http://evil.example/x.png) ![pwn\nnext line <b>");
        assert!(!text.contains('\n'));
        assert_eq!(text.matches("](").count(), 0, "{text}");
        assert_eq!(
            format!("![{text}](http://127.0.0.1/images/a.png)")
                .matches("](http")
                .count(),
            1,
            "only the real link remains a link: {text}"
        );
    }
}
