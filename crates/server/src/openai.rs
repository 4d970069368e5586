//! The OpenAI Images API as Open WebUI and the official clients speak it, plus sd.cpp's controls as extension
//! fields in the same body (Open WebUI merges its "API params" setting into the body; that is how its users pass
//! steps, seeds or a negative prompt).

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use diffugen_engine::params::LoraRequest;
use diffugen_engine::{GenerateRequest, Output};
use diffugen_jobs::{JobManager, JobState, Outcome};
use serde_json::{json, Map, Value};

use crate::native::enqueue;
use crate::{ApiError, AppState};

pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .library
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
        other => other,
    }
}

/// Reads typed fields out of a JSON object, each mistake a 400 naming the field.
struct Body<'a>(&'a Map<String, Value>);

impl Body<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::invalid(
                field,
                format!("must be a string, got {other}"),
            )),
        }
    }

    fn choice(&self, field: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
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

    fn integer(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| ApiError::invalid(field, format!("must be an integer, got {v}"))),
        }
    }

    fn unsigned(&self, field: &str) -> Result<Option<u32>, ApiError> {
        match self.integer(field)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                ApiError::invalid(field, format!("must be a non-negative integer, got {v}"))
            }),
        }
    }

    fn number(&self, field: &str) -> Result<Option<f32>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| ApiError::invalid(field, format!("must be a number, got {v}"))),
        }
    }

    fn loras(&self) -> Result<Vec<LoraRequest>, ApiError> {
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

fn encode(path: &str, format: &str, compression: Option<u32>) -> Result<Vec<u8>, ApiError> {
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

pub async fn generations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(value) = body.map_err(crate::error::json_rejection)?;
    let map = value
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    let body = Body(map);

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
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid(
            "stream",
            "streaming is not available yet; send stream: false",
        ));
    }

    let model = state.model_for(body.string("model")?.as_deref())?;
    let mut steps = body.unsigned("steps")?;
    if steps.is_none() && quality != "auto" {
        // Quality is a step preset around the model's default.
        if let Ok(resolved) = state.library.resolve(&model) {
            let base = resolved.defaults.steps;
            steps = Some(match quality.as_str() {
                "low" => (base / 2).max(1),
                "high" | "hd" => (base + base / 2).min(150),
                _ => base,
            });
        }
    }
    let request = GenerateRequest {
        model,
        prompt: prompt.clone(),
        negative_prompt: body.string("negative_prompt")?,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        steps,
        cfg_scale: body.number("cfg_scale")?,
        sampler: body.string("sampler")?,
        scheduler: body.string("scheduler")?,
        seed: body.integer("seed")?,
        count: Some(n),
        clip_skip: body
            .integer("clip_skip")?
            .map(|c| c.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
        loras: body.loras()?,
        ..GenerateRequest::default()
    };
    let id = enqueue(&state, request, "openai", openai_field)?;
    let _guard = DropIfQueued {
        jobs: state.jobs.clone(),
        id: id.clone(),
    };
    let outputs = match state.jobs.wait(&id).await? {
        Outcome::Done(outputs) => outputs,
        Outcome::Failed(error) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("generation failed: {error}"),
            ))
        }
        Outcome::Cancelled(reason) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("generation cancelled: {reason}"),
            ))
        }
    };

    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let data = outputs
        .iter()
        .map(|output: &Output| -> Result<Value, ApiError> {
            if response_format == "url" {
                let file = std::path::Path::new(&output.path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned());
                return Ok(
                    json!({ "url": format!("http://{host}/images/{}", file.unwrap_or_default()) }),
                );
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
    })))
}
