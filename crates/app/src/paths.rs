//! Where DiffuGen keeps its data, resolved the same way for the CLI and the desktop app: an explicit folder (flag or
//! `DIFFUGEN_DATA_DIR`) or the OS data folder; models in `<data>/models` unless `DIFFUGEN_MODELS_DIR` or the
//! settings say otherwise; images in `<data>/outputs` unless the settings say otherwise.

use std::path::PathBuf;

/// The resolved folders and the settings file they were read with.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub extra_models_dirs: Vec<PathBuf>,
    /// `<data dir>/settings.json`, shared by the CLI and the desktop app.
    pub settings: diffugen_settings::Settings,
    /// Folders given explicitly (flags or environment), which win over the settings file.
    models_override: Option<PathBuf>,
    extra_override: Vec<PathBuf>,
}

impl Paths {
    /// The folders from explicit values first (flags, environment), then the settings file, then the defaults.
    pub fn resolve(
        data_dir: Option<PathBuf>,
        models_dir: Option<PathBuf>,
        extra_models_dirs: Vec<PathBuf>,
    ) -> Result<Paths, String> {
        let data_dir = data_dir
            .or_else(|| dirs::data_dir().map(|d| d.join("diffugen")))
            .unwrap_or_else(|| PathBuf::from(".diffugen"));
        let settings = diffugen_settings::load(&data_dir).map_err(|e| e.to_string())?;
        let mut paths = Paths {
            data_dir,
            models_dir: PathBuf::new(),
            extra_models_dirs: Vec::new(),
            settings,
            models_override: models_dir,
            extra_override: extra_models_dirs,
        };
        paths.apply_settings();
        Ok(paths)
    }

    /// The folders from the environment (`DIFFUGEN_DATA_DIR`, `DIFFUGEN_MODELS_DIR`, `DIFFUGEN_EXTRA_MODELS_DIRS`,
    /// `:`-separated), as the desktop app starts.
    pub fn from_env() -> Result<Paths, String> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Paths::resolve(
            var("DIFFUGEN_DATA_DIR").map(PathBuf::from),
            var("DIFFUGEN_MODELS_DIR").map(PathBuf::from),
            var("DIFFUGEN_EXTRA_MODELS_DIRS")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
        )
    }

    /// Reads the settings file again (after the app or `diffugen settings` changed it).
    pub fn reload(&mut self) -> Result<(), String> {
        self.settings = diffugen_settings::load(&self.data_dir).map_err(|e| e.to_string())?;
        self.apply_settings();
        Ok(())
    }

    fn apply_settings(&mut self) {
        self.models_dir = self
            .models_override
            .clone()
            .or_else(|| self.settings.models_dir.as_ref().map(PathBuf::from))
            .unwrap_or_else(|| self.data_dir.join("models"));
        self.extra_models_dirs = if self.extra_override.is_empty() {
            self.settings
                .extra_models_dirs
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            self.extra_override.clone()
        };
    }

    /// Whether the models folder was fixed by a flag or the environment (the settings cannot change it then).
    pub fn models_dir_overridden(&self) -> bool {
        self.models_override.is_some()
    }

    pub fn outputs_dir(&self) -> PathBuf {
        self.settings
            .outputs_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.data_dir.join("outputs"))
    }

    /// The gallery of the data folder, reading the configured outputs folder.
    pub fn gallery(&self) -> Result<diffugen_gallery::Gallery, String> {
        diffugen_gallery::Gallery::open(&self.data_dir)
            .map(|g| g.with_outputs_dir(self.outputs_dir()))
            .map_err(|e| {
                format!(
                    "cannot open the gallery in {}: {e}",
                    self.data_dir.display()
                )
            })
    }

    /// The model library over every configured folder.
    pub fn library(&self) -> diffugen_models::Library {
        diffugen_models::Library::with_extra_dirs(&self.models_dir, self.extra_models_dirs.clone())
    }
}
