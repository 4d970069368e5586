//! VRAM orchestration: one small GPU shared by Ollama's LLMs and DiffuGen's engine, handed over with proof.
//!
//! - [`ollama`]: the Ollama API calls that matter (health, installed, resident, unload confirmed, load).
//! - [`gpu`]: NVML readings, or one clear "no NVIDIA GPU detected" state.
//! - [`orchestrator`]: phases, policy, leases for diffusion jobs and LLM requests, restore, statistics.
//! - [`snapshot`]: the typed snapshot and events the meter, the CLI and the API show.

pub mod config;
pub mod diffusion;
pub mod gpu;
pub mod ollama;
pub mod orchestrator;
pub mod share;
pub mod snapshot;

pub use diffusion::{DiffusionEngine, Progress};
pub use gpu::{GpuProbe, GpuReading, LaneDevice, NoGpu, Nvml};
pub use ollama::{KeepAlive, OllamaClient, OllamaError};
pub use orchestrator::{
    AfterQueue, DiffusionLease, LlmLease, Orchestrator, Phase, Policy, SwitchError, SwitchReport,
    SwitchTarget, VramConfig,
};
pub use snapshot::{Stats, VramEvent, VramSnapshot};

/// Ollama's default address.
pub const DEFAULT_OLLAMA_URL: &str = "http://127.0.0.1:11434";
/// Where DiffuGen's Ollama gateway listens by default.
pub const DEFAULT_GATEWAY_PORT: u16 = 11435;
