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
    /// Enlarge images (an ESRGAN model stays resident beside the rendering model); answered by an `Image` per
    /// input, then `Finished`, with `upscaling` stages by tile.
    Upscale {
        job_id: String,
        spec: Box<crate::upscale::UpscaleSpec>,
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

pub use crate::raw::RawImage;
