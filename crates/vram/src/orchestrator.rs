//! The orchestrator: who has the GPU right now, and the proven hand-over between Ollama's LLMs and DiffuGen's
//! engine.
//!
//! Turns are a fair read/write lock: LLM requests (through the gateway) share the GPU as readers, a run of
//! diffusion jobs holds it as the writer. A switch (unloading or restoring models) happens under a second lock, so
//! only one switch runs at a time. A diffusion lease is held across back-to-back jobs, so the LLM is not reloaded
//! between two queued jobs; dropping the lease after the queue drains restores the LLMs that were resident before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diffugen_engine::{Engine, Stage};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::gpu::{classify, GpuProbe, Owner};
use crate::ollama::{KeepAlive, LoadedModel, OllamaClient, OllamaError, Retry};
use crate::share::{Fit, Room};
use crate::snapshot::{
    EngineStatus, GpuMeter, GpuStatus, LlmModel, OllamaStatus, PhaseSeconds, Stats, VramEvent,
    VramSnapshot,
};

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

/// Why the GPU could not be handed over.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SwitchError {
    #[error("{0}")]
    NotConfirmed(String),
    #[error("the GPU was not handed back within {seconds:.0} s (a render is still running)")]
    WaitTimedOut { seconds: f64 },
    #[error(transparent)]
    Ollama(#[from] OllamaError),
}

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct SwitchReport {
    pub phase: Phase,
    pub unloaded: Vec<String>,
    pub restored: Vec<String>,
    pub milliseconds: f64,
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Counters {
    switches: u32,
    requests: u32,
    errors: u32,
    unload_timeouts: u32,
    switch_ms: Vec<f64>,
    seconds: [f64; 4],
}

struct State {
    phase: Phase,
    since: Instant,
    counters: Counters,
    /// LLMs DiffuGen unloaded, with the keep-alive to restore them with.
    to_restore: Vec<(String, KeepAlive)>,
    /// Set by an explicit switch to diffusion: the queue draining does not restore then.
    pinned: bool,
    llm_waiting: u32,
    /// Whether Ollama was unreachable last time (one warning per outage).
    ollama_down: bool,
    /// When Ollama's state was last learned (a call that answered or failed to connect).
    ollama_checked: Option<Instant>,
    /// The VRAM DiffuGen holds itself to while it shares the GPU with resident LLMs.
    budget: Option<f64>,
    /// The last diffusion job's estimated need, for the meter's fallback.
    last_need: Option<f64>,
}

struct Inner {
    config: Mutex<VramConfig>,
    ollama: OllamaClient,
    gpu: Arc<dyn GpuProbe>,
    engine: Arc<Engine>,
    turns: Arc<RwLock<()>>,
    switch: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    events: broadcast::Sender<VramEvent>,
}

/// The orchestrator. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

/// What a diffusion job needs: a number of bytes, or the memory planner to ask for any amount of free VRAM.
enum Need<'a> {
    Bytes(f64),
    Planned(&'a mut (dyn FnMut(f64) -> Fit + Send)),
}

/// The GPU, held for diffusion. Dropping it after the queue drains restores what was unloaded (per the settings).
pub struct DiffusionLease {
    orchestrator: Orchestrator,
    turn: Option<OwnedRwLockWriteGuard<()>>,
}

impl DiffusionLease {
    /// Gives the GPU back and waits until what was unloaded is restored (a one-shot CLI job uses this; the job
    /// queue simply drops the lease and lets the restore run in the background).
    pub async fn release(mut self) {
        self.turn.take();
        self.orchestrator.after_queue().await;
    }
}

impl Drop for DiffusionLease {
    fn drop(&mut self) {
        if self.turn.take().is_none() {
            return; // released explicitly
        }
        let orchestrator = self.orchestrator.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { orchestrator.after_queue().await });
        }
    }
}

/// The GPU, shared by an LLM request until it is dropped (the gateway drops it when the response has streamed).
pub struct LlmLease {
    _turn: OwnedRwLockReadGuard<()>,
}

