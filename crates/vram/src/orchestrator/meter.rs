//! The meter: the orchestrator's snapshot (GPU memory split into LLM / DiffuGen / other / free, resident LLMs,
//! engine, phase, statistics), sampled while anyone listens.

use std::time::Duration;

use super::{Orchestrator, State};
use crate::gpu::{classify, Owner};
use crate::ollama::Retry;
use crate::snapshot::{
    EngineStatus, GpuMeter, GpuStatus, LlmModel, OllamaStatus, PhaseSeconds, Stats, VramEvent,
    VramSnapshot,
};

impl Orchestrator {
    /// Everything the meter and `diffugen vram status` show.
    pub async fn snapshot(&self) -> VramSnapshot {
        let ollama = self.inner.ollama.clone();
        let (version, loaded) = tokio::join!(
            ollama.version_with(Retry::NONE),
            ollama.loaded_with(Retry::NONE)
        );
        self.learn_ollama(version.as_ref().err());
        let gpu = {
            let probe = self.inner.gpu.clone();
            tokio::task::spawn_blocking(move || probe.read())
                .await
                .unwrap_or_else(|e| Err(format!("the GPU reading failed: {e}")))
        };
        if let Ok(gpus) = &gpu {
            self.learn_llm_card(gpus);
        }
        let first = self.inner.engines.first().map(|(_, engine)| engine);
        let engine_pid = first.and_then(|e| e.worker_pid());
        let loaded_model = first.and_then(|e| e.loaded_model());
        let config = self.config();
        let state = self.state();
        let models: Vec<LlmModel> = loaded
            .as_ref()
            .map(|l| l.iter().map(LlmModel::from).collect())
            .unwrap_or_default();
        let ollama_vram = models.iter().fold(0.0, |sum, m| sum + m.vram_bytes);
        let estimate = loaded_model.as_ref().and(state.last_need);
        let mut own = vec![std::process::id()];
        own.extend(self.worker_pids());
        let gpu = match gpu {
            Ok(gpus) => GpuStatus {
                available: true,
                message: None,
                llm_bytes: 0.0,
                diffugen_bytes: 0.0,
                gpus: gpus
                    .into_iter()
                    .map(|mut g| {
                        for p in &mut g.processes {
                            classify(p, &own);
                        }
                        GpuMeter::split(g, ollama_vram)
                    })
                    .collect(),
            }
            .with_totals(),
            Err(message) => GpuStatus {
                available: false,
                message: Some(message),
                gpus: Vec::new(),
                llm_bytes: ollama_vram,
                diffugen_bytes: estimate.unwrap_or(0.0),
            },
        };
        VramSnapshot {
            phase: state.phase,
            phase_seconds: state.since.elapsed().as_secs_f64(),
            policy: config.policy,
            after_queue: config.after_queue,
            strict: config.strict,
            gpu,
            ollama: OllamaStatus {
                url: ollama.url().to_string(),
                reachable: version.is_ok(),
                version: version.as_ref().ok().cloned(),
                error: version.err().or(loaded.err()).map(|e| e.to_string()),
                models,
            },
            engine: EngineStatus {
                worker_pid: engine_pid,
                loaded_model,
                estimated_bytes: estimate,
                budget_bytes: state.budget,
            },
            pending_restore: state.to_restore.iter().map(|(n, _)| n.clone()).collect(),
            llm_requests_waiting: state.llm_waiting,
            stats: stats_of(&state),
        }
    }

    /// The statistics alone (for `/health`): no I/O.
    pub async fn stats(&self) -> Stats {
        stats_of(&self.state())
    }

    /// Samples a snapshot about every `interval` while anyone listens, as [`VramEvent::Snapshot`].
    pub fn start_meter(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.every(interval, |orchestrator| async move {
            if orchestrator.inner.events.receiver_count() == 0 {
                return;
            }
            let snapshot = orchestrator.snapshot().await;
            orchestrator.emit(VramEvent::Snapshot {
                snapshot: Box::new(snapshot),
            });
        })
    }
}

pub(super) fn stats_of(state: &State) -> Stats {
    let counters = &state.counters;
    let mut seconds = counters.seconds;
    seconds[state.phase as usize] += state.since.elapsed().as_secs_f64();
    let switches = &counters.switch_ms;
    Stats {
        switches: counters.switches,
        requests: counters.requests,
        errors: counters.errors,
        unload_timeouts: counters.unload_timeouts,
        last_switch_ms: switches.last().copied(),
        average_switch_ms: (!switches.is_empty())
            .then(|| switches.iter().fold(0.0, |sum, ms| sum + ms) / switches.len() as f64),
        max_switch_ms: switches.iter().copied().reduce(f64::max),
        seconds_in: PhaseSeconds {
            idle: seconds[0],
            llm: seconds[1],
            switching: seconds[2],
            diffusion: seconds[3],
        },
    }
}

impl GpuStatus {
    fn with_totals(mut self) -> GpuStatus {
        self.llm_bytes = self.gpus.iter().fold(0.0, |sum, g| sum + g.llm_bytes);
        self.diffugen_bytes = self.gpus.iter().fold(0.0, |sum, g| sum + g.diffugen_bytes);
        self
    }
}

impl GpuMeter {
    /// Splits a GPU's used memory into LLM / DiffuGen / other. Where the driver does not say what Ollama's
    /// processes use, Ollama's own `size_vram` stands in.
    fn split(reading: crate::gpu::GpuReading, ollama_vram: f64) -> GpuMeter {
        let sum = |owner: Owner| -> Option<f64> {
            let mut any = false;
            let total = reading
                .processes
                .iter()
                .filter(|p| p.owner == owner)
                .filter_map(|p| p.used_bytes)
                .inspect(|_| any = true)
                .sum::<f64>();
            any.then_some(total)
        };
        let llm_bytes = sum(Owner::Ollama).unwrap_or(ollama_vram);
        let diffugen_bytes = sum(Owner::Diffugen).unwrap_or(0.0);
        let other_bytes = (reading.used_bytes - llm_bytes - diffugen_bytes).max(0.0);
        GpuMeter {
            index: reading.index,
            name: reading.name,
            total_bytes: reading.total_bytes,
            used_bytes: reading.used_bytes,
            free_bytes: reading.free_bytes,
            llm_bytes,
            diffugen_bytes,
            other_bytes,
            processes: reading.processes,
        }
    }
}
