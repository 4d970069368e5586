//! What the dialects' handlers share when they read a request and answer it: LoRAs in either of their written forms,
//! images encoded for an answer in the format asked for, and a queued job that goes away with its client.

use std::io::Cursor;

use axum::http::StatusCode;
use diffugen_engine::params::LoraRequest;
use diffugen_jobs::{JobManager, JobState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ApiError;

/// LoRAs as the dialects send them: `"name:weight"` strings or `{"name", "weight"}` objects.
pub(crate) fn loras_from(items: &[Value]) -> Result<Vec<LoraRequest>, ApiError> {
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

/// The file format of an image in an answer (OpenAI's `output_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OutputFormat {
    #[default]
    Png,
    Jpeg,
    Webp,
}

/// The image at `path` in `format` (`compression` 0..100 for JPEG).
pub(crate) fn encode(
    path: &str,
    format: OutputFormat,
    compression: Option<u32>,
) -> Result<Vec<u8>, ApiError> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    let bytes = std::fs::read(path).map_err(|e| internal(format!("cannot read {path}: {e}")))?;
    if format == OutputFormat::Png {
        return Ok(bytes);
    }
    let image = image::load_from_memory(&bytes)
        .map_err(|e| internal(e.to_string()))?
        .to_rgb8();
    let mut out = Cursor::new(Vec::new());
    match format {
        OutputFormat::Jpeg => {
            let quality = compression.map_or(90, |c| (100 - c.min(100)).max(1) as u8);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .encode_image(&image)
                .map_err(|e| internal(e.to_string()))?;
        }
        OutputFormat::Png | OutputFormat::Webp => {
            image
                .write_to(&mut out, image::ImageFormat::WebP)
                .map_err(|e| internal(e.to_string()))?;
        }
    }
    Ok(out.into_inner())
}
