//! The typed progress events every front door (terminal, HTTP SSE, desktop UI) receives for a job.
//!
//! A phase is a tagged variant, so a tensor-loading count can never be read as a sampling step.

use serde::{Deserialize, Serialize};

/// One moment of a job's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct JobEvent {
    pub job_id: String,
    /// Seconds since the job was accepted.
    pub elapsed_seconds: f64,
    /// Overall progress 0..=100, from measured times; `null` until something has been measured.
    pub percent: Option<f64>,
    /// Seconds left, from measured times; `null` until something has been measured.
    pub eta_seconds: Option<f64>,
    #[serde(flatten)]
    pub stage: Stage,
}

impl JobEvent {
    /// An event without a progress estimate.
    pub fn new(job_id: &str, elapsed_seconds: f64, stage: Stage) -> JobEvent {
        JobEvent {
            job_id: job_id.to_string(),
            elapsed_seconds,
            percent: None,
            eta_seconds: None,
            stage,
        }
    }
}

/// What the job is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for the engine; `position` jobs are ahead.
    Queued {
        position: u32,
    },
    /// Getting the GPU ready before the engine starts (VRAM orchestration): what is being waited for.
    Preparing {
        message: String,
    },
    /// Unloading `models` from Ollama and waiting until their memory is confirmed free.
    FreeingVram {
        models: Vec<String>,
        message: String,
    },
    /// Where each part of the model runs and what the job needs at its peak (the memory planner's answer), and
    /// why; sent before the GPU is prepared.
    Plan {
        summary: String,
        plan: diffugen_models::Plan,
    },
    /// Something went wrong on the way that did not stop the job (e.g. an unload that was not confirmed).
    Warning {
        message: String,
    },
    /// The prompt assistant: `model` (an LLM in Ollama) is rewriting the prompt, in the LLM's turn on the GPU.
    EnhancingPrompt {
        model: String,
    },
    /// The prompt was rewritten: `prompt` is what renders, `original` what was written.
    PromptEnhanced {
        model: String,
        original: String,
        prompt: String,
    },
    /// A vision model scored take `attempt` (1, or 2 for the render after a low score) against the prompt, 0..10;
    /// `retry` says another take follows.
    Critique {
        model: String,
        attempt: u32,
        score: f64,
        reason: String,
        retry: bool,
    },
    /// sd.cpp is reading weights. It loads lazily, one part at a time (text encoder, diffusion model, VAE), so this
    /// phase can return during a first job; `part` counts those loads.
    LoadingModel {
        part: u32,
        tensors_loaded: u32,
        tensors_total: u32,
    },
    EncodingPrompt,
    /// `step` of `steps` for image `image` of `images` (1-based); step 0 announces the start of sampling. With a
    /// hires fix the steps run over both passes (`steps` is their sum) and `pass` of `passes` says which one runs.
    Sampling {
        image: u32,
        images: u32,
        step: u32,
        steps: u32,
        seconds_per_step: Option<f64>,
        #[serde(default = "one")]
        pass: u32,
        #[serde(default = "one")]
        passes: u32,
    },
    /// A live preview frame during sampling, PNG, base64.
    Preview {
        image: u32,
        step: u32,
        width: u32,
        height: u32,
        png_base64: String,
    },
    Decoding,
    /// Enlarging image `image` of `images`: `tile` of `tiles` done in pass `pass` of `passes` (a model runs again
    /// until the size is reached); tile 0 announces a pass (`tiles` 0 until the tile count is known). Lanczos and
    /// nearest report one tile.
    Upscaling {
        image: u32,
        images: u32,
        pass: u32,
        passes: u32,
        tile: u32,
        tiles: u32,
    },
    Saving,
    Done {
        outputs: Vec<Output>,
    },
    Failed {
        error: String,
        /// What failed, for the status a door answers with [default: render].
        #[serde(default)]
        kind: FailureKind,
    },
    Cancelled {
        reason: String,
    },
}

fn one() -> u32 {
    1
}

impl From<diffugen_vram::Progress> for Stage {
    /// The orchestrator's steps, as a job reports them.
    fn from(progress: diffugen_vram::Progress) -> Stage {
        match progress {
            diffugen_vram::Progress::Preparing { message } => Stage::Preparing { message },
            diffugen_vram::Progress::FreeingVram { models, message } => {
                Stage::FreeingVram { models, message }
            }
            diffugen_vram::Progress::Warning { message } => Stage::Warning { message },
        }
    }
}

/// What made a job fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The render itself: an error sd.cpp reported, a crashed worker, a model that cannot load.
    #[default]
    Render,
    /// The image, its init image or its gallery row could not be written (a full disk, a read-only folder).
    Storage,
    /// DiffuGen stopped while the job was rendering.
    Interrupted,
    /// The GPU could not be made ready for it (the LLM would not unload, the memory never came free).
    Gpu,
}

