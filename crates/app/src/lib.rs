//! The desktop app without its window: everything a Tauri command does, as plain async Rust that builds and is
//! tested without webkit or Node. The shell in `src-tauri/` only forwards commands here and events from here.
//!
//! [`Core::start`] starts the same [`Runtime`] as `diffugen serve` — engine, VRAM orchestrator, gallery, the one job
//! queue, the model library and its folder watcher — and opens the same doors over it (the local API, default on at
//! 127.0.0.1:5199, and the Ollama gateway), so a job sent by Open WebUI is in the same queue the window shows. Every error is an [`AppError`]: a sentence that says what to do, naming the form
//! field when one is to blame.

mod form;
mod memory;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffugen_downloads::{CatalogEntry, DownloadEvent, PullInfo};
use diffugen_engine::{Destination, JobEvent, WorkerCommand};
use diffugen_gallery::{Entry, Gallery, Page, Query};
use diffugen_jobs::{JobInfo, JobManager, LaneInfo};
use diffugen_models::{Library, ModelCard, ModelEntry};
use diffugen_runtime::{Config, Runtime, StartError, StartOptions};
use diffugen_server::{Doors, DoorsConfig, ServerConfig};
use diffugen_settings::Settings;
use diffugen_vram::{GpuProbe, SwitchReport, SwitchTarget, VramEvent, VramSnapshot};
use serde::Serialize;
use tokio::sync::broadcast;

pub use diffugen_runtime::ModelsChanged;
pub use form::{FormLora, GenerateForm};

/// An error as the UI shows it.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct AppError {
    /// What went wrong and what to do about it.
    pub message: String,
    /// The form field to mark, when one is to blame.
    pub field: Option<String>,
}

