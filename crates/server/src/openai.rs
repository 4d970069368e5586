//! The OpenAI Images API as Open WebUI and the official clients speak it, plus sd.cpp's controls as extension
//! fields in the same body (Open WebUI merges its "API params" setting into the body; that is how its users pass
//! steps, seeds or a negative prompt). Generations and edits (img2img, inpainting) share one parser and one
//! responder; `stream: true` answers with OpenAI's image streaming events.

use std::time::{SystemTime, UNIX_EPOCH};

use std::convert::Infallible;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use diffugen_engine::params::{ImageInput, PreviewRequest};
use diffugen_engine::{GenerateRequest, Output, Stage};
use diffugen_jobs::Outcome;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::body::JsonBody;
use crate::fields::{encode, loras_from, DropIfQueued, OutputFormat};
use crate::native::enqueue_tuned;
use crate::{ApiError, AppState};

pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .library()
        .ids()
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "diffugen" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// Our field names as an OpenAI client knows them.
fn openai_field(field: &str) -> &str {
    match field {
        "width" | "height" => "size",
        "count" => "n",
        // Edits send the picture to change as `image`.
        "init_image" => "image",
        other => other,
    }
}

fn parse_size(size: &str) -> Result<Option<(u32, u32)>, ApiError> {
    if size == "auto" {
        return Ok(None);
    }
    let parsed = size
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
    parsed.map(Some).ok_or_else(|| {
        ApiError::invalid(
            "size",
            format!("'{size}' is not WIDTHxHEIGHT (e.g. 1024x1024) or auto"),
        )
    })
}

/// How images travel in the answer (`response_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResponseFormat {
    B64Json,
    Url,
}

/// OpenAI's `quality`: here a step preset around the model's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Quality {
    Auto,
    Low,
    Medium,
    High,
    Standard,
    Hd,
}

/// OpenAI's `background`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Background {
    Auto,
    Opaque,
    Transparent,
}

/// A parsed OpenAI image request: the job, and how to answer.
struct ImageJob {
    request: GenerateRequest,
    response_format: ResponseFormat,
    output_format: OutputFormat,
    compression: Option<u32>,
    quality: Quality,
    stream: bool,
    partial_images: u32,
}

/// OpenAI's `moderation`. DiffuGen runs no content filter: `low` is what it does; `auto` (OpenAI's standard filter)
/// is refused rather than pretended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Moderation {
    Auto,
    Low,
}

/// An OpenAI Images request: the JSON body of a generation, or the text fields of an edit's form. OpenAI's own
/// fields, then DiffuGen's extensions (the sd.cpp parameters OpenAI has no names for). A field not listed here is
/// refused by name, never ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ImagesRequest {
    prompt: Option<String>,
    model: Option<String>,
    n: Option<u32>,
    size: Option<String>,
    response_format: Option<ResponseFormat>,
    output_format: Option<OutputFormat>,
    output_compression: Option<u32>,
    quality: Option<Quality>,
    background: Option<Background>,
    stream: Option<bool>,
    partial_images: Option<u32>,
    negative_prompt: Option<String>,
    steps: Option<u32>,
    cfg_scale: Option<f32>,
    seed: Option<i64>,
    sampler: Option<String>,
    scheduler: Option<String>,
    clip_skip: Option<i64>,
    /// `"name:weight"` strings or `{"name", "weight"}` objects.
    loras: Option<Vec<Value>>,
    /// Edits: how much of the picture to repaint.
    strength: Option<f32>,
    /// OpenAI's end-user id, for abuse monitoring: logged (escaped).
    user: Option<String>,
    moderation: Option<Moderation>,
    /// DALL·E 3's `vivid` / `natural`: refused, with what to do instead.
    style: Option<String>,
    /// GPT Image edits' `high` / `low`: refused, with what to do instead.
    input_fidelity: Option<String>,
}

