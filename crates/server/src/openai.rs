//! The OpenAI Images API as Open WebUI and the official clients speak it, plus sd.cpp's controls as extension
//! fields in the same body (Open WebUI merges its "API params" setting into the body; that is how its users pass
//! steps, seeds or a negative prompt). Generations and edits (img2img, inpainting) share one parser and one
//! responder; `stream: true` answers with OpenAI's image streaming events.

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use std::convert::Infallible;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use diffugen_engine::params::{ImageInput, LoraRequest, PreviewRequest};
use diffugen_engine::{GenerateRequest, Output, Stage};
use diffugen_jobs::{JobManager, JobState, Outcome};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::body::JsonBody;
use crate::native::enqueue;
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

/// Reads typed fields out of a JSON object, each mistake a 400 naming the field.
pub(crate) struct Body<'a>(pub &'a Map<String, Value>);

impl Body<'_> {
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::invalid(
                field,
                format!("must be a string, got {other}"),
            )),
        }
    }

    pub(crate) fn choice(&self, field: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        let value = self.string(field)?;
        if let Some(v) = &value {
            if !allowed.contains(&v.as_str()) {
                return Err(ApiError::invalid(
                    field,
                    format!("'{v}' is not one of {}", allowed.join(", ")),
                ));
            }
        }
        Ok(value)
    }

    pub(crate) fn integer(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| ApiError::invalid(field, format!("must be an integer, got {v}"))),
        }
    }

    pub(crate) fn unsigned(&self, field: &str) -> Result<Option<u32>, ApiError> {
        match self.integer(field)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                ApiError::invalid(field, format!("must be a non-negative integer, got {v}"))
            }),
        }
    }

    pub(crate) fn number(&self, field: &str) -> Result<Option<f32>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| ApiError::invalid(field, format!("must be a number, got {v}"))),
        }
    }

    pub(crate) fn loras(&self) -> Result<Vec<LoraRequest>, ApiError> {
        let Some(value) = self.get("loras") else {
            return Ok(Vec::new());
        };
        let items = value
            .as_array()
            .ok_or_else(|| ApiError::invalid("loras", "must be a list"))?;
        items
            .iter()
            .map(|item| match item {
                Value::String(text) => {
                    let (name, weight) = text.rsplit_once(':').unwrap_or((text, "1"));
                    let weight = weight.parse().map_err(|_| {
                        ApiError::invalid("loras", format!("'{text}': write \"name:weight\""))
                    })?;
                    Ok(LoraRequest {
                        name: name.to_string(),
                        weight,
                    })
                }
                Value::Object(map) => {
                    let name = map.get("name").and_then(Value::as_str).ok_or_else(|| {
                        ApiError::invalid(
                            "loras",
                            "each LoRA needs a \"name\" (and optionally a \"weight\")",
                        )
                    })?;
                    let weight = map
                        .get("weight")
                        .map_or(Some(1.0), Value::as_f64)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "loras",
                                format!("LoRA '{name}': weight must be a number"),
                            )
                        })?;
                    Ok(LoraRequest {
                        name: name.to_string(),
                        weight: weight as f32,
                    })
                }
                other => Err(ApiError::invalid(
                    "loras",
                    format!("unexpected entry {other}"),
                )),
            })
            .collect()
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

/// Deletes a job that is still waiting when its HTTP client goes away (the request future is dropped).
pub(crate) struct DropIfQueued {
    pub jobs: JobManager,
    pub id: String,
}

impl Drop for DropIfQueued {
    fn drop(&mut self) {
        if self
            .jobs
            .get(&self.id)
            .is_ok_and(|job| job.state == JobState::Queued)
        {
            let _ = self
                .jobs
                .cancel(&self.id, "the client went away before the job started");
        }
    }
}

pub(crate) fn encode(
    path: &str,
    format: &str,
    compression: Option<u32>,
) -> Result<Vec<u8>, ApiError> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    let bytes = std::fs::read(path).map_err(|e| internal(format!("cannot read {path}: {e}")))?;
    if format == "png" {
        return Ok(bytes);
    }
    let image = image::load_from_memory(&bytes)
        .map_err(|e| internal(e.to_string()))?
        .to_rgb8();
    let mut out = Cursor::new(Vec::new());
    match format {
        "jpeg" => {
            let quality = compression.map_or(90, |c| (100 - c.min(100)).max(1) as u8);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .encode_image(&image)
                .map_err(|e| internal(e.to_string()))?;
        }
        _ => {
            image
                .write_to(&mut out, image::ImageFormat::WebP)
                .map_err(|e| internal(e.to_string()))?;
        }
    }
    Ok(out.into_inner())
}