impl AppError {
    pub fn new(message: impl Into<String>) -> AppError {
        AppError {
            message: message.into(),
            field: None,
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> AppError {
        AppError {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<diffugen_gallery::GalleryError> for AppError {
    fn from(e: diffugen_gallery::GalleryError) -> AppError {
        match e {
            diffugen_gallery::GalleryError::Invalid { field, message } => {
                AppError::field(field, message)
            }
            other => AppError::new(other.to_string()),
        }
    }
}

impl From<diffugen_jobs::QueueError> for AppError {
    fn from(e: diffugen_jobs::QueueError) -> AppError {
        AppError::new(e.to_string())
    }
}

/// Where the app keeps things and what it serves, for the status bar and the Settings panel.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    pub models_dir: String,
    /// True when `DIFFUGEN_MODELS_DIR` fixes the models folder (the setting is then ignored).
    pub models_dir_fixed: bool,
    /// Settings an environment variable overrides: shown locked, naming the variable.
    pub locked: Vec<LockedSetting>,
    pub extra_models_dirs: Vec<String>,
    pub outputs_dir: String,
    pub settings_file: String,
    /// The local API's address while it runs, e.g. `http://127.0.0.1:5199`.
    pub api_url: Option<String>,
    /// Why the local API is not running although it is enabled (e.g. the port is taken).
    pub api_error: Option<String>,
    pub gateway_url: Option<String>,
    /// Set when the API listens beyond this machine without a key.
    pub api_warning: Option<String>,
    /// The cluster's NATS server while the app is its front (without a password).
    pub cluster_url: Option<String>,
    /// Why the app is not the front of the cluster its settings name (the server cannot be reached): it renders
    /// everything on this computer meanwhile.
    pub cluster_error: Option<String>,
}

/// A setting an environment variable fixes (the file's value is ignored while it is set).
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct LockedSetting {
    pub key: String,
    /// The variable, e.g. `DIFFUGEN_VRAM_POLICY`.
    pub variable: String,
}

/// The model picker's contents.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct ModelList {
    pub cards: Vec<ModelCard>,
    /// Every file found, loose pieces and LoRAs included.
    pub files: Vec<ModelEntry>,
    /// The LoRA names the picker offers.
    pub loras: Vec<String>,
    /// The model the engine holds in memory now.
    pub loaded: Option<String>,
    pub models_dir: String,
    /// What the sampler and scheduler pickers offer (sd.cpp's names).
    pub samplers: Vec<String>,
    pub schedulers: Vec<String>,
}

/// A gallery board and how many images it holds.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct Board {
    pub name: String,
    pub count: u32,
}

/// What changing a setting did.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct SettingChange {
    pub settings: Settings,
    /// The change applies after DiffuGen restarts (the API address, the gateway, Ollama's URL).
    pub restart_needed: bool,
}

/// How the core starts.
pub struct CoreOptions {
    /// The resolved configuration (the app has no flags: the environment over the settings file).
    pub config: Config,
    /// The engine worker: the app's own executable with the hidden worker argument.
    pub worker: WorkerCommand,
    pub gpu: Arc<dyn GpuProbe>,
}

/// The running app: the runtime, the doors it opened, and why the API is missing when it is.
pub struct Core {
    runtime: Runtime,
    /// The tokio runtime the core started on: the window's plain (non-async) commands run on its main thread,
    /// outside any runtime, and what they start (a download, a conversion, a cancel's retry) is spawned here.
    handle: tokio::runtime::Handle,
    doors: Doors,
    api_error: Option<String>,
    cluster_url: Option<String>,
    cluster_error: Option<String>,
}

/// Settings that only take effect when the background services start again (the API keeps serving images from
/// the outputs folder it started with).
const RESTART_KEYS: &[&str] = &[
    "outputs_dir",
    "api_enabled",
    "api_host",
    "api_port",
    "api_key",
    "gateway_enabled",
    "gateway_port",
    "ollama_url",
    "cluster_url",
];

/// Why the app renders everything here although its settings name a cluster.
fn cluster_unreachable(e: &diffugen_cluster::ClusterError) -> String {
    format!(
        "{e}. Rendering on this computer only: check the cluster URL in Settings (and that the NATS server runs with \
         -js), then restart DiffuGen."
    )
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

impl Core {
    /// Starts the runtime and its doors on the current tokio runtime. When the API's port is taken the app still
    /// starts, without the network doors, and [`AppInfo::api_error`] says why.
    pub async fn start(options: CoreOptions) -> Result<Core, StartError> {
        let CoreOptions {
            config,
            worker,
            gpu,
        } = options;
        let api = config.api_enabled();
        let doors = DoorsConfig {
            server: ServerConfig {
                api_key: config.api_key(),
                ..ServerConfig::default()
            },
            api_addr: if api { Some(config.api_addr()?) } else { None },
            // The gateway stays on this machine, like Ollama, whatever the API's host.
            gateway_addr: (api && config.gateway_enabled())
                .then(|| config.gateway_addr(IpAddr::from([127, 0, 0, 1]))),
        };
        // With a cluster in the settings, the app is its front and renders here too, as the worker `local`. A
        // server that cannot be reached must not keep the window from opening: everything renders here, and the
        // window says why.
        let (cluster, mut cluster_error) = match config.cluster_url() {
            Some(url) => match diffugen_cluster::Cluster::connect(&url, "app", None).await {
                Ok(cluster) => (Some(cluster), None),
                Err(e) => (None, Some(cluster_unreachable(&e))),
            },
            None => (None, None),
        };
        let start = |front: bool| StartOptions {
            config: config.clone(),
            worker: worker.clone(),
            gpu: gpu.clone(),
            queue_depth: 64,
            vram: None,
            durable_queue: true,
            watch_folders: true,
            lanes: 1,
            gallery: true,
            front,
        };
        let mut runtime = Runtime::start(start(cluster.is_some())).await?;
        let mut cluster_url = None;
        if let Some(cluster) = cluster {
            let url = cluster.url().to_string();
            match runtime
                .join_cluster(cluster, Some("local"), diffugen_cluster::DEFAULT_ACK_WAIT)
                .await
            {
                Ok(_) => cluster_url = Some(url),
                Err(e) => {
                    runtime.shutdown().await;
                    cluster_error = Some(cluster_unreachable(&e));
                    runtime = Runtime::start(start(false)).await?;
                }
            }
        }
        // The Queue shows every job's live preview, whichever client sent it (a cheap latent projection per step).
        runtime
            .jobs()
            .preview_every_job(Some(diffugen_engine::params::PreviewRequest {
                mode: diffugen_engine::params::PreviewMode::Proj,
                interval: 1,
            }));
        let (doors, api_error) = match Doors::open(&runtime, doors).await {
            Ok(doors) => (doors, None),
            // A taken port must not keep the window from opening: run without the network doors, say why.
            Err(e) if e.is_door() => {
                tracing::warn!(error = %e, "starting without the local API");
                (
                    Doors::closed(&runtime),
                    Some(format!(
                        "{e}. Another program (or another DiffuGen) uses the port: change it in Settings and restart."
                    )),
                )
            }
            Err(e) => {
                runtime.shutdown().await;
                return Err(e);
            }
        };
        Ok(Core {
            runtime,
            handle: tokio::runtime::Handle::current(),
            doors,
            api_error,
            cluster_url,
            cluster_error,
        })
    }

    /// Closes the doors and stops the runtime.
    pub async fn stop(self) -> Result<(), String> {
        let closed = self.doors.close().await.map_err(|e| e.to_string());
        self.runtime.shutdown().await;
        closed
    }

    /// Ends the engine worker (when the window closes); the API stops with the process.
    pub async fn stop_engine(&self) {
        self.runtime.engine().stop().await;
    }

    pub fn jobs(&self) -> &JobManager {
        self.runtime.jobs()
    }

    /// The runtime beneath the window and the API.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn config(&self) -> Config {
        self.runtime.config()
    }

    /// The model folders, shared with the API (a folder added in Settings is visible to Open WebUI at once).
    fn library(&self) -> Library {
        self.runtime.library()
    }

    fn gallery(&self) -> Result<&Arc<Gallery>, AppError> {
        self.runtime
            .gallery()
            .ok_or_else(|| AppError::new("this runtime keeps no gallery"))
    }

    /// Every job's events, live.
    pub fn job_events(&self) -> broadcast::Receiver<JobEvent> {
        self.runtime.jobs().watch()
    }

    /// The VRAM meter (a snapshot every second while someone listens) and the orchestrator's switches.
    pub fn vram_events(&self) -> broadcast::Receiver<VramEvent> {
        match self.runtime.orchestrator() {
            Some(orchestrator) => orchestrator.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// A model file appeared, changed or went in the model folders.
    pub fn model_events(&self) -> broadcast::Receiver<ModelsChanged> {
        self.runtime.model_events()
    }

    /// Every download's events, live.
    pub fn download_events(&self) -> broadcast::Receiver<DownloadEvent> {
        self.runtime.downloads().watch()
    }

    pub fn info(&self) -> AppInfo {
        let config = self.config();
        let api_url = self
            .doors
            .api
            .as_ref()
            .map(|api| format!("http://{}", api.addr));
        let exposed = self
            .doors
            .api
            .as_ref()
            .is_some_and(|api| !api.addr.ip().is_loopback());
        let origin = config.origin("models_dir").source;
        AppInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_dir: display(&config.data_dir),
            models_dir: display(&config.models_dir),
            models_dir_fixed: matches!(
                origin,
                diffugen_runtime::Source::Env | diffugen_runtime::Source::Flag
            ),
            locked: config
                .locked()
                .into_iter()
                .map(|(key, variable)| LockedSetting { key, variable })
                .collect(),
            extra_models_dirs: config.extra_models_dirs.iter().map(|p| display(p)).collect(),
            outputs_dir: display(&config.outputs_dir()),
            settings_file: display(&config.settings_file()),
            api_url,
            api_error: self.api_error.clone(),
            cluster_url: self.cluster_url.clone(),
            cluster_error: self.cluster_error.clone(),
            gateway_url: self
                .doors
                .gateway
                .as_ref()
                .map(|g| format!("http://{}", g.addr)),
            api_warning: (exposed && config.api_key().is_none()).then(|| {
                "The API listens beyond this computer without an API key: anyone on your network can generate \
                 images and read your gallery. Set an API key."
                    .to_string()
            }),
        }
    }

    /// Model cards, files and LoRAs (the folders are read on a blocking thread).
    pub async fn models(&self) -> ModelList {
        let library = self.library();
        let (cards, files) =
            tokio::task::spawn_blocking(move || (library.all_cards(), library.scan()))
                .await
                .unwrap_or_default();
        let mut loras: Vec<String> = files
            .iter()
            .filter(|f| f.role == diffugen_models::Role::Lora && f.error.is_none())
            .map(|f| f.id.clone())
            .collect();
        loras.sort();
        loras.dedup();
        ModelList {
            cards,
            files,
            loras,
            loaded: self.runtime.engine().loaded_model(),
            models_dir: display(&self.config().models_dir),
            samplers: diffugen_sd::SAMPLERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            schedulers: diffugen_sd::SCHEDULERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// The Enhance button: rewrites of the form's prompt by the local LLM, to look at, edit and accept. Errors name
    /// the form field (`prompt`, `model`, `count`) or `enhance_prompt` when the assistant is missing.
    pub async fn enhance_prompt(
        &self,
        request: diffugen_jobs::assistant::EnhanceRequest,
    ) -> Result<diffugen_jobs::assistant::Suggestions, AppError> {
        use diffugen_jobs::assistant::EnhanceError;
        self.runtime
            .enhance_prompt(&request)
            .await
            .map_err(|e| match e {
                EnhanceError::Invalid { field, message } => AppError::field(field, message),
                EnhanceError::Assistant(error) => {
                    // The message names the field for the other doors; next to the field it need not.
                    let message = error.to_string();
                    let prefix = format!("{}: ", error.field());
                    let message = message.strip_prefix(&prefix).unwrap_or(&message);
                    AppError::field(error.field(), message)
                }
            })
    }

    pub fn catalog(&self) -> Vec<CatalogEntry> {
        diffugen_downloads::catalog()
    }

    /// Inside the core's tokio runtime until the guard is dropped: for a plain command that starts a task.
    fn entered(&self) -> tokio::runtime::EnterGuard<'_> {
        self.handle.enter()
    }

    /// Starts a download of a catalog model or a URL into the models folder.
    pub fn download(&self, target: &str, sha256: Option<String>) -> Result<String, AppError> {
        let _inside = self.entered();
        let config = self.config();
        let plan = diffugen_downloads::plan(target, &config.models_dir, sha256, config.hf_token())
            .map_err(|e| match e {
                diffugen_downloads::DownloadError::Invalid { field, message } => {
                    AppError::field(field, message)
                }
                other => AppError::new(other.to_string()),
            })?;
        Ok(self.runtime.downloads().start(plan))
    }

    pub fn downloads(&self) -> Vec<PullInfo> {
        self.runtime.downloads().list()
    }

    pub fn cancel_download(&self, id: &str) -> Result<(), AppError> {
        let _inside = self.entered();
        if self.runtime.downloads().cancel(id) {
            Ok(())
        } else {
            Err(AppError::new(format!("no download with id '{id}'")))
        }
    }

    /// Runs a failed or cancelled download again; returns the new download's id (it takes the old one's row).
    pub fn retry_download(&self, id: &str) -> Result<String, AppError> {
        let _inside = self.entered();
        self.runtime.downloads().retry(id).ok_or_else(|| {
            AppError::new(format!(
                "download '{id}' cannot be tried again: only a failed or cancelled download can"
            ))
        })
    }

    /// Takes an ended download off the list.
    pub fn dismiss_download(&self, id: &str) -> Result<(), AppError> {
        if self.runtime.downloads().dismiss(id) {
            Ok(())
        } else {
            Err(AppError::new(format!(
                "download '{id}' cannot be removed: only an ended download can"
            )))
        }
    }

    /// Checks the form against the model and queues it. Returns the job id.
    pub async fn generate(&self, form: GenerateForm) -> Result<String, AppError> {
        if form.model.trim().is_empty() {
            return Err(AppError::field(
                "model",
                "choose a model (Models shows what is installed and what can be downloaded)",
            ));
        }
        let config = self.config();
        let request = form.to_request(config.settings.threads)?;
        self.submit(request, &config).await
    }

    /// Validates a request against the app's library (off the async threads: it reads headers and decodes images)
    /// and queues it as the app's job; the first invalid field is the error.
    async fn submit(
        &self,
        request: diffugen_engine::GenerateRequest,
        config: &Config,
    ) -> Result<String, AppError> {
        let library = self.library();
        let spec =
            tokio::task::spawn_blocking(move || diffugen_engine::validate(&request, &library))
                .await
                .map_err(|e| AppError::new(e.to_string()))?
                .map_err(|errors| {
                    let first = errors.first();
                    AppError::field(&first.field, first.message.clone())
                })?;
        Ok(self
            .runtime
            .jobs()
            .submit(spec, Destination::Folder(config.outputs_dir()), "app")?)
    }

    /// The ControlNet models in the models folders, by id (for an SD 1.x model's control slot).
    pub fn controlnets(&self) -> Vec<String> {
        self.library()
            .controlnets()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// The control map a picture (`data:` URL) becomes with `module` (canny thresholds 0..255), as a PNG `data:` URL:
    /// the live preview beside the control slot. At most 512 px on the shorter side, so it stays quick.
    pub async fn control_preview(
        &self,
        image: String,
        module: diffugen_engine::control::ControlModule,
        low: f64,
        high: f64,
    ) -> Result<String, AppError> {
        use base64::Engine as _;
        let thresholds = match module {
            diffugen_engine::control::ControlModule::Canny => {
                diffugen_engine::control::canny_thresholds(low, high).map_err(|e| {
                    let field = if e.starts_with("threshold_b") {
                        "control_high"
                    } else {
                        "control_low"
                    };
                    AppError::field(
                        field,
                        e.replace("threshold_a", "low threshold")
                            .replace("threshold_b", "high threshold"),
                    )
                })?
            }
            diffugen_engine::control::ControlModule::None => (0.0, 0.0),
        };
        let bytes = form::data_url_bytes("control_image", &image)?;
        let png = tokio::task::spawn_blocking(move || {
            diffugen_engine::control::preview(module, &bytes, thresholds)
        })
        .await
        .map_err(|e| AppError::new(e.to_string()))?
        .map_err(|e| AppError::field("control_image", e))?;
        Ok(format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        ))
    }

    /// The names Upscale offers: `Lanczos`, `Nearest`, then the upscaling (ESRGAN) models in the models folders.
    pub fn upscalers(&self) -> Vec<String> {
        diffugen_engine::upscale::upscaler_names(&self.library())
    }

    /// Enlarges a gallery image by `scale` with `upscaler` (a name from [`Core::upscalers`]) as a job in the
    /// queue; the result is recorded in the gallery, linked to the image. Returns the job's id.
    pub async fn upscale_gallery_image(
        &self,
        id: u32,
        scale: f64,
        upscaler: String,
    ) -> Result<String, AppError> {
        let entry = self.gallery()?.get(id)?;
        let config = self.config();
        let library = self.library();
        let threads = config.settings.threads;
        let spec = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&entry.path)
                .map_err(|e| AppError::new(format!("cannot read {}: {e}", entry.path)))?;
            let request = diffugen_engine::upscale::UpscaleRequest {
                upscaler: Some(upscaler),
                scale: Some(scale),
                ..Default::default()
            };
            let image = diffugen_engine::upscale::SourceImage {
                bytes,
                source: Some(format!("gallery:{id}")),
            };
            diffugen_engine::upscale::validate(&request, &[image], &library).map_err(|errors| {
                let first = errors.first();
                AppError::field(&first.field, first.message.clone())
            })
        })
        .await
        .map_err(|e| AppError::new(e.to_string()))??;
        let mut spec = spec;
        spec.threads = threads;
        Ok(self.runtime.jobs().submit_work(
            diffugen_engine::Work::Upscale(Box::new(spec)),
            Destination::Folder(config.outputs_dir()),
            "app",
        )?)
    }

