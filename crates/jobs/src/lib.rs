//! The job queue shared by every front door (HTTP routes now, the desktop app and CLI-against-a-server later).
//!
//! Jobs run first in, first out, one at a time on the one engine (one GPU). The queue is bounded, so a flood of
//! requests is told to come back later instead of piling up. Every job keeps its events, so a subscriber that
//! arrives late — an SSE client reconnecting, the app opening — replays what already happened and then follows live.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use diffugen_engine::{Destination, Engine, FailureKind, JobEvent, JobSpec, Output, Stage};
use diffugen_gallery::Gallery;
use diffugen_vram::share::Fit;
use diffugen_vram::{DiffusionLease, Orchestrator};
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, Notify};

mod store;
use store::StoredJob;
pub use store::{JobStore, StoreError};

/// How many finished jobs stay queryable (and stay in the queue on disk).
pub const HISTORY_KEPT: usize = 256;

/// Why a job was not accepted or not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is full ({depth} jobs waiting); try again shortly")]
    Full { depth: usize },
    #[error("no job with id '{0}'")]
    NotFound(String),
    /// The job could not be written to the queue on disk, so it was not accepted.
    #[error("the job was not accepted: {0}")]
    Storage(String),
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// A job as listed to clients.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct JobInfo {
    pub id: String,
    pub state: JobState,
    /// Jobs ahead of this one while it waits.
    pub position: Option<u32>,
    /// Who asked: `api`, `openai`, `a1111`, `app`, ...
    pub source: String,
    pub model: String,
    pub prompt: String,
    /// Unix seconds.
    pub created: f64,
    /// When it ended (Unix seconds); `None` while it waits or runs.
    pub finished: Option<f64>,
    pub outputs: Vec<Output>,
    pub error: Option<String>,
    /// The latest event, if any.
    pub last_event: Option<JobEvent>,
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(Vec<Output>),
    Failed { error: String, kind: FailureKind },
    Cancelled(String),
}

struct Job {
    id: String,
    model: String,
    prompt: String,
    /// What the runner needs; dropped when the job ends.
    work: Option<(JobSpec, Destination)>,
    source: String,
    created: f64,
    finished: Option<f64>,
    accepted: Instant,
    state: JobState,
    events: Vec<JobEvent>,
    /// The newest preview frame (previews are not kept in `events`).
    last_preview: Option<JobEvent>,
    sender: broadcast::Sender<JobEvent>,
    /// The queue-wide stream every job's events also go to.
    all: broadcast::Sender<JobEvent>,
}

impl Job {
    fn info(&self, position: Option<u32>) -> JobInfo {
        let last = self
            .events
            .iter()
            .rev()
            .find(|e| !matches!(e.stage, Stage::Preview { .. }))
            .cloned();
        let (outputs, error) = match last.as_ref().map(|e| &e.stage) {
            Some(Stage::Done { outputs }) => (outputs.clone(), None),
            Some(Stage::Failed { error, .. }) => (Vec::new(), Some(error.clone())),
            Some(Stage::Cancelled { reason }) => (Vec::new(), Some(reason.clone())),
            _ => (Vec::new(), None),
        };
        JobInfo {
            id: self.id.clone(),
            state: self.state,
            position,
            source: self.source.clone(),
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            created: self.created,
            finished: self.finished,
            outputs,
            error,
            last_event: last,
        }
    }

    fn record(&mut self, event: JobEvent) {
        if event.stage.is_final() {
            self.state = match event.stage {
                Stage::Done { .. } => JobState::Done,
                Stage::Cancelled { .. } => JobState::Cancelled,
                _ => JobState::Failed,
            };
        }
        // Previews are live-only: keeping every frame of every job would grow without bound.
        if matches!(event.stage, Stage::Preview { .. }) {
            self.last_preview = Some(event.clone());
        } else {
            self.events.push(event.clone());
        }
        let _ = self.all.send(event.clone());
        let _ = self.sender.send(event);
    }
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Job>,
    queue: VecDeque<String>,
    running: Option<String>,
    /// Cancels the running job while it still waits for the GPU (before the engine has it).
    preparing: Option<(String, oneshot::Sender<String>)>,
    finished: VecDeque<String>,
    next_id: u64,
    /// The queue on disk, when it has one.
    store: Option<Arc<JobStore>>,
}

