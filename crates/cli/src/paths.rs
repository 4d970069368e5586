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
}

impl Paths {
    pub fn outputs_dir(&self) -> PathBuf {
        self.data_dir.join("outputs")
    }

    /// The model library over every configured folder.
    pub fn library(&self) -> diffugen_models::Library {
        diffugen_models::Library::with_extra_dirs(&self.models_dir, self.extra_models_dirs.clone())
    }
}

impl PathArgs {
    pub fn resolve(&self) -> Paths {
        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| dirs::data_dir().map(|d| d.join("diffugen")))
            .unwrap_or_else(|| PathBuf::from(".diffugen"));
        let models_dir = self
            .models_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("models"));
        Paths {
            data_dir,
            models_dir,
            extra_models_dirs: self.extra_models_dirs.clone(),
        }
    }
}
