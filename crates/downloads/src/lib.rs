//! Getting models: a curated catalog (`data/catalog.json`) or any http(s) URL, downloaded resumably and verified
//! (see [`download`]), several at once under a limit, with typed events for the CLI's progress bar, SSE clients and
//! the desktop app. A catalog model made of several files (FLUX: diffusion model, VAE, text encoders) is written
//! as a preset, so it appears under its catalog id.

pub mod download;
mod remote;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Semaphore};

pub use download::{download, DownloadError, DownloadRequest, DownloadStage};
pub use remote::{is_public, Reach};

/// Checks that `url`'s host resolves within `reach` only; the refusal says why.
pub async fn check_reach(url: &str, reach: Reach) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url.trim()).map_err(|e| format!("'{url}' is not a URL ({e})"))?;
    remote::check(&parsed, reach).await
}

/// One file of a catalog model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct CatalogFile {
    /// The preset field it fills: `model`, `diffusion_model`, `vae`, `clip_l`, `t5xxl`, `llm`, ...
    pub component: String,
    /// Subfolder of the models folder ("" for the folder itself).
    #[serde(default)]
    pub folder: String,
    pub url: String,
    /// The file's exact size (a whole number; f64 because the UI's TypeScript has no 64-bit integers).
    pub bytes: f64,
    /// The file's SHA-256 (64 hex digits); the download must hash to it.
    pub sha256: String,
}

/// What a catalog entry is: a model to render with, or a tool beside the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum CatalogKind {
    /// A model to render with (a checkpoint, or a set written as a preset): listed in the model picker.
    #[default]
    Model,
    /// An upscaling (ESRGAN) model: written into the `ESRGAN` folder, offered wherever an upscaler is chosen.
    Upscaler,
    /// A ControlNet: written into the `controlnet` folder, offered as a control model to the family it fits.
    #[serde(rename = "controlnet")]
    ControlNet,
}

/// A model DiffuGen offers to download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: CatalogKind,
    pub family: diffugen_models::Family,
    pub description: String,
    pub license: String,
    pub page: String,
    #[serde(default)]
    pub recommended_low_vram: bool,
    pub files: Vec<CatalogFile>,
    /// Overrides of the family defaults, written into the preset.
    #[serde(default)]
    #[specta(type = Option<std::collections::BTreeMap<String, f64>>)]
    pub defaults: Option<serde_json::Value>,
}

impl CatalogEntry {
    /// All its files together.
    pub fn bytes(&self) -> f64 {
        self.files.iter().fold(0.0, |sum, f| sum + f.bytes)
    }
}

#[derive(Deserialize)]
struct CatalogFileFormat {
    models: Vec<CatalogEntry>,
}

/// The built-in catalog.
pub fn catalog() -> Vec<CatalogEntry> {
    serde_json::from_str::<CatalogFileFormat>(include_str!("../data/catalog.json"))
        .map(|c| c.models)
        .unwrap_or_else(|e| {
            tracing::error!("the built-in catalog does not parse: {e}");
            Vec::new()
        })
}

/// What a pull downloads, and the preset it writes afterwards.
#[derive(Debug, Clone)]
pub struct PullPlan {
    /// The catalog id, or the file name for a URL.
    pub name: String,
    pub files: Vec<DownloadRequest>,
    /// Catalog files already on disk (shared components such as FLUX's VAE) are not fetched again.
    pub skip_present: bool,
    pub preset: Option<(PathBuf, serde_json::Value)>,
}

impl PullPlan {
    /// The plan as a client of the HTTP API may run it: its files fetched from hosts within `reach` only, none
    /// larger than `max_bytes`.
    pub fn confined(mut self, reach: Reach, max_bytes: u64) -> PullPlan {
        for file in &mut self.files {
            file.reach = reach;
            file.max_bytes = Some(max_bytes);
        }
        self
    }
}

