//! The job queue shared by every front door (HTTP routes now, the desktop app and CLI-against-a-server later).
//!
//! Jobs run first in, first out, on the queue's render lanes: one engine worker each (one lane by default; `--lanes N`
//! runs N side by side: a lane per GPU on a GPU build, CPU workers otherwise). A free lane takes the first waiting job, except that a job whose model another
//! free lane holds is left to that lane, and a lane takes a job for its own model first. The queue is bounded, so a flood of
//! requests is told to come back later instead of piling up. Every job keeps its events, so a subscriber that
//! arrives late — an SSE client reconnecting, the app opening — replays what already happened and then follows live.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use diffugen_engine::{Destination, Engine, FailureKind, JobEvent, JobSpec, Output, Stage, Work};
use diffugen_gallery::Gallery;
use diffugen_vram::{LaneDevice, Orchestrator};
use serde::Serialize;
use tokio::sync::{broadcast, Notify};

pub mod assistant;
mod remote;
mod runner;
mod state;
mod store;
use remote::remote_position;
pub use remote::{Dispatch, ResultError};
pub use runner::{fit_for, needed_vram, plan_stages, record_in_gallery};
use state::{announce_positions, finish, Job, State};
use store::StoredJob;
pub use store::{JobStore, StoreError};

/// [`JobInfo::worker`] of a job this machine's own lanes render.
pub const LOCAL_WORKER: &str = "local";

/// How many finished jobs stay queryable (and stay in the queue on disk).
pub const HISTORY_KEPT: usize = 256;

/// How many of the latest cancelled or failed jobs keep what they need to be put back in line
/// ([`JobManager::requeue`]); older ones are history only.
pub const UNDO_KEPT: usize = 16;

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
    /// Only a cancelled or failed job can be put back in line, and only one of the latest few.
    #[error("job '{id}' cannot be put back in line: {reason}")]
    NotRequeueable { id: String, reason: String },
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
    /// The render lane that runs (or ran) it, from 0; `None` while it waits.
    pub lane: Option<u32>,
    /// Who renders (or rendered) it: `local` (this machine's lanes), or the name of the cluster worker that took it
    /// (`diffugen worker --name`); `None` while it waits.
    pub worker: Option<String>,
    /// While it waits: seconds from now until it should start, by the measured times of the jobs ahead of it on
    /// their models (`None` while one of them has never run here, or the queue is paused).
    pub starts_in: Option<f64>,
    /// The size of the images it makes (the final one, after a hires pass or an upscale): asked for while it waits
    /// or runs, as made once done; `None` when it ended without images and is no longer held in full.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One render lane as the queue view shows it.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct LaneInfo {
    /// From 0.
    pub lane: u32,
    /// Where it renders: `default` (the build's device, taking every job's turn with Ollama), `gpu` with the card's
    /// `index` (its worker sees only that card), or `cpu`.
    pub device: LaneDevice,
    /// The model its worker holds in memory.
    pub model: Option<String>,
    /// The job it runs.
    pub job: Option<String>,
    /// Its engine worker's process id, while one runs.
    pub worker_pid: Option<u32>,
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(Vec<Output>),
    Failed { error: String, kind: FailureKind },
    Cancelled(String),
}

struct Shared {
    defaults: Mutex<JobDefaults>,
    /// One engine per render lane (lane `i` is `engines[i]`).
    engines: Vec<Arc<Engine>>,
    /// Where each lane renders (lane `i` on `devices[i]`).
    devices: Vec<LaneDevice>,
    /// The live preview a render that asks for none gets (see [`JobManager::preview_every_job`]).
    preview: Mutex<Option<diffugen_engine::params::PreviewRequest>>,
    orchestrator: Option<Orchestrator>,
    gallery: Option<Arc<Gallery>>,
    depth: usize,
    state: Mutex<State>,
    /// Wakes each lane's runner (a job arrived, the queue resumed, the settings changed).
    wake: Vec<Notify>,
    all: broadcast::Sender<JobEvent>,
    /// True while every lane waits for work with the GPU handed back (see [`JobManager::until_idle`]).
    idle: tokio::sync::watch::Sender<bool>,
    /// Pauses and resumes, for every door's live view.
    paused: broadcast::Sender<bool>,
    /// A cluster front: no lane of its own runs a job; the cluster's dispatcher takes them
    /// ([`JobManager::start_front`]).
    front: bool,
    /// Wakes the front's dispatcher.
    dispatch: Notify,
    /// The ids of jobs handed to the cluster that were cancelled here, for the front to tell the cluster.
    remote_cancels: broadcast::Sender<String>,
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
    /// The Ollama model that rewrites prompts for jobs that ask for it without naming one (the `assistant_model`
    /// setting).
    pub assistant_model: Option<String>,
    /// The vision model that scores results for jobs that ask for a critique without naming one (the
    /// `critique_model` setting).
    pub critique_model: Option<String>,
}