    pub fn queue(&self) -> Vec<JobInfo> {
        self.runtime.jobs().queue()
    }

    /// Finished, failed and cancelled jobs from every source, the newest first; kept across restarts.
    pub fn queue_history(&self) -> Vec<JobInfo> {
        self.runtime.jobs().history()
    }

    pub fn job(&self, id: &str) -> Result<JobInfo, AppError> {
        Ok(self.runtime.jobs().get(id)?)
    }

    pub fn cancel_job(&self, id: &str) -> Result<bool, AppError> {
        let _inside = self.entered();
        Ok(self.runtime.jobs().cancel(id, "cancelled in the app")?)
    }

    /// Moves a waiting job to `position` among the waiting jobs (0 = next).
    pub fn move_job(&self, id: &str, position: u32) -> Result<(), AppError> {
        let _inside = self.entered();
        if self.runtime.jobs().move_to(id, position)? {
            Ok(())
        } else {
            Err(AppError::new(
                "only waiting jobs can be moved; this one has started or ended",
            ))
        }
    }

    /// Puts a cancelled or failed job back in line (undo a cancel, run a failed job again); the new job's id.
    pub fn requeue_job(&self, id: &str, position: Option<u32>) -> Result<String, AppError> {
        let _inside = self.entered();
        Ok(self.runtime.jobs().requeue(id, position)?)
    }

