//! `diffugen models`: what is in the models folder.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use diffugen_runtime::Config;

#[derive(Args)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<ModelsCommand>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Everything known about one model: its files, family, role, quantization, defaults
    Show { id: String },
    /// How a model would run at a size: where each part goes (GPU, CPU, offload), VAE tiling, the VRAM and RAM
    /// peaks, and what to do when it does not fit (exit status 1)
    Fit(crate::fit::FitArgs),
    /// Make a smaller copy of a model, or of one part of it (the T5 of a FLUX set): quantized by sd.cpp on this
    /// machine, checked for disk space first, listed as a model when done
    Convert(crate::convert::ConvertArgs),
    /// Write a model card (an assembled FLUX set, a checkpoint) as a preset file to edit: components and defaults
    Save { id: String },
    /// The models DiffuGen can download (`diffugen models pull ID`)
    Catalog,
    /// Download a catalog model or any http(s) URL into the models folder: resumed after a dropped connection,
    /// verified with SHA-256
    Pull {
        /// A catalog id (see `diffugen models catalog`) or a URL
        target: String,
        /// The file's expected SHA-256 (default: the catalog's, or Hugging Face's published hash)
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// A Hugging Face token for gated repositories
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        hf_token: Option<String>,
    },
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

impl ModelsArgs {
    /// Whether the command only prints what it reads (a conversion runs an engine worker).
    pub fn prints_only(&self) -> bool {
        !matches!(self.command, Some(ModelsCommand::Convert(_)))
    }
}

pub fn run(paths: &Config, args: &ModelsArgs) -> Result<ExitCode, String> {
    match &args.command {
        None => list(paths, args),
        Some(ModelsCommand::Show { id }) => show(paths, id, args.json),
        Some(ModelsCommand::Catalog) => catalog(args.json),
        Some(ModelsCommand::Fit(fit)) => crate::fit::run(paths, fit, args.json),
        Some(ModelsCommand::Convert(convert)) => crate::convert::run(paths, convert, args.json),
        Some(ModelsCommand::Save { id }) => {
            let library = paths.library();
            let model = library.resolve(id).map_err(|e| e.to_string())?;
            let path = library.save_preset(&model)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(ModelsCommand::Pull {
            target,
            sha256,
            hf_token,
        }) => pull(
            paths,
            target,
            sha256.clone(),
            hf_token.clone().or_else(|| paths.settings.hf_token.clone()),
            args.json,
        ),
    }
}

fn show(paths: &Config, id: &str, json: bool) -> Result<ExitCode, String> {
    let library = paths.library();
    let model = library.resolve(id).map_err(|e| e.to_string())?;
    let files: Vec<serde_json::Value> = model
        .components
        .files()
        .into_iter()
        .map(|(component, path)| {
            let entry = diffugen_models::inspect(path);
            serde_json::json!({
                "component": component,
                "path": path.display().to_string(),
                "family": entry.family,
                "role": entry.role,
                "quantization": entry.quantization,
                "parameters": entry.parameters,
                "size_bytes": entry.size_bytes,
                "error": entry.error,
            })
        })
        .collect();
    let need = diffugen_models::plan::full_gpu_need(
        &model.components,
        model.family,
        model.defaults.width,
        model.defaults.height,
        model.defaults.cfg_scale > 1.0,
    );
    let card = serde_json::json!({
        "id": model.id,
        "family": model.family,
        "files": files,
        "defaults": model.defaults,
        "estimated_memory_bytes": need,
    });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&card).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} ({})", model.id, model.family);
    for file in &files {
        println!(
            "  {:<16} {}  [{} {}, {}]",
            file["component"].as_str().unwrap_or(""),
            file["path"].as_str().unwrap_or(""),
            file["role"].as_str().unwrap_or(""),
            file["quantization"].as_str().unwrap_or("-"),
            human_size(file["size_bytes"].as_f64().unwrap_or(0.0))
        );
    }
    let d = &model.defaults;
    println!(
        "  defaults: {}x{}, {} steps, cfg {}, sampler {}{}",
        d.width,
        d.height,
        d.steps,
        d.cfg_scale,
        d.sampler,
        d.scheduler
            .as_deref()
            .map(|s| format!(", scheduler {s}"))
            .unwrap_or_default()
    );
    println!(
        "  estimated memory at {}x{}: {}",
        d.width,
        d.height,
        human_size(need)
    );
    Ok(ExitCode::SUCCESS)
}

