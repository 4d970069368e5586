//! The models folder: listing, identifying and resolving models and LoRAs.

use crate::Family;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::header::{self, Format, HeaderError};
use crate::identify::{identify, quantization, Role};
use crate::preset::{Components, FamilyDefaults, Preset};
use crate::MODEL_EXTENSIONS;

/// One model file or preset as listed to users.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct ModelEntry {
    /// What `--model` / the API's `model` selects it by: the file stem, or the preset name.
    pub id: String,
    pub path: String,
    /// `gguf`, `safetensors`, `preset`, or `null` when unreadable.
    pub format: Option<String>,
    pub family: Family,
    pub variant: Option<String>,
    pub role: Role,
    pub quantization: Option<String>,
    /// Parameter count (f64: exact far beyond any model size, and safe for JavaScript).
    pub parameters: f64,
    pub size_bytes: f64,
    /// Why the file cannot be used, when it cannot.
    pub error: Option<String>,
}

/// A model ready for the engine: every component path plus the family's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub id: String,
    pub family: Family,
    pub components: Components,
    pub defaults: FamilyDefaults,
}

/// Why a model or LoRA could not be resolved. Messages name the problem and what would work.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model '{id}'; available models: {}", list_or_none(.available))]
    UnknownId { id: String, available: Vec<String> },
    #[error("model file not found: {}", .0.display())]
    FileMissing(PathBuf),
    #[error("model file {} cannot be used: {reason}", .path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("{} is a {role} file, not a model that can generate images{hint}", .path.display(), role = role_name(*.role))]
    NotAModel {
        path: PathBuf,
        role: Role,
        hint: String,
    },
    #[error("preset {} is invalid: {reason}", .path.display())]
    Preset { path: PathBuf, reason: String },
    #[error("unknown LoRA '{name}' (looked in {}); available LoRAs: {}", .dir.display(), list_or_none(.available))]
    UnknownLora {
        name: String,
        dir: PathBuf,
        available: Vec<String>,
    },
    #[error("unknown upscaler '{name}'; available upscalers: {}", list_or_none(.available))]
    UnknownUpscaler {
        name: String,
        available: Vec<String>,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Checkpoint => "checkpoint",
        Role::DiffusionModel => "diffusion-model-only",
        Role::Vae => "VAE",
        Role::TextEncoder => "text-encoder",
        Role::Lora => "LoRA",
        Role::Taesd => "TAESD",
        Role::ControlNet => "ControlNet",
        Role::Upscaler => "upscaler",
        Role::Unknown => "unrecognised",
    }
}

/// The user's models folder (`<data dir>/models` unless configured), with LoRAs in its `loras/` subfolder.
#[derive(Debug, Clone)]
pub struct Library {
    models_dir: PathBuf,
    /// Other tools' folders scanned too (an A1111 `models/Stable-diffusion`, a ComfyUI `models/` tree).
    extra_dirs: Vec<PathBuf>,
    /// Models other machines render (a cluster front's workers), known by id, family and defaults; their files are
    /// theirs, so a job resolved to one names no file (the worker finds its own by the id).
    remote: std::sync::Arc<Vec<ResolvedModel>>,
}

/// Folder names other tools keep LoRAs in; they are searched for LoRAs, not listed as models.
const LORA_FOLDERS: &[&str] = &["loras", "Lora", "LoRA", "lora"];

/// Folder names textual-inversion embeddings live in (DiffuGen's, ComfyUI's, A1111's); searched for embeddings, not
/// listed as models.
const EMBEDDING_FOLDERS: &[&str] = &["embeddings", "Embeddings"];

/// A textual-inversion embedding: used by writing its name in a prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, specta::Type)]
pub struct Embedding {
    /// The file name without its extension: the word a prompt uses.
    pub name: String,
    pub path: PathBuf,
    /// The text encoder width it is for (768: SD 1.x; 1024: SD 2.x; SDXL files hold 768 and 1280), when the header
    /// could be read (not for pickled `.pt` files).
    pub hidden_size: Option<u32>,
    /// How many tokens it stands for.
    pub vectors: Option<u32>,
    /// The weights' type (`f32`, `f16`, ...), when the header could be read.
    pub dtype: Option<String>,
}

impl Embedding {
    /// An embedding file with what its header says (nothing for a pickled `.pt`).
    pub fn read(name: String, path: PathBuf) -> Embedding {
        let header = crate::header::read(&path).ok();
        let first = header.as_ref().and_then(|h| h.tensors.first().cloned());
        Embedding {
            name,
            hidden_size: first
                .as_ref()
                .and_then(|t| t.shape.last().copied())
                .map(|n| n as u32),
            vectors: first.as_ref().map(|t| {
                if t.shape.len() > 1 {
                    t.shape[..t.shape.len() - 1].iter().product::<u64>() as u32
                } else {
                    1
                }
            }),
            dtype: first.map(|t| t.dtype),
            path,
        }
    }