/// Plans `diffugen models pull <catalog-id|url>` into `models_dir`.
pub fn plan(
    target: &str,
    models_dir: &Path,
    sha256: Option<String>,
    token: Option<String>,
) -> Result<PullPlan, DownloadError> {
    let target = target.trim();
    let sha256 = sha256.map(|h| h.trim().to_ascii_lowercase());
    if let Some(hash) = &sha256 {
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DownloadError::Invalid {
                field: "sha256",
                message: format!(
                    "'{hash}' is not a SHA-256: give 64 hexadecimal digits (sha256sum prints them)"
                ),
            });
        }
    }
    if target.starts_with("http://") || target.starts_with("https://") {
        let name = download::file_name_from_url(target).ok_or_else(|| DownloadError::Invalid {
            field: "url",
            message: format!("'{target}' names no file"),
        })?;
        return Ok(PullPlan {
            name,
            files: vec![DownloadRequest {
                url: target.into(),
                dest_dir: models_dir.display().to_string(),
                file_name: None,
                sha256,
                size: None,
                token,
                reach: Reach::Anywhere,
                max_bytes: None,
            }],
            skip_present: false,
            preset: None,
        });
    }
    let entries = catalog();
    let Some(entry) = entries.iter().find(|e| e.id == target) else {
        return Err(DownloadError::Invalid {
            field: "model",
            message: format!(
                "'{target}' is neither an http(s) URL nor a catalog id; catalog ids: {}",
                entries
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    if sha256.is_some() && entry.files.len() > 1 {
        return Err(DownloadError::Invalid {
            field: "sha256",
            message: format!(
                "{} has {} files; --sha256 applies to a single file",
                entry.id,
                entry.files.len()
            ),
        });
    }
    let mut preset = serde_json::json!({ "name": entry.id, "family": entry.family });
    // A tool's one file is found by its own name; only a model to render with gets a preset.
    let writes_preset = entry.kind == CatalogKind::Model;
    let files = entry
        .files
        .iter()
        .map(|f| {
            let dir = models_dir.join(&f.folder);
            let file = download::file_name_from_url(&f.url).unwrap_or_else(|| f.component.clone());
            let relative = if f.folder.is_empty() {
                file.clone()
            } else {
                format!("{}/{file}", f.folder)
            };
            preset[&f.component] = relative.into();
            DownloadRequest {
                url: f.url.clone(),
                dest_dir: dir.display().to_string(),
                file_name: None,
                sha256: sha256.clone().or_else(|| Some(f.sha256.clone())),
                size: sha256.is_none().then_some(f.bytes),
                token: token.clone(),
                reach: Reach::Anywhere,
                max_bytes: None,
            }
        })
        .collect();
    if let Some(defaults) = &entry.defaults {
        preset["defaults"] = defaults.clone();
    }
    Ok(PullPlan {
        name: entry.id.clone(),
        files,
        skip_present: true,
        preset: writes_preset
            .then(|| (models_dir.join(format!("{}.preset.json", entry.id)), preset)),
    })
}

/// One event of a pull: which file (1-based, of `files`) and how it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct DownloadEvent {
    pub id: String,
    pub file: u32,
    pub files: u32,
    #[serde(flatten)]
    pub stage: DownloadStage,
}

/// Runs a plan: each file in turn, then the preset. Stops at the first failure.
pub async fn pull(
    id: &str,
    plan: &PullPlan,
    cancel: watch::Receiver<bool>,
    on_event: &mut (dyn FnMut(DownloadEvent) + Send),
) -> Result<Vec<PathBuf>, DownloadError> {
    let files = plan.files.len() as u32;
    let mut written = Vec::new();
    for (index, request) in plan.files.iter().enumerate() {
        let file = index as u32 + 1;
        let mut report = |stage| {
            on_event(DownloadEvent {
                id: id.to_string(),
                file,
                files,
                stage,
            })
        };
        let name = download::file_name_from_url(&request.url).unwrap_or_default();
        let existing = Path::new(&request.dest_dir).join(&name);
        if plan.skip_present && existing.is_file() {
            // A shared component (FLUX's VAE) already there is reused, unless it is another file of the same name.
            let on_disk = std::fs::metadata(&existing).map(|m| m.len()).unwrap_or(0);
            if let Some(expected) = request.size.map(|s| s as u64).filter(|&e| e != on_disk) {
                let error = DownloadError::Occupied {
                    path: existing.display().to_string(),
                    size: on_disk,
                    expected,
                };
                report(DownloadStage::Failed {
                    error: error.to_string(),
                });
                return Err(error);
            }
            report(DownloadStage::Done {
                path: existing.display().to_string(),
                sha256: String::new(),
                verified: false,
            });
            written.push(existing);
            continue;
        }
        written.push(download(request, cancel.clone(), &mut report).await?);
    }
    if let Some((path, preset)) = &plan.preset {
        let text = serde_json::to_string_pretty(preset).unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| DownloadError::Io(format!("{}: {e}", path.display())))?;
        written.push(path.clone());
    }
    Ok(written)
}

/// Where a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    Waiting,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// A pull as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct PullInfo {
    pub id: String,
    pub name: String,
    pub state: PullState,
    pub last_event: Option<DownloadEvent>,
}