impl Stage {
    /// A one-line description for people (the CLI's progress line, an MCP progress message); `None` for a preview
    /// frame and the final stages, which say more than one line can.
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            Stage::Queued { position: 0 } => "queued (next)".to_string(),
            Stage::Queued { position } => format!("queued ({position} ahead)"),
            Stage::Plan { summary, .. } => format!("plan: {summary}"),
            Stage::Preparing { message } | Stage::FreeingVram { message, .. } => message.clone(),
            Stage::Warning { message } => format!("warning: {message}"),
            Stage::EnhancingPrompt { model } => format!("{model} is rewriting the prompt"),
            Stage::PromptEnhanced { prompt, .. } => format!("prompt: {prompt}"),
            Stage::Critique {
                model,
                attempt,
                score,
                reason,
                retry,
            } => {
                let next = if *retry {
                    "; rendering another take"
                } else {
                    ""
                };
                format!("{model} scored take {attempt} {score:.0}/10: {reason}{next}")
            }
            Stage::LoadingModel {
                part,
                tensors_loaded,
                tensors_total,
            } => format!("loading model (part {part}) {tensors_loaded}/{tensors_total}"),
            Stage::EncodingPrompt => "encoding prompt".into(),
            Stage::Sampling {
                image,
                images,
                step,
                steps,
                seconds_per_step,
                pass,
                passes,
            } => {
                let rate = seconds_per_step
                    .map(|s| format!(" {s:.2}s/it"))
                    .unwrap_or_default();
                let pass = if *passes > 1 {
                    format!(" (pass {pass}/{passes})")
                } else {
                    String::new()
                };
                if *images > 1 {
                    format!("sampling image {image}/{images} step {step}/{steps}{pass}{rate}")
                } else {
                    format!("sampling {step}/{steps}{pass}{rate}")
                }
            }
            Stage::Decoding => "decoding".into(),
            Stage::Upscaling {
                image,
                images,
                pass,
                passes,
                tile,
                tiles,
            } => {
                let mut text = "upscaling".to_string();
                if *images > 1 {
                    text.push_str(&format!(" image {image}/{images}"));
                }
                if *passes > 1 {
                    text.push_str(&format!(" pass {pass}/{passes}"));
                }
                if *tiles > 0 {
                    text.push_str(&format!(" tile {tile}/{tiles}"));
                }
                text
            }
            Stage::Saving => "saving".into(),
            Stage::Preview { .. }
            | Stage::Done { .. }
            | Stage::Failed { .. }
            | Stage::Cancelled { .. } => return None,
        })
    }

    /// The phase name as it appears on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Queued { .. } => "queued",
            Stage::Preparing { .. } => "preparing",
            Stage::FreeingVram { .. } => "freeing_vram",
            Stage::Plan { .. } => "plan",
            Stage::Warning { .. } => "warning",
            Stage::EnhancingPrompt { .. } => "enhancing_prompt",
            Stage::PromptEnhanced { .. } => "prompt_enhanced",
            Stage::Critique { .. } => "critique",
            Stage::LoadingModel { .. } => "loading_model",
            Stage::EncodingPrompt => "encoding_prompt",
            Stage::Sampling { .. } => "sampling",
            Stage::Preview { .. } => "preview",
            Stage::Decoding => "decoding",
            Stage::Upscaling { .. } => "upscaling",
            Stage::Saving => "saving",
            Stage::Done { .. } => "done",
            Stage::Failed { .. } => "failed",
            Stage::Cancelled { .. } => "cancelled",
        }
    }

    /// Whether this ends the job.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Stage::Done { .. } | Stage::Failed { .. } | Stage::Cancelled { .. }
        )
    }
}

/// One written image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct Output {
    pub path: String,
    /// The seed this image was generated with (the job's seed + its index in the batch).
    #[specta(type = f64)]
    pub seed: i64,
    pub width: u32,
    pub height: u32,
    /// The image's id in the gallery, once recorded there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gallery_id: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_events_export_to_typescript_without_bigint() {
        let types = specta::Types::default().register::<JobEvent>();
        let ts = specta_typescript::Typescript::default()
            .export(&types, specta_serde::Format)
            .expect("the UI's TypeScript exporter accepts every event type");
        assert!(
            ts.contains("JobEvent")
                && ts.contains("loading_model")
                && ts.contains("seconds_per_step"),
            "{ts}"
        );
        assert!(!ts.contains("bigint"), "{ts}");
    }

    #[test]
    fn a_stage_is_tagged_by_its_phase_on_the_wire() {
        let event = JobEvent {
            job_id: "j".into(),
            elapsed_seconds: 1.5,
            percent: Some(50.0),
            eta_seconds: Some(1.5),
            stage: Stage::Sampling {
                image: 1,
                images: 1,
                step: 2,
                steps: 4,
                seconds_per_step: Some(0.5),
                pass: 1,
                passes: 1,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["phase"], "sampling");
        assert_eq!(
            (json["step"].as_u64(), json["steps"].as_u64()),
            (Some(2), Some(4))
        );
        assert_eq!(serde_json::from_value::<JobEvent>(json).unwrap(), event);
    }
}