    /// Pauses or resumes the queue (the running job finishes either way); returns whether it is paused.
    pub fn set_queue_paused(&self, paused: bool) -> bool {
        let _inside = self.entered();
        if paused {
            self.runtime.jobs().pause();
        } else {
            self.runtime.jobs().resume();
        }
        self.queue_paused()
    }

    pub fn queue_paused(&self) -> bool {
        self.runtime.jobs().is_paused()
    }

    /// The render lanes: where each renders (its GPU when it has one of its own), the model it holds, its job.
    pub fn lanes(&self) -> Vec<LaneInfo> {
        self.runtime.jobs().lanes()
    }

    pub async fn gallery_page(&self, query: Query) -> Result<Page, AppError> {
        let gallery = self.gallery()?.clone();
        blocking(move || gallery.list(&query).map_err(AppError::from)).await
    }

    pub async fn gallery_count(&self, query: Query) -> Result<u32, AppError> {
        let gallery = self.gallery()?.clone();
        blocking(move || gallery.count_matching(&query).map_err(AppError::from)).await
    }

    pub fn gallery_entry(&self, id: u32) -> Result<Entry, AppError> {
        Ok(self.gallery()?.get(id)?)
    }

    pub fn gallery_favorite(&self, id: u32, favorite: bool) -> Result<Entry, AppError> {
        Ok(self.gallery()?.set_favorite(id, favorite)?)
    }

