//! The desktop app without its window: everything a Tauri command does, as plain async Rust that builds and is
//! tested without webkit or Node. The shell in `src-tauri/` only forwards commands here and events from here.
//!
//! [`Core::start`] starts the same [`Service`] as `diffugen serve` — engine, VRAM orchestrator, gallery, the one job
//! queue, the local API (default on, 127.0.0.1:5199) and the Ollama gateway — so a job sent by Open WebUI is in the
//! same queue the window shows. Every error is an [`AppError`]: a sentence that says what to do, naming the form
//! field when one is to blame.

mod form;
mod memory;
pub mod paths;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use diffugen_downloads::{CatalogEntry, DownloadEvent, PullInfo};
use diffugen_engine::{Destination, JobEvent, WorkerCommand};
use diffugen_gallery::{Entry, Gallery, Page, Query};
use diffugen_jobs::{JobInfo, JobManager};
use diffugen_models::{FolderWatcher, Library, ModelCard, ModelEntry};
use diffugen_server::service::{Service, ServiceConfig};
use diffugen_server::ServerConfig;
use diffugen_settings::Settings;
use diffugen_vram::{
    AfterQueue, GpuProbe, OllamaClient, Policy, SwitchReport, VramConfig, VramEvent, VramSnapshot,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use form::{FormLora, GenerateForm};
pub use paths::Paths;

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
        AppError::new(e.to_string())
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

/// Model files appeared, changed or went in the model folders (the picker lists them again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct ModelsChanged {
    /// The files and folders that changed.
    pub paths: Vec<String>,
}

/// How long the model folders must be quiet before a change is reported: a file being copied in is reported once.
const FOLDERS_SETTLE: Duration = Duration::from_millis(700);

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
    pub paths: Paths,
    /// The engine worker: the app's own executable with the hidden worker argument.
    pub worker: WorkerCommand,
    pub gpu: Arc<dyn GpuProbe>,
}

/// The running app.
pub struct Core {
    paths: RwLock<Paths>,
    service: Service,
    gallery: Arc<Gallery>,
    api_error: Option<String>,
    models_changed: broadcast::Sender<ModelsChanged>,
    /// Watches the library's folders; replaced when they change in Settings.
    watcher: Mutex<Option<FolderWatcher>>,
}

/// Watches the library's folders, sending a [`ModelsChanged`] after each settled burst of changes. `None` (logged)
/// when the system cannot watch them: rescanning by hand still works.
fn watch_folders(
    library: &Library,
    sender: &broadcast::Sender<ModelsChanged>,
) -> Option<FolderWatcher> {
    // DiffuGen's own folder is where the first-run screen tells the user to put models: it must exist to be watched.
    if let Err(e) = std::fs::create_dir_all(library.models_dir()) {
        tracing::warn!(dir = %library.models_dir().display(), error = %e, "cannot create the models folder");
    }
    let sender = sender.clone();
    let folders: Vec<PathBuf> = library
        .folders()
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    FolderWatcher::start(&folders, FOLDERS_SETTLE, move |paths| {
        let _ = sender.send(ModelsChanged {
            paths: paths.iter().map(|p| display(p)).collect(),
        });
    })
    .map_err(|e| tracing::warn!(error = %e, "model folders are not watched; rescan by hand"))
    .ok()
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
];

/// Ollama's client: `explicit` first (a flag or `OLLAMA_HOST`, named in errors), then the settings, then the
/// default address. The CLI and the app resolve it the same way.
pub fn ollama_client(
    explicit: Option<(&str, &str)>,
    settings: &Settings,
) -> Result<OllamaClient, String> {
    match (explicit, &settings.ollama_url) {
        (Some((name, url)), _) => {
            OllamaClient::new(url).map_err(|e| format!("invalid {name}: {e}"))
        }
        (None, Some(url)) => {
            OllamaClient::new(url).map_err(|e| format!("invalid setting ollama_url: {e}"))
        }
        (None, None) => OllamaClient::new(diffugen_vram::DEFAULT_OLLAMA_URL),
    }
}