struct Shared {
    defaults: Mutex<JobDefaults>,
    engine: Arc<Engine>,
    orchestrator: Option<Orchestrator>,
    gallery: Option<Arc<Gallery>>,
    depth: usize,
    state: Mutex<State>,
    wake: Notify,
    all: broadcast::Sender<JobEvent>,
}

/// What a job gets when it leaves something out, from the settings; changeable while the queue runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDefaults {
    /// CPU threads for jobs that do not ask for a number (the `threads` setting).
    pub threads: Option<u32>,
    /// Memory and speed options below the request's and the model card's (the `memory` setting).
    pub memory: diffugen_models::MemoryOptions,
    /// How long an idle engine keeps its model before freeing its memory (like Ollama's keep-alive); `None`
    /// keeps it until something else needs the memory.
    pub keep_alive: Option<std::time::Duration>,
}

impl Default for JobDefaults {
    fn default() -> JobDefaults {
        JobDefaults {
            threads: None,
            memory: Default::default(),
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
        }
    }
}

impl JobDefaults {
    /// The defaults the settings file asks for (`threads`, `memory`, `model_keep_alive`).
    pub fn from_settings(settings: &diffugen_settings::Settings) -> JobDefaults {
        JobDefaults {
            threads: settings.threads,
            memory: settings.memory.clone().unwrap_or_default(),
            keep_alive: settings.keep_alive(),
        }
    }
}

/// An idle model is freed after this long unless the settings say otherwise.
pub const DEFAULT_KEEP_ALIVE: std::time::Duration = diffugen_settings::DEFAULT_KEEP_ALIVE;

/// How a queue is set up.
pub struct JobOptions {
    /// Jobs allowed to wait (not counting the one running).
    pub depth: usize,
    /// Shares the GPU with Ollama around each run of jobs.
    pub orchestrator: Option<Orchestrator>,
    /// Records every finished image before the job's `done` event goes out.
    pub gallery: Option<Arc<Gallery>>,
    pub defaults: JobDefaults,
    /// Keeps every accepted job on disk, so waiting jobs survive a restart (see [`JobStore`]).
    pub store: Option<Arc<JobStore>>,
}

/// The queue. Cheap to clone; all clones share one queue and one engine.
#[derive(Clone)]
pub struct JobManager {
    shared: Arc<Shared>,
}