impl Orchestrator {
    pub fn new(
        config: VramConfig,
        ollama: OllamaClient,
        gpu: Arc<dyn GpuProbe>,
        engine: Arc<Engine>,
    ) -> Orchestrator {
        let (events, _) = broadcast::channel(256);
        Orchestrator {
            inner: Arc::new(Inner {
                config: Mutex::new(config),
                ollama,
                gpu,
                engine,
                turns: Arc::new(RwLock::new(())),
                switch: tokio::sync::Mutex::new(()),
                state: Mutex::new(State {
                    phase: Phase::Idle,
                    since: Instant::now(),
                    counters: Counters::default(),
                    to_restore: Vec::new(),
                    pinned: false,
                    llm_waiting: 0,
                    ollama_down: false,
                    ollama_checked: None,
                    budget: None,
                    last_need: None,
                }),
                events,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> VramConfig {
        self.inner
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: VramConfig) {
        *self.inner.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    pub fn ollama(&self) -> &OllamaClient {
        &self.inner.ollama
    }

    pub fn phase(&self) -> Phase {
        self.state().phase
    }

    /// Live events: phase changes, switches, warnings, and (with [`Orchestrator::start_meter`]) snapshots.
    pub fn subscribe(&self) -> broadcast::Receiver<VramEvent> {
        self.inner.events.subscribe()
    }

    /// The LLMs DiffuGen unloaded and would restore, with their keep-alive.
    pub fn pending_restore(&self) -> Vec<(String, KeepAlive)> {
        self.state().to_restore.clone()
    }

    /// Sets what a switch to the LLM restores (a one-shot CLI remembers it between runs).
    pub fn set_pending_restore(&self, models: Vec<(String, KeepAlive)>) {
        self.state().to_restore = models;
    }

    /// Whether an LLM request is waiting for the GPU (the job queue then hands it over between jobs).
    pub fn llm_waiting(&self) -> bool {
        self.state().llm_waiting > 0
    }

    fn emit(&self, event: VramEvent) {
        let _ = self.inner.events.send(event);
    }

    fn set_phase(&self, phase: Phase, reason: &str) {
        {
            let mut state = self.state();
            if state.phase == phase {
                return;
            }
            let spent = state.since.elapsed().as_secs_f64();
            let index = state.phase as usize;
            state.counters.seconds[index] += spent;
            state.phase = phase;
            state.since = Instant::now();
        }
        tracing::info!(phase = phase.name(), reason, "VRAM phase");
        self.emit(VramEvent::Phase {
            phase,
            reason: reason.to_string(),
        });
    }

    fn count_error(&self) {
        self.state().counters.errors += 1;
    }

    fn record_switch(
        &self,
        to: Phase,
        started: Instant,
        unloaded: &[String],
        restored: &[String],
    ) -> f64 {
        let milliseconds = started.elapsed().as_secs_f64() * 1000.0;
        {
            let mut state = self.state();
            state.counters.switches += 1;
            state.counters.switch_ms.push(milliseconds);
        }
        self.emit(VramEvent::Switch {
            to,
            milliseconds,
            unloaded: unloaded.to_vec(),
            restored: restored.to_vec(),
        });
        milliseconds
    }

    /// Ollama unreachable: the first time, a warning (log and `on_warning`); every time, the error counter.
    fn ollama_unreachable(&self, error: &OllamaError) -> Option<String> {
        let first = {
            let mut state = self.state();
            state.counters.errors += 1;
            state.ollama_checked = Some(Instant::now());
            !std::mem::replace(&mut state.ollama_down, true)
        };
        first.then(|| {
            let message = format!("{error}; rendering without unloading any LLM");
            tracing::warn!("{message}");
            self.emit(VramEvent::Warning {
                message: message.clone(),
            });
            message
        })
    }

    /// How long a learned "Ollama is not running" is trusted: a job within it does not ask again.
    const OLLAMA_DOWN_TRUSTED: Duration = Duration::from_secs(30);

    /// Whether Ollama is known not to be running (learned within [`Self::OLLAMA_DOWN_TRUSTED`]).
    fn ollama_known_down(&self) -> bool {
        let state = self.state();
        state.ollama_down
            && state
                .ollama_checked
                .is_some_and(|at| at.elapsed() < Self::OLLAMA_DOWN_TRUSTED)
    }

    /// Keeps Ollama's state known without a job paying for it: asks `/api/version` every `interval` (no retries)
    /// and remembers the answer, so a job that finds Ollama down renders without asking it again; any later
    /// success (here, the meter, a switch, the gateway) clears it.
    pub fn start_ollama_watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.every(interval, |orchestrator| async move {
            let answer = orchestrator.inner.ollama.version_with(Retry::NONE).await;
            orchestrator.learn_ollama(answer.as_ref().err());
        })
    }

    /// Runs `tick` about every `interval` until the orchestrator is dropped.
    fn every<F, Fut>(&self, interval: Duration, tick: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Orchestrator) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                tick(Orchestrator { inner }).await;
            }
        })
    }