fn catalog(json: bool) -> Result<ExitCode, String> {
    let entries = diffugen_downloads::catalog();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries.iter().map(|e| e.id.len()).max().unwrap_or(0).max(2);
    println!("{:<width$} {:<10} {:>9}  NAME", "ID", "FAMILY", "SIZE");
    for e in &entries {
        println!(
            "{:<width$} {:<10} {:>9}  {}{} ({} file{}; {})",
            e.id,
            e.family,
            human_size(e.bytes()),
            e.name,
            if e.recommended_low_vram {
                " [recommended for small GPUs]"
            } else {
                ""
            },
            e.files.len(),
            if e.files.len() == 1 { "" } else { "s" },
            e.license
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn pull(
    paths: &Config,
    target: &str,
    sha256: Option<String>,
    token: Option<String>,
    json: bool,
) -> Result<ExitCode, String> {
    use diffugen_downloads::DownloadStage;
    use std::io::IsTerminal;
    let plan = diffugen_downloads::plan(target, &paths.models_dir, sha256, token)
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
        let interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = cancel.send(true);
            }
        });
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:<28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let result = diffugen_downloads::pull(&plan.name, &plan, cancel_rx, &mut |event| {
            if json {
                if let Ok(line) = serde_json::to_string(&event) {
                    println!("{line}");
                }
                return;
            }
            let prefix = format!("[{}/{}]", event.file, event.files);
            match (&event.stage, &bar) {
                (
                    DownloadStage::Started {
                        file,
                        total_bytes,
                        resumed_from,
                        ..
                    },
                    Some(bar),
                ) => {
                    bar.set_length(total_bytes.unwrap_or(0.0) as u64);
                    bar.set_position(*resumed_from as u64);
                    bar.set_message(format!("{prefix} {file}"));
                }
                (DownloadStage::Progress { bytes, .. }, Some(bar)) => {
                    bar.set_position(*bytes as u64)
                }
                (DownloadStage::Progress { .. }, None) => {}
                (
                    DownloadStage::Started {
                        file,
                        total_bytes,
                        resumed_from,
                        ..
                    },
                    None,
                ) => eprintln!(
                    "{prefix} {file}: {}{}",
                    total_bytes
                        .map(human_size)
                        .unwrap_or_else(|| "size unknown".into()),
                    if *resumed_from > 0.0 {
                        format!(", resuming at {}", human_size(*resumed_from))
                    } else {
                        String::new()
                    }
                ),
                (
                    DownloadStage::Retrying {
                        reason,
                        resume_from,
                        ..
                    },
                    _,
                ) => {
                    let line = format!(
                        "{prefix} connection lost ({reason}); resuming at {}",
                        human_size(*resume_from)
                    );
                    match &bar {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                (DownloadStage::Restarted { reason }, _) => {
                    let line = format!("{prefix} {reason}");
                    match &bar {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                (DownloadStage::Verifying, _) => {
                    if let Some(bar) = &bar {
                        bar.set_message(format!("{prefix} verifying"))
                    }
                }
                (DownloadStage::Done { path, sha256, verified }, _) => {
                    let line = match (verified, sha256.is_empty()) {
                        (true, _) => format!("{prefix} {path} (sha256 verified)"),
                        (false, true) => format!("{prefix} {path} (already there)"),
                        (false, false) => format!(
                            "{prefix} {path} (not verified: no expected sha256 was known; its sha256 is {sha256})"
                        ),
                    };
                    match &bar {
                        Some(bar) => bar.println(line),
                        None => eprintln!("{line}"),
                    }
                }
                (DownloadStage::Failed { .. } | DownloadStage::Cancelled, _) => {}
            }
        })
        .await;
        interrupt.abort();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        match result {
            Ok(files) => {
                if !json {
                    if let Some((preset, _)) = &plan.preset {
                        println!("{} is ready (preset {})", plan.name, preset.display());
                    } else if let Some(file) = files.last() {
                        println!("{}", file.display());
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(diffugen_downloads::DownloadError::Cancelled) => {
                eprintln!("cancelled; nothing was left behind");
                Ok(ExitCode::from(130))
            }
            Err(e) => Err(e.to_string()),
        }
    })
}

fn list(paths: &Config, args: &ModelsArgs) -> Result<ExitCode, String> {
    let library = paths.library();
    let cards = library.cards();
    let entries = library.scan();
    if args.json {
        let listing = serde_json::json!({ "cards": cards, "files": entries });
        println!(
            "{}",
            serde_json::to_string_pretty(&listing).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !cards.is_empty() {
        println!(
            "{:<28} {:<10} {:<10} {:>10} {:>10}  NOTES",
            "MODEL", "FAMILY", "SOURCE", "SIZE", "MEMORY"
        );
        for c in &cards {
            let notes = match (&c.error, c.aliases.is_empty()) {
                (Some(e), _) => format!("unusable: {e}"),
                (None, false) => format!("alias {}", c.aliases.join(", ")),
                (None, true) => String::new(),
            };
            println!(
                "{:<28} {:<10} {:<10} {:>10} {:>10}  {notes}",
                c.id,
                c.family,
                c.source,
                human_size(c.size_bytes),
                if c.estimated_bytes > 0.0 {
                    format!("~{}", human_size(c.estimated_bytes))
                } else {
                    "-".into()
                },
            );
        }
        println!();
    }
    if entries.is_empty() {
        eprintln!(
            "No models in {}. Download one with `diffugen models pull sd-turbo` (see `diffugen models catalog`), put a \
             .gguf or .safetensors model there, or add your existing folders with --extra-models-dir.",
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
            None => e.family.to_string(),
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