/// Checks what the types alone do not (ranges, an empty prompt, unsupported choices) and builds the job. `images`
/// is the init image and mask of an edit.
fn parse(
    state: &AppState,
    body: ImagesRequest,
    images: Option<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<ImageJob, ApiError> {
    let prompt = body.prompt.filter(|p| !p.trim().is_empty());
    let prompt =
        prompt.ok_or_else(|| ApiError::invalid("prompt", "is required and must not be empty"))?;
    let n = body.n.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("must be from 1 to 10, got {n}"),
        ));
    }
    let size = body.size.map(|s| parse_size(&s)).transpose()?.flatten();
    let compression = body.output_compression;
    if compression.is_some_and(|c| c > 100) {
        return Err(ApiError::invalid(
            "output_compression",
            "must be from 0 to 100",
        ));
    }
    if body.background == Some(Background::Transparent) {
        return Err(ApiError::invalid(
            "background",
            "transparent backgrounds are not supported; use auto or opaque",
        ));
    }
    if let Some(style) = &body.style {
        return Err(ApiError::invalid(
            "style",
            format!(
                "'{style}' is a DALL·E 3 preset DiffuGen does not have; describe the style in the prompt, or use \
                 negative_prompt"
            ),
        ));
    }
    if let Some(fidelity) = &body.input_fidelity {
        return Err(ApiError::invalid(
            "input_fidelity",
            format!(
                "'{fidelity}' is GPT Image's setting; with DiffuGen, strength (0..1) sets how much of the image is \
                 repainted"
            ),
        ));
    }
    if body.moderation == Some(Moderation::Auto) {
        return Err(ApiError::invalid(
            "moderation",
            "DiffuGen runs no content filter, so it cannot apply OpenAI's standard one; send low or leave it out",
        ));
    }
    if let Some(user) = &body.user {
        if user.chars().count() > 256 {
            return Err(ApiError::invalid("user", "must be at most 256 characters"));
        }
        tracing::info!(user = ?user, "image request from an OpenAI client's end user");
    }
    if images.is_none() && body.strength.is_some() {
        return Err(ApiError::invalid(
            "strength",
            "only applies to edits (POST /v1/images/edits with an image)",
        ));
    }
    let clip_skip = match body.clip_skip {
        None => None,
        Some(c) if (-1..=12).contains(&c) => Some(c as i32),
        Some(c) => {
            return Err(ApiError::invalid(
                "clip_skip",
                format!("must be from -1 to 12, got {c}"),
            ))
        }
    };
    let stream = body.stream.unwrap_or(false);
    let partial_images = body.partial_images.unwrap_or(0);
    if partial_images > 3 {
        return Err(ApiError::invalid(
            "partial_images",
            format!("must be from 0 to 3, got {partial_images}"),
        ));
    }
    let (init_image, mask) = match images {
        Some((init, mask)) => (Some(ImageInput::Bytes(init)), mask.map(ImageInput::Bytes)),
        None => (None, None),
    };
    let request = GenerateRequest {
        model: state.model_for(body.model.as_deref())?,
        prompt,
        negative_prompt: body.negative_prompt,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        steps: body.steps,
        cfg_scale: body.cfg_scale,
        sampler: body.sampler,
        scheduler: body.scheduler,
        seed: body.seed,
        count: Some(n),
        clip_skip,
        loras: loras_from(body.loras.as_deref().unwrap_or_default())?,
        strength: body.strength,
        init_image,
        mask,
        // Partial images come from sd.cpp's cheap latent previews.
        preview: (stream && partial_images > 0).then_some(PreviewRequest {
            mode: diffugen_engine::params::PreviewMode::Proj,
            interval: 1,
        }),
        ..GenerateRequest::default()
    };
    Ok(ImageJob {
        request,
        response_format: body.response_format.unwrap_or(ResponseFormat::B64Json),
        output_format: body.output_format.unwrap_or_default(),
        compression,
        quality: body.quality.unwrap_or(Quality::Auto),
        stream,
        partial_images,
    })
}

fn usage() -> Value {
    json!({ "total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
            "input_tokens_details": { "text_tokens": 0, "image_tokens": 0 } })
}

