//! Where DiffuGen keeps its data: `--data-dir` / `DIFFUGEN_DATA_DIR` (default: the OS data folder), with models in
//! `<data>/models` unless `--models-dir` / `DIFFUGEN_MODELS_DIR` says otherwise, and images in `<data>/outputs`.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct PathArgs {
    /// Folder for settings, outputs and the gallery [default: the OS data folder, e.g. ~/.local/share/diffugen]
    #[arg(long, global = true, env = "DIFFUGEN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Folder scanned for models (LoRAs in its loras/ subfolder) [default: <data dir>/models]
    #[arg(long, global = true, env = "DIFFUGEN_MODELS_DIR", value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Another tool's model folder to use in place (an A1111 models/Stable-diffusion, a ComfyUI models/);
    /// repeatable, or a :-separated list in DIFFUGEN_EXTRA_MODELS_DIRS
    #[arg(
        long = "extra-models-dir",
        global = true,
        env = "DIFFUGEN_EXTRA_MODELS_DIRS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    extra_models_dirs: Vec<PathBuf>,
}

/// The resolved folders.
pub struct Paths {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub extra_models_dirs: Vec<PathBuf>,
    /// `<data dir>/settings.json`, shared with the desktop app.
    pub settings: diffugen_settings::Settings,
}

impl Paths {
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

impl PathArgs {
    /// The folders, from flags and environment first, then the settings file, then the defaults.
    pub fn resolve(&self) -> Result<Paths, String> {
        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| dirs::data_dir().map(|d| d.join("diffugen")))
            .unwrap_or_else(|| PathBuf::from(".diffugen"));
        let settings = diffugen_settings::load(&data_dir).map_err(|e| e.to_string())?;
        let models_dir = self
            .models_dir
            .clone()
            .or_else(|| settings.models_dir.as_ref().map(PathBuf::from))
            .unwrap_or_else(|| data_dir.join("models"));
        let extra_models_dirs = if self.extra_models_dirs.is_empty() {
            settings
                .extra_models_dirs
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            self.extra_models_dirs.clone()
        };
        Ok(Paths {
            data_dir,
            models_dir,
            extra_models_dirs,
            settings,
        })
    }
}
