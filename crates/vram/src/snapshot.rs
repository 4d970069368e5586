//! The typed picture of the GPU that the meter, `diffugen vram status` and `GET /api/v1/vram` show, and the live
//! events the orchestrator sends. Byte counts are `f64` (the UI's TypeScript has no 64-bit integers).

use serde::{Deserialize, Serialize};

use crate::config::{AfterQueue, Phase, Policy};
use crate::gpu::GpuProcess;
use crate::ollama::LoadedModel;

/// Everything known about who holds the GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct VramSnapshot {
    pub phase: Phase,
    /// Seconds in the current phase.
    pub phase_seconds: f64,
    pub policy: Policy,
    pub after_queue: AfterQueue,
    pub strict: bool,
    pub gpu: GpuStatus,
    pub ollama: OllamaStatus,
    pub engine: EngineStatus,
    /// LLMs DiffuGen unloaded and will restore when the queue is empty.
    pub pending_restore: Vec<String>,
    pub llm_requests_waiting: u32,
    pub stats: Stats,
}

/// The GPUs as NVML reads them, or why they cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct GpuStatus {
    /// Whether an NVIDIA GPU could be read.
    pub available: bool,
    /// Why not (e.g. "no NVIDIA GPU detected (...)").
    pub message: Option<String>,
    pub gpus: Vec<GpuMeter>,
    /// Bytes held by Ollama's LLMs: NVML's per-process figures, or Ollama's `size_vram` without NVML.
    pub llm_bytes: f64,
    /// Bytes held by DiffuGen: NVML's per-process figures, or the engine's estimate without NVML.
    pub diffugen_bytes: f64,
}

/// One GPU, its used memory split by owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct GpuMeter {
    pub index: u32,
    pub name: String,
    pub total_bytes: f64,
    pub used_bytes: f64,
    pub free_bytes: f64,
    pub llm_bytes: f64,
    pub diffugen_bytes: f64,
    pub other_bytes: f64,
    pub processes: Vec<GpuProcess>,
}

/// Ollama as seen from DiffuGen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct OllamaStatus {
    pub url: String,
    pub reachable: bool,
    pub version: Option<String>,
    pub error: Option<String>,
    /// Models in memory (`/api/ps`).
    pub models: Vec<LlmModel>,
}

/// A model Ollama holds in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct LlmModel {
    pub name: String,
    pub size_bytes: f64,
    /// Bytes on the GPU (0 = running on the CPU).
    pub vram_bytes: f64,
    pub expires_at: Option<String>,
}

impl From<&LoadedModel> for LlmModel {
    fn from(m: &LoadedModel) -> LlmModel {
        LlmModel {
            name: m.name.clone(),
            size_bytes: m.size as f64,
            vram_bytes: m.size_vram as f64,
            expires_at: m.expires_at.clone(),
        }
    }
}

/// DiffuGen's engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct EngineStatus {
    /// The worker process, when one is running.
    pub worker_pid: Option<u32>,
    /// The model the worker holds in memory.
    pub loaded_model: Option<String>,
    /// The last job's estimated memory need, while its model is loaded.
    pub estimated_bytes: Option<f64>,
    /// While DiffuGen shares the GPU with resident LLMs: the VRAM it holds itself to.
    pub budget_bytes: Option<f64>,
}

/// The orchestrator's counters since start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct Stats {
    /// Hand-overs that unloaded or restored models.
    pub switches: u32,
    /// GPU requests handled: diffusion jobs and LLM requests.
    pub requests: u32,
    pub errors: u32,
    /// Unloads whose release was not confirmed in time.
    pub unload_timeouts: u32,
    pub last_switch_ms: Option<f64>,
    pub average_switch_ms: Option<f64>,
    pub max_switch_ms: Option<f64>,
    pub seconds_in: PhaseSeconds,
}

/// Time spent in each phase, seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct PhaseSeconds {
    pub idle: f64,
    pub llm: f64,
    pub switching: f64,
    pub diffusion: f64,
}

/// A live event of the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VramEvent {
    Phase {
        phase: Phase,
        reason: String,
    },
    Switch {
        to: Phase,
        milliseconds: f64,
        unloaded: Vec<String>,
        restored: Vec<String>,
    },
    Warning {
        message: String,
    },
    Snapshot {
        snapshot: Box<VramSnapshot>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vram_types_export_to_typescript_without_bigint() {
        let types = specta::Types::default().register::<VramEvent>();
        let ts = specta_typescript::Typescript::default()
            .export(&types, specta_serde::Format)
            .expect("the UI's TypeScript exporter accepts every VRAM type");
        assert!(
            ts.contains("VramSnapshot") && ts.contains("llm_bytes"),
            "{ts}"
        );
        assert!(!ts.contains("bigint"), "{ts}");
    }
}
