//! Where DiffuGen keeps its data: `--data-dir` / `DIFFUGEN_DATA_DIR` (default: the OS data folder), with models in
//! `<data>/models` unless `--models-dir` / `DIFFUGEN_MODELS_DIR` or the settings say otherwise, and images in
//! `<data>/outputs`. The flags become [`Flags`]; `diffugen_runtime::Config` resolves them with the environment and
//! the settings file, the same way for every command and the desktop app.

use std::path::PathBuf;

use clap::Args;
use diffugen_runtime::Flags;

#[derive(Args)]
pub struct PathArgs {
    /// Folder for settings, outputs and the gallery [default: $DIFFUGEN_DATA_DIR, else the OS data folder, e.g.
    /// ~/.local/share/diffugen]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Folder scanned for models (LoRAs in its loras/ subfolder) [default: $DIFFUGEN_MODELS_DIR, else the
    /// models_dir setting, else <data dir>/models]
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Another tool's model folder to use in place (an A1111 models/Stable-diffusion, a ComfyUI models/);
    /// repeatable [default: $DIFFUGEN_EXTRA_MODELS_DIRS (:-separated), else the extra_models_dirs setting]
    #[arg(long = "extra-models-dir", global = true, value_name = "DIR")]
    extra_models_dirs: Vec<PathBuf>,
}

impl PathArgs {
    /// What these flags set in the configuration.
    pub fn flags(&self) -> Flags {
        let extra = (!self.extra_models_dirs.is_empty()).then(|| {
            std::env::join_paths(&self.extra_models_dirs)
                .map(|joined| joined.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        Flags::new()
            .set_some(
                "data_dir",
                "--data-dir",
                self.data_dir.as_ref().map(|d| d.display()),
            )
            .set_some(
                "models_dir",
                "--models-dir",
                self.models_dir.as_ref().map(|d| d.display()),
            )
            .set_some("extra_models_dirs", "--extra-models-dir", extra)
    }
}