struct Pull {
    name: String,
    /// What it runs, for a second try.
    plan: PullPlan,
    /// What it fetches where: a second start of the same files while this one waits or runs gets this pull.
    key: Vec<(String, String, Option<String>)>,
    state: PullState,
    events: Vec<DownloadEvent>,
    sender: broadcast::Sender<DownloadEvent>,
    cancel: watch::Sender<bool>,
}

/// Pulls in the background, at most `limit` at once; events kept for late subscribers.
#[derive(Clone)]
pub struct Downloads {
    limit: Arc<Semaphore>,
    pulls: Arc<Mutex<HashMap<String, Pull>>>,
    next: Arc<std::sync::atomic::AtomicU32>,
    /// Every pull's events, for a client that follows them all (the desktop app).
    all: broadcast::Sender<DownloadEvent>,
}

/// Keeps the event in the pull's history and sends it to the pull's followers and to everyone watching all pulls.
fn publish(all: &broadcast::Sender<DownloadEvent>, pull: &mut Pull, event: DownloadEvent) {
    pull.events.push(event.clone());
    let _ = all.send(event.clone());
    let _ = pull.sender.send(event);
}

impl Downloads {
    pub fn new(limit: usize) -> Downloads {
        Downloads {
            limit: Arc::new(Semaphore::new(limit.max(1))),
            pulls: Arc::new(Mutex::new(HashMap::new())),
            next: Arc::new(std::sync::atomic::AtomicU32::new(1)),
            all: broadcast::channel(1024).0,
        }
    }

