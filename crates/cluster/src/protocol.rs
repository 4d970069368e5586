//! What front and workers say to each other, and on which subjects.
//!
//! - `diffugen.jobs.<model>` (JetStream, stream `DIFFUGEN_JOBS`, work queue): a [`JobMessage`], one subject per model
//!   so a worker receives only jobs for models it holds; one durable pull consumer per subject, shared by every
//!   worker that holds the model.
//! - `diffugen.claim.<job>` (request/reply to the front): a worker takes the job ([`Claim`] → [`ClaimReply`]).
//! - `diffugen.events.<job>` (core NATS): the job's live events from its worker ([`WorkerEvent`]).
//! - `diffugen.result.<job>` (request/reply to the front): the images are in the object store ([`ResultRequest`] →
//!   [`ResultReply`]); the worker acknowledges the job only once the front has stored them.
//! - `diffugen.cancel.<job>` (core NATS, from the front): the job was cancelled.
//! - `diffugen.wake` (core NATS, from the front): a job was published, idle workers look now.
//! - Key-value bucket `diffugen-workers`: each worker's [`Announcement`], refreshed as a heartbeat, gone after its TTL.
//! - Object store `diffugen-images`: images on their way to the front (and jobs too large for one message).

use diffugen_engine::{JobEvent, Output, Work};
use serde::{Deserialize, Serialize};

/// The JetStream stream that is the cluster's queue.
pub const STREAM: &str = "DIFFUGEN_JOBS";
/// The key-value bucket of worker announcements.
pub const WORKERS_BUCKET: &str = "diffugen-workers";
/// The object store for images (and large jobs) in transit.
pub const OBJECTS_BUCKET: &str = "diffugen-images";
/// The subject idle workers listen on for new work.
pub const WAKE: &str = "diffugen.wake";
/// The subject token of jobs that need no model file (Lanczos or nearest upscales): every worker takes them.
pub const BUILTIN: &str = "builtin";

/// The subject a job for `model` is published on.
pub fn job_subject(token: &str) -> String {
    format!("diffugen.jobs.{token}")
}

/// A subject for job `id` of one kind (`claim`, `events`, `result`, `cancel`).
pub fn job_topic(kind: &str, id: &str) -> String {
    format!("diffugen.{kind}.{id}")
}

/// A model id as one subject token (and consumer name): its letters, digits, `-` and `_`, every other character as
/// `_`, and a hash of the whole id so that two ids never share a token.
pub fn model_token(model: &str) -> String {
    let mut readable: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    // FNV-1a, 32 bits: stable across machines and versions (unlike std's hasher).
    let hash = model.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    readable.push_str(&format!("-{hash:08x}"));
    readable
}

/// The subject token a job goes to: its checkpoint's, its upscaler model's, or [`BUILTIN`].
pub fn work_token(work: &Work) -> String {
    match work {
        Work::Generate(spec) => model_token(&spec.model_id),
        Work::Upscale(spec) => match &spec.upscaler {
            diffugen_engine::upscale::Upscaler::Model { id, .. } => model_token(id),
            _ => BUILTIN.to_string(),
        },
    }
}

/// A job on the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    /// The front's job id (also the message's `Nats-Msg-Id`, so a job sent twice is kept once).
    pub id: String,
    /// Who asked at the front (`openai`, `app`, ...).
    pub source: String,
    /// The job as the front validated it (its files named by the front's paths: the worker looks them up again by
    /// name); `None` when it was too large for one message and waits in the object store under `object`.
    pub work: Option<Work>,
    pub object: Option<String>,
}

/// A worker takes a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub worker: String,
    /// How many times the stream has delivered the job, this time included (more than 1: a worker before this one
    /// stopped answering).
    pub delivery: u32,
}

/// The front's answer to a [`Claim`] or a [`ResultRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Go ahead / stored.
    pub ok: bool,
    /// The job has ended at the front (cancelled, or done by another worker): drop it, nothing to retry.
    #[serde(default)]
    pub ended: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// One live event of a job, from the worker that renders it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerEvent {
    pub worker: String,
    pub event: JobEvent,
}

/// One image of a finished job, waiting in the object store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultImage {
    /// Its name in the object store.
    pub object: String,
    /// The file name the worker gave it.
    pub file_name: String,
    /// Seed and size, as the worker's `done` event had them.
    pub output: Output,
}

/// A finished job's images are in the object store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRequest {
    pub worker: String,
    pub images: Vec<ResultImage>,
}

/// What a worker tells the cluster about itself (key-value bucket [`WORKERS_BUCKET`], key = its name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub name: String,
    /// The model ids it can render (checkpoints and presets), and its upscaler models.
    pub models: Vec<String>,
    /// Each of its models' family and defaults, so that a front without the model's files can check a job for it.
    #[serde(default)]
    pub cards: Vec<ModelCard>,
    pub upscalers: Vec<String>,
    /// Its render lanes.
    pub lanes: u32,
    /// Its GPUs by name with their memory in bytes, as NVML reads them (none on a CPU-only machine).
    pub gpus: Vec<GpuAnnouncement>,
    /// The front's job ids it renders now.
    pub jobs: Vec<String>,
    /// The DiffuGen version it runs.
    pub version: String,
}

/// A model a worker renders, as a front checks jobs for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub family: diffugen_models::Family,
    pub defaults: diffugen_models::FamilyDefaults,
}

/// One GPU of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuAnnouncement {
    pub name: String,
    pub total_bytes: f64,
    pub free_bytes: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_become_distinct_subject_tokens() {
        let a = model_token("sd15/dreamshaper_8.q8_0");
        let b = model_token("sd15/dreamshaper_8_q8_0");
        assert_ne!(
            a, b,
            "ids that differ only in punctuation get different tokens"
        );
        for token in [&a, &b] {
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "a token holds no subject separator or wildcard: {token}"
            );
        }
        assert!(a.starts_with("sd15_dreamshaper_8_q8_0-"), "{a}");
        assert_eq!(a, model_token("sd15/dreamshaper_8.q8_0"), "stable");
    }
}
