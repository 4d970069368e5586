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
}

/// The resolved folders.
pub struct Paths {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
}

impl Paths {
    pub fn outputs_dir(&self) -> PathBuf {
        self.data_dir.join("outputs")
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
        }
    }
}