    /// Every pull's events from now on.
    pub fn watch(&self) -> broadcast::Receiver<DownloadEvent> {
        self.all.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pull>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a pull (it waits while `limit` others run). Returns its id. The same files asked for again while
    /// their pull waits or runs (a double click) get that pull's id instead of a second copy racing the first.
    pub fn start(&self, plan: PullPlan) -> String {
        let key: Vec<(String, String, Option<String>)> = plan
            .files
            .iter()
            .map(|f| (f.url.clone(), f.dest_dir.clone(), f.file_name.clone()))
            .collect();
        if let Some((id, _)) = self.lock().iter().find(|(_, p)| {
            p.key == key && matches!(p.state, PullState::Waiting | PullState::Running)
        }) {
            return id.clone();
        }
        let id = format!(
            "dl-{}",
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (sender, _) = broadcast::channel(1024);
        let (cancel, cancel_rx) = watch::channel(false);
        self.lock().insert(
            id.clone(),
            Pull {
                name: plan.name.clone(),
                plan: plan.clone(),
                key,
                state: PullState::Waiting,
                events: Vec::new(),
                sender,
                cancel,
            },
        );
        let this = self.clone();
        let pull_id = id.clone();
        tokio::spawn(async move {
            let _permit = this.limit.clone().acquire_owned().await;
            if *cancel_rx.borrow() {
                this.finish(&pull_id, PullState::Cancelled);
                return;
            }
            this.set_state(&pull_id, PullState::Running);
            let recorder = this.clone();
            let result = pull(&pull_id, &plan, cancel_rx, &mut |event| {
                recorder.record(event)
            })
            .await;
            this.finish(
                &pull_id,
                match result {
                    Ok(_) => PullState::Done,
                    Err(DownloadError::Cancelled) => PullState::Cancelled,
                    Err(_) => PullState::Failed,
                },
            );
        });
        id
    }

    fn record(&self, event: DownloadEvent) {
        let mut pulls = self.lock();
        if let Some(pull) = pulls.get_mut(&event.id) {
            // Progress is live-only beyond the last one, so a long download's history stays small.
            if let (Some(last), DownloadStage::Progress { .. }) = (pull.events.last(), &event.stage)
            {
                if matches!(last.stage, DownloadStage::Progress { .. }) {
                    pull.events.pop();
                }
            }
            publish(&self.all, pull, event);
        }
    }

    fn set_state(&self, id: &str, state: PullState) {
        if let Some(pull) = self.lock().get_mut(id) {
            pull.state = state;
        }
    }

    fn finish(&self, id: &str, state: PullState) {
        let mut pulls = self.lock();
        if let Some(pull) = pulls.get_mut(id) {
            pull.state = state;
            if state == PullState::Cancelled
                && pull
                    .events
                    .last()
                    .is_none_or(|e| e.stage != DownloadStage::Cancelled)
            {
                let event = DownloadEvent {
                    id: id.to_string(),
                    file: 0,
                    files: 0,
                    stage: DownloadStage::Cancelled,
                };
                publish(&self.all, pull, event);
            }
        }
    }

    /// Runs a failed or cancelled pull again (a failed download resumes from the part it kept). Its row gives way to
    /// the new pull, whose id is returned; `None` for an unknown id or a pull that did not end that way.
    pub fn retry(&self, id: &str) -> Option<String> {
        let plan = {
            let mut pulls = self.lock();
            let ended = pulls
                .get(id)
                .is_some_and(|p| matches!(p.state, PullState::Failed | PullState::Cancelled));
            if !ended {
                return None;
            }
            pulls.remove(id)?.plan
        };
        Some(self.start(plan))
    }

    /// Takes an ended pull (done, failed or cancelled) off the list; `false` for an unknown id or one still going.
    pub fn dismiss(&self, id: &str) -> bool {
        let mut pulls = self.lock();
        let ended = pulls.get(id).is_some_and(|p| {
            matches!(
                p.state,
                PullState::Done | PullState::Failed | PullState::Cancelled
            )
        });
        ended && pulls.remove(id).is_some()
    }

    /// Every pull, newest last.
    pub fn list(&self) -> Vec<PullInfo> {
        let pulls = self.lock();
        let mut list: Vec<PullInfo> = pulls
            .iter()
            .map(|(id, p)| PullInfo {
                id: id.clone(),
                name: p.name.clone(),
                state: p.state,
                last_event: p.events.last().cloned(),
            })
            .collect();
        list.sort_by_key(|p| p.id[3..].parse::<u32>().unwrap_or(0));
        list
    }

    /// The events so far and a live receiver; `None` for an unknown id.
    pub fn subscribe(
        &self,
        id: &str,
    ) -> Option<(
        Vec<DownloadEvent>,
        PullState,
        broadcast::Receiver<DownloadEvent>,
    )> {
        let pulls = self.lock();
        let pull = pulls.get(id)?;
        Some((pull.events.clone(), pull.state, pull.sender.subscribe()))
    }

    /// Cancels a pull; returns whether it exists.
    pub fn cancel(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(pull) => {
                let _ = pull.cancel.send(true);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_every_entry_has_files_for_its_family() {
        let entries = catalog();
        assert!(entries.len() >= 6);
        for entry in &entries {
            assert!(!entry.files.is_empty(), "{}", entry.id);
            for file in &entry.files {
                assert!(file.url.starts_with("https://"), "{}", file.url);
                assert!(download::file_name_from_url(&file.url).is_some());
            }
        }
        assert!(entries.iter().any(|e| e.recommended_low_vram));
        let flux = entries
            .iter()
            .find(|e| e.family == diffugen_models::Family::Flux)
            .unwrap();
        let components: Vec<&str> = flux.files.iter().map(|f| f.component.as_str()).collect();
        assert_eq!(components, ["diffusion_model", "vae", "clip_l", "t5xxl"]);
    }

    #[test]
    fn every_catalog_file_pins_its_exact_size_and_sha256_and_a_shared_file_pins_the_same() {
        let entries = catalog();
        let mut by_path: HashMap<String, &CatalogFile> = HashMap::new();
        for entry in &entries {
            for file in &entry.files {
                let where_ = format!("{} {}", entry.id, file.url);
                assert!(
                    file.sha256.len() == 64
                        && file
                            .sha256
                            .chars()
                            .all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                    "{where_}: sha256 must be 64 lowercase hex digits"
                );
                assert!(
                    file.bytes > 1e6 && file.bytes.fract() == 0.0 && file.bytes < 9.007e15,
                    "{where_}: bytes must be the exact size"
                );
                // Two models sharing a component (FLUX's VAE) land it on one path: it must be one file.
                let name = download::file_name_from_url(&file.url).unwrap();
                let path = format!("{}/{name}", file.folder);
                if let Some(other) = by_path.insert(path.clone(), file) {
                    assert_eq!(
                        (&other.url, &other.sha256, other.bytes),
                        (&file.url, &file.sha256, file.bytes),
                        "{path} is pinned twice, differently"
                    );
                }
            }
        }
        let shared = entries
            .iter()
            .filter(|e| e.files.iter().any(|f| f.url.ends_with("/ae.safetensors")))
            .count();
        assert!(shared >= 3, "FLUX Q4, FLUX Q8 and Z-Image share the VAE");
    }

    #[test]
    fn a_catalog_pull_plans_its_files_and_a_preset_naming_them() {
        let plan = plan("flux-schnell-q4", Path::new("/m"), None, None).unwrap();
        assert_eq!(plan.files.len(), 4);
        let (path, preset) = plan.preset.unwrap();
        assert_eq!(path, Path::new("/m/flux-schnell-q4.preset.json"));
        assert_eq!(preset["vae"], "vae/ae.safetensors");
        assert_eq!(
            preset["diffusion_model"],
            "diffusion_models/flux1-schnell-Q4_0.gguf"
        );
        let vae = &plan.files[1];
        assert_eq!(vae.size, Some(335_304_388.0), "the pinned size travels");
        assert_eq!(
            vae.sha256.as_deref(),
            Some("afc8e28272cd15db3919bacdb6918ce9c1ed22e96cb12c4d5ed0fba823529e38")
        );
        // A hash given for a one-file model replaces the catalog's, and with it the catalog's size.
        let own = super::plan("sd-turbo", Path::new("/m"), Some("ab".repeat(32)), None).unwrap();
        assert_eq!(own.files[0].sha256, Some("ab".repeat(32)));
        assert_eq!(own.files[0].size, None);
        let error = super::plan("nope", Path::new("/m"), None, None).unwrap_err();
        assert!(error.to_string().contains("sd-turbo"), "{error}");
    }

    #[test]
    fn a_catalog_upscaler_lands_in_the_esrgan_folder_under_its_own_name_without_a_preset() {
        let entry = catalog()
            .into_iter()
            .find(|e| e.kind == CatalogKind::Upscaler)
            .expect("the catalog offers an upscaler");
        assert_eq!(entry.family, diffugen_models::Family::Esrgan);
        let plan = plan(&entry.id, Path::new("/m"), None, None).unwrap();
        assert!(plan.preset.is_none());
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].dest_dir, "/m/ESRGAN");
        let name = download::file_name_from_url(&plan.files[0].url).unwrap();
        assert_eq!(
            Path::new(&name).file_stem().unwrap(),
            entry.id.as_str(),
            "found by its id"
        );
        assert!(catalog()
            .iter()
            .filter(|e| e.kind == CatalogKind::Model)
            .all(|e| e.family != diffugen_models::Family::Esrgan));
    }

    #[test]
    fn a_catalog_controlnet_lands_in_the_controlnet_folder_without_a_preset_and_fits_sd1() {
        let entry = catalog()
            .into_iter()
            .find(|e| e.kind == CatalogKind::ControlNet)
            .expect("the catalog offers a ControlNet");
        // sd.cpp's ControlNet runs beside SD 1.x UNets only.
        assert_eq!(entry.family, diffugen_models::Family::Sd1);
        let plan = plan(&entry.id, Path::new("/m"), None, None).unwrap();
        assert!(
            plan.preset.is_none(),
            "a ControlNet is not a model to render with"
        );
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].dest_dir, "/m/controlnet");
        let name = download::file_name_from_url(&plan.files[0].url).unwrap();
        assert_eq!(Path::new(&name).file_stem().unwrap(), entry.id.as_str());
        let file = &entry.files[0];
        assert_eq!(plan.files[0].sha256.as_deref(), Some(file.sha256.as_str()));
        assert_eq!(plan.files[0].size, Some(file.bytes));
        assert!(file.sha256.len() == 64 && file.sha256.chars().all(|c| c.is_ascii_hexdigit()));
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["kind"], "controlnet");
    }

    #[test]
    fn download_events_export_to_typescript_without_bigint() {
        let types = specta::Types::default()
            .register::<DownloadEvent>()
            .register::<CatalogEntry>()
            .register::<PullInfo>();
        let ts = specta_typescript::Typescript::default()
            .export(&types, specta_serde::Format)
            .expect("exports");
        assert!(!ts.contains("bigint"), "{ts}");
    }
}
