//! The orchestrator: who has the GPU right now, and the proven hand-over between Ollama's LLMs and DiffuGen's
//! engine.
//!
//! Turns are a fair read/write lock: LLM requests (through the gateway) share the GPU as readers, a run of
//! diffusion jobs holds it as the writer. A switch (unloading or restoring models) happens under a second lock, so
//! only one switch runs at a time. A diffusion lease is held across back-to-back jobs, so the LLM is not reloaded
//! between two queued jobs; dropping the lease after the queue drains restores the LLMs that were resident before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::diffusion::{DiffusionEngine, Progress};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

pub use crate::config::{AfterQueue, Phase, Policy, SwitchTarget, VramConfig};
use crate::gpu::GpuProbe;
use crate::ollama::{KeepAlive, LoadedModel, OllamaClient, OllamaError, Retry};
use crate::share::Fit;
use crate::snapshot::VramEvent;

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
    /// The card whose lane holds (or last held) the diffusion turn: its worker is the one ended when the GPU goes
    /// back to the LLMs.
    turn_card: Option<u32>,
    /// The card the LLMs live on, as NVML last showed Ollama's processes (the first card until seen): a lane there
    /// always takes its turn.
    llm_card: u32,
}

struct Inner {
    config: Mutex<VramConfig>,
    ollama: OllamaClient,
    gpu: Arc<dyn GpuProbe>,
    /// Each GPU lane's engine with its card, the first one's first (it stands for a single-lane setup).
    engines: Vec<(u32, Arc<dyn DiffusionEngine>)>,
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
    /// The orchestrator of one engine on the first card.
    pub fn new(
        config: VramConfig,
        ollama: OllamaClient,
        gpu: Arc<dyn GpuProbe>,
        engine: Arc<dyn DiffusionEngine>,
    ) -> Orchestrator {
        Orchestrator::with_cards(config, ollama, gpu, vec![(0, engine)])
    }

