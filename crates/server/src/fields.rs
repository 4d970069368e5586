//! What the dialects' handlers share when they read a request and answer it: typed fields out of a JSON body (each
//! mistake a 400 naming the field), closed sets of values by their wire names, images encoded for an answer, and a
//! queued job that goes away with its client.

use std::io::Cursor;

use axum::http::StatusCode;
use diffugen_engine::params::LoraRequest;
use diffugen_jobs::{JobManager, JobState};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ApiError;

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

    /// A field whose value is one of `T`'s wire names.
    pub(crate) fn one_of<T: Choice>(&self, field: &str) -> Result<Option<T>, ApiError> {
        let Some(text) = self.string(field)? else {
            return Ok(None);
        };
        T::ALLOWED
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, value)| Some(*value))
            .ok_or_else(|| {
                let names: Vec<&str> = T::ALLOWED.iter().map(|(name, _)| *name).collect();
                ApiError::invalid(
                    field,
                    format!("'{text}' is not one of {}", names.join(", ")),
                )
            })
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OutputFormat {
    #[default]
    Png,
    Jpeg,
    Webp,
}

impl Choice for OutputFormat {
    const ALLOWED: &'static [(&'static str, OutputFormat)] = &[
        ("png", OutputFormat::Png),
        ("jpeg", OutputFormat::Jpeg),
        ("webp", OutputFormat::Webp),
    ];
}

/// A closed set of values a request field takes, by their wire names.
pub(crate) trait Choice: Copy + 'static {
    const ALLOWED: &'static [(&'static str, Self)];
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
