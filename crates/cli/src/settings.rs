//! `diffugen settings`: the settings file the desktop app and the headless commands share.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::paths::Paths;

#[derive(Args)]
pub struct SettingsArgs {
    #[command(subcommand)]
    command: Option<SettingsCommand>,
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Print the settings as JSON (the default)
    Show,
    /// Print where the settings file is
    Path,
    /// Set one key, e.g. `vram_policy never`, `api_port 6000`, `extra_models_dirs /a:/b`
    Set { key: String, value: String },
    /// Remove one key (back to its default)
    Unset { key: String },
}

pub fn run(paths: &Paths, args: &SettingsArgs) -> Result<ExitCode, String> {
    let settings = match &args.command {
        None | Some(SettingsCommand::Show) => paths.settings.clone(),
        Some(SettingsCommand::Path) => {
            println!("{}", diffugen_settings::path(&paths.data_dir).display());
            return Ok(ExitCode::SUCCESS);
        }
        Some(SettingsCommand::Set { key, value }) => {
            diffugen_settings::set(&paths.data_dir, key, Some(value)).map_err(|e| e.to_string())?
        }
        Some(SettingsCommand::Unset { key }) => {
            diffugen_settings::set(&paths.data_dir, key, None).map_err(|e| e.to_string())?
        }
    };
    let mut value = serde_json::to_value(&settings).map_err(|e| e.to_string())?;
    // Never print a secret in full.
    for secret in ["api_key", "hf_token"] {
        if value[secret].is_string() {
            value[secret] = "(set)".into();
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}