/// The VRAM policy and what happens after the queue: `policy`/`after_queue` when given (flags, environment), else
/// the settings, else `auto` and `restore`. The rest of the configuration is the default.
pub fn vram_config(
    policy: Option<Policy>,
    after_queue: Option<AfterQueue>,
    settings: &Settings,
) -> Result<VramConfig, String> {
    let policy = match (policy, &settings.vram_policy) {
        (Some(policy), _) => policy,
        (None, Some(text)) => text
            .parse()
            .map_err(|e| format!("invalid setting vram_policy: {e}"))?,
        (None, None) => Policy::Auto,
    };
    let after_queue = match (after_queue, &settings.after_queue) {
        (Some(after), _) => after,
        (None, Some(text)) => text
            .parse()
            .map_err(|e| format!("invalid setting after_queue: {e}"))?,
        (None, None) => AfterQueue::Restore,
    };
    Ok(VramConfig {
        policy,
        after_queue,
        ..VramConfig::default()
    })
}

/// The app's VRAM configuration: `DIFFUGEN_VRAM_POLICY` over the settings.
fn app_vram_config(settings: &Settings) -> Result<VramConfig, String> {
    let policy = match std::env::var("DIFFUGEN_VRAM_POLICY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(text) => Some(
            text.parse::<Policy>()
                .map_err(|e| format!("invalid DIFFUGEN_VRAM_POLICY: {e}"))?,
        ),
        None => None,
    };
    vram_config(policy, None, settings)
}

