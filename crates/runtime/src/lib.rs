//! The running DiffuGen, beneath every door. [`Runtime::start`] assembles, from one resolved [`Config`], what the
//! HTTP API, the desktop app and the CLI all drive: the supervised engine, the VRAM orchestrator with its meter, the
//! gallery, the one job queue (kept on disk), the swappable model library with its folder watcher, downloads and
//! conversions. The doors translate their clients' requests onto it and add only what is theirs (routes and auth;
//! the window's state; a terminal's progress bar).

pub mod config;
pub mod metrics;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use diffugen_engine::{Engine, WorkerCommand};
use diffugen_gallery::Gallery;
use diffugen_jobs::{JobManager, JobOptions};
use diffugen_models::{FolderWatcher, Library};
use diffugen_vram::{GpuProbe, LaneDevice, Orchestrator, VramConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use config::{Config, ConfigError, Flags, Origin, Resolved, Source};
pub use metrics::Metrics;

/// The queue on disk, in the data folder.
pub const QUEUE_FILE: &str = "queue.sqlite";

/// How long the model folders must be quiet before a change is reported: a file being copied in is reported once.
const FOLDERS_SETTLE: Duration = Duration::from_millis(700);

/// What could not start, and where.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the gallery in {}: {source}", path.display())]
    Gallery {
        path: PathBuf,
        source: diffugen_gallery::GalleryError,
    },
    #[error("cannot open the queue in {}: {source}", path.display())]
    Queue {
        path: PathBuf,
        source: diffugen_jobs::StoreError,
    },
    #[error("cannot find the worker executable: {0}")]
    Worker(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Async(std::io::Error),
    /// More render lanes than this machine can run (a lane per GPU on a GPU build).
    #[error("{0}")]
    Lanes(String),
    /// The HTTP API's port (a door opens it; the runtime keeps the variant so every start error is one type).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the Ollama gateway on {addr}: {source}")]
    Gateway {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl StartError {
    /// A network door could not open (its port is taken): the rest can run without it.
    pub fn is_door(&self) -> bool {
        matches!(self, StartError::Listen { .. } | StartError::Gateway { .. })
    }
}

/// Where each of `lanes` render lanes runs. A GPU build with several lanes gets one per card NVML reads (lane `i`
/// on card `i`), and refuses more lanes than cards; otherwise lane 0 is the build's default device (taking the
/// GPU's turns with Ollama) and the others are CPU lanes.
pub fn lane_devices(
    lanes: u32,
    gpu_build: bool,
    readings: &[diffugen_vram::GpuReading],
) -> Result<Vec<LaneDevice>, String> {
    if !gpu_build || lanes <= 1 {
        return Ok(LaneDevice::for_lanes(lanes, None));
    }
    let cards: Vec<u32> = readings.iter().map(|g| g.index).collect();
    if (lanes as usize) > cards.len() {
        return Err(format!(
            "--lanes {lanes}: a lane renders on a GPU of its own and NVML sees {} here{}",
            cards.len(),
            if cards.is_empty() {
                " (several lanes on a GPU build need NVIDIA cards that NVML can read)"
            } else {
                ""
            }
        ));
    }
    Ok(LaneDevice::for_lanes(lanes, Some(&cards)))
}

/// What to start beyond the configuration.
pub struct StartOptions {
    pub config: Config,
    /// How to start the engine worker (normally this executable with the hidden worker subcommand).
    pub worker: WorkerCommand,
    pub gpu: Arc<dyn GpuProbe>,
    /// Jobs allowed to wait (not counting the one running).
    pub queue_depth: usize,
    /// The VRAM configuration when a door tunes more than the settings hold (timeouts, strictness); `None` takes
    /// the configuration's.
    pub vram: Option<VramConfig>,
    /// Keeps accepted jobs in `queue.sqlite` so waiting jobs survive a restart (the long-running doors); a
    /// one-shot command's queue lives in memory.
    pub durable_queue: bool,
    /// Watches the model folders and reports changes ([`Runtime::model_events`]).
    pub watch_folders: bool,
    /// Render lanes, one engine worker each (at least 1; `diffugen serve --lanes N`): on a GPU build with several,
    /// a lane per card ([`lane_devices`]); otherwise lane 0 takes the GPU's turns with Ollama and the others are CPU
    /// workers.
    pub lanes: u32,
    /// Records finished images in the data folder's gallery (a cluster worker sends its images to the front
    /// instead).
    pub gallery: bool,
    /// A cluster front: the queue hands its jobs to the cluster instead of rendering them on its own lanes
    /// ([`JobManager::start_front`]).
    pub front: bool,
}

/// Model files appeared, changed or went in the model folders (the picker lists them again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct ModelsChanged {
    /// The files and folders that changed.
    pub paths: Vec<String>,
}

/// The running pieces. Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: JobManager,
    config: RwLock<Config>,
    outputs_dir: PathBuf,
    /// Swapped when the model folders change in Settings; every door resolves against the same one.
    library: RwLock<Library>,
    downloads: diffugen_downloads::Downloads,
    conversions: diffugen_engine::convert::Conversions,
    models_changed: broadcast::Sender<ModelsChanged>,
    /// Watches the library's folders when asked to; replaced when they change.
    watcher: Mutex<Option<FolderWatcher>>,
    watching: bool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    metrics: Metrics,
    /// The cluster this runtime is the front of, once joined.
    front: RwLock<Option<Arc<diffugen_cluster::Front>>>,
    /// The cluster worker this runtime renders as, once it does.
    worker: RwLock<Option<Arc<diffugen_cluster::Worker>>>,
}

impl Runtime {
    /// Starts everything on the current tokio runtime.
    pub async fn start(options: StartOptions) -> Result<Runtime, StartError> {
        let StartOptions {
            config,
            worker,
            gpu,
            queue_depth,
            vram,
            durable_queue,
            watch_folders,
            lanes,
            gallery: record,
            front,
        } = options;
        let vram = match vram {
            Some(vram) => vram,
            None => config.vram_config()?,
        };
        let ollama = config.ollama_client()?;
        let gallery = config.gallery()?;
        let readings = gpu.read().unwrap_or_default();
        let devices = lane_devices(lanes, diffugen_engine::memory::GPU_BACKEND, &readings)
            .map_err(StartError::Lanes)?;
        let engines: Vec<Arc<Engine>> = devices
            .iter()
            .map(|device| Arc::new(Engine::new(worker.clone()).with_env(device.worker_env())))
            .collect();
        // VRAM budgets are checked against the cards at validation (the largest: a lane may be on any).
        diffugen_engine::memory::set_vram_total(
            readings
                .iter()
                .map(|g| g.total_bytes)
                .max_by(f64::total_cmp),
        );
        let cards: Vec<(u32, Arc<dyn diffugen_vram::DiffusionEngine>)> = devices
            .iter()
            .zip(&engines)
            .filter_map(|(device, engine)| {
                let engine: Arc<dyn diffugen_vram::DiffusionEngine> = engine.clone();
                device.card().map(|card| (card, engine))
            })
            .collect();
        let orchestrator = Orchestrator::with_cards(vram, ollama, gpu, cards);
        let store = if durable_queue {
            let path = config.data_dir.join(QUEUE_FILE);
            match diffugen_jobs::JobStore::open(&path, diffugen_jobs::HISTORY_KEPT) {
                Ok(store) => Some(Arc::new(store)),
                // The other process keeps its jobs; this one's queue lives in memory only.
                Err(e @ diffugen_jobs::StoreError::InUse(_)) => {
                    tracing::warn!(error = %e, "jobs accepted here will not survive a restart");
                    None
                }
                Err(source) => return Err(StartError::Queue { path, source }),
            }
        } else {
            None
        };
        let options = JobOptions {
            depth: queue_depth,
            orchestrator: Some(orchestrator.clone()),
            gallery: record.then(|| Arc::new(gallery)),
            defaults: config.job_defaults(),
            store,
        };
        let lanes = engines.into_iter().zip(devices).collect();
        let jobs = if front {
            JobManager::start_front_on_devices(lanes, options)
        } else {
            JobManager::start_on_devices(lanes, options)
        };
        let tasks = vec![
            orchestrator.start_meter(Duration::from_secs(1)),
            // Ollama's state is learned in the background, so a job never waits on an Ollama that is not running.
            orchestrator.start_ollama_watch(Duration::from_secs(5)),
        ];
        let runtime = Runtime::assemble(jobs, config, watch_folders);
        runtime
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(runtime)
    }

    /// A runtime around a queue assembled elsewhere (a test's, a benchmark's), serving `config`'s folders.
    pub fn over(jobs: JobManager, config: Config) -> Runtime {
        Runtime::assemble(jobs, config, false)
    }

    fn assemble(jobs: JobManager, config: Config, watching: bool) -> Runtime {
        let library = config.library();
        let metrics = Metrics::new();
        let metrics_tasks = metrics.start(&jobs, jobs.orchestrator());
        let runtime = Runtime {
            inner: Arc::new(Inner {
                downloads: diffugen_downloads::Downloads::new(2),
                conversions: diffugen_engine::convert::Conversions::new(
                    jobs.engine().command().clone(),
                ),
                jobs,
                outputs_dir: config.outputs_dir(),
                config: RwLock::new(config),
                library: RwLock::new(library.clone()),
                models_changed: broadcast::channel(64).0,
                watcher: Mutex::new(None),
                watching,
                tasks: Mutex::new(metrics_tasks),
                metrics,
                front: RwLock::new(None),
                worker: RwLock::new(None),
            }),
        };
        runtime.watch(&library);
        runtime
    }

    /// Stops the background tasks, leaves the cluster (if in one) and ends the engine worker.
    pub async fn shutdown(&self) {
        let worker = self
            .inner
            .worker
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(worker) = worker {
            worker.leave().await;
        }
        self.inner
            .front
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        *self.inner.watcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.engine().stop().await;
    }

    /// Joins a cluster as its front (the queue must be a front's: [`StartOptions::front`]): its jobs go to the
    /// cluster's workers, and [`Runtime::cluster_status`] reports the cluster. With `own_worker` (a name), this
    /// machine renders too, as a worker of that name over a queue of its own that shares this runtime's engines and
    /// VRAM orchestrator.
    pub async fn join_cluster(
        &self,
        cluster: diffugen_cluster::Cluster,
        own_worker: Option<&str>,
        ack_wait: Duration,
    ) -> Result<Arc<diffugen_cluster::Front>, diffugen_cluster::ClusterError> {
        let front = diffugen_cluster::Front::start(cluster.clone(), self.jobs().clone()).await?;
        *self.inner.front.write().unwrap_or_else(|e| e.into_inner()) = Some(front.clone());
        if let Some(name) = own_worker {
            let jobs = self.jobs();
            let lanes = jobs.engines().iter().cloned();
            let own = JobManager::start_on_devices(
                lanes.zip(jobs.devices().iter().copied()).collect(),
                JobOptions {
                    depth: jobs.engines().len() * 2,
                    orchestrator: jobs.orchestrator().cloned(),
                    gallery: None,
                    defaults: jobs.defaults(),
                    store: None,
                },
            );
            self.work_for_cluster(cluster, own, name, ack_wait).await?;
        }
        Ok(front)
    }

    /// Renders jobs of a cluster as the worker `name`, through `jobs` (this runtime's own queue for `diffugen
    /// worker`, a queue over its engines for a front that renders too), for the models in this runtime's folders.
    pub async fn work_for_cluster(
        &self,
        cluster: diffugen_cluster::Cluster,
        jobs: JobManager,
        name: &str,
        ack_wait: Duration,
    ) -> Result<Arc<diffugen_cluster::Worker>, diffugen_cluster::ClusterError> {
        let library = {
            let runtime = self.clone();
            move || runtime.local_library()
        };
        let orchestrator = jobs.orchestrator().cloned();
        let gpus = move || {
            orchestrator
                .as_ref()
                .map(|o| {
                    o.gpus()
                        .into_iter()
                        .map(|g| diffugen_cluster::protocol::GpuAnnouncement {
                            name: g.name,
                            total_bytes: g.total_bytes,
                            free_bytes: g.free_bytes,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let options = diffugen_cluster::WorkerOptions {
            name: name.to_string(),
            ack_wait,
            outputs: self.config().data_dir.join("worker-renders").join(name),
            max_deliver: diffugen_cluster::DEFAULT_MAX_DELIVER,
        };
        let worker = diffugen_cluster::Worker::start(cluster, jobs, library, gpus, options).await?;
        *self.inner.worker.write().unwrap_or_else(|e| e.into_inner()) = Some(worker.clone());
        Ok(worker)
    }

    /// The cluster this runtime is the front of, as it stands (`None`: not a front).
    pub async fn cluster_status(
        &self,
    ) -> Option<Result<diffugen_cluster::ClusterStatus, diffugen_cluster::ClusterError>> {
        let front = self
            .inner
            .front
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        Some(front.status().await)
    }

    pub fn jobs(&self) -> &JobManager {
        &self.inner.jobs
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.inner.jobs.engine()
    }

    /// The VRAM orchestrator (every runtime [`Runtime::start`] made has one).
    pub fn orchestrator(&self) -> Option<&Orchestrator> {
        self.inner.jobs.orchestrator()
    }

    /// The gallery every finished image is recorded in.
    pub fn gallery(&self) -> Option<&Arc<Gallery>> {
        self.inner.jobs.gallery()
    }

    /// What the runtime counted since it started, for `GET /metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn downloads(&self) -> &diffugen_downloads::Downloads {
        &self.inner.downloads
    }

    pub fn conversions(&self) -> &diffugen_engine::convert::Conversions {
        &self.inner.conversions
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.inner
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where the network doors write and serve images: the outputs folder this runtime started with (a new one
    /// set in Settings applies to them after a restart; the app's own jobs take it at once).
    pub fn outputs_dir(&self) -> &Path {
        &self.inner.outputs_dir
    }

    /// The model folders requests are resolved against.
    pub fn library(&self) -> Library {
        let library = self.local_library();
        let front = self
            .inner
            .front
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match front {
            // A front also knows the models its workers render, to check and accept jobs for them.
            Some(front) => library.with_remote(front.remote_models()),
            None => library,
        }
    }

    /// This machine's own models folders (what it can render itself).
    fn local_library(&self) -> Library {
        self.inner
            .library
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the settings file again and applies what applies at once: the model folders (for every door, and
    /// watched anew), the jobs' defaults (threads, memory options, keep-alive) and the VRAM policy. Returns the
    /// configuration now in force.
    pub fn reload_config(&self) -> Result<Config, ConfigError> {
        let mut config = self.inner.config.write().unwrap_or_else(|e| e.into_inner());
        config.reload()?;
        let library = config.library();
        if library.folders() != self.library().folders() {
            self.watch(&library);
        }
        *self
            .inner
            .library
            .write()
            .unwrap_or_else(|e| e.into_inner()) = library;
        self.jobs().set_defaults(config.job_defaults());
        // A front that renders too does it through its cluster worker's own queue.
        let worker = self
            .inner
            .worker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(worker) = worker {
            worker.jobs().set_defaults(config.job_defaults());
        }
        if let Some(orchestrator) = self.orchestrator() {
            let fresh = config.vram_config()?;
            let mut vram = orchestrator.config();
            vram.policy = fresh.policy;
            vram.after_queue = fresh.after_queue;
            orchestrator.set_config(vram);
        }
        Ok(config.clone())
    }

    /// Rewrites of a prompt by the prompt assistant, in the LLM's turn on the GPU (the app's Enhance button,
    /// `POST /api/v1/prompt/enhance`).
    pub async fn enhance_prompt(
        &self,
        request: &diffugen_jobs::assistant::EnhanceRequest,
    ) -> Result<diffugen_jobs::assistant::Suggestions, diffugen_jobs::assistant::EnhanceError> {
        let Some(orchestrator) = self.orchestrator() else {
            return Err(diffugen_jobs::assistant::AssistantError::Busy {
                detail: "this DiffuGen runs without VRAM orchestration, so it has no Ollama to ask"
                    .into(),
            }
            .into());
        };
        let setting = self.config().settings.assistant_model;
        diffugen_jobs::assistant::suggest(
            orchestrator,
            &self.library(),
            setting.as_deref(),
            request,
        )
        .await
    }

    /// A model file appeared, changed or went in the model folders.
    pub fn model_events(&self) -> broadcast::Receiver<ModelsChanged> {
        self.inner.models_changed.subscribe()
    }

    /// Watches `library`'s folders (when this runtime watches), sending a [`ModelsChanged`] after each settled
    /// burst of changes. A system that cannot watch them is logged: rescanning by hand still works.
    fn watch(&self, library: &Library) {
        if !self.inner.watching {
            return;
        }
        let mut watcher = self.inner.watcher.lock().unwrap_or_else(|e| e.into_inner());
        *watcher = None;
        // DiffuGen's own folder is where the first-run screen tells the user to put models: it must exist to be
        // watched.
        if let Err(e) = std::fs::create_dir_all(library.models_dir()) {
            tracing::warn!(dir = %library.models_dir().display(), error = %e, "cannot create the models folder");
        }
        let sender = self.inner.models_changed.clone();
        let folders: Vec<PathBuf> = library
            .folders()
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
        *watcher = FolderWatcher::start(&folders, FOLDERS_SETTLE, move |paths| {
            let _ = sender.send(ModelsChanged {
                paths: paths.iter().map(|p| display(p)).collect(),
            });
        })
        .map_err(|e| tracing::warn!(error = %e, "model folders are not watched; rescan by hand"))
        .ok();
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(index: u32) -> diffugen_vram::GpuReading {
        diffugen_vram::GpuReading {
            index,
            name: format!("GPU {index}"),
            total_bytes: 8.0 * 1024.0 * 1024.0 * 1024.0,
            used_bytes: 0.0,
            free_bytes: 8.0 * 1024.0 * 1024.0 * 1024.0,
            processes: Vec::new(),
        }
    }

    #[test]
    fn a_gpu_build_runs_a_lane_per_card_and_refuses_more_lanes_than_cards() {
        let two = [card(0), card(1)];
        assert_eq!(
            lane_devices(2, true, &two).unwrap(),
            vec![LaneDevice::Gpu { index: 0 }, LaneDevice::Gpu { index: 1 }]
        );
        assert_eq!(
            lane_devices(1, true, &two).unwrap(),
            vec![LaneDevice::Default]
        );
        let refused = lane_devices(3, true, &two).unwrap_err();
        assert!(
            refused.contains("--lanes 3") && refused.contains("NVML sees 2"),
            "{refused}"
        );
        let none = lane_devices(2, true, &[]).unwrap_err();
        assert!(none.contains("NVML sees 0"), "{none}");
    }

    #[test]
    fn a_cpu_build_runs_the_default_lane_and_cpu_lanes_whatever_cards_it_sees() {
        assert_eq!(
            lane_devices(3, false, &[card(0), card(1)]).unwrap(),
            vec![LaneDevice::Default, LaneDevice::Cpu, LaneDevice::Cpu]
        );
    }
}