impl Default for JobDefaults {
    fn default() -> JobDefaults {
        JobDefaults {
            threads: None,
            memory: Default::default(),
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            assistant_model: None,
            critique_model: None,
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
            assistant_model: settings
                .assistant_model
                .clone()
                .filter(|m| !m.trim().is_empty()),
            critique_model: settings
                .critique_model
                .clone()
                .filter(|m| !m.trim().is_empty()),
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

/// `engines` as the lanes of a machine without a lane per GPU: the default device first, then CPU lanes.
fn default_devices(engines: Vec<Arc<Engine>>) -> Vec<(Arc<Engine>, LaneDevice)> {
    let devices = LaneDevice::for_lanes(engines.len() as u32, None);
    engines.into_iter().zip(devices).collect()
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
        JobManager::start_lanes(vec![engine], options)
    }

    /// The queue over several render lanes, one engine each (at least one). Lane 0 takes the GPU's turns with the
    /// orchestrator; the others render without one (CPU workers).
    pub fn start_lanes(engines: Vec<Arc<Engine>>, options: JobOptions) -> JobManager {
        JobManager::start_on_devices(default_devices(engines), options)
    }

    /// The queue over render lanes each on its device: a lane on a GPU plans its jobs for that card and takes a
    /// turn with Ollama only when an LLM lives there ([`Orchestrator::needs_turn`]); a `Default` lane takes every
    /// job's turn; a CPU lane none.
    pub fn start_on_devices(
        lanes: Vec<(Arc<Engine>, LaneDevice)>,
        options: JobOptions,
    ) -> JobManager {
        JobManager::build(lanes, options, false)
    }

    /// The queue of a cluster front: jobs are accepted, listed, cancelled and recorded here as everywhere, but no
    /// lane of this queue renders them — the cluster's dispatcher takes each waiting job in order
    /// ([`JobManager::next_dispatch`]) and the render workers report back ([`JobManager::claim`],
    /// [`JobManager::relay`], [`JobManager::complete`]). `engines` stay idle here (this machine renders, if it does,
    /// as a cluster worker over another queue that shares them and the orchestrator).
    pub fn start_front(engines: Vec<Arc<Engine>>, options: JobOptions) -> JobManager {
        JobManager::start_front_on_devices(default_devices(engines), options)
    }

    /// [`JobManager::start_front`] with each engine's device: a front that renders too hands them on to the queue
    /// its own cluster worker renders through ([`JobManager::devices`]).
    pub fn start_front_on_devices(
        lanes: Vec<(Arc<Engine>, LaneDevice)>,
        options: JobOptions,
    ) -> JobManager {
        JobManager::build(lanes, options, true)
    }

    fn build(
        lanes: Vec<(Arc<Engine>, LaneDevice)>,
        options: JobOptions,
        front: bool,
    ) -> JobManager {
        assert!(!lanes.is_empty(), "a queue needs at least one lane");
        let (engines, devices): (Vec<_>, Vec<_>) = lanes.into_iter().unzip();
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
                wake: engines.iter().map(|_| Notify::new()).collect(),
                engines,
                devices,
                preview: Mutex::new(None),
                orchestrator,
                gallery,
                defaults: Mutex::new(defaults),
                depth,
                state: Mutex::new(State {
                    store: store.clone(),
                    ..State::default()
                }),
                idle: tokio::sync::watch::channel(true).0,
                paused: broadcast::channel(16).0,
                all: broadcast::channel(4096).0,
                front,
                dispatch: Notify::new(),
                remote_cancels: broadcast::channel(256).0,
            }),
        };
        if let Some(store) = &store {
            manager.restore(store);
            match store.paused() {
                Ok(paused) => manager.lock().paused = paused,
                Err(e) => {
                    tracing::warn!(error = %e, "whether the queue was paused could not be read")
                }
            }
        }
        // A front's jobs render in the cluster: none of its lanes runs.
        let lanes = if front {
            0
        } else {
            manager.shared.engines.len()
        };
        for lane in 0..lanes {
            let runner = manager.clone();
            tokio::spawn(async move { runner.run(lane).await });
        }
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
                    // Putting an ended job back in line is for this run only.
                    job.work = None;
                    job.state = saved.state;
                    job.finished = saved.finished;
                    job.events.extend(saved.last_event);
                    state.jobs.insert(id.clone(), job);
                    state.finished.push_back(id);
                }
                JobState::Running | JobState::Queued => {
                    let failure = match (saved.state, &job.work) {
                        // A front's job renders in the cluster, which outlives the front: it is sent again (the
                        // stream drops a copy it still holds) and its worker reports to the front again.
                        (JobState::Running, Some(_)) if self.shared.front => None,
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
        work: Option<(Work, Destination)>,
        created: f64,
    ) -> Job {
        Job {
            id: id.to_string(),
            model,
            prompt,
            size: work.as_ref().and_then(|(w, _)| w.output_size()),
            work,
            source,
            created,
            finished: None,
            accepted: Instant::now(),
            state: JobState::Queued,
            events: Vec::new(),
            lane: None,
            worker: None,
            last_preview: None,
            sender: broadcast::channel(1024).0,
            all: self.shared.all.clone(),
        }
    }

    /// Waits until no job waits or runs and the runner has handed the GPU back (the LLMs it unloaded restored
    /// per the VRAM policy): a one-shot door waits for this before its process ends.
    pub async fn until_idle(&self) {
        let mut idle = self.shared.idle.subscribe();
        loop {
            let empty = {
                let state = self.lock();
                state.queue.is_empty()
                    && state.running.is_empty()
                    && state.remote.is_empty()
                    && state.busy_lanes == 0
            };
            if *idle.borrow_and_update() && empty {
                return;
            }
            if idle.changed().await.is_err() {
                return;
            }
        }
    }

    /// The engine of lane 0 (the only one unless the queue has several lanes).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engines[0]
    }

    /// Gives every render that asks for no live preview this one (`None`: none): the desktop app shows each job's
    /// preview in its Queue, whichever client sent it.
    pub fn preview_every_job(&self, preview: Option<diffugen_engine::params::PreviewRequest>) {
        *self
            .shared
            .preview
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = preview;
    }

    /// Where each lane renders, lane 0 first.
    pub fn devices(&self) -> &[LaneDevice] {
        &self.shared.devices
    }

    /// Every lane's engine, lane 0 first.
    pub fn engines(&self) -> &[Arc<Engine>] {
        &self.shared.engines
    }

    /// The render lanes: the model each holds and the job each runs (none on a cluster front: its jobs render on
    /// the workers, which [`JobInfo::worker`] names).
    pub fn lanes(&self) -> Vec<LaneInfo> {
        if self.shared.front {
            return Vec::new();
        }
        let state = self.lock();
        self.shared
            .engines
            .iter()
            .enumerate()
            .map(|(lane, engine)| LaneInfo {
                lane: lane as u32,
                device: self.shared.devices[lane],
                model: engine.loaded_model(),
                worker_pid: engine.current_pid(),
                job: state
                    .running
                    .iter()
                    .find(|(_, l)| *l == lane)
                    .map(|(id, _)| id.clone()),
            })
            .collect()
    }

    /// Wakes every lane's runner to look at the queue again.
    pub(crate) fn wake_lanes(&self) {
        if self.shared.front {
            self.shared.dispatch.notify_one();
            return;
        }
        for wake in &self.shared.wake {
            wake.notify_one();
        }
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

    /// Accepts a validated render. Returns its id, or `Full` when `depth` jobs are already waiting.
    pub fn submit(
        &self,
        spec: JobSpec,
        destination: Destination,
        source: &str,
    ) -> Result<String, QueueError> {
        self.submit_work(Work::Generate(Box::new(spec)), destination, source)
    }

    /// Accepts a validated job of any kind (a render, an upscale). Returns its id, or `Full` when `depth` jobs are
    /// already waiting.
    pub fn submit_work(
        &self,
        mut work: Work,
        destination: Destination,
        source: &str,
    ) -> Result<String, QueueError> {
        // The image records who asked.
        if let Work::Generate(spec) = &mut work {
            spec.client.get_or_insert_with(|| source.to_string());
        }
        let mut state = self.lock();
        if state.queue.len() >= self.shared.depth {
            return Err(QueueError::Full {
                depth: self.shared.depth,
            });
        }
        state.next_id += 1;
        let id = format!("job-{:x}-{}", (now_unix() * 1000.0) as u64, state.next_id);
        let position = (state.queue.len() + state.running.len()) as u32;
        let mut job = self.new_job(
            &id,
            source.to_string(),
            work.model(),
            work.prompt(),
            Some((work, destination)),
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
        self.wake_lanes();
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
        let index = state.queue.iter().position(|q| q == id);
        let position = match index {
            Some(p) => Some((p + state.running.len() + state.remote.len()) as u32),
            None => remote_position(&state, id),
        };
        let mut info = state
            .jobs
            .get(id)
            .map(|job| job.info(position))
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        if let Some(index) = index {
            info.starts_in = self.start_estimates(&state).get(index).copied().flatten();
        }
        Ok(info)
    }

    /// When each waiting job should start, in line order (seconds from now): every lane is free when its running
    /// job's last ETA runs out (idle lanes now), and each waiting job goes to the lane free first, taking as long as
    /// its model's measured history says (its load too unless that lane holds the model). `None` from the first job
    /// whose start depends on a time never measured.
    fn start_estimates(&self, state: &State) -> Vec<Option<f64>> {
        // Paused, nothing starts until the user says.
        if state.paused {
            return vec![None; state.queue.len()];
        }
        let engines = &self.shared.engines;
        let mut held: Vec<Option<String>> = engines.iter().map(|e| e.loaded_model()).collect();
        // What a job takes on a lane: warm when the lane holds its model.
        let predict = |job: &Job, held: &Option<String>| match &job.work {
            Some((Work::Generate(spec), _)) => engines.iter().find_map(|e| {
                e.predict_seconds(spec, held.as_deref() == Some(spec.model_id.as_str()))
            }),
            _ => None,
        };
        let mut free: Vec<Option<f64>> = (0..engines.len())
            .map(
                |lane| match state.running.iter().find(|(_, l)| *l == lane) {
                    None => Some(0.0),
                    // A job that has just started has no ETA of its own yet: the whole job's prediction stands in.
                    Some((id, _)) => state.jobs.get(id).and_then(|job| {
                        job.remaining_seconds()
                            .or_else(|| predict(job, &held[lane]))
                    }),
                },
            )
            .collect();
        state
            .queue
            .iter()
            .map(|id| {
                let job = state.jobs.get(id)?;
                let (lane, at) = free
                    .iter()
                    .enumerate()
                    .filter_map(|(lane, at)| at.map(|at| (lane, at)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))?;
                free[lane] = predict(job, &held[lane]).map(|took| at + took);
                held[lane] = Some(job.model.clone());
                Some(at)
            })
            .collect()
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

    /// The running jobs first (by lane), then the waiting ones in order.
    pub fn queue(&self) -> Vec<JobInfo> {
        let state = self.lock();
        let mut running: Vec<&(String, usize)> = state.running.iter().collect();
        running.sort_by_key(|(_, lane)| *lane);
        let running = running
            .into_iter()
            .filter_map(|(id, _)| state.jobs.get(id))
            .map(|j| j.info(Some(0)));
        // A front's jobs in the cluster: the ones a worker renders, then the ones the stream holds, in order.
        let mut remote: Vec<&String> = state.remote.iter().collect();
        remote.sort_by_key(|id| state.jobs.get(*id).map(|j| j.state != JobState::Running));
        let remote = remote.into_iter().filter_map(|id| {
            state
                .jobs
                .get(id)
                .map(|j| j.info(remote_position(&state, id)))
        });
        let offset = (state.running.len() + state.remote.len()) as u32;
        let starts = self.start_estimates(&state);
        let waiting = state.queue.iter().enumerate().filter_map(|(i, id)| {
            state.jobs.get(id).map(|j| JobInfo {
                starts_in: starts.get(i).copied().flatten(),
                ..j.info(Some(i as u32 + offset))
            })
        });
        running.chain(remote).chain(waiting).collect()
    }

    /// Cancels a job: a waiting one leaves the queue, a running one is stopped by ending the engine worker.
    /// Returns whether the job was still active.
    pub fn cancel(&self, id: &str, reason: &str) -> Result<bool, QueueError> {
        let mut state = self.lock();
        if !state.jobs.contains_key(id) {
            return Err(QueueError::NotFound(id.to_string()));
        }
        let waiting = state.queue.iter().position(|q| q == id);
        // In the cluster, a job ends here at once; the worker that holds it (or takes it later) is told.
        let remote = state.remote.iter().any(|r| r == id);
        if waiting.is_some() || remote {
            if let Some(index) = waiting {
                state.queue.remove(index);
            }
            let job = state.jobs.get_mut(id).expect("checked above");
            job.record_now(Stage::Cancelled {
                reason: reason.to_string(),
            });
            finish(&mut state, id);
            if remote {
                let _ = self.shared.remote_cancels.send(id.to_string());
            } else {
                announce_positions(&mut state);
            }
            return Ok(true);
        }
        if let Some(lane) = state.lane_of(id) {
            if let Some(index) = state.preparing.iter().position(|(p, _)| p == id) {
                let (_, sender) = state.preparing.swap_remove(index);
                let _ = sender.send(reason.to_string());
                return Ok(true);
            }
            drop(state);
            let engine = self.shared.engines[lane].clone();
            if !engine.cancel(id, reason) {
                // The runner has taken the job but the engine has not registered it yet: retry until it has.
                let (manager, id, reason) = (self.clone(), id.to_string(), reason.to_string());
                tokio::spawn(async move {
                    while manager.lock().lane_of(&id).is_some() {
                        if engine.cancel(&id, &reason) {
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

    /// Puts a cancelled or failed job back in line as a new job with the same request, at `position` among the
    /// waiting jobs (`None`: last). Undoes a cancel; runs a failed job again. Returns the new job's id.
    pub fn requeue(&self, id: &str, position: Option<u32>) -> Result<String, QueueError> {
        let (work, source) = {
            let state = self.lock();
            let job = state
                .jobs
                .get(id)
                .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
            let refuse = |reason: &str| QueueError::NotRequeueable {
                id: id.to_string(),
                reason: reason.to_string(),
            };
            match job.state {
                JobState::Cancelled | JobState::Failed => {}
                JobState::Queued | JobState::Running => return Err(refuse("it has not ended")),
                JobState::Done => {
                    return Err(refuse(
                        "it is done; remix its image from the gallery to make it again",
                    ))
                }
            }
            let work = job.work.clone().ok_or_else(|| {
                refuse("only the latest cancelled or failed jobs are kept; send it again")
            })?;
            (work, job.source.clone())
        };
        let (work, destination) = work;
        let new = self.submit_work(work, destination, &source)?;
        if let Some(position) = position {
            self.move_to(&new, position)?;
        }
        Ok(new)
    }

    /// Stops taking new jobs: the running ones finish, the waiting ones wait (and new ones are still accepted).
    pub fn pause(&self) {
        self.set_paused(true);
        let _ = self.shared.paused.send(true);
    }

    /// Sets the paused flag, on disk too when the queue has a store (a paused queue stays paused after a restart).
    fn set_paused(&self, paused: bool) {
        let mut state = self.lock();
        state.paused = paused;
        if let Some(Err(e)) = state.store.as_ref().map(|s| s.set_paused(paused)) {
            tracing::warn!(error = %e, "the queue on disk was not updated");
        }
    }

    /// Takes jobs again after [`JobManager::pause`].
    pub fn resume(&self) {
        self.set_paused(false);
        let _ = self.shared.paused.send(false);
        self.wake_lanes();
    }

    /// Whether the queue is paused.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Pauses and resumes as they happen (`true`: paused).
    pub fn watch_paused(&self) -> broadcast::Receiver<bool> {
        self.shared.paused.subscribe()
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
        self.wake_lanes();
    }
}