/// Runs the job and answers with JSON, or with SSE when the client asked to stream.
async fn respond(
    state: AppState,
    headers: HeaderMap,
    job: ImageJob,
    kind: &'static str,
) -> Result<Response, ApiError> {
    let ImageJob {
        request,
        response_format,
        output_format,
        compression,
        quality,
        stream,
        partial_images,
    } = job;
    let id = enqueue_tuned(&state, request, "openai", openai_field, |request, model| {
        // Quality is a step preset around the model's default.
        if request.steps.is_none() {
            let base = model.defaults.steps;
            request.steps = match quality {
                Quality::Auto => None,
                Quality::Low => Some((base / 2).max(1)),
                Quality::High | Quality::Hd => Some((base + base / 2).min(150)),
                Quality::Medium | Quality::Standard => Some(base),
            };
        }
        Ok(())
    })?;
    let guard = DropIfQueued {
        jobs: state.jobs().clone(),
        id: id.clone(),
    };
    if stream {
        let format = output_format;
        let events = crate::native::job_events(&state, &id)?;
        return Ok(stream_response(
            events,
            guard,
            kind,
            quality,
            format,
            compression,
            partial_images,
        )
        .into_response());
    }
    let outputs = match state.jobs().wait(&id).await? {
        Outcome::Done(outputs) => outputs,
        Outcome::Failed { error, kind } => return Err(ApiError::job_failed(&error, kind)),
        Outcome::Cancelled(reason) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("generation cancelled: {reason}"),
            ))
        }
    };
    drop(guard);
    let base = crate::base_url(&headers);
    let data = outputs
        .iter()
        .map(|output: &Output| -> Result<Value, ApiError> {
            if response_format == ResponseFormat::Url {
                let file = std::path::Path::new(&output.path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned());
                return Ok(json!({ "url": format!("{base}/images/{}", file.unwrap_or_default()) }));
            }
            let bytes = encode(&output.path, output_format, compression)?;
            Ok(json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(bytes) }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (width, height) = outputs.first().map_or((0, 0), |o| (o.width, o.height));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Ok(Json(json!({
        "created": created,
        "data": data,
        "background": "opaque",
        "output_format": if response_format == ResponseFormat::Url { OutputFormat::Png } else { output_format },
        "quality": quality,
        "size": format!("{width}x{height}"),
        "usage": usage(),
    }))
    .into_response())
}

/// OpenAI's image streaming: `<kind>.partial_image` events from sd.cpp's live previews (at most `partial_images`,
/// spread over the sampling steps), then one `<kind>.completed` per image, then `[DONE]`.
fn stream_response(
    events: impl futures_util::Stream<Item = diffugen_engine::JobEvent> + Send + 'static,
    guard: DropIfQueued,
    kind: &'static str,
    quality: Quality,
    output_format: OutputFormat,
    compression: Option<u32>,
    partial_images: u32,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut sent_partials = 0u32;
    let mut total_steps = 0u32;
    let sse = events
        .flat_map(move |event| {
            let _alive = &guard;
            let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let mut out = Vec::new();
            match event.stage {
                Stage::Sampling { steps, .. } => total_steps = steps,
                Stage::Preview { step, png_base64, .. } if sent_partials < partial_images => {
                    // Spread the partial images evenly over the steps.
                    let due = total_steps.max(1) * (sent_partials + 1) / (partial_images + 1);
                    if step >= due.max(1) {
                        out.push(Event::default().event(format!("{kind}.partial_image")).json_data(json!({
                            "type": format!("{kind}.partial_image"), "b64_json": png_base64, "created_at": created,
                            "size": "auto", "quality": quality, "background": "opaque", "output_format": "png",
                            "partial_image_index": sent_partials,
                        })));
                        sent_partials += 1;
                    }
                }
                Stage::Done { outputs } => {
                    for output in outputs {
                        let data = match encode(&output.path, output_format, compression) {
                            Ok(bytes) => json!({
                                "type": format!("{kind}.completed"),
                                "b64_json": base64::engine::general_purpose::STANDARD.encode(bytes),
                                "created_at": created, "size": format!("{}x{}", output.width, output.height),
                                "quality": quality, "background": "opaque", "output_format": output_format,
                                "usage": usage(),
                            }),
                            Err(e) => json!({ "type": "error", "error": { "message": e.message, "type": "server_error", "param": null, "code": null } }),
                        };
                        out.push(Event::default().event(format!("{kind}.completed")).json_data(data));
                    }
                    out.push(Ok(Event::default().data("[DONE]")));
                }
                Stage::Failed { error, .. } | Stage::Cancelled { reason: error } => {
                    out.push(Event::default().event("error").json_data(json!({
                        "type": "error",
                        "error": { "message": error, "type": "server_error", "param": null, "code": null }
                    })));
                    out.push(Ok(Event::default().data("[DONE]")));
                }
                _ => {}
            }
            futures_util::stream::iter(out.into_iter().map(|e| Ok(e.unwrap_or_default())))
        });
    Sse::new(sse).keep_alive(KeepAlive::default())
}

pub async fn generations(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ImagesRequest>,
) -> Result<Response, ApiError> {
    let job = parse(&state, body, None)?;
    respond(state, headers, job, "image_generation").await
}

/// Fields that arrive as text in a multipart form but are numbers or booleans.
const TYPED_FIELDS: &[&str] = &[
    "n",
    "output_compression",
    "steps",
    "cfg_scale",
    "seed",
    "clip_skip",
    "strength",
    "partial_images",
    "stream",
];

/// `POST /v1/images/edits` (multipart): `image` or repeated `image[]` (the first is the init image), an optional
/// `mask` (inpainting), and the same fields as generations → img2img / inpainting.
pub async fn edits(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(
            "body",
            format!("expected multipart/form-data: {}", e.body_text()),
        )
    })?;
    let mut fields = Map::new();
    let (mut image, mut mask) = (None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} MB",
                        crate::BODY_LIMIT >> 20
                    ),
                ))
            }
            Err(e) => {
                return Err(ApiError::invalid(
                    "body",
                    format!("unreadable multipart form: {}", e.body_text()),
                ))
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} MB",
                        crate::BODY_LIMIT >> 20
                    ),
                )
                .code("body_too_large")
            } else {
                ApiError::invalid(&name, e.body_text())
            }
        })?;
        match name.as_str() {
            "image" | "image[]" => {
                // Several images: the first is the one we edit.
                image.get_or_insert(bytes.to_vec());
            }
            "mask" => mask = Some(bytes.to_vec()),
            _ => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let value = if TYPED_FIELDS.contains(&name.as_str()) {
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
                } else {
                    Value::String(text)
                };
                fields.insert(name, value);
            }
        }
    }
    let image = image.ok_or_else(|| {
        ApiError::invalid(
            "image",
            "is required: send the image to edit as `image` or `image[]`",
        )
    })?;
    let body = crate::body::from_fields::<ImagesRequest>(fields)?;
    let job = parse(&state, body, Some((image, mask)))?;
    respond(state, headers, job, "image_edit").await
}
