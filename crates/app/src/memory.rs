//! What the window asks of the memory planner and the converter: how a model would run at a size on this machine
//! right now (the model picker's "fits / fits with offload / does not fit"), and a smaller copy of a model —
//! previewed with its size and VRAM before it starts, made in the background with live progress.

use diffugen_engine::convert::{ConvertRequest, ConvertUpdate};
use diffugen_models::convert::ConversionPreview;
use diffugen_models::plan;
use diffugen_models::{Part, Plan, QuantType};
use tokio::sync::broadcast;

use crate::{AppError, Core};

impl Core {
    /// How `model` would run at `width`×`height` (its default size when left out) with the memory free now; the
    /// VRAM Ollama's models hold counts as available unless the policy never unloads them.
    pub async fn plan_model(
        &self,
        model: &str,
        width: Option<u32>,
        height: Option<u32>,
    ) -> Result<Plan, AppError> {
        let library = self.library();
        let resolved = library
            .resolve(model)
            .map_err(|e| AppError::field("model", e.to_string()))?;
        let orchestrator = self.orchestrator()?;
        // What the LLMs hold counts as available unless the policy never unloads them (as a job would get it).
        let llm_bytes = if orchestrator.config().policy == diffugen_vram::Policy::Never {
            0.0
        } else {
            let snapshot = orchestrator.snapshot().await;
            snapshot.ollama.models.iter().map(|m| m.vram_bytes).sum()
        };
        let gpu = orchestrator
            .gpu_memory_for_diffusion()
            .map(|(total, free)| (total, (free + llm_bytes).min(total)));
        tokio::task::spawn_blocking(move || {
            let resources = diffugen_engine::memory::resources(gpu);
            plan::plan_model(&resolved, (width, height), None, &resources)
                .map_err(|e| AppError::field("model", e))
        })
        .await
        .map_err(|e| AppError::new(e.to_string()))?
    }

    /// What a smaller copy of `model` (or of one `part` of it) at `weight_type` would be.
    pub fn preview_conversion(
        &self,
        model: &str,
        part: Option<Part>,
        weight_type: QuantType,
        output: Option<String>,
    ) -> Result<ConversionPreview, AppError> {
        self.library()
            .plan_conversion(model, part, weight_type, output.as_deref())
            .map(|c| c.preview)
            .map_err(conversion_error)
    }

    /// Starts making the copy (one conversion at a time); progress arrives on [`Core::convert_events`].
    pub fn convert_model(
        &self,
        model: &str,
        part: Option<Part>,
        weight_type: QuantType,
        output: Option<String>,
    ) -> Result<String, AppError> {
        let _inside = self.entered();
        let library = self.library();
        let conversion = library
            .plan_conversion(model, part, weight_type, output.as_deref())
            .map_err(conversion_error)?;
        let preview = &conversion.preview;
        let request = ConvertRequest {
            input: preview.input.clone().into(),
            output: preview.output.clone().into(),
            weight_type,
            expected_bytes: preview.expected_bytes,
        };
        diffugen_engine::convert::check(&request).map_err(AppError::new)?;
        Ok(self
            .runtime()
            .conversions()
            .start(request, move |_| library.finish_conversion(&conversion)))
    }

    /// Every conversion's progress.
    pub fn convert_events(&self) -> broadcast::Receiver<ConvertUpdate> {
        self.runtime().conversions().watch()
    }
}

/// A conversion problem at the dialog's field (`type` is the form's `weight_type`).
fn conversion_error(e: diffugen_models::convert::ConversionError) -> AppError {
    let field = if e.field == "type" {
        "weight_type"
    } else {
        e.field
    };
    AppError::field(field, e.message)
}