    /// Moves the image to the trash (undo: [`Core::gallery_restore`]).
    pub fn gallery_delete(&self, id: u32) -> Result<Entry, AppError> {
        Ok(self.gallery()?.delete(id)?)
    }

    pub fn gallery_restore(&self, id: u32) -> Result<Entry, AppError> {
        Ok(self.gallery()?.restore(id)?)
    }

    /// Runs `one` on every id in order; on a failure the ones before it stay done and the message says so.
    fn each<T>(
        ids: &[u32],
        mut one: impl FnMut(u32) -> Result<T, AppError>,
    ) -> Result<Vec<T>, AppError> {
        let mut done = Vec::with_capacity(ids.len());
        for &id in ids {
            match one(id) {
                Ok(entry) => done.push(entry),
                Err(e) if done.is_empty() => return Err(e),
                Err(e) => {
                    return Err(AppError::new(format!(
                        "{} of {} images done; image {id} failed: {}",
                        done.len(),
                        ids.len(),
                        e.message
                    )))
                }
            }
        }
        Ok(done)
    }

    /// Moves several images to the trash in one call (undo: [`Core::gallery_restore_many`]).
    pub fn gallery_delete_many(&self, ids: &[u32]) -> Result<Vec<Entry>, AppError> {
        let gallery = self.gallery()?;
        Self::each(ids, |id| Ok(gallery.delete(id)?))
    }