/// A subscription: what already happened, then the live stream.
pub struct Subscription {
    pub history: Vec<JobEvent>,
    pub live: broadcast::Receiver<JobEvent>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl JobManager {
    /// Starts the queue's runner on the current tokio runtime. `depth` bounds the jobs waiting (not counting the
    /// one running).
    pub fn new(engine: Arc<Engine>, depth: usize) -> JobManager {
        JobManager::with_orchestrator(engine, depth, None)
    }

    /// Like [`JobManager::new`], with each run of jobs asking `orchestrator` for the GPU first (unloading Ollama's
    /// LLMs per its policy) and giving it back when the queue is empty.
    pub fn with_orchestrator(
        engine: Arc<Engine>,
        depth: usize,
        orchestrator: Option<Orchestrator>,
    ) -> JobManager {
        JobManager::start(
            engine,
            JobOptions {
                depth,
                orchestrator,
                gallery: None,
                defaults: JobDefaults::default(),
                store: None,
            },
        )
    }

    /// The queue with every option: see [`JobOptions`].
    pub fn start(engine: Arc<Engine>, options: JobOptions) -> JobManager {
        let JobOptions {
            depth,
            orchestrator,
            gallery,
            defaults,
            store,
        } = options;
        if let Some(gallery) = &gallery {
            // What a crash or a full disk left half-written last time.
            let removed = diffugen_engine::output::remove_stale_temps(&gallery.outputs_dir());
            if removed > 0 {
                tracing::info!(removed, "removed temporary files left by an earlier run");
            }
        }
        let manager = JobManager {
            shared: Arc::new(Shared {
                engine,
                orchestrator,
                gallery,
                defaults: Mutex::new(defaults),
                depth,
                state: Mutex::new(State {
                    store: store.clone(),
                    ..State::default()
                }),
                wake: Notify::new(),
                all: broadcast::channel(4096).0,
            }),
        };
        if let Some(store) = &store {
            manager.restore(store);
        }
        let runner = manager.clone();
        tokio::spawn(async move { runner.run().await });
        manager
    }

    /// Brings back what the queue on disk holds: the history, the job that was rendering (failed: it was cut off),
    /// and the waiting jobs in their order with their ids.
    fn restore(&self, store: &JobStore) {
        let stored = match store.load() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "the queue on disk could not be read; starting with an empty queue");
                return;
            }
        };
        let mut state = self.lock();
        for saved in stored {
            let id = saved.id.clone();
            let mut job = self.new_job(
                &id,
                saved.source,
                saved.model,
                saved.prompt,
                saved.work,
                saved.created,
            );
            match saved.state {
                JobState::Done | JobState::Failed | JobState::Cancelled => {
                    job.state = saved.state;
                    job.finished = saved.finished;
                    job.events.extend(saved.last_event);
                    state.jobs.insert(id.clone(), job);
                    state.finished.push_back(id);
                }
                JobState::Running | JobState::Queued => {
                    let failure = match (saved.state, &job.work) {
                        (JobState::Running, _) => Some((
                            "interrupted: DiffuGen stopped while this job was rendering",
                            FailureKind::Interrupted,
                        )),
                        (_, None) => Some((
                            "this job could not be read back after DiffuGen restarted; send it again",
                            FailureKind::Interrupted,
                        )),
                        _ => None,
                    };
                    if let Some((error, kind)) = failure {
                        job.record(JobEvent::new(
                            &id,
                            0.0,
                            Stage::Failed {
                                error: error.into(),
                                kind,
                            },
                        ));
                        state.jobs.insert(id.clone(), job);
                        finish(&mut state, &id);
                    } else {
                        state.jobs.insert(id.clone(), job);
                        state.queue.push_back(id);
                    }
                }
            }
        }
        if !state.queue.is_empty() {
            tracing::info!(
                waiting = state.queue.len(),
                "jobs that were waiting before the restart run again"
            );
        }
        announce_positions(&mut state);
    }

    fn new_job(
        &self,
        id: &str,
        source: String,
        model: String,
        prompt: String,
        work: Option<(JobSpec, Destination)>,
        created: f64,
    ) -> Job {
        Job {
            id: id.to_string(),
            model,
            prompt,
            work,
            source,
            created,
            finished: None,
            accepted: Instant::now(),
            state: JobState::Queued,
            events: Vec::new(),
            last_preview: None,
            sender: broadcast::channel(1024).0,
            all: self.shared.all.clone(),
        }
    }

    /// The engine behind the queue.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engine
    }

    /// The gallery finished images are recorded in.
    pub fn gallery(&self) -> Option<&Arc<Gallery>> {
        self.shared.gallery.as_ref()
    }

    /// The VRAM orchestrator, when the queue shares the GPU with Ollama.
    pub fn orchestrator(&self) -> Option<&Orchestrator> {
        self.shared.orchestrator.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts a validated job. Returns its id, or `Full` when `depth` jobs are already waiting.
    pub fn submit(
        &self,
        spec: JobSpec,
        destination: Destination,
        source: &str,
    ) -> Result<String, QueueError> {
        let mut state = self.lock();
        if state.queue.len() >= self.shared.depth {
            return Err(QueueError::Full {
                depth: self.shared.depth,
            });
        }
        state.next_id += 1;
        let id = format!("job-{:x}-{}", (now_unix() * 1000.0) as u64, state.next_id);
        let position = (state.queue.len() + usize::from(state.running.is_some())) as u32;
        let mut job = self.new_job(
            &id,
            source.to_string(),
            spec.model_id.clone(),
            spec.prompt.clone(),
            Some((spec, destination)),
            now_unix(),
        );
        // On disk before the id goes out: a job a client was told about survives a crash.
        if let Some(store) = &state.store {
            let stored = StoredJob {
                id: id.clone(),
                state: JobState::Queued,
                work: job.work.clone(),
                source: job.source.clone(),
                model: job.model.clone(),
                prompt: job.prompt.clone(),
                created: job.created,
                finished: None,
                last_event: None,
            };
            store
                .insert(&stored, state.queue.len() as u32)
                .map_err(|e| QueueError::Storage(e.to_string()))?;
        }
        job.record(JobEvent::new(&id, 0.0, Stage::Queued { position }));
        state.jobs.insert(id.clone(), job);
        state.queue.push_back(id.clone());
        drop(state);
        self.shared.wake.notify_one();
        Ok(id)
    }

    /// The job's events so far and a live receiver, taken atomically so nothing falls between them.
    pub fn subscribe(&self, id: &str) -> Result<Subscription, QueueError> {
        let state = self.lock();
        let job = state
            .jobs
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        Ok(Subscription {
            history: job.events.clone(),
            live: job.sender.subscribe(),
        })
    }

    /// Every job's events from now on (previews included): how the desktop app shows jobs from every source live.
    pub fn watch(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.all.subscribe()
    }

    /// Moves a waiting job to `position` in the line of waiting jobs (0 = next; past the end = last). Returns
    /// false when the job is not waiting (running or finished).
    pub fn move_to(&self, id: &str, position: u32) -> Result<bool, QueueError> {
        let mut state = self.lock();
        if !state.jobs.contains_key(id) {
            return Err(QueueError::NotFound(id.to_string()));
        }
        let Some(index) = state.queue.iter().position(|q| q == id) else {
            return Ok(false);
        };
        let moved = state.queue.remove(index).expect("index from position()");
        let target = (position as usize).min(state.queue.len());
        state.queue.insert(target, moved);
        if target != index {
            announce_positions(&mut state);
        }
        Ok(true)
    }

    /// Waits until the job ends.
    pub async fn wait(&self, id: &str) -> Result<Outcome, QueueError> {
        let Subscription { history, mut live } = self.subscribe(id)?;
        let mut last = history.into_iter().rev().find(|e| e.stage.is_final());
        while last.is_none() {
            match live.recv().await {
                Ok(event) if event.stage.is_final() => last = Some(event),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        Ok(match last.map(|e| e.stage) {
            Some(Stage::Done { outputs }) => Outcome::Done(outputs),
            Some(Stage::Cancelled { reason }) => Outcome::Cancelled(reason),
            Some(Stage::Failed { error, kind }) => Outcome::Failed { error, kind },
            _ => Outcome::Failed {
                error: "the job ended without a result".into(),
                kind: FailureKind::Render,
            },
        })
    }

    /// One job's state.
    pub fn get(&self, id: &str) -> Result<JobInfo, QueueError> {
        let state = self.lock();
        let position = state
            .queue
            .iter()
            .position(|q| q == id)
            .map(|p| p as u32 + u32::from(state.running.is_some()));
        state
            .jobs
            .get(id)
            .map(|job| job.info(position))
            .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }

    /// The newest live preview of a job, if it asked for previews and one has arrived.
    pub fn latest_preview(&self, id: &str) -> Option<JobEvent> {
        self.lock()
            .jobs
            .get(id)
            .and_then(|job| job.last_preview.clone())
    }

    /// Finished jobs, the newest first (at most [`HISTORY_KEPT`]; they survive a restart with a queue on disk).
    pub fn history(&self) -> Vec<JobInfo> {
        let state = self.lock();
        state
            .finished
            .iter()
            .rev()
            .filter_map(|id| state.jobs.get(id))
            .map(|job| job.info(None))
            .collect()
    }

    /// The running job first, then the waiting ones in order.
    pub fn queue(&self) -> Vec<JobInfo> {
        let state = self.lock();
        let running = state
            .running
            .iter()
            .filter_map(|id| state.jobs.get(id))
            .map(|j| j.info(Some(0)));
        let offset = u32::from(state.running.is_some());
        let waiting = state
            .queue
            .iter()
            .enumerate()
            .filter_map(|(i, id)| state.jobs.get(id).map(|j| j.info(Some(i as u32 + offset))));
        running.chain(waiting).collect()
    }

    /// Cancels a job: a waiting one leaves the queue, a running one is stopped by ending the engine worker.
    /// Returns whether the job was still active.
    pub fn cancel(&self, id: &str, reason: &str) -> Result<bool, QueueError> {
        let mut state = self.lock();
        if !state.jobs.contains_key(id) {
            return Err(QueueError::NotFound(id.to_string()));
        }
        if let Some(index) = state.queue.iter().position(|q| q == id) {
            state.queue.remove(index);
            let job = state.jobs.get_mut(id).expect("checked above");
            let elapsed = job.accepted.elapsed().as_secs_f64();
            job.record(JobEvent::new(
                id,
                elapsed,
                Stage::Cancelled {
                    reason: reason.to_string(),
                },
            ));
            finish(&mut state, id);
            announce_positions(&mut state);
            return Ok(true);
        }
        if state.running.as_deref() == Some(id) {
            if state.preparing.as_ref().is_some_and(|(p, _)| p == id) {
                let (_, sender) = state.preparing.take().expect("checked above");
                let _ = sender.send(reason.to_string());
                return Ok(true);
            }
            drop(state);
            if !self.shared.engine.cancel(id, reason) {
                // The runner has taken the job but the engine has not registered it yet: retry until it has.
                let (manager, id, reason) = (self.clone(), id.to_string(), reason.to_string());
                tokio::spawn(async move {
                    while manager.lock().running.as_deref() == Some(id.as_str()) {
                        if manager.shared.engine.cancel(&id, &reason) {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                });
            }
            return Ok(true);
        }
        Ok(false)
    }

    async fn run(self) {
        // Held across back-to-back jobs so the LLM is not reloaded between them; dropped when the queue drains.
        let mut lease: Option<DiffusionLease> = None;
        loop {
            let next = {
                let mut state = self.lock();
                let next = state.queue.pop_front();
                if let Some(id) = &next {
                    state.running = Some(id.clone());
                    if let Some(job) = state.jobs.get_mut(id) {
                        job.state = JobState::Running;
                    }
                    if let Some(Err(e)) = state.store.as_ref().map(|s| s.set_running(id)) {
                        tracing::warn!(error = %e, "the queue on disk was not updated");
                    }
                    announce_positions(&mut state);
                }
                next.and_then(|id| {
                    state.jobs.get(&id).and_then(|j| {
                        let (spec, destination) = j.work.clone()?;
                        Some((id, spec, destination, j.accepted))
                    })
                })
            };
            let Some((id, mut spec, destination, accepted)) = next else {
                lease = None;
                self.idle().await;
                continue;
            };
            let manager = self.clone();
            let gallery = self.shared.gallery.clone();
            let mut record = |mut event: JobEvent| {
                if let (Some(gallery), Stage::Done { outputs }) = (&gallery, &mut event.stage) {
                    // SQLite and the thumbnail block: tell the runtime, so other tasks move to another thread.
                    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
                        == tokio::runtime::RuntimeFlavor::MultiThread;
                    let recorded = if multi_thread {
                        tokio::task::block_in_place(|| record_in_gallery(gallery, outputs))
                    } else {
                        record_in_gallery(gallery, outputs)
                    };
                    if let Err(error) = recorded {
                        event.stage = Stage::Failed {
                            error,
                            kind: FailureKind::Storage,
                        };
                        event.percent = None;
                    }
                }
                let mut state = manager.lock();
                let ended = event.stage.is_final().then(|| event.job_id.clone());
                if let Some(job) = state.jobs.get_mut(&event.job_id) {
                    job.record(event);
                }
                // In the history at the moment its last event goes out, so a client never misses it there.
                if let Some(id) = ended {
                    finish(&mut state, &id);
                }
            };
            for message in self.apply_defaults(&mut spec) {
                let stage = Stage::Warning { message };
                record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
            }
            if let (Some(orchestrator), None) = (&self.shared.orchestrator, &lease) {
                match self
                    .prepare(orchestrator, &id, &mut spec, accepted, &mut record)
                    .await
                {
                    Ok(acquired) => lease = Some(acquired),
                    Err(stage) => {
                        record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
                        let mut state = self.lock();
                        state.running = None;
                        finish(&mut state, &id);
                        continue;
                    }
                }
            } else {
                let orchestrator = self.shared.orchestrator.as_ref();
                let budget = orchestrator.and_then(Orchestrator::sharing_budget);
                for stage in plan_stages(orchestrator, &mut spec, budget) {
                    record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
                }
            }
            let _ = diffugen_engine::job::run(
                &self.shared.engine,
                &id,
                &spec,
                &destination,
                accepted,
                &mut record,
            )
            .await;
            let mut state = self.lock();
            state.running = None;
            finish(&mut state, &id);
            let more = !state.queue.is_empty();
            drop(state);
            // Hand the GPU back when the queue is empty, or between jobs when an LLM request is waiting for it.
            if !more
                || self
                    .shared
                    .orchestrator
                    .as_ref()
                    .is_some_and(|o| o.llm_waiting())
            {
                lease = None;
            }
        }
    }

    /// The defaults jobs get from the settings.
    pub fn defaults(&self) -> JobDefaults {
        self.shared
            .defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the defaults (the settings changed); jobs that start from now on get them.
    pub fn set_defaults(&self, defaults: JobDefaults) {
        *self
            .shared
            .defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = defaults;
        // An idle runner re-reads the keep-alive.
        self.shared.wake.notify_one();
    }

    /// Fills what a job left out from the settings' defaults; returns warnings for defaults that do not apply.
    fn apply_defaults(&self, spec: &mut JobSpec) -> Vec<String> {
        let defaults = self.defaults();
        spec.threads = spec.threads.or(defaults.threads);
        diffugen_engine::memory::apply_defaults(spec, &defaults.memory)
    }

    /// Waits for the next job; after the keep-alive with no job, frees the engine's model (the worker stays).
    async fn idle(&self) {
        let keep_alive = self.defaults().keep_alive;
        match keep_alive {
            Some(idle) if self.shared.engine.loaded_model().is_some() => {
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {
                        tracing::info!(seconds = idle.as_secs_f64(), "the model was idle: freeing its memory");
                        self.shared.engine.unload().await;
                    }
                }
            }
            _ => self.shared.wake.notified().await,
        }
    }

    /// Asks the orchestrator for the GPU with the job's memory planner (it may share the GPU with resident LLMs
    /// or unload them), plans the job for the room it got, and reports both as the job's events; a cancel while
    /// waiting ends the job before it reaches the engine. The error is the job's final stage.
    async fn prepare(
        &self,
        orchestrator: &Orchestrator,
        id: &str,
        spec: &mut JobSpec,
        accepted: Instant,
        record: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<DiffusionLease, Stage> {
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.lock().preparing = Some((id.to_string(), cancel_tx));
        let mut planner = fit_for(spec, orchestrator);
        let mut on_stage = |stage: Stage| {
            record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
        };
        let result = tokio::select! {
            lease = orchestrator.acquire_diffusion_planned(&mut planner, &mut on_stage) => {
                lease.map_err(|e| Stage::Failed { error: e.to_string(), kind: FailureKind::Gpu })
            }
            reason = cancel_rx => Err(Stage::Cancelled {
                reason: reason.unwrap_or_else(|_| "cancelled".into()),
            }),
        };
        self.lock().preparing = None;
        let (lease, budget) = result?;
        for stage in plan_stages(Some(orchestrator), spec, budget) {
            record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
        }
        Ok(lease)
    }
}

/// The job's memory planner as the orchestrator asks it: with `free` bytes of VRAM, would the job fit, how much
/// would it take, and how long would it run.
pub fn fit_for(spec: &JobSpec, orchestrator: &Orchestrator) -> impl FnMut(f64) -> Fit + Send {
    let mut spec = spec.clone();
    let total = orchestrator
        .gpu_memory_for_diffusion()
        .map(|(total, _)| total);
    move |free: f64| {
        let gpu = total.map(|t| (t, free.min(t)));
        match diffugen_engine::memory::plan_job(&mut spec, &diffugen_engine::memory::resources(gpu))
        {
            // Beside an LLM, a plan that moves the diffusion model to the CPU is no way to share the GPU.
            Ok(plan) => Fit {
                fits: plan.fits
                    && (gpu.is_none()
                        || plan.group(diffugen_models::Group::Diffusion)
                            != Some(diffugen_models::Placement::Cpu)),
                vram_bytes: plan.estimated_vram_peak_bytes,
                seconds: plan.estimated_seconds,
            },
            Err(_) => Fit {
                fits: true,
                vram_bytes: needed_vram(&spec),
                seconds: 0.0,
            },
        }
    }
}

/// Plans a job's memory (where each part runs, tiling, budget) with what the GPU and RAM hold now, keeps the plan
/// in the spec for the worker, and returns the stages that tell the job's clients: the plan, and a warning with
/// advice when even the best plan does not fit (the job still runs: the estimate errs on the generous side).
/// `budget`: the VRAM the job may use when it shares the GPU with resident LLMs (else what is free now).
pub fn plan_stages(
    orchestrator: Option<&Orchestrator>,
    spec: &mut JobSpec,
    budget: Option<f64>,
) -> Vec<Stage> {
    let gpu = orchestrator
        .and_then(Orchestrator::gpu_memory_for_diffusion)
        .map(|(total, free)| (total, budget.map_or(free, |b| b.min(total))));
    let resources = diffugen_engine::memory::resources(gpu);
    match diffugen_engine::memory::plan_job(spec, &resources) {
        Ok(plan) => {
            let mut stages = vec![Stage::Plan {
                summary: plan.summary(),
                plan: plan.clone(),
            }];
            if !plan.fits {
                stages.push(Stage::Warning {
                    message: format!(
                        "this job may not fit the memory at hand: {}",
                        plan.advice.join("; ")
                    ),
                });
            }
            stages
        }
        Err(error) => vec![Stage::Warning {
            message: format!("could not plan the job's memory ({error}); sd.cpp decides"),
        }],
    }
}

/// The VRAM a job's plan needs at its peak (everything on the GPU when it has no plan).
pub fn needed_vram(spec: &JobSpec) -> f64 {
    spec.memory.plan.as_ref().map_or_else(
        || {
            diffugen_models::plan::full_gpu_need(
                &spec.components,
                &spec.family,
                spec.width,
                spec.height,
                spec.cfg_scale > 1.0,
            )
        },
        |p| p.estimated_vram_peak_bytes,
    )
}

/// Records finished images in the gallery. An image the gallery cannot record fails the job (a client must never
/// be told of an image its gallery lacks); the message says where the files are, so nothing is lost.
pub fn record_in_gallery(gallery: &Gallery, outputs: &mut [Output]) -> Result<(), String> {
    for output in outputs.iter_mut() {
        match gallery.add(std::path::Path::new(&output.path)) {
            Ok(id) => output.gallery_id = Some(id),
            Err(e) => {
                tracing::warn!(path = %output.path, error = %e, "not recorded in the gallery");
                let files: Vec<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
                return Err(format!(
                    "the image was rendered but the gallery could not record it ({}{e}); nothing is lost: {} \
                     {} kept and will be listed after `diffugen gallery reindex`",
                    if e.is_disk_full() { "the disk is full: " } else { "" },
                    files.join(", "),
                    if files.len() == 1 { "is" } else { "are" },
                ));
            }
        }
    }
    Ok(())
}

/// Moves an ended job to the history (once; later calls do nothing).
fn finish(state: &mut State, id: &str) {
    if state.finished.iter().rev().any(|f| f == id) {
        return;
    }
    if let Some(job) = state.jobs.get_mut(id) {
        // What the runner needed (init images among it) is not kept for the history.
        job.work = None;
        let at = now_unix();
        job.finished = Some(at);
        if let Some(store) = &state.store {
            if let Err(e) = store.finish(id, job.state, job.events.last(), at) {
                tracing::warn!(error = %e, "the queue on disk was not updated");
            }
        }
    }
    state.finished.push_back(id.to_string());
    while state.finished.len() > HISTORY_KEPT {
        if let Some(old) = state.finished.pop_front() {
            state.jobs.remove(&old);
        }
    }
}

/// Tells every waiting job its new place in line.
fn announce_positions(state: &mut State) {
    let offset = u32::from(state.running.is_some());
    let waiting: Vec<String> = state.queue.iter().cloned().collect();
    if let Some(Err(e)) = state.store.as_ref().map(|s| s.set_order(&waiting)) {
        tracing::warn!(error = %e, "the queue on disk was not updated");
    }
    for (index, id) in waiting.iter().enumerate() {
        if let Some(job) = state.jobs.get_mut(id) {
            let elapsed = job.accepted.elapsed().as_secs_f64();
            job.record(JobEvent::new(
                id,
                elapsed,
                Stage::Queued {
                    position: index as u32 + offset,
                },
            ));
        }
    }
}