/// The app's Ollama client: `OLLAMA_HOST` over the settings.
fn app_ollama_client(settings: &Settings) -> Result<OllamaClient, String> {
    let env = std::env::var("OLLAMA_HOST").ok().filter(|v| !v.is_empty());
    ollama_client(env.as_deref().map(|url| ("OLLAMA_HOST", url)), settings)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

impl Core {
    /// Starts the services on the current tokio runtime. When the API's port is taken the app still starts,
    /// without the API, and [`AppInfo::api_error`] says why.
    pub async fn start(options: CoreOptions) -> Result<Core, String> {
        let CoreOptions { paths, worker, gpu } = options;
        let settings = paths.settings.clone();
        let host: IpAddr = match &settings.api_host {
            Some(text) => text
                .parse()
                .map_err(|_| format!("invalid setting api_host: '{text}' is not an IP address"))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let api_key = settings.api_key.clone().filter(|k| !k.is_empty());
        let server = ServerConfig {
            models_dir: paths.models_dir.clone(),
            extra_models_dirs: paths.extra_models_dirs.clone(),
            outputs_dir: paths.outputs_dir(),
            api_key,
            default_model: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            private_downloads: false,
        };
        let config = |api: bool, gateway: bool| -> Result<ServiceConfig, String> {
            Ok(ServiceConfig {
                server: server.clone(),
                data_dir: paths.data_dir.clone(),
                worker: worker.clone(),
                queue_depth: 64,
                ollama: app_ollama_client(&settings)?,
                vram: app_vram_config(&settings)?,
                gpu: gpu.clone(),
                api_addr: api.then(|| SocketAddr::new(host, settings.api_port.unwrap_or(5199))),
                job_defaults: diffugen_jobs::JobDefaults::from_settings(&settings),
                // The gateway stays on this machine, like Ollama, whatever the API's host.
                gateway_addr: gateway.then(|| {
                    SocketAddr::new(
                        IpAddr::from([127, 0, 0, 1]),
                        settings
                            .gateway_port
                            .unwrap_or(diffugen_vram::DEFAULT_GATEWAY_PORT),
                    )
                }),
            })
        };
        let api = settings.api_enabled != Some(false);
        let gateway = api && settings.gateway_enabled != Some(false);
        let (service, api_error) = match Service::start(config(api, gateway)?).await {
            Ok(service) => (service, None),
            // A taken port must not keep the window from opening: run without the network doors, say why.
            Err(e) if api && (e.contains("cannot listen") || e.contains("gateway")) => {
                tracing::warn!(error = %e, "starting without the local API");
                let service = Service::start(config(false, false)?).await?;
                (
                    service,
                    Some(format!(
                        "{e}. Another program (or another DiffuGen) uses the port: change it in Settings and restart."
                    )),
                )
            }
            Err(e) => return Err(e),
        };
        let gallery = service
            .jobs
            .gallery()
            .cloned()
            .ok_or_else(|| "the queue has no gallery".to_string())?;
        let models_changed = broadcast::channel(64).0;
        let watcher = watch_folders(&service.state.library(), &models_changed);
        Ok(Core {
            paths: RwLock::new(paths),
            service,
            gallery,
            api_error,
            models_changed,
            watcher: Mutex::new(watcher),
        })
    }

    /// Stops the API and the engine worker.
    pub async fn stop(self) -> Result<(), String> {
        self.service.stop().await
    }

    /// Ends the engine worker (when the window closes); the API stops with the process.
    pub async fn stop_engine(&self) {
        self.service.engine.stop().await;
    }

    pub fn jobs(&self) -> &JobManager {
        &self.service.jobs
    }

    fn paths(&self) -> Paths {
        self.paths.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The model folders, shared with the API (a folder added in Settings is visible to Open WebUI at once).
    fn library(&self) -> Library {
        self.service.state.library()
    }

    /// Every job's events, live.
    pub fn job_events(&self) -> broadcast::Receiver<JobEvent> {
        self.service.jobs.watch()
    }

    /// The VRAM meter (a snapshot every second while someone listens) and the orchestrator's switches.
    pub fn vram_events(&self) -> broadcast::Receiver<VramEvent> {
        self.service.orchestrator.subscribe()
    }

    /// A model file appeared, changed or went in the model folders.
    pub fn model_events(&self) -> broadcast::Receiver<ModelsChanged> {
        self.models_changed.subscribe()
    }

    /// Every download's events, live.
    pub fn download_events(&self) -> broadcast::Receiver<DownloadEvent> {
        self.service.state.downloads.watch()
    }

    pub fn info(&self) -> AppInfo {
        let paths = self.paths();
        let api_url = self
            .service
            .api
            .as_ref()
            .map(|api| format!("http://{}", api.addr));
        let exposed = self
            .service
            .api
            .as_ref()
            .is_some_and(|api| !api.addr.ip().is_loopback());
        let keyless = paths.settings.api_key.as_deref().unwrap_or("").is_empty();
        AppInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_dir: display(&paths.data_dir),
            models_dir: display(&paths.models_dir),
            models_dir_fixed: paths.models_dir_overridden(),
            extra_models_dirs: paths.extra_models_dirs.iter().map(|p| display(p)).collect(),
            outputs_dir: display(&paths.outputs_dir()),
            settings_file: display(&diffugen_settings::path(&paths.data_dir)),
            api_url,
            api_error: self.api_error.clone(),
            gateway_url: self
                .service
                .gateway
                .as_ref()
                .map(|g| format!("http://{}", g.addr)),
            api_warning: (exposed && keyless).then(|| {
                "The API listens beyond this computer without an API key: anyone on your network can generate \
                 images and read your gallery. Set an API key."
                    .to_string()
            }),
        }
    }

    /// Model cards, files and LoRAs (the folders are read on a blocking thread).
    pub async fn models(&self) -> ModelList {
        let library = self.library();
        let (cards, files) = tokio::task::spawn_blocking(move || (library.cards(), library.scan()))
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
            loaded: self.service.engine.loaded_model(),
            models_dir: display(&self.paths().models_dir),
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

    pub fn catalog(&self) -> Vec<CatalogEntry> {
        diffugen_downloads::catalog()
    }

    /// Starts a download of a catalog model or a URL into the models folder.
    pub fn download(&self, target: &str, sha256: Option<String>) -> Result<String, AppError> {
        let paths = self.paths();
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or(paths.settings.hf_token.clone())
            .filter(|t| !t.is_empty());
        let plan = diffugen_downloads::plan(target, &paths.models_dir, sha256, token).map_err(
            |e| match e {
                diffugen_downloads::DownloadError::Invalid { field, message } => {
                    AppError::field(field, message)
                }
                other => AppError::new(other.to_string()),
            },
        )?;
        Ok(self.service.state.downloads.start(plan))
    }

    pub fn downloads(&self) -> Vec<PullInfo> {
        self.service.state.downloads.list()
    }

    pub fn cancel_download(&self, id: &str) -> Result<(), AppError> {
        if self.service.state.downloads.cancel(id) {
            Ok(())
        } else {
            Err(AppError::new(format!("no download with id '{id}'")))
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
        let paths = self.paths();
        let request = form.to_request(paths.settings.threads)?;
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
            .service
            .jobs
            .submit(spec, Destination::Folder(paths.outputs_dir()), "app")?)
    }

    pub fn queue(&self) -> Vec<JobInfo> {
        self.service.jobs.queue()
    }

    /// Finished, failed and cancelled jobs from every source, the newest first; kept across restarts.
    pub fn queue_history(&self) -> Vec<JobInfo> {
        self.service.jobs.history()
    }

    pub fn job(&self, id: &str) -> Result<JobInfo, AppError> {
        Ok(self.service.jobs.get(id)?)
    }

    pub fn cancel_job(&self, id: &str) -> Result<bool, AppError> {
        Ok(self.service.jobs.cancel(id, "cancelled in the app")?)
    }

    /// Moves a waiting job to `position` among the waiting jobs (0 = next).
    pub fn move_job(&self, id: &str, position: u32) -> Result<(), AppError> {
        if self.service.jobs.move_to(id, position)? {
            Ok(())
        } else {
            Err(AppError::new(
                "only waiting jobs can be moved; this one has started or ended",
            ))
        }
    }

    pub async fn gallery_page(&self, query: Query) -> Result<Page, AppError> {
        let gallery = self.gallery.clone();
        blocking(move || gallery.list(&query).map_err(AppError::from)).await
    }

    pub async fn gallery_count(&self, query: Query) -> Result<u32, AppError> {
        let gallery = self.gallery.clone();
        blocking(move || gallery.count_matching(&query).map_err(AppError::from)).await
    }

    pub fn gallery_entry(&self, id: u32) -> Result<Entry, AppError> {
        Ok(self.gallery.get(id)?)
    }

    pub fn gallery_favorite(&self, id: u32, favorite: bool) -> Result<Entry, AppError> {
        Ok(self.gallery.set_favorite(id, favorite)?)
    }

    /// Moves the image to the trash (undo: [`Core::gallery_restore`]).
    pub fn gallery_delete(&self, id: u32) -> Result<Entry, AppError> {
        Ok(self.gallery.delete(id)?)
    }

    pub fn gallery_restore(&self, id: u32) -> Result<Entry, AppError> {
        Ok(self.gallery.restore(id)?)
    }

    pub fn gallery_create_board(&self, name: &str) -> Result<Vec<Board>, AppError> {
        self.gallery.create_board(name)?;
        self.gallery_boards()
    }

    pub fn gallery_rename_board(&self, from: &str, to: &str) -> Result<Vec<Board>, AppError> {
        self.gallery.rename_board(from, to)?;
        self.gallery_boards()
    }

    pub fn gallery_delete_board(&self, name: &str) -> Result<Vec<Board>, AppError> {
        self.gallery.delete_board(name)?;
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
                    self.gallery.add_to_board(id, board)?
                } else {
                    self.gallery.remove_from_board(id, board)?
                })
            })
            .collect()
    }

    pub fn gallery_set_tags(&self, id: u32, tags: &[String]) -> Result<Entry, AppError> {
        Ok(self.gallery.set_tags(id, tags)?)
    }

    /// A gallery image as a `data:` URL, for the form's init image ("Use as init image").
    pub fn gallery_image_data(&self, id: u32) -> Result<String, AppError> {
        use base64::Engine as _;
        let entry = self.gallery.get(id)?;
        let path = std::path::Path::new(&entry.path);
        let mime = match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("webp") => "image/webp",
            _ => "image/png",
        };
        let bytes = std::fs::read(path)
            .map_err(|e| AppError::new(format!("cannot read {}: {e}", path.display())))?;
        Ok(format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    pub fn gallery_remix(&self, id: u32) -> Result<GenerateForm, AppError> {
        let entry = self.gallery.get(id)?;
        let init = self.gallery.init_image(&entry);
        Ok(GenerateForm::from_entry(&entry, init.as_deref()))
    }

    pub fn gallery_boards(&self) -> Result<Vec<Board>, AppError> {
        Ok(self
            .gallery
            .boards()?
            .into_iter()
            .map(|(name, count)| Board { name, count })
            .collect())
    }

    /// Writes a copy of the image to `destination` (a path the user chose in a save dialog).
    pub fn gallery_save_as(&self, id: u32, destination: &str) -> Result<(), AppError> {
        let entry = self.gallery.get(id)?;
        std::fs::copy(&entry.path, destination)
            .map_err(|e| AppError::new(format!("cannot save the image to {destination}: {e}")))?;
        Ok(())
    }

    /// The folder holding the image, to show in the file manager.
    pub fn gallery_folder(&self, id: u32) -> Result<PathBuf, AppError> {
        let entry = self.gallery.get(id)?;
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
            "thumb" => (self.gallery.thumbnail(id)?, "image/jpeg"),
            "image" => (PathBuf::from(self.gallery.get(id)?.path), "image/png"),
            _ => return Err(AppError::new(format!("unknown gallery file kind '{kind}'"))),
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| AppError::new(format!("cannot read {}: {e}", path.display())))?;
        Ok((bytes, mime))
    }

    pub async fn vram(&self) -> VramSnapshot {
        self.service.orchestrator.snapshot().await
    }

    /// Hands the GPU to `llm` (Ollama) or `diffusion` now.
    pub async fn vram_switch(&self, to: &str) -> Result<SwitchReport, AppError> {
        let result = match to {
            "llm" => self.service.orchestrator.switch_to_llm().await,
            "diffusion" => self.service.orchestrator.switch_to_diffusion().await,
            other => {
                return Err(AppError::field(
                    "to",
                    format!("'{other}' is not llm or diffusion"),
                ))
            }
        };
        result.map_err(|e| AppError::new(e.to_string()))
    }

    pub fn settings(&self) -> Settings {
        self.paths().settings
    }

    /// Where the settings live (the app's settings store writes this file).
    pub fn settings_file(&self) -> PathBuf {
        diffugen_settings::path(&self.paths().data_dir)
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
        let mut paths = self.paths.write().unwrap_or_else(|e| e.into_inner());
        paths.reload().map_err(AppError::new)?;
        let library = paths.library();
        if library.folders() != self.library().folders() {
            let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            *watcher = None;
            *watcher = watch_folders(&library, &self.models_changed);
        }
        self.service.state.set_library(library);
        self.service
            .jobs
            .set_defaults(diffugen_jobs::JobDefaults::from_settings(&paths.settings));
        if key == "vram_policy" || key == "after_queue" {
            let mut config = self.service.orchestrator.config();
            let fresh = app_vram_config(&paths.settings).map_err(AppError::new)?;
            config.policy = fresh.policy;
            config.after_queue = fresh.after_queue;
            self.service.orchestrator.set_config(config);
        }
        Ok(SettingChange {
            settings: paths.settings.clone(),
            restart_needed: RESTART_KEYS.contains(&key),
        })
    }

    /// Jobs waiting or running (the window asks before closing while there are any).
    pub fn active_jobs(&self) -> u32 {
        self.service
            .jobs
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