    pub fn gallery_restore_many(&self, ids: &[u32]) -> Result<Vec<Entry>, AppError> {
        let gallery = self.gallery()?;
        Self::each(ids, |id| Ok(gallery.restore(id)?))
    }

    pub fn gallery_favorite_many(
        &self,
        ids: &[u32],
        favorite: bool,
    ) -> Result<Vec<Entry>, AppError> {
        let gallery = self.gallery()?;
        Self::each(ids, |id| Ok(gallery.set_favorite(id, favorite)?))
    }

    /// The ids from one gallery image to another (both included) under `query`'s filters and order, loaded in the
    /// grid or not: what a shift-click selects.
    pub fn gallery_ids_between(
        &self,
        query: &Query,
        from: u32,
        to: u32,
    ) -> Result<Vec<u32>, AppError> {
        Ok(self.gallery()?.ids_between(query, from, to)?)
    }

    pub fn gallery_create_board(&self, name: &str) -> Result<Vec<Board>, AppError> {
        self.gallery()?.create_board(name)?;
        self.gallery_boards()
    }

    pub fn gallery_rename_board(&self, from: &str, to: &str) -> Result<Vec<Board>, AppError> {
        self.gallery()?.rename_board(from, to)?;
        self.gallery_boards()
    }

    pub fn gallery_delete_board(&self, name: &str) -> Result<Vec<Board>, AppError> {
        self.gallery()?.delete_board(name)?;
        self.gallery_boards()
    }