    /// Why sd.cpp cannot use it, if it cannot: it copies an embedding's bytes into its f32 text encoder as they
    /// are, so anything but f32 weights would be read as garbage.
    pub fn unusable(&self) -> Option<String> {
        match self.dtype.as_deref() {
            Some("f32") | None => None,
            Some(other) => Some(format!(
                "embedding '{}' is stored as {other}; stable-diffusion.cpp reads embeddings only as f32 (save it as \
                 f32 safetensors)",
                self.name
            )),
        }
    }
}

pub(crate) fn has_model_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MODEL_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub(crate) fn preset_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    if let Some(stem) = file.strip_suffix(".preset.json") {
        return Some(stem.to_string());
    }
    let in_presets = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "presets");
    file.strip_suffix(".json")
        .filter(|_| in_presets)
        .map(str::to_string)
}

fn walk(dir: &Path, skip_loras: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.')
            || (skip_loras && (LORA_FOLDERS.contains(&name) || EMBEDDING_FOLDERS.contains(&name)))
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, skip_loras, out);
        } else {
            out.push(path);
        }
    }
}

impl Library {
    pub fn new(models_dir: impl Into<PathBuf>) -> Library {
        Library {
            models_dir: models_dir.into(),
            extra_dirs: Vec::new(),
            remote: Default::default(),
        }
    }

    /// This library plus models other machines render (a cluster's workers): `resolve` and `ids` know them too,
    /// after this machine's own (an id here wins).
    pub fn with_remote(mut self, remote: Vec<ResolvedModel>) -> Library {
        let mut unique: Vec<ResolvedModel> = Vec::new();
        for model in remote {
            // The first machine's card of an id wins.
            if !unique.iter().any(|m| m.id == model.id) {
                unique.push(model);
            }
        }
        self.remote = std::sync::Arc::new(unique);
        self
    }

    /// The models other machines render that this machine's folders do not hold, by id.
    pub fn remote_only(&self) -> Vec<ResolvedModel> {
        if self.remote.is_empty() {
            return Vec::new();
        }
        let here = self.local_ids();
        self.remote
            .iter()
            .filter(|m| !here.contains(&m.id))
            .cloned()
            .collect()
    }

    /// DiffuGen's own folder plus other tools' folders, all scanned recursively.
    pub fn with_extra_dirs(models_dir: impl Into<PathBuf>, extra_dirs: Vec<PathBuf>) -> Library {
        Library {
            models_dir: models_dir.into(),
            extra_dirs,
            remote: Default::default(),
        }
    }

