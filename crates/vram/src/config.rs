//! What the orchestrator is told: the policy for sharing the GPU, what to do after the queue drains, and the phases
//! it moves through.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ollama::KeepAlive;

/// Who the GPU is arranged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing arranged: no LLM was unloaded by DiffuGen, nothing waits to be restored.
    Idle,
    /// The LLM has the GPU; DiffuGen's engine has freed its memory.
    Llm,
    /// Models are being unloaded or restored.
    Switching,
    /// Diffusion has the GPU; LLMs DiffuGen unloaded wait to be restored.
    Diffusion,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Llm => "llm",
            Phase::Switching => "switching",
            Phase::Diffusion => "diffusion",
        }
    }
}

/// When to unload Ollama's models before a diffusion job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Unload every resident LLM.
    Always,
    /// Per job, the cheaper of sharing the GPU with the resident LLMs (when the planned job fits beside them) and
    /// unloading them (the render's estimated time against the LLMs' unload and reload).
    Auto,
    /// Keep the LLMs and render beside them whenever the planned job fits there (offloaded or tiled if need be);
    /// unload them only when it does not.
    Share,
    /// Never touch Ollama.
    Never,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(Policy::Always),
            "auto" => Ok(Policy::Auto),
            "share" => Ok(Policy::Share),
            "never" => Ok(Policy::Never),
            other => Err(format!(
                "'{other}' is not a VRAM policy; use always, auto, share or never"
            )),
        }
    }
}

/// Who an explicit switch hands the GPU to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum SwitchTarget {
    /// Ollama's LLMs: the engine frees its memory and the unloaded LLMs come back.
    Llm,
    /// Diffusion: every resident LLM is unloaded and the GPU stays with diffusion.
    Diffusion,
}

impl std::str::FromStr for SwitchTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<SwitchTarget, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "llm" => Ok(SwitchTarget::Llm),
            "diffusion" => Ok(SwitchTarget::Diffusion),
            other => Err(format!("'{other}' is not llm or diffusion")),
        }
    }
}

/// What happens to the unloaded LLMs once the queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum AfterQueue {
    Restore,
    Leave,
}

impl std::str::FromStr for AfterQueue {
    type Err = String;
    fn from_str(s: &str) -> Result<AfterQueue, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "restore" => Ok(AfterQueue::Restore),
            "leave" => Ok(AfterQueue::Leave),
            other => Err(format!(
                "'{other}' is not an after-queue action; use restore or leave"
            )),
        }
    }
}

/// The orchestrator's settings.
#[derive(Debug, Clone)]
pub struct VramConfig {
    pub policy: Policy,
    pub after_queue: AfterQueue,
    /// Fail a job whose room could not be confirmed, instead of rendering with a warning.
    pub strict: bool,
    /// How long to wait for an unloaded model's memory to come back.
    pub unload_timeout: Duration,
    /// How long an LLM request waits for a render to finish before it is refused.
    pub llm_wait_timeout: Duration,
    /// Keep-alive for restored models; `None` restores each with the expiry it had left.
    pub restore_keep_alive: Option<KeepAlive>,
}

impl Default for VramConfig {
    fn default() -> VramConfig {
        VramConfig {
            policy: Policy::Auto,
            after_queue: AfterQueue::Restore,
            strict: false,
            unload_timeout: Duration::from_secs(20),
            llm_wait_timeout: Duration::from_secs(600),
            restore_keep_alive: None,
        }
    }
}