    /// The orchestrator of several GPU lanes: `engines` pairs each lane's engine with its card (NVML's index); the
    /// first stands for the setup where one is meant (the meter's engine line, an explicit switch). Empty: no
    /// engine is tracked.
    pub fn with_cards(
        config: VramConfig,
        ollama: OllamaClient,
        gpu: Arc<dyn GpuProbe>,
        engines: Vec<(u32, Arc<dyn DiffusionEngine>)>,
    ) -> Orchestrator {
        let (events, _) = broadcast::channel(256);
        let llm_card = engines.first().map_or(0, |(card, _)| *card);
        Orchestrator {
            inner: Arc::new(Inner {
                config: Mutex::new(config),
                ollama,
                gpu,
                engines,
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
                    turn_card: None,
                    llm_card,
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
        self.gpu_memory_for_diffusion_on(self.first_card())
    }

    /// [`Orchestrator::gpu_memory_for_diffusion`] for card `card` (NVML's index). `None` without a reading of it.
    pub fn gpu_memory_for_diffusion_on(&self, card: u32) -> Option<(f64, f64)> {
        let gpus = self.inner.gpu.read().ok()?;
        let gpu = card_of(&gpus, card)?;
        Some((gpu.total_bytes, self.free_for_diffusion(gpu)))
    }

    /// Whether a job on card `card` must take its turn with the LLMs: on the LLMs' card, on one where NVML shows
    /// an Ollama process, or where it cannot tell (no reading of the card, or memory in use that no listed process
    /// explains). A lane on another card renders beside the LLMs without asking.
    pub fn needs_turn(&self, card: u32) -> bool {
        if card == self.state().llm_card {
            return true;
        }
        let Ok(gpus) = self.inner.gpu.read() else {
            return true;
        };
        self.learn_llm_card(&gpus);
        let Some(gpu) = card_of(&gpus, card) else {
            return true;
        };
        let listed: f64 = gpu.processes.iter().filter_map(|p| p.used_bytes).sum();
        let unexplained = gpu.used_bytes - listed - UNLISTED_SLACK;
        card == self.state().llm_card
            || gpu.processes.iter().any(crate::gpu::is_ollama)
            || (gpu.processes.is_empty() && unexplained > 0.0)
    }

    /// The worker processes of every lane's engine, while they run.
    fn worker_pids(&self) -> Vec<u32> {
        self.inner
            .engines
            .iter()
            .filter_map(|(_, engine)| engine.worker_pid())
            .collect()
    }

    /// The card whose lane the first engine is.
    fn first_card(&self) -> u32 {
        self.inner.engines.first().map_or(0, |(card, _)| *card)
    }

    /// Remembers the card where NVML shows the most of Ollama's memory as the LLMs' card.
    fn learn_llm_card(&self, gpus: &[crate::gpu::GpuReading]) {
        let ollama = |g: &crate::gpu::GpuReading| -> f64 {
            g.processes
                .iter()
                .filter(|p| crate::gpu::is_ollama(p))
                .map(|p| p.used_bytes.unwrap_or(1.0))
                .sum()
        };
        let home = gpus
            .iter()
            .map(|g| (g.index, ollama(g)))
            .filter(|(_, bytes)| *bytes > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((card, _)) = home {
            let mut state = self.state();
            if state.llm_card != card {
                tracing::info!(
                    card,
                    "the LLMs live on this GPU: its lane takes turns with them"
                );
                state.llm_card = card;
            }
        }
    }

    /// Every GPU as NVML reads it now (none without an NVIDIA GPU).
    pub fn gpus(&self) -> Vec<crate::gpu::GpuReading> {
        self.inner.gpu.read().unwrap_or_default()
    }

    /// While DiffuGen shares the GPU with resident LLMs: the VRAM it holds itself to.
    pub fn sharing_budget(&self) -> Option<f64> {
        self.state().budget
    }

    /// Free VRAM plus what DiffuGen's own workers hold there.
    fn free_for_diffusion(&self, gpu: &crate::gpu::GpuReading) -> f64 {
        let pids = self.worker_pids();
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
        on_stage: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<DiffusionLease, SwitchError> {
        self.acquire(Need::Bytes(need_bytes), self.first_card(), on_stage)
            .await
            .map(|(lease, _)| lease)
    }

    /// Like [`Orchestrator::acquire_diffusion`], with the job's memory planner: `planner(free)` says what the job
    /// would need and take with `free` bytes of VRAM. Under `auto` and `share` the job may render beside the
    /// resident LLMs (see [`crate::share`]); the answer is the VRAM the job may then use (`None`: what is free).
    pub async fn acquire_diffusion_planned(
        &self,
        planner: &mut (dyn FnMut(f64) -> Fit + Send),
        on_stage: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(DiffusionLease, Option<f64>), SwitchError> {
        self.acquire(Need::Planned(planner), self.first_card(), on_stage)
            .await
    }

    /// [`Orchestrator::acquire_diffusion_planned`] for a lane on card `card`: the room is made and confirmed on
    /// that card, and its worker is the one ended when the GPU goes back to the LLMs.
    pub async fn acquire_diffusion_planned_on(
        &self,
        card: u32,
        planner: &mut (dyn FnMut(f64) -> Fit + Send),
        on_stage: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(DiffusionLease, Option<f64>), SwitchError> {
        self.acquire(Need::Planned(planner), card, on_stage).await
    }

    async fn acquire(
        &self,
        need: Need<'_>,
        card: u32,
        on_stage: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(DiffusionLease, Option<f64>), SwitchError> {
        self.state().counters.requests += 1;
        let turn = match self.inner.turns.clone().try_write_owned() {
            Ok(turn) => turn,
            Err(_) => {
                on_stage(Progress::Preparing {
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
        self.state().turn_card = Some(card);
        if let Need::Bytes(bytes) = need {
            self.state().last_need = Some(bytes);
        }
        if self.phase() == Phase::Diffusion {
            let budget = self.state().budget;
            return Ok((lease, budget));
        }
        let budget = self.make_room(need, false, card, on_stage).await?.1;
        Ok((lease, budget))
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
            self.hand_to_llm(HandOver::QueueEmpty).await;
        } else {
            self.set_phase(Phase::Idle, "the queue is empty");
        }
    }

    /// Frees the engine's memory and restores the LLMs DiffuGen unloaded. Call with the switch lock held.
    async fn hand_to_llm(&self, why: HandOver) -> SwitchReport {
        let started = Instant::now();
        self.set_phase(Phase::Switching, why.reason());
        // Ending the worker returns every byte it held, the CUDA context included; the next job starts a new one.
        // The worker is the one on the card that held the turn (the LLMs' card for an explicit switch).
        let card = {
            let state = self.state();
            state.turn_card.unwrap_or(state.llm_card)
        };
        let engine = self.inner.engines.iter().find(|(c, _)| *c == card);
        if let Some((_, engine)) = engine.or(self.inner.engines.first()) {
            engine.stop().await;
        }
        self.state().turn_card = None;
        let pending = std::mem::take(&mut self.state().to_restore);
        let mut report = SwitchReport {
            phase: Phase::Llm,
            unloaded: Vec::new(),
            restored: Vec::new(),
            milliseconds: 0.0,
            warnings: Vec::new(),
        };
        if self.config().after_queue == AfterQueue::Restore || why == HandOver::Explicit {
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
        self.set_phase(Phase::Llm, why.reason());
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
                self.hand_to_llm(HandOver::LlmRequest).await;
            }
        }
        Ok(LlmLease { _turn: turn })
    }

    /// An explicit switch to `target` (the app's buttons, `POST /api/v1/vram/{llm,diffusion}`, `diffugen vram
    /// switch`).
    pub async fn switch_to(&self, target: SwitchTarget) -> Result<SwitchReport, SwitchError> {
        match target {
            SwitchTarget::Llm => self.switch_to_llm().await,
            SwitchTarget::Diffusion => self.switch_to_diffusion().await,
        }
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
        Ok(self.hand_to_llm(HandOver::Explicit).await)
    }

    /// `diffugen vram switch diffusion`: waits for LLM requests in flight, unloads every resident LLM and confirms
    /// the memory is free. The GPU stays with diffusion until an LLM request or a switch back.
    pub async fn switch_to_diffusion(&self) -> Result<SwitchReport, SwitchError> {
        let _turn = self.inner.turns.clone().write_owned().await;
        let _switch = self.inner.switch.lock().await;
        let card = self.state().llm_card;
        self.state().turn_card = Some(card);
        let (report, _) = self
            .make_room(Need::Bytes(0.0), true, card, &mut |_| {})
            .await?;
        self.state().pinned = true;
        Ok(report)
    }
}

/// Why the GPU goes back to the LLMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandOver {
    /// The queue drained: the LLMs come back when the policy says to restore them.
    QueueEmpty,
    /// A chat request through the gateway waits for the GPU.
    LlmRequest,
    /// Someone asked for the switch: the LLMs come back whatever the policy.
    Explicit,
}

impl HandOver {
    /// The reason the phase event gives.
    fn reason(self) -> &'static str {
        match self {
            HandOver::QueueEmpty => "the queue is empty",
            HandOver::LlmRequest => "an LLM request arrived",
            HandOver::Explicit => "switched to the LLM on request",
        }
    }
}

/// Memory in use on a card that lists no process, below which it is taken for the driver's and the desktop's own.
const UNLISTED_SLACK: f64 = 512.0 * 1024.0 * 1024.0;

/// Card `card` among `gpus` (NVML's index).
fn card_of(gpus: &[crate::gpu::GpuReading], card: u32) -> Option<&crate::gpu::GpuReading> {
    gpus.iter().find(|g| g.index == card)
}

/// Which resident models must go for a job that needs `need_bytes` on the card read as `gpu`.
fn choose_victims(
    policy: Policy,
    loaded: &[LoadedModel],
    gpu: Option<&crate::gpu::GpuReading>,
    need_bytes: f64,
) -> Vec<LoadedModel> {
    match policy {
        Policy::Never => Vec::new(),
        Policy::Always => loaded.to_vec(),
        Policy::Auto | Policy::Share => {
            let on_gpu = || loaded.iter().filter(|m| m.size_vram > 0).cloned();
            match gpu {
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

mod handover;
mod meter;
use meter::stats_of;

#[cfg(test)]
mod tests;
