//! `diffugen settings`: the settings file the desktop app and the headless commands share, and the configuration
//! in force with where each value came from.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use diffugen_runtime::Config;

#[derive(Args)]
pub struct SettingsArgs {
    #[command(subcommand)]
    command: Option<SettingsCommand>,
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Print the settings file as JSON (the default)
    Show {
        /// Print the values in force instead, each with where it came from: a flag, an environment variable, the
        /// settings file or the default
        #[arg(long)]
        resolved: bool,
        /// With --resolved: one JSON object, {"key": {"value": ..., "source": "flag|env|file|default"}} (the
        /// settings file is always printed as JSON)
        #[arg(long)]
        json: bool,
    },
    /// Print where the settings file is
    Path,
    /// Set one key, e.g. `vram_policy never`, `api_port 6000`, `extra_models_dirs /a:/b`
    Set { key: String, value: String },
    /// Remove one key (back to its default)
    Unset { key: String },
}

pub fn run(config: &Config, args: &SettingsArgs) -> Result<ExitCode, String> {
    let settings = match &args.command {
        None
        | Some(SettingsCommand::Show {
            resolved: false, ..
        }) => config.in_file.clone(),
        Some(SettingsCommand::Show {
            resolved: true,
            json,
        }) => return resolved(config, *json),
        Some(SettingsCommand::Path) => {
            println!("{}", config.settings_file().display());
            return Ok(ExitCode::SUCCESS);
        }
        Some(SettingsCommand::Set { key, value }) => {
            diffugen_settings::set(&config.data_dir, key, Some(value)).map_err(|e| e.to_string())?
        }
        Some(SettingsCommand::Unset { key }) => {
            diffugen_settings::set(&config.data_dir, key, None).map_err(|e| e.to_string())?
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

/// `settings show --resolved [--json]`.
fn resolved(config: &Config, json: bool) -> Result<ExitCode, String> {
    let resolved = config.resolved();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&resolved).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = resolved.keys().map(String::len).max().unwrap_or(0);
    for (key, entry) in &resolved {
        let value = match &entry.value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => "(none)".into(),
            other => other.to_string(),
        };
        let source = match (&entry.origin.source, &entry.origin.name) {
            (diffugen_runtime::Source::File, _) => "settings file".to_string(),
            (diffugen_runtime::Source::Default, _) => "default".to_string(),
            (_, Some(name)) => name.clone(),
            (source, None) => format!("{source:?}").to_lowercase(),
        };
        println!("{key:<width$}  {value}  ({source})");
    }
    Ok(ExitCode::SUCCESS)
}
