//! What the orchestrator needs of DiffuGen's diffusion engine, and what it reports while it makes room for it —
//! as a trait the engine implements and a progress type the job queue translates, so this crate knows nothing of
//! how the engine runs.

use std::future::Future;
use std::pin::Pin;

/// The diffusion engine, as the orchestrator sees it.
pub trait DiffusionEngine: Send + Sync {
    /// The worker process holding the engine's GPU memory, while one runs (to tell DiffuGen's memory apart).
    fn worker_pid(&self) -> Option<u32>;
    /// The model the worker holds, if any.
    fn loaded_model(&self) -> Option<String>;
    /// Ends the worker, which frees all of its memory.
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// How making room on the GPU goes, step by step (a job shows these as its progress).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// What is being checked or waited for.
    Preparing { message: String },
    /// Unloading `models` from Ollama and waiting until their memory is confirmed free.
    FreeingVram {
        models: Vec<String>,
        message: String,
    },
    /// Something that did not stop the job (an unload that was not confirmed, Ollama not answering).
    Warning { message: String },
}
