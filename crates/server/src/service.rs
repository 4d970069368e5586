//! Everything `diffugen serve` runs, assembled in one place so the desktop app starts exactly the same thing on
//! its background thread: the supervised engine, the VRAM orchestrator with its meter, the gallery, the one job
//! queue, the HTTP API and the Ollama gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diffugen_engine::{Engine, WorkerCommand};
use diffugen_gallery::Gallery;
use diffugen_jobs::{JobManager, JobOptions};
use diffugen_vram::{GpuProbe, OllamaClient, Orchestrator, VramConfig};

use crate::{AppState, ServerConfig, ServerHandle};

/// The queue on disk, in the data folder.
pub const QUEUE_FILE: &str = "queue.sqlite";

/// What to start.
pub struct ServiceConfig {
    pub server: ServerConfig,
    /// Holds the gallery (`gallery.sqlite`, thumbnails, trash).
    pub data_dir: PathBuf,
    /// How to start the engine worker (normally this executable with the hidden worker subcommand).
    pub worker: WorkerCommand,
    pub queue_depth: usize,
    pub ollama: OllamaClient,
    pub vram: VramConfig,
    pub gpu: Arc<dyn GpuProbe>,
    /// Where the HTTP API listens; `None` runs the queue without it (the desktop app with the API off).
    pub api_addr: Option<SocketAddr>,
    /// Where the Ollama gateway listens; `None` for no gateway.
    pub gateway_addr: Option<SocketAddr>,
    /// What jobs get when they leave something out (threads, memory options, the idle model's keep-alive).
    pub job_defaults: diffugen_jobs::JobDefaults,
}

/// The running pieces.
pub struct Service {
    pub engine: Arc<Engine>,
    pub orchestrator: Orchestrator,
    pub jobs: JobManager,
    /// The queue, model library and downloads the API serves; the desktop app's commands use the same.
    pub state: AppState,
    pub api: Option<ServerHandle>,
    pub gateway: Option<ServerHandle>,
    meter: tokio::task::JoinHandle<()>,
    ollama_watch: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Starts everything on the current tokio runtime. Errors say what could not start and where.
    pub async fn start(config: ServiceConfig) -> Result<Service, String> {
        let engine = Arc::new(Engine::new(config.worker));
        // VRAM budgets are checked against the card at validation.
        diffugen_engine::memory::set_vram_total(
            config
                .gpu
                .read()
                .ok()
                .and_then(|g| g.first().map(|g| g.total_bytes)),
        );
        let orchestrator =
            Orchestrator::new(config.vram, config.ollama, config.gpu, engine.clone());
        let meter = orchestrator.start_meter(Duration::from_secs(1));
        // Ollama's state is learned in the background, so a job never waits on an Ollama that is not running.
        let ollama_watch = orchestrator.start_ollama_watch(Duration::from_secs(5));
        let gallery = Gallery::open(&config.data_dir)
            .map(|g| g.with_outputs_dir(config.server.outputs_dir.clone()))
            .map_err(|e| {
                format!(
                    "cannot open the gallery in {}: {e}",
                    config.data_dir.display()
                )
            })?;
        let store = match diffugen_jobs::JobStore::open(
            &config.data_dir.join(QUEUE_FILE),
            diffugen_jobs::HISTORY_KEPT,
        ) {
            Ok(store) => Some(Arc::new(store)),
            // The other process keeps its jobs; this one's queue lives in memory only.
            Err(e @ diffugen_jobs::StoreError::InUse(_)) => {
                tracing::warn!(error = %e, "jobs accepted here will not survive a restart");
                None
            }
            Err(e) => return Err(e.to_string()),
        };
        let jobs = JobManager::start(
            engine.clone(),
            JobOptions {
                depth: config.queue_depth,
                orchestrator: Some(orchestrator.clone()),
                gallery: Some(Arc::new(gallery)),
                defaults: config.job_defaults,
                store,
            },
        );
        let state = AppState::new(jobs.clone(), &config.server);
        let api = match config.api_addr {
            Some(addr) => Some(
                crate::serve(addr, state.clone())
                    .await
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            ),
            None => None,
        };
        let gateway = match config.gateway_addr {
            Some(addr) => Some(
                crate::gateway::serve_with(
                    addr,
                    orchestrator.clone(),
                    crate::gateway::Access {
                        api_key: config.server.api_key.as_deref().map(Into::into),
                        allowed_hosts: config.server.allowed_hosts.clone(),
                    },
                )
                .await
                .map_err(|e| format!("cannot start the Ollama gateway on {addr}: {e}"))?,
            ),
            None => None,
        };
        Ok(Service {
            engine,
            orchestrator,
            jobs,
            state,
            api,
            gateway,
            meter,
            ollama_watch,
        })
    }

    /// Stops listening, lets requests in flight finish, and ends the engine worker.
    pub async fn stop(self) -> Result<(), String> {
        self.meter.abort();
        self.ollama_watch.abort();
        if let Some(api) = self.api {
            api.shutdown().await.map_err(|e| e.to_string())?;
        }
        if let Some(gateway) = self.gateway {
            gateway.shutdown().await.map_err(|e| e.to_string())?;
        }
        self.engine.stop().await;
        Ok(())
    }
}