    /// Every folder scanned: DiffuGen's own first.
    pub fn dirs(&self) -> Vec<&Path> {
        std::iter::once(self.models_dir.as_path())
            .chain(self.extra_dirs.iter().map(PathBuf::as_path))
            .collect()
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// Where LoRAs named in prompts (`<lora:name:0.8>`) are looked up.
    pub fn lora_dir(&self) -> PathBuf {
        self.models_dir.join("loras")
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in self.dirs() {
            walk(dir, true, &mut files);
        }
        files
    }

    /// Every folder whose contents the library lists: the model folders and the LoRA and embedding folders beside
    /// them.
    pub fn folders(&self) -> Vec<PathBuf> {
        let mut folders: Vec<PathBuf> = self.dirs().into_iter().map(Path::to_path_buf).collect();
        for dir in self.lora_dirs().into_iter().chain(self.embedding_dirs()) {
            if !folders.contains(&dir) {
                folders.push(dir);
            }
        }
        folders
    }

    /// The LoRA folders of every scanned folder (its own `loras/`, or a sibling `Lora`/`loras` of another tool's
    /// model folder).
    fn lora_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.lora_dir()];
        for dir in &self.extra_dirs {
            for base in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
                for name in LORA_FOLDERS {
                    let candidate = base.join(name);
                    if candidate.is_dir() && !dirs.contains(&candidate) {
                        dirs.push(candidate);
                    }
                }
            }
        }
        dirs
    }

    /// The embedding folders: DiffuGen's `embeddings/` and, for every other tool's model folder, an `embeddings/`
    /// inside it or beside it (A1111 keeps them at its root, beside `models/`).
    pub fn embedding_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.models_dir.join("embeddings")];
        for dir in &self.extra_dirs {
            for base in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
                for name in EMBEDDING_FOLDERS {
                    let candidate = base.join(name);
                    if candidate.is_dir() && !dirs.contains(&candidate) {
                        dirs.push(candidate);
                    }
                }
            }
        }
        dirs
    }

    /// Every embedding in the embedding folders, by name (the first of a name wins, DiffuGen's folder first).
    pub fn embeddings(&self) -> Vec<Embedding> {
        self.embedding_files()
            .into_iter()
            .map(|(name, path)| Embedding::read(name, path))
            .collect()
    }

    /// The embedding files by name, as [`Library::embeddings`] lists them, without reading a header: what a
    /// prompt's words are matched against before anything is opened.
    pub fn embedding_files(&self) -> Vec<(String, PathBuf)> {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for dir in self.embedding_dirs() {
            let mut files = Vec::new();
            walk(&dir, false, &mut files);
            for path in files.into_iter().filter(|p| has_model_extension(p)) {
                let Some(name) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                if !found.iter().any(|(n, _)| *n == name) {
                    found.push((name, path));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Every model file and preset under the models folder, identified from its header.
    pub fn scan(&self) -> Vec<ModelEntry> {
        self.files()
            .iter()
            .filter_map(|path| {
                if let Some(name) = preset_name(path) {
                    Some(self.preset_entry(path, &name))
                } else if has_model_extension(path) {
                    Some(inspect(path))
                } else {
                    None
                }
            })
            .collect()
    }

    fn preset_entry(&self, path: &Path, name: &str) -> ModelEntry {
        let mut entry = ModelEntry {
            id: name.to_string(),
            path: path.display().to_string(),
            format: Some("preset".into()),
            family: Family::Unknown,
            variant: None,
            role: Role::Checkpoint,
            quantization: None,
            parameters: 0.0,
            size_bytes: 0.0,
            error: None,
        };
        match load_preset(path, name, Some(&self.dirs())) {
            Ok(model) => {
                entry.id = model.id;
                entry.family = model.family;
                for (_, file) in model.components.files() {
                    let part = inspect(file);
                    entry.parameters += part.parameters;
                    entry.size_bytes += part.size_bytes;
                    if entry.quantization.is_none() && part.role != Role::Vae {
                        entry.quantization = part.quantization;
                    }
                    if let Some(error) = part.error {
                        entry
                            .error
                            .get_or_insert(format!("{}: {error}", file.display()));
                    }
                }
            }
            Err(e) => entry.error = Some(e.to_string()),
        }
        entry
    }

    /// The ids `resolve` accepts: every usable card (checkpoints, presets, assembled models), then the models only
    /// other machines render.
    pub fn ids(&self) -> Vec<String> {
        let mut ids = self.local_ids();
        let remote: Vec<String> = self.remote_only().into_iter().map(|m| m.id).collect();
        ids.extend(remote);
        ids
    }

    fn local_ids(&self) -> Vec<String> {
        self.cards()
            .into_iter()
            .filter(|c| c.error.is_none())
            .map(|c| c.id)
            .collect()
    }

    /// Turns a `--model` argument — a path to a file or preset, or an id from the models folder — into the
    /// component paths the engine loads, checking each file's header on the way.
    pub fn resolve(&self, spec: &str) -> Result<ResolvedModel, ModelError> {
        if is_path_spec(spec) {
            let path = PathBuf::from(spec);
            if !path.is_file() {
                return Err(ModelError::FileMissing(path));
            }
            if let Some(name) = preset_name(&path) {
                return load_preset(&path, &name, None);
            }
            return resolve_file(&path);
        }
        let files = self.files();
        for path in &files {
            if preset_name(path).as_deref() == Some(spec) {
                return load_preset(path, spec, Some(&self.dirs()));
            }
        }
        for path in files {
            if has_model_extension(&path) && path.file_stem().and_then(|s| s.to_str()) == Some(spec)
            {
                return match resolve_file(&path) {
                    // A diffusion model alone: put together with the VAE and encoders in the folders.
                    Err(
                        error @ ModelError::NotAModel {
                            role: Role::DiffusionModel,
                            ..
                        },
                    ) => self.resolve_card(spec).unwrap_or(Err(error)),
                    other => other,
                };
            }
        }
        if let Some(found) = self.resolve_card(spec) {
            return found;
        }
        if let Some(remote) = self.remote.iter().find(|m| m.id == spec) {
            return Ok(remote.clone());
        }
        Err(ModelError::UnknownId {
            id: spec.to_string(),
            available: self.ids(),
        })
    }

    /// The usable files of one role in the models folders, by id (file stem), sorted; the first of an id wins.
    pub fn with_role(&self, role: Role) -> Vec<ModelEntry> {
        let mut found: Vec<ModelEntry> = self
            .scan()
            .into_iter()
            .filter(|e| e.role == role && e.error.is_none())
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        found
    }

    /// The upscaling models (ESRGAN) in the models folders, by id, sorted.
    pub fn upscalers(&self) -> Vec<ModelEntry> {
        self.with_role(Role::Upscaler)
    }

    /// The ControlNet models in the models folders, by id, sorted.
    pub fn controlnets(&self) -> Vec<ModelEntry> {
        self.with_role(Role::ControlNet)
    }

    /// Finds an upscaling model by id (file stem; case does not matter).
    pub fn resolve_upscaler(&self, name: &str) -> Result<PathBuf, ModelError> {
        let upscalers = self.upscalers();
        upscalers
            .iter()
            .find(|e| e.id.eq_ignore_ascii_case(name))
            .map(|e| PathBuf::from(&e.path))
            .ok_or_else(|| ModelError::UnknownUpscaler {
                name: name.to_string(),
                available: upscalers.into_iter().map(|e| e.id).collect(),
            })
    }

    /// Finds a LoRA by name (file stem) in the LoRA folder.
    pub fn resolve_lora(&self, name: &str) -> Result<PathBuf, ModelError> {
        let dir = self.lora_dir();
        let mut files = Vec::new();
        for lora_dir in self.lora_dirs() {
            walk(&lora_dir, false, &mut files);
        }
        let loras: Vec<&PathBuf> = files.iter().filter(|p| has_model_extension(p)).collect();
        if let Some(found) = loras
            .iter()
            .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(name))
        {
            return Ok((*found).clone());
        }
        Err(ModelError::UnknownLora {
            name: name.to_string(),
            dir,
            available: loras
                .iter()
                .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
                .collect(),
        })
    }
}

/// Whether [`Library::resolve`] reads `spec` as a path to a file rather than an id from the folders: it has a path
/// separator or a model file's extension, or names a file relative to the working folder.
pub fn is_path_spec(spec: &str) -> bool {
    spec.contains(std::path::MAIN_SEPARATOR)
        || spec.contains('/')
        || has_model_extension(Path::new(spec))
        || Path::new(spec).is_file()
}

/// Headers already read (see [`crate::stamp`]).
static INSPECTED: crate::stamp::FileCache<PathBuf, ModelEntry> = crate::stamp::FileCache::new();

/// Reads one file's header and describes it (cached until the file changes).
pub fn inspect(path: &Path) -> ModelEntry {
    let described: Result<ModelEntry, std::convert::Infallible> =
        INSPECTED.get(path, path.to_path_buf(), || Ok(inspect_uncached(path)));
    described.unwrap_or_else(|never| match never {})
}

fn inspect_uncached(path: &Path) -> ModelEntry {
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut entry = ModelEntry {
        id,
        path: path.display().to_string(),
        format: None,
        family: Family::Unknown,
        variant: None,
        role: Role::Unknown,
        quantization: None,
        parameters: 0.0,
        size_bytes: size as f64,
        error: None,
    };
    match header::read(path) {
        Ok(header) => {
            let identity = identify(&header.tensors);
            entry.format = Some(match header.format {
                Format::Gguf => "gguf".into(),
                Format::Safetensors => "safetensors".into(),
                Format::Torch => "pytorch".into(),
            });
            entry.family = identity.family;
            entry.variant = identity.variant;
            entry.role = identity.role;
            entry.quantization = quantization(&header.tensors);
            entry.parameters = header.tensors.iter().map(|t| t.elements() as f64).sum();
        }
        Err(HeaderError::UnknownFormat)
            if path
                .extension()
                .is_some_and(|e| e != "gguf" && e != "safetensors") =>
        {
            entry.error = Some(
                "a PyTorch checkpoint in the format before PyTorch 1.6 (not a zip archive) is not inspected; \
                 convert it to safetensors or GGUF"
                    .into(),
            );
        }
        Err(e) => entry.error = Some(e.to_string()),
    }
    entry
}

pub(crate) fn resolve_file(path: &Path) -> Result<ResolvedModel, ModelError> {
    let entry = inspect(path);
    if let Some(reason) = entry.error {
        return Err(ModelError::Damaged {
            path: path.to_path_buf(),
            reason,
        });
    }
    match entry.role {
        Role::Checkpoint => {}
        Role::DiffusionModel => {
            return Err(ModelError::NotAModel {
                path: path.to_path_buf(),
                role: entry.role,
                hint: format!(
                    "; a {} diffusion model needs its VAE and text encoders: describe them in a preset \
                     (<models>/{}.preset.json)",
                    entry.family, entry.id
                ),
            })
        }
        role => return Err(ModelError::NotAModel { path: path.to_path_buf(), role, hint: String::new() }),
    }
    if entry.family == Family::Unknown {
        return Err(ModelError::Damaged {
            path: path.to_path_buf(),
            reason: "its tensors match no model family stable-diffusion.cpp supports".into(),
        });
    }
    Ok(ResolvedModel {
        defaults: FamilyDefaults::for_family(entry.family, &entry.id),
        id: entry.id,
        family: entry.family,
        components: Components {
            model: Some(path.to_path_buf()),
            ..Default::default()
        },
    })
}

/// `path` with `.` and `..` resolved by the text alone (no file system, so no answer depends on what exists).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Loads a preset. `roots`: for a preset found in the model folders, the folders its files must lie in — a preset
/// someone downloaded must not point DiffuGen at any other file on the disk, and the refusal reads the same
/// whether that file exists or not. `None` for a preset the user named by path on the command line.
pub(crate) fn load_preset(
    path: &Path,
    name: &str,
    roots: Option<&[&Path]>,
) -> Result<ResolvedModel, ModelError> {
    let invalid = |reason: String| ModelError::Preset {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let preset: Preset = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let components = preset.components.clone().relative_to(base);
    let main = components
        .model
        .clone()
        .or_else(|| components.diffusion_model.clone())
        .ok_or_else(|| invalid("it names neither `model` nor `diffusion_model`".into()))?;
    for (field, file) in components.files() {
        if let Some(roots) = roots {
            let inside = roots
                .iter()
                .any(|root| lexical(file).starts_with(lexical(root)));
            if !inside {
                return Err(invalid(format!(
                    "its {field} lies outside the model folders ({}); a preset may name only files inside them",
                    file.display()
                )));
            }
        }
        if !has_model_extension(file) {
            return Err(invalid(format!(
                "its {field} is not a model file ({}): model files end in .{}",
                file.display(),
                crate::MODEL_EXTENSIONS.join(", .")
            )));
        }
        if !file.is_file() {
            return Err(invalid(format!(
                "{field} file not found: {}",
                file.display()
            )));
        }
        if let Err(e) = header::read(file) {
            let readable_format = file
                .extension()
                .is_some_and(|e| e == "gguf" || e == "safetensors" || e == "sft");
            if readable_format || !matches!(e, HeaderError::UnknownFormat) {
                return Err(invalid(format!("{field} file {}: {e}", file.display())));
            }
        }
    }
    let family = match preset.family {
        Some(family) => family,
        None => header::read(&main)
            .map(|h| identify(&h.tensors).family)
            .unwrap_or(Family::Unknown),
    };
    let id = if preset.name.is_empty() {
        name.to_string()
    } else {
        preset.name
    };
    let mut defaults = FamilyDefaults::for_family(family, &id);
    if let Some(overrides) = preset.defaults {
        let mut merged = serde_json::to_value(&defaults).expect("defaults serialize");
        if let (Some(base), Some(extra)) = (merged.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        defaults = serde_json::from_value(merged).map_err(|e| invalid(format!("defaults: {e}")))?;
    }
    Ok(ResolvedModel {
        id,
        family,
        components,
        defaults,
    })
}

#[cfg(test)]
mod remote_tests {
    use super::*;

    fn remote(id: &str, family: Family) -> ResolvedModel {
        ResolvedModel {
            id: id.into(),
            family,
            components: Components::default(),
            defaults: FamilyDefaults::for_family(family, id),
        }
    }

    #[test]
    fn a_front_knows_its_workers_models_after_its_own_and_a_card_says_they_are_in_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let library = Library::new(dir.path()).with_remote(vec![
            remote("sdxl-turbo", Family::Sdxl),
            remote("sdxl-turbo", Family::Sd1),
        ]);
        let found = library.resolve("sdxl-turbo").unwrap();
        assert_eq!(found.family, Family::Sdxl, "the first worker's card");
        assert_eq!(
            found.components,
            Components::default(),
            "no file of this machine"
        );
        assert!(library.ids().ends_with(&["sdxl-turbo".to_string()]));
        let cards = library.remote_cards();
        assert_eq!(cards.len(), 1);
        assert_eq!(
            (cards[0].source.as_str(), cards[0].default_steps),
            ("cluster", found.defaults.steps)
        );
        let unknown = library.resolve("nowhere").unwrap_err().to_string();
        assert!(
            unknown.contains("sdxl-turbo"),
            "the error lists it: {unknown}"
        );
    }
}