    /// Remembers whether Ollama answered (`None`) or could not be reached; other errors say nothing about it.
    fn learn_ollama(&self, error: Option<&OllamaError>) {
        match error {
            None => self.ollama_reachable(),
            Some(OllamaError::Unreachable { .. } | OllamaError::Timeout { .. }) => {
                let mut state = self.state();
                if !std::mem::replace(&mut state.ollama_down, true) {
                    tracing::info!(url = self.inner.ollama.url(), "Ollama is not running");
                }
                state.ollama_checked = Some(Instant::now());
            }
            Some(_) => {}
        }
    }

    /// Ollama answered a request someone else made (the gateway): it is running, whatever was learned before.
    pub fn ollama_answered(&self) {
        self.ollama_reachable();
    }

    fn ollama_reachable(&self) {
        self.state().ollama_checked = Some(Instant::now());
        let was_down = std::mem::replace(&mut self.state().ollama_down, false);
        if was_down {
            tracing::info!(url = self.inner.ollama.url(), "Ollama is reachable again");
        }
    }

    /// The first GPU's total memory and what a diffusion job may use there as things stand: what is free plus what
    /// DiffuGen's own worker holds (its model is replaced or reused). Whether Ollama's models go is decided when
    /// the GPU is taken ([`Orchestrator::acquire_diffusion_planned`]). `None` without a GPU reading.
    pub fn gpu_memory_for_diffusion(&self) -> Option<(f64, f64)> {
        let gpus = self.inner.gpu.read().ok()?;
        let gpu = gpus.first()?;
        Some((gpu.total_bytes, self.free_for_diffusion(gpu)))
    }

    /// While DiffuGen shares the GPU with resident LLMs: the VRAM it holds itself to.
    pub fn sharing_budget(&self) -> Option<f64> {
        self.state().budget
    }

    /// Free VRAM plus what DiffuGen's own worker holds.
    fn free_for_diffusion(&self, gpu: &crate::gpu::GpuReading) -> f64 {
        let pids: Vec<u32> = self.inner.engine.current_pid().into_iter().collect();
        let own: f64 = gpu
            .processes
            .iter()
            .filter(|p| pids.contains(&p.pid))
            .filter_map(|p| p.used_bytes)
            .sum();
        (gpu.free_bytes + own).min(gpu.total_bytes)
    }

    /// Takes the GPU for diffusion: waits for LLM requests in flight, then (per the policy) unloads Ollama's
    /// models and waits until their memory is confirmed free. Progress and warnings go to `on_stage` as job
    /// stages. Fails only under the `strict` setting; otherwise problems become warnings and the job runs.
    pub async fn acquire_diffusion(
        &self,
        need_bytes: f64,
        on_stage: &mut (dyn FnMut(Stage) + Send),
    ) -> Result<DiffusionLease, SwitchError> {
        self.acquire(Need::Bytes(need_bytes), on_stage)
            .await
            .map(|(lease, _)| lease)
    }

    /// Like [`Orchestrator::acquire_diffusion`], with the job's memory planner: `planner(free)` says what the job
    /// would need and take with `free` bytes of VRAM. Under `auto` and `share` the job may render beside the
    /// resident LLMs (see [`crate::share`]); the answer is the VRAM the job may then use (`None`: what is free).
    pub async fn acquire_diffusion_planned(
        &self,
        planner: &mut (dyn FnMut(f64) -> Fit + Send),
        on_stage: &mut (dyn FnMut(Stage) + Send),
    ) -> Result<(DiffusionLease, Option<f64>), SwitchError> {
        self.acquire(Need::Planned(planner), on_stage).await
    }

    async fn acquire(
        &self,
        need: Need<'_>,
        on_stage: &mut (dyn FnMut(Stage) + Send),
    ) -> Result<(DiffusionLease, Option<f64>), SwitchError> {
        self.state().counters.requests += 1;
        let turn = match self.inner.turns.clone().try_write_owned() {
            Ok(turn) => turn,
            Err(_) => {
                on_stage(Stage::Preparing {
                    message: "waiting for the GPU: the LLM is answering a request".into(),
                });
                self.inner.turns.clone().write_owned().await
            }
        };
        let lease = DiffusionLease {
            orchestrator: self.clone(),
            turn: Some(turn),
        };
        let _switch = self.inner.switch.lock().await;
        if let Need::Bytes(bytes) = need {
            self.state().last_need = Some(bytes);
        }
        if self.phase() == Phase::Diffusion {
            let budget = self.state().budget;
            return Ok((lease, budget));
        }
        let budget = self.make_room(need, false, on_stage).await?.1;
        Ok((lease, budget))
    }