    /// Files images into a board (created if new) or takes them off it; returns the updated entries.
    pub fn gallery_set_board(
        &self,
        ids: &[u32],
        board: &str,
        on: bool,
    ) -> Result<Vec<Entry>, AppError> {
        ids.iter()
            .map(|&id| {
                Ok(if on {
                    self.gallery()?.add_to_board(id, board)?
                } else {
                    self.gallery()?.remove_from_board(id, board)?
                })
            })
            .collect()
    }

    pub fn gallery_set_tags(&self, id: u32, tags: &[String]) -> Result<Entry, AppError> {
        Ok(self.gallery()?.set_tags(id, tags)?)
    }

    /// A gallery image as a `data:` URL, for the form's init image ("Use as init image").
    pub fn gallery_image_data(&self, id: u32) -> Result<String, AppError> {
        use base64::Engine as _;
        let entry = self.gallery()?.get(id)?;
        let path = std::path::Path::new(&entry.path);
        let mime = diffugen_gallery::media_type(path).unwrap_or("image/png");
        let bytes = std::fs::read(path)
            .map_err(|e| AppError::new(format!("cannot read {}: {e}", path.display())))?;
        Ok(format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    pub fn gallery_remix(&self, id: u32) -> Result<GenerateForm, AppError> {
        let gallery = self.gallery()?;
        let entry = gallery.get(id)?;
        let init = gallery.init_image(&entry);
        let extras = gallery.remix_extras(&entry);
        Ok(GenerateForm::from_entry(&entry, init.as_deref(), &extras))
    }

    /// Refines a gallery image (img2img of the image itself at `strength`, 0 < s <= 1, with its own prompt, model,
    /// parameters and seed) as a job in the queue; returns the job's id.
    pub async fn gallery_refine(&self, id: u32, strength: f64) -> Result<String, AppError> {
        let gallery = self.gallery()?.clone();
        let request = tokio::task::spawn_blocking(move || {
            gallery.refine(id, strength).map_err(AppError::from)
        })
        .await
        .map_err(|e| AppError::new(e.to_string()))??;
        let mut request: diffugen_engine::GenerateRequest = serde_json::from_value(request)
            .map_err(|e| {
                AppError::new(format!("the image's parameters cannot be read back: {e}"))
            })?;
        let config = self.config();
        request.threads = request.threads.or(config.settings.threads);
        self.submit(request, &config).await
    }

    pub fn gallery_boards(&self) -> Result<Vec<Board>, AppError> {
        Ok(self
            .gallery()?
            .boards()?
            .into_iter()
            .map(|(name, count)| Board { name, count })
            .collect())
    }

    /// Writes a copy of the image to `destination` (a path the user chose in a save dialog).
    pub fn gallery_save_as(&self, id: u32, destination: &str) -> Result<(), AppError> {
        let entry = self.gallery()?.get(id)?;
        std::fs::copy(&entry.path, destination)
            .map_err(|e| AppError::new(format!("cannot save the image to {destination}: {e}")))?;
        Ok(())
    }

    /// Copies several images into `folder` (the multi-select's Export), each under its own file name — a name
    /// already there gets " (2)", " (3)", ... so nothing is overwritten. Returns the written paths; one that fails
    /// stops the export saying how many were copied (as every bulk action does).
    pub fn gallery_export_many(&self, ids: &[u32], folder: &str) -> Result<Vec<String>, AppError> {
        let folder = Path::new(folder);
        if !folder.is_dir() {
            return Err(AppError::new(format!(
                "{} is not a folder",
                folder.display()
            )));
        }
        let gallery = self.gallery()?;
        Self::each(ids, |id| {
            let entry = gallery.get(id)?;
            let source = Path::new(&entry.path);
            let target = free_name(folder, source);
            std::fs::copy(source, &target).map_err(|e| {
                AppError::new(format!(
                    "cannot copy image {id} to {}: {e}",
                    target.display()
                ))
            })?;
            Ok(target.display().to_string())
        })
    }

    /// The folder holding the image, to show in the file manager.
    pub fn gallery_folder(&self, id: u32) -> Result<PathBuf, AppError> {
        let entry = self.gallery()?.get(id)?;
        Path::new(&entry.path)
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| AppError::new(format!("{} has no folder", entry.path)))
    }

    /// The bytes and media type behind the app's `gallery://` URLs: `thumb-<id>` (256 px JPEG) or `image-<id>`.
    pub fn gallery_file(&self, name: &str) -> Result<(Vec<u8>, &'static str), AppError> {
        let (kind, id) = name
            .split_once('-')
            .and_then(|(k, id)| id.parse::<u32>().ok().map(|id| (k, id)))
            .ok_or_else(|| AppError::new(format!("'{name}' is not thumb-<id> or image-<id>")))?;
        let (path, mime) = match kind {
            "thumb" => (self.gallery()?.thumbnail(id)?, "image/jpeg"),
            "image" => {
                let path = PathBuf::from(self.gallery()?.get(id)?.path);
                // A gallery can hold JPEG and WebP images other tools made, not only PNGs.
                let mime =
                    diffugen_gallery::media_type(&path).unwrap_or("application/octet-stream");
                (path, mime)
            }
            _ => return Err(AppError::new(format!("unknown gallery file kind '{kind}'"))),
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| AppError::new(format!("cannot read {}: {e}", path.display())))?;
        Ok((bytes, mime))
    }

    pub(crate) fn orchestrator(&self) -> Result<&diffugen_vram::Orchestrator, AppError> {
        self.runtime
            .orchestrator()
            .ok_or_else(|| AppError::new("VRAM orchestration is not enabled"))
    }

    pub async fn vram(&self) -> Result<VramSnapshot, AppError> {
        Ok(self.orchestrator()?.snapshot().await)
    }

    /// Hands the GPU to the LLM (Ollama) or to diffusion now.
    pub async fn vram_switch(&self, to: SwitchTarget) -> Result<SwitchReport, AppError> {
        self.orchestrator()?
            .switch_to(to)
            .await
            .map_err(|e| AppError::new(e.to_string()))
    }

    /// What the settings file says (the Settings panel edits this; [`AppInfo::locked`] names what the
    /// environment overrides).
    pub fn settings(&self) -> Settings {
        let config = self.config();
        config.in_file
    }

    /// Where the settings live (the app's settings store writes this file).
    pub fn settings_file(&self) -> PathBuf {
        self.config().settings_file()
    }

    /// Checks one setting from text; `Ok(None)` removes it. Errors name the key and the allowed values.
    pub fn check_setting(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<serde_json::Value>, AppError> {
        diffugen_settings::checked_value(key, value)
            .map_err(|e| AppError::field(key, e.to_string()))
    }

    /// Re-reads the settings file after a change: model folders (for the app and the API alike), threads and the
    /// VRAM policy apply at once; the outputs folder applies to the app's next job at once and to the API after a
    /// restart; the network settings after a restart.
    pub fn settings_changed(&self, key: &str) -> Result<SettingChange, AppError> {
        let _inside = self.entered();
        let config = self
            .runtime
            .reload_config()
            .map_err(|e| AppError::new(e.to_string()))?;
        Ok(SettingChange {
            settings: config.in_file,
            restart_needed: RESTART_KEYS.contains(&key),
        })
    }

    /// Jobs waiting or running (the window asks before closing while there are any).
    pub fn active_jobs(&self) -> u32 {
        self.runtime
            .jobs()
            .queue()
            .iter()
            .filter(|j| {
                matches!(
                    j.state,
                    diffugen_jobs::JobState::Queued | diffugen_jobs::JobState::Running
                )
            })
            .count() as u32
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::new(e.to_string()))?
}

/// `source`'s file name in `folder`, with " (2)", " (3)", ... before the extension while that name is taken.
fn free_name(folder: &Path, source: &Path) -> PathBuf {
    let stem = source
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let extension = source
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut candidate = folder.join(format!("{stem}{extension}"));
    let mut n = 2;
    while candidate.exists() {
        candidate = folder.join(format!("{stem} ({n}){extension}"));
        n += 1;
    }
    candidate
}
