//! The JSON-lines protocol between the supervisor and the engine worker process.
//!
//! The worker reads [`ToWorker`] lines on stdin and writes [`FromWorker`] lines on a private copy of stdout; its
//! real stdout is pointed at stderr, so nothing sd.cpp prints can corrupt the protocol.

use serde::{Deserialize, Serialize};

use crate::events::Stage;
use crate::params::JobSpec;

/// A request to the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    Generate {
        job_id: String,
        spec: Box<JobSpec>,
    },
    /// Write a copy of a model file with its weights converted (sd.cpp's `convert`); answered by `Finished` or
    /// `Failed`, with `loading_model` stages as it reads.
    Convert {
        job_id: String,
        input: std::path::PathBuf,
        output: std::path::PathBuf,
        weight_type: diffugen_models::QuantType,
    },
    /// Drop the resident model (frees its RAM/VRAM) but keep the process.
    Unload,
    Shutdown,
}

/// What the worker reports, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    Ready {
        pid: u32,
        system_info: String,
    },
    /// A stage the worker observed (loading, encoding, sampling, preview, decoding); the supervisor adds
    /// timing, percent and ETA.
    Stage {
        job_id: String,
        stage: Stage,
    },
    /// An sd.cpp log line at info level or above.
    Log {
        level: String,
        text: String,
    },
    Image {
        job_id: String,
        index: u32,
        image: RawImage,
    },
    Finished {
        job_id: String,
        model_was_resident: bool,
    },
    Failed {
        job_id: String,
        error: String,
    },
    Unloaded,
}

/// Pixels crossing the pipe: 1 or 3 channels, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data_base64: String,
}

impl RawImage {
    pub fn encode(image: &diffugen_sd::RgbImage) -> RawImage {
        use base64::Engine as _;
        RawImage {
            width: image.width,
            height: image.height,
            channels: image.channels,
            data_base64: base64::engine::general_purpose::STANDARD.encode(&image.data),
        }
    }

    pub fn decode(&self) -> Result<diffugen_sd::RgbImage, String> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .map_err(|e| e.to_string())?;
        let expected = self.width as usize * self.height as usize * self.channels as usize;
        if data.len() != expected {
            return Err(format!(
                "image data has {} bytes, expected {expected}",
                data.len()
            ));
        }
        Ok(diffugen_sd::RgbImage {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data,
        })
    }
}
