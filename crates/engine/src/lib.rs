//! DiffuGen's engine: a job goes in, stable-diffusion.cpp renders it in a supervised worker process, typed progress
//! comes out step by step, and PNGs carrying their parameters land on disk.
//!
//! - [`params`]: what a client may ask for, validated field by field into a [`params::JobSpec`].
//! - [`supervisor`]: the parent side — starts, feeds, cancels and restarts the worker.
//! - [`worker`]: the child side — the only code that calls sd.cpp (through `diffugen-sd`).
//! - [`events`]: the typed progress every front door receives.
//! - [`job`]: render (or upscale) + save + final event, the one path every front door uses.
//! - [`upscale`]: images enlarged by an ESRGAN model or by Lanczos / nearest, a job kind of its own.

pub mod a1111;
pub mod control;
pub mod convert;
pub mod estimate;
pub mod events;
pub mod hires;
pub mod job;
pub mod lora;
pub mod memory;
pub mod output;
pub mod params;
pub mod protocol;
pub mod raw;
pub mod rebind;
pub mod supervisor;
pub mod tracker;
pub mod upscale;
pub mod worker;

pub use events::{FailureKind, JobEvent, Output, Stage};
pub use job::{JobResult, Work};
pub use output::Destination;
pub use params::{validate, GenerateRequest, JobSpec, ParamErrors};
pub use supervisor::{Engine, EngineError, WorkerCommand};

/// The hidden subcommand that turns a DiffuGen executable into an engine worker.
pub const WORKER_SUBCOMMAND: &str = "engine-worker";
