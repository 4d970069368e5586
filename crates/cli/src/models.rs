//! `diffugen models`: what is in the models folder.

use std::process::ExitCode;

use clap::Args;
use diffugen_models::Library;

use crate::paths::Paths;

#[derive(Args)]
pub struct ModelsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

fn human_size(bytes: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

pub fn run(paths: &Paths, args: &ModelsArgs) -> Result<ExitCode, String> {
    let library = Library::new(&paths.models_dir);
    let entries = library.scan();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        eprintln!(
            "No models in {}. Put a .gguf or .safetensors model there, or point --models-dir / DIFFUGEN_MODELS_DIR \
             at your existing models folder.",
            paths.models_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<14} {:<16} {:<8} {:>10} {:>8}  PATH",
        "ID", "FAMILY", "ROLE", "QUANT", "SIZE", "PARAMS"
    );
    for e in entries {
        let role = serde_json::to_value(e.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let family = match &e.variant {
            Some(v) => format!("{} {v}", e.family),
            None => e.family.clone(),
        };
        println!(
            "{:<28} {:<14} {:<16} {:<8} {:>10} {:>7.0}M  {}{}",
            e.id,
            family,
            role,
            e.quantization.as_deref().unwrap_or("-"),
            human_size(e.size_bytes),
            e.parameters / 1e6,
            e.path,
            e.error
                .map(|err| format!("  (unusable: {err})"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
