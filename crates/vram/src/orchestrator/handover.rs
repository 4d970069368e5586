//! Making room for diffusion, step by step: ask Ollama what is resident, decide between sharing the GPU and
//! unloading (the planner's fit against what the LLMs leave free), unload the chosen models one by one, and confirm
//! the memory really came back — through Ollama's `/api/ps` and, where NVML works, the driver's own count.

use std::time::{Duration, Instant};

use crate::diffusion::Progress;

use super::{
    card_of, choose_victims, stats_of, Need, Orchestrator, Phase, Policy, SwitchError,
    SwitchReport, VramConfig,
};
use crate::gpu::GpuReading;
use crate::ollama::{LoadedModel, OllamaError, Retry};
use crate::share::Room;
use crate::snapshot::VramEvent;

/// What the unloading achieved.
struct Released {
    vram_bytes: f64,
    /// Every model left Ollama's list in time.
    confirmed: bool,
}

impl Orchestrator {
    /// Unloads what the policy (or `force`) says must go and confirms its memory is free; ends in `diffusion`.
    /// Returns the report and, when the job shares the GPU with the LLMs, the VRAM budget it has.
    pub(super) async fn make_room(
        &self,
        need: Need<'_>,
        force: bool,
        card: u32,
        on_stage: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(SwitchReport, Option<f64>), SwitchError> {
        let started = Instant::now();
        let config = self.config();
        let policy = if force { Policy::Always } else { config.policy };
        let previous = self.phase();
        let mut report = SwitchReport {
            phase: Phase::Diffusion,
            unloaded: Vec::new(),
            restored: Vec::new(),
            milliseconds: 0.0,
            warnings: Vec::new(),
        };
        if policy == Policy::Never {
            self.set_phase(Phase::Diffusion, "policy never: Ollama is left alone");
            return Ok((report, None));
        }
        if !force && self.ollama_known_down() {
            // Learned moments ago (the watch, or the last job): asking again would only cost this job time.
            self.set_phase(Phase::Diffusion, "Ollama is not running: no LLM to unload");
            return Ok((report, None));
        }
        self.set_phase(Phase::Switching, "making room for diffusion");
        on_stage(Progress::Preparing {
            message: "checking what holds the GPU".into(),
        });
        let Some(loaded) = self
            .resident_models(force, previous, on_stage, &mut report)
            .await?
        else {
            return Ok((report, None));
        };
        let gpu = self.inner.gpu.read();
        let reading = gpu.as_ref().ok().and_then(|g| card_of(g, card));
        let (need_bytes, budget) = self.room_for(need, policy, &loaded, reading, on_stage);
        let victims = choose_victims(policy, &loaded, reading, need_bytes);
        if victims.is_empty() {
            let reason = if loaded.is_empty() {
                "no LLM is loaded"
            } else if budget.is_some() {
                "sharing the GPU with the LLMs"
            } else {
                "the GPU has room for the job and the LLM"
            };
            self.set_phase(Phase::Diffusion, reason);
            return Ok((report, budget));
        }
        let free_before = reading.map(|g| g.free_bytes);
        let deadline = Instant::now() + config.unload_timeout;
        let released = self
            .unload(&victims, &config, previous, deadline, on_stage, &mut report)
            .await?;
        // Where NVML works, the model leaving /api/ps is not enough: wait for the driver to show the memory back.
        if let Some(before) = free_before.filter(|_| released.confirmed) {
            let expected = before + 0.75 * released.vram_bytes;
            if released.vram_bytes > 0.0 && !self.wait_for_free(card, expected, deadline).await {
                let message = format!(
                    "the GPU's free memory did not rise by {:.1} GiB within {:.0} s",
                    0.75 * released.vram_bytes / f64::from(1u32 << 30),
                    config.unload_timeout.as_secs_f64()
                );
                if let Some(err) =
                    self.unconfirmed(&config, message, previous, on_stage, &mut report)
                {
                    return Err(err);
                }
            }
        }
        self.set_phase(Phase::Diffusion, "LLM memory released");
        report.milliseconds = self.record_switch(Phase::Diffusion, started, &report.unloaded, &[]);
        Ok((report, None))
    }

    /// Step 1: the LLMs Ollama holds. `None` when Ollama cannot be asked and the job renders anyway (a warning
    /// says so); an error only when the switch was asked for explicitly (`force`).
    async fn resident_models(
        &self,
        force: bool,
        previous: Phase,
        on_stage: &mut (dyn FnMut(Progress) + Send),
        report: &mut SwitchReport,
    ) -> Result<Option<Vec<LoadedModel>>, SwitchError> {
        match self.inner.ollama.loaded_with(Retry::QUICK).await {
            Ok(models) => {
                self.ollama_reachable();
                Ok(Some(models))
            }
            Err(error) if force => {
                self.count_error();
                self.set_phase(previous, "Ollama could not be asked");
                Err(SwitchError::Ollama(error))
            }
            Err(error) => {
                let warning = match &error {
                    OllamaError::Unreachable { .. } | OllamaError::Timeout { .. } => {
                        self.ollama_unreachable(&error)
                    }
                    other => {
                        self.count_error();
                        Some(format!(
                            "cannot list Ollama's models ({other}); rendering anyway"
                        ))
                    }
                };
                if let Some(message) = warning {
                    on_stage(Progress::Warning {
                        message: message.clone(),
                    });
                    report.warnings.push(message);
                }
                self.set_phase(Phase::Diffusion, "Ollama could not be asked");
                Ok(None)
            }
        }
    }

    /// Step 2: how many bytes must be freed, or the budget the job gets beside the LLMs (sharing).
    fn room_for(
        &self,
        need: Need<'_>,
        policy: Policy,
        loaded: &[LoadedModel],
        reading: Option<&GpuReading>,
        on_stage: &mut (dyn FnMut(Progress) + Send),
    ) -> (f64, Option<f64>) {
        match (need, reading) {
            (Need::Bytes(bytes), _) => (bytes, None),
            (Need::Planned(planner), Some(reading)) => {
                let free_now = self.free_for_diffusion(reading);
                let llm_bytes: f64 = loaded.iter().map(|m| m.size_vram as f64).sum();
                let swap_cost = crate::share::swap_seconds(
                    stats_of(&self.state()).average_switch_ms,
                    llm_bytes,
                );
                let room = if loaded.is_empty() {
                    Room::Share {
                        budget_bytes: free_now,
                        why: String::new(),
                    }
                } else {
                    crate::share::decide(policy, free_now, llm_bytes, swap_cost, planner)
                };
                if !room.why().is_empty() {
                    on_stage(Progress::Preparing {
                        message: room.why().to_string(),
                    });
                }
                match room {
                    Room::Share { budget_bytes, .. } => {
                        self.state().budget = Some(budget_bytes);
                        (0.0, Some(budget_bytes))
                    }
                    Room::Swap { need_bytes, .. } => (need_bytes, None),
                }
            }
            // No reading: nothing proves there is room beside the LLMs.
            (Need::Planned(planner), None) => (planner(f64::INFINITY).vram_bytes, None),
        }
    }

    /// Step 3: unloads each chosen model and waits until Ollama no longer lists it. A model asked to go is ours to
    /// restore from then on, whatever happens next.
    async fn unload(
        &self,
        victims: &[LoadedModel],
        config: &VramConfig,
        previous: Phase,
        deadline: Instant,
        on_stage: &mut (dyn FnMut(Progress) + Send),
        report: &mut SwitchReport,
    ) -> Result<Released, SwitchError> {
        let mut released = Released {
            vram_bytes: 0.0,
            confirmed: true,
        };
        for model in victims {
            let gib = model.size_vram as f64 / f64::from(1u32 << 30);
            on_stage(Progress::FreeingVram {
                models: vec![model.name.clone()],
                message: format!(
                    "freeing VRAM: unloading {} from Ollama ({gib:.1} GiB on the GPU) and waiting until the memory is free",
                    model.name
                ),
            });
            if let Err(error) = self.inner.ollama.request_unload(&model.name).await {
                self.count_error();
                let message = format!("could not unload {}: {error}", model.name);
                tracing::warn!("{message}");
                if config.strict {
                    self.set_phase(self.after_failure(previous), "the switch failed");
                    return Err(SwitchError::NotConfirmed(message));
                }
                on_stage(Progress::Warning {
                    message: message.clone(),
                });
                report.warnings.push(message);
                continue;
            }
            let keep_alive = config
                .restore_keep_alive
                .clone()
                .unwrap_or_else(|| model.remaining_keep_alive());
            {
                let mut state = self.state();
                if !state.to_restore.iter().any(|(n, _)| n == &model.name) {
                    state.to_restore.push((model.name.clone(), keep_alive));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !self
                .inner
                .ollama
                .wait_until_unloaded(&model.name, left)
                .await
            {
                let message = format!(
                    "Ollama did not release {} within {:.0} s",
                    model.name,
                    config.unload_timeout.as_secs_f64()
                );
                released.confirmed = false;
                if let Some(err) = self.unconfirmed(config, message, previous, on_stage, report) {
                    return Err(err);
                }
            }
            released.vram_bytes += model.size_vram as f64;
            report.unloaded.push(model.name.clone());
        }
        Ok(released)
    }

    /// An unload that was not confirmed: a warning (the job runs), or under `strict` the error to fail with.
    fn unconfirmed(
        &self,
        config: &VramConfig,
        message: String,
        previous: Phase,
        on_stage: &mut (dyn FnMut(Progress) + Send),
        report: &mut SwitchReport,
    ) -> Option<SwitchError> {
        {
            let mut state = self.state();
            state.counters.errors += 1;
            state.counters.unload_timeouts += 1;
        }
        tracing::warn!("{message}");
        if config.strict {
            self.set_phase(self.after_failure(previous), "the switch was not confirmed");
            return Some(SwitchError::NotConfirmed(format!(
                "{message}; the job was not started (strict VRAM setting)"
            )));
        }
        let message = format!("{message}; rendering anyway");
        self.emit(VramEvent::Warning {
            message: message.clone(),
        });
        on_stage(Progress::Warning {
            message: message.clone(),
        });
        report.warnings.push(message);
        None
    }

    /// The phase after a failed switch: `diffusion` when models were already unloaded (so that giving the GPU
    /// back restores them), else where it was.
    fn after_failure(&self, previous: Phase) -> Phase {
        if self.state().to_restore.is_empty() {
            previous
        } else {
            Phase::Diffusion
        }
    }

    async fn wait_for_free(&self, card: u32, bytes: f64, deadline: Instant) -> bool {
        loop {
            let free = self
                .inner
                .gpu
                .read()
                .ok()
                .and_then(|g| card_of(&g, card).map(|g| g.free_bytes));
            match free {
                Some(free) if free >= bytes => return true,
                None => return true,
                Some(_) => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