/// A parsed OpenAI image request: the job, and how to answer.
struct ImageJob {
    request: GenerateRequest,
    response_format: String,
    output_format: String,
    compression: Option<u32>,
    quality: String,
    stream: bool,
    partial_images: u32,
}

/// Reads the fields generations and edits share. `images` is the init image and mask of an edit.
fn parse(
    state: &AppState,
    body: &Body,
    images: Option<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<ImageJob, ApiError> {
    let prompt = body.string("prompt")?.filter(|p| !p.trim().is_empty());
    let prompt =
        prompt.ok_or_else(|| ApiError::invalid("prompt", "is required and must not be empty"))?;
    let n = body.unsigned("n")?.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("must be from 1 to 10, got {n}"),
        ));
    }
    let size = body
        .string("size")?
        .map(|s| parse_size(&s))
        .transpose()?
        .flatten();
    let response_format = body
        .choice("response_format", &["b64_json", "url"])?
        .unwrap_or_else(|| "b64_json".into());
    let output_format = body
        .choice("output_format", &["png", "jpeg", "webp"])?
        .unwrap_or_else(|| "png".into());
    let compression = body.unsigned("output_compression")?;
    if compression.is_some_and(|c| c > 100) {
        return Err(ApiError::invalid(
            "output_compression",
            "must be from 0 to 100",
        ));
    }
    let quality = body
        .choice(
            "quality",
            &["auto", "low", "medium", "high", "standard", "hd"],
        )?
        .unwrap_or_else(|| "auto".into());
    let background = body
        .choice("background", &["auto", "opaque", "transparent"])?
        .unwrap_or_else(|| "auto".into());
    if background == "transparent" {
        return Err(ApiError::invalid(
            "background",
            "transparent backgrounds are not supported; use auto or opaque",
        ));
    }
    let stream = match body.get("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid(
                "stream",
                format!("must be true or false, got {other}"),
            ))
        }
    };
    let partial_images = body.unsigned("partial_images")?.unwrap_or(0);
    if partial_images > 3 {
        return Err(ApiError::invalid(
            "partial_images",
            format!("must be from 0 to 3, got {partial_images}"),
        ));
    }

    let model = state.model_for(body.string("model")?.as_deref())?;
    let mut steps = body.unsigned("steps")?;
    if steps.is_none() && quality != "auto" {
        // Quality is a step preset around the model's default.
        if let Ok(resolved) = state.library().resolve(&model) {
            let base = resolved.defaults.steps;
            steps = Some(match quality.as_str() {
                "low" => (base / 2).max(1),
                "high" | "hd" => (base + base / 2).min(150),
                _ => base,
            });
        }
    }
    let (init_image, mask) = match images {
        Some((init, mask)) => (Some(ImageInput::Bytes(init)), mask.map(ImageInput::Bytes)),
        None => (None, None),
    };
    let request = GenerateRequest {
        model,
        prompt,
        negative_prompt: body.string("negative_prompt")?,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        steps,
        cfg_scale: body.number("cfg_scale")?,
        sampler: body.string("sampler")?,
        scheduler: body.string("scheduler")?,
        seed: body.integer("seed")?,
        count: Some(n),
        clip_skip: body.integer("clip_skip")?.map(|c| c.clamp(-1, 12) as i32),
        loras: body.loras()?,
        strength: if init_image.is_some() {
            body.number("strength")?
        } else {
            None
        },
        init_image,
        mask,
        // Partial images come from sd.cpp's cheap latent previews.
        preview: (stream && partial_images > 0).then(|| PreviewRequest {
            mode: "proj".into(),
            interval: 1,
        }),
        ..GenerateRequest::default()
    };
    Ok(ImageJob {
        request,
        response_format,
        output_format,
        compression,
        quality,
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
    let id = enqueue(&state, request, "openai", openai_field)?;
    let guard = DropIfQueued {
        jobs: state.jobs.clone(),
        id: id.clone(),
    };
    if stream {
        let format = output_format.clone();
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
    let outputs = match state.jobs.wait(&id).await? {
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
            if response_format == "url" {
                let file = std::path::Path::new(&output.path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned());
                return Ok(json!({ "url": format!("{base}/images/{}", file.unwrap_or_default()) }));
            }
            let bytes = encode(&output.path, &output_format, compression)?;
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
        "output_format": if response_format == "url" { "png" } else { output_format.as_str() },
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
    quality: String,
    output_format: String,
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
                        let data = match encode(&output.path, &output_format, compression) {
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
    JsonBody(value): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let map = value
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    let job = parse(&state, &Body(map), None)?;
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
    let job = parse(&state, &Body(&fields), Some((image, mask)))?;
    respond(state, headers, job, "image_edit").await
}