    /// Unloads what the policy (or `force`) says must go and confirms its memory is free; ends in `diffusion`.
    async fn make_room(
        &self,
        need: Need<'_>,
        force: bool,
        on_stage: &mut (dyn FnMut(Stage) + Send),
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
        on_stage(Stage::Preparing {
            message: "checking what holds the GPU".into(),
        });
        let loaded = match self.inner.ollama.loaded_with(Retry::QUICK).await {
            Ok(models) => {
                self.ollama_reachable();
                models
            }
            Err(error) if force => {
                self.count_error();
                self.set_phase(previous, "Ollama could not be asked");
                return Err(SwitchError::Ollama(error));
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
                    on_stage(Stage::Warning {
                        message: message.clone(),
                    });
                    report.warnings.push(message);
                }
                self.set_phase(Phase::Diffusion, "Ollama could not be asked");
                return Ok((report, None));
            }
        };
        let gpu = self.inner.gpu.read();
        let (need_bytes, budget) = match (need, gpu.as_ref().ok().and_then(|g| g.first())) {
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
                    on_stage(Stage::Preparing {
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
        };
        let victims = choose_victims(policy, &loaded, gpu.as_ref().ok(), need_bytes);
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
        let free_before = gpu
            .as_ref()
            .ok()
            .and_then(|g| g.first())
            .map(|g| g.free_bytes);
        let deadline = Instant::now() + config.unload_timeout;
        let mut released_vram = 0.0;
        let mut all_confirmed = true;
        for model in &victims {
            let gib = model.size_vram as f64 / f64::from(1u32 << 30);
            on_stage(Stage::FreeingVram {
                models: vec![model.name.clone()],
                message: format!(
                    "freeing VRAM: unloading {} from Ollama ({gib:.1} GiB on the GPU) and waiting until the memory is free",
                    model.name
                ),
            });
            match self.inner.ollama.request_unload(&model.name).await {
                Ok(()) => {}
                Err(error) => {
                    self.count_error();
                    let message = format!("could not unload {}: {error}", model.name);
                    tracing::warn!("{message}");
                    if config.strict {
                        self.set_phase(self.after_failure(previous), "the switch failed");
                        return Err(SwitchError::NotConfirmed(message));
                    }
                    on_stage(Stage::Warning {
                        message: message.clone(),
                    });
                    report.warnings.push(message);
                    continue;
                }
            }
            // Asked to go: from now on it is ours to bring back, whatever happens next.
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
                all_confirmed = false;
                if let Some(err) =
                    self.unconfirmed(&config, message, previous, on_stage, &mut report)
                {
                    return Err(err);
                }
            }
            released_vram += model.size_vram as f64;
            report.unloaded.push(model.name.clone());
        }
        // Where NVML works, the model leaving /api/ps is not enough: wait for the driver to show the memory back.
        if let Some(before) = free_before.filter(|_| all_confirmed) {
            let expected = before + 0.75 * released_vram;
            if released_vram > 0.0 && !self.wait_for_free(expected, deadline).await {
                let message = format!(
                    "the GPU's free memory did not rise by {:.1} GiB within {:.0} s",
                    0.75 * released_vram / f64::from(1u32 << 30),
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

    /// An unload that was not confirmed: a warning (the job runs), or under `strict` the error to fail with.
    fn unconfirmed(
        &self,
        config: &VramConfig,
        message: String,
        previous: Phase,
        on_stage: &mut (dyn FnMut(Stage) + Send),
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
        on_stage(Stage::Warning {
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

    async fn wait_for_free(&self, bytes: f64, deadline: Instant) -> bool {
        loop {
            let free = self
                .inner
                .gpu
                .read()
                .ok()
                .and_then(|g| g.first().map(|g| g.free_bytes));
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

    /// After a diffusion lease is dropped: unless a new job took the GPU again, restore the LLMs (or go idle).
    async fn after_queue(&self) {
        let _switch = self.inner.switch.lock().await;
        let Ok(_turn) = self.inner.turns.clone().try_read_owned() else {
            return; // a job took the GPU again: no reload between queued jobs
        };
        let (phase, pinned, pending) = {
            let mut state = self.state();
            state.budget = None;
            (state.phase, state.pinned, !state.to_restore.is_empty())
        };
        // `switching` here means a switch whose job was cancelled half-way (the switch lock is ours now).
        if !matches!(phase, Phase::Diffusion | Phase::Switching) || pinned {
            return;
        }
        if pending && self.config().after_queue == AfterQueue::Restore {
            self.hand_to_llm("the queue is empty").await;
        } else {
            self.set_phase(Phase::Idle, "the queue is empty");
        }
    }

    /// Frees the engine's memory and restores the LLMs DiffuGen unloaded. Call with the switch lock held.
    async fn hand_to_llm(&self, reason: &str) -> SwitchReport {
        let started = Instant::now();
        self.set_phase(Phase::Switching, reason);
        // Ending the worker returns every byte it held, the CUDA context included; the next job starts a new one.
        self.inner.engine.stop().await;
        let pending = std::mem::take(&mut self.state().to_restore);
        let mut report = SwitchReport {
            phase: Phase::Llm,
            unloaded: Vec::new(),
            restored: Vec::new(),
            milliseconds: 0.0,
            warnings: Vec::new(),
        };
        if self.config().after_queue == AfterQueue::Restore || reason == EXPLICIT {
            for (model, keep_alive) in pending {
                match self.inner.ollama.load(&model, &keep_alive).await {
                    Ok(()) => {
                        tracing::info!(%model, %keep_alive, "restored in Ollama");
                        report.restored.push(model);
                    }
                    Err(error) => {
                        self.count_error();
                        let message = format!("could not restore {model} in Ollama: {error}");
                        tracing::warn!("{message}");
                        self.emit(VramEvent::Warning {
                            message: message.clone(),
                        });
                        report.warnings.push(message);
                    }
                }
            }
        }
        self.state().pinned = false;
        self.set_phase(Phase::Llm, reason);
        report.milliseconds = self.record_switch(Phase::Llm, started, &[], &report.restored);
        report
    }

    /// Takes a shared turn on the GPU for an LLM request: waits (up to the configured timeout) for a render to
    /// finish, then makes sure the engine has freed its memory.
    pub async fn acquire_llm(&self) -> Result<LlmLease, SwitchError> {
        let wait = self.config().llm_wait_timeout;
        // Counted while waiting, and uncounted however the wait ends (a client that hangs up drops this future).
        struct Waiting<'a>(&'a Orchestrator);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.state().llm_waiting -= 1;
            }
        }
        self.state().llm_waiting += 1;
        let waiting = Waiting(self);
        let turn = tokio::time::timeout(wait, self.inner.turns.clone().read_owned()).await;
        drop(waiting);
        let turn = turn.map_err(|_| {
            self.count_error();
            SwitchError::WaitTimedOut {
                seconds: wait.as_secs_f64(),
            }
        })?;
        self.state().counters.requests += 1;
        if self.phase() != Phase::Llm && self.config().policy != Policy::Never {
            let _switch = self.inner.switch.lock().await;
            if self.phase() != Phase::Llm {
                self.hand_to_llm("an LLM request arrived").await;
            }
        }
        Ok(LlmLease { _turn: turn })
    }

    /// `diffugen vram switch llm`: waits for a render to finish, frees the engine's memory and restores the LLMs.
    pub async fn switch_to_llm(&self) -> Result<SwitchReport, SwitchError> {
        let wait = self.config().llm_wait_timeout;
        let _turn = tokio::time::timeout(wait, self.inner.turns.clone().read_owned())
            .await
            .map_err(|_| SwitchError::WaitTimedOut {
                seconds: wait.as_secs_f64(),
            })?;
        let _switch = self.inner.switch.lock().await;
        Ok(self.hand_to_llm(EXPLICIT).await)
    }

    /// `diffugen vram switch diffusion`: waits for LLM requests in flight, unloads every resident LLM and confirms
    /// the memory is free. The GPU stays with diffusion until an LLM request or a switch back.
    pub async fn switch_to_diffusion(&self) -> Result<SwitchReport, SwitchError> {
        let _turn = self.inner.turns.clone().write_owned().await;
        let _switch = self.inner.switch.lock().await;
        let (report, _) = self.make_room(Need::Bytes(0.0), true, &mut |_| {}).await?;
        self.state().pinned = true;
        Ok(report)
    }

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
        let engine_pid = self.inner.engine.current_pid();
        let loaded_model = self.inner.engine.loaded_model();
        let config = self.config();
        let state = self.state();
        let models: Vec<LlmModel> = loaded
            .as_ref()
            .map(|l| l.iter().map(LlmModel::from).collect())
            .unwrap_or_default();
        let ollama_vram = models.iter().fold(0.0, |sum, m| sum + m.vram_bytes);
        let estimate = loaded_model.as_ref().and(state.last_need);
        let mut own = vec![std::process::id()];
        own.extend(engine_pid);
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

fn stats_of(state: &State) -> Stats {
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

const EXPLICIT: &str = "switched to the LLM on request";

/// Which resident models must go for a job that needs `need_bytes`.
fn choose_victims(
    policy: Policy,
    loaded: &[LoadedModel],
    gpu: Option<&Vec<crate::gpu::GpuReading>>,
    need_bytes: f64,
) -> Vec<LoadedModel> {
    match policy {
        Policy::Never => Vec::new(),
        Policy::Always => loaded.to_vec(),
        Policy::Auto | Policy::Share => {
            let on_gpu = || loaded.iter().filter(|m| m.size_vram > 0).cloned();
            match gpu.and_then(|g| g.first()) {
                // No GPU reading: nothing proves there is room, so anything on the GPU goes.
                None => on_gpu().collect(),
                Some(reading) => {
                    let mut free = reading.free_bytes;
                    let mut victims: Vec<LoadedModel> = on_gpu().collect();
                    victims.sort_by_key(|m| std::cmp::Reverse(m.size_vram));
                    let mut chosen = Vec::new();
                    for model in victims {
                        if free >= need_bytes {
                            break;
                        }
                        free += model.size_vram as f64;
                        chosen.push(model);
                    }
                    chosen
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, gib: f64) -> LoadedModel {
        let bytes = (gib * f64::from(1u32 << 30)) as u64;
        LoadedModel {
            name: name.into(),
            model: name.into(),
            size: bytes,
            size_vram: bytes,
            expires_at: None,
        }
    }

    fn gpu(free_gib: f64) -> Vec<crate::gpu::GpuReading> {
        vec![crate::gpu::GpuReading {
            index: 0,
            name: "sim".into(),
            total_bytes: 8.0 * f64::from(1u32 << 30),
            used_bytes: (8.0 - free_gib) * f64::from(1u32 << 30),
            free_bytes: free_gib * f64::from(1u32 << 30),
            processes: Vec::new(),
        }]
    }

    const GIB: f64 = 1073741824.0;

    #[test]
    fn auto_unloads_nothing_when_the_job_fits_and_the_largest_model_first_when_it_does_not() {
        let loaded = vec![model("small", 1.0), model("qwen", 4.7)];
        assert!(choose_victims(Policy::Auto, &loaded, Some(&gpu(3.0)), 2.0 * GIB).is_empty());
        let victims = choose_victims(Policy::Auto, &loaded, Some(&gpu(1.0)), 4.0 * GIB);
        assert_eq!(
            victims.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["qwen"]
        );
        let victims = choose_victims(Policy::Auto, &loaded, Some(&gpu(1.0)), 6.5 * GIB);
        assert_eq!(victims.len(), 2);
    }

    #[test]
    fn auto_without_a_gpu_reading_unloads_what_is_on_the_gpu_but_not_cpu_only_models() {
        let mut cpu_only = model("cpu", 2.0);
        cpu_only.size_vram = 0;
        let loaded = vec![cpu_only, model("qwen", 4.7)];
        let victims = choose_victims(Policy::Auto, &loaded, None, GIB);
        assert_eq!(
            victims.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["qwen"]
        );
    }

    #[test]
    fn always_and_never_do_what_they_say() {
        let loaded = vec![model("a", 1.0), model("b", 1.0)];
        assert_eq!(
            choose_victims(Policy::Always, &loaded, Some(&gpu(7.0)), 0.0).len(),
            2
        );
        assert!(choose_victims(Policy::Never, &loaded, Some(&gpu(0.0)), 8.0 * GIB).is_empty());
    }

    #[test]
    fn policies_and_after_queue_actions_parse_with_clear_errors() {
        assert_eq!("AUTO".parse::<Policy>(), Ok(Policy::Auto));
        assert!("sometimes"
            .parse::<Policy>()
            .unwrap_err()
            .contains("always, auto, share or never"));
        assert_eq!("leave".parse::<AfterQueue>(), Ok(AfterQueue::Leave));
        assert!("drop"
            .parse::<AfterQueue>()
            .unwrap_err()
            .contains("restore or leave"));
    }
}
