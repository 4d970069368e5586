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

pub use diffugen_app::Paths;

impl PathArgs {
    /// The folders, from flags and environment first, then the settings file, then the defaults.
    pub fn resolve(&self) -> Result<Paths, String> {
        Paths::resolve(
            self.data_dir.clone(),
            self.models_dir.clone(),
            self.extra_models_dirs.clone(),
        )
    }
}
