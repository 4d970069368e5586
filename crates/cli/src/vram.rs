//! `diffugen vram status|switch|watch`, and the VRAM options `serve` and `generate` share.
//!
//! With a `diffugen serve` running, the commands ask it (it knows its engine, its policy and its statistics);
//! without one they read the GPU and Ollama directly, and a switch to diffusion remembers what it unloaded in the
//! data folder so that `switch llm` can restore it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use diffugen_engine::{Engine, WorkerCommand};
use diffugen_runtime::{Config, Flags};
use diffugen_vram::snapshot::GpuStatus;
use diffugen_vram::{
    AfterQueue, KeepAlive, Nvml, Orchestrator, Policy, SwitchReport, SwitchTarget, VramConfig,
    VramEvent, VramSnapshot,
};
use futures_util::StreamExt;

use crate::client::{sse_data, Server};

/// Where Ollama is.
#[derive(Args, Clone)]
pub struct OllamaArgs {
    /// Ollama's address (Ollama's own OLLAMA_HOST forms are accepted: host:port, http://host:port)
    /// [default: $OLLAMA_HOST, else the ollama_url setting, else http://127.0.0.1:11434]
    #[arg(long, value_name = "URL", global = true)]
    pub ollama_url: Option<String>,
}

impl OllamaArgs {
    /// What these flags set in the configuration.
    pub fn flags(&self) -> Flags {
        Flags::new().set_some("ollama_url", "--ollama-url", self.ollama_url.as_ref())
    }
}

/// How the GPU is shared with Ollama.
#[derive(Args, Clone)]
pub struct PolicyArgs {
    /// Before a diffusion job: unload resident LLMs always; share the GPU with them when the job fits beside them
    /// and otherwise unload (share); choose per job whichever is cheaper (auto); or never touch them
    /// [default: $DIFFUGEN_VRAM_POLICY, else the vram_policy setting, else auto]
    #[arg(long, value_name = "always|auto|share|never")]
    pub vram_policy: Option<Policy>,
    /// When the queue is empty: restore the LLMs DiffuGen unloaded, or leave them unloaded
    /// [default: the after_queue setting, else restore]
    #[arg(long, value_name = "restore|leave")]
    pub after_queue: Option<AfterQueue>,
    /// Fail a job when an unload cannot be confirmed (default: render anyway, with a warning)
    #[arg(long)]
    pub vram_strict: bool,
    /// Seconds to wait for an unloaded LLM's memory to come back
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub unload_timeout: u64,
    /// Keep-alive for restored LLMs: 5m, 1h, -1 for forever [default: what each had left]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub restore_keep_alive: Option<String>,
}

impl PolicyArgs {
    /// What these flags set in the configuration (the policy and what happens after the queue).
    pub fn flags(&self) -> Flags {
        Flags::new()
            .set_some(
                "vram_policy",
                "--vram-policy",
                self.vram_policy.map(|p| json_name(&p)),
            )
            .set_some(
                "after_queue",
                "--after-queue",
                self.after_queue.map(|a| json_name(&a)),
            )
    }

    /// The configuration's VRAM settings, tuned by the flags that are no settings (timeouts, strictness).
    pub fn config(&self, config: &Config) -> Result<VramConfig, String> {
        let base = config.vram_config().map_err(|e| e.to_string())?;
        let restore_keep_alive = self
            .restore_keep_alive
            .as_deref()
            .map(KeepAlive::parse)
            .transpose()
            .map_err(|e| format!("invalid --restore-keep-alive: {e}"))?;
        if self.unload_timeout == 0 {
            return Err("invalid --unload-timeout: use at least 1 second".into());
        }
        Ok(VramConfig {
            strict: self.vram_strict,
            unload_timeout: Duration::from_secs(self.unload_timeout),
            restore_keep_alive,
            ..base
        })
    }
}

#[derive(Args)]
pub struct VramArgs {
    #[command(subcommand)]
    command: VramCommand,
    #[command(flatten)]
    ollama: OllamaArgs,
    /// The policy a server-less status reports (a running server reports its own)
    #[command(flatten)]
    policy: PolicyArgs,
    /// A running `diffugen serve` to ask (its engine, policy and statistics)
    #[arg(
        long,
        env = "DIFFUGEN_SERVER",
        default_value = "http://127.0.0.1:5199",
        value_name = "URL",
        global = true
    )]
    server: String,
    /// The server's API key, if it requires one
    #[arg(long, env = "DIFFUGEN_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

#[derive(Subcommand)]
enum VramCommand {
    /// GPU memory, resident LLMs, engine state, policy and statistics
    Status {
        /// Print the snapshot as JSON
        #[arg(long)]
        json: bool,
    },
    /// Hand the GPU to the LLM (free DiffuGen's memory, restore unloaded LLMs) or to diffusion (unload LLMs)
    Switch {
        #[arg(value_name = "llm|diffusion")]
        to: SwitchTarget,
    },
    /// Show the meter live until Ctrl+C
    Watch {
        /// One JSON event per line
        #[arg(long)]
        json: bool,
    },
}

pub fn run(paths: &Config, args: &VramArgs) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let server = Server::find(&args.server, args.api_key.clone()).await;
        match &args.command {
            VramCommand::Status { json } => status(paths, args, server.as_ref(), *json).await,
            VramCommand::Switch { to } => switch(paths, args, server.as_ref(), *to).await,
            VramCommand::Watch { json } => watch(paths, args, server.as_ref(), *json).await,
        }
    })
}

/// An orchestrator for this process alone (no engine running here): reads the GPU and Ollama, switches.
fn local(args: &VramArgs, config: &Config) -> Result<Orchestrator, String> {
    let vram = args.policy.config(config)?;
    let command = WorkerCommand::current_exe(&[diffugen_engine::WORKER_SUBCOMMAND])
        .map_err(|e| format!("cannot find the diffugen executable: {e}"))?;
    Ok(Orchestrator::new(
        vram,
        config.ollama_client().map_err(|e| e.to_string())?,
        Arc::new(Nvml::new()),
        Arc::new(Engine::new(command)),
    ))
}

impl VramArgs {
    /// What this command's flags set in the configuration.
    pub fn flags(&self) -> Flags {
        self.ollama.flags().merge(self.policy.flags())
    }
}

async fn snapshot(
    paths: &Config,
    args: &VramArgs,
    server: Option<&Server>,
) -> Result<VramSnapshot, String> {
    match server {
        Some(server) => {
            let value: serde_json::Value = server
                .json(
                    reqwest::Method::GET,
                    "/api/v1/vram",
                    Duration::from_secs(10),
                )
                .await?;
            from_value(value)
        }
        None => Ok(local(args, paths)?.snapshot().await),
    }
}

/// The CLI reads the server's snapshot back into the same type it would build itself.
fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("unexpected reply from the server: {e}"))
}

async fn status(
    paths: &Config,
    args: &VramArgs,
    server: Option<&Server>,
    json: bool,
) -> Result<ExitCode, String> {
    let snapshot = snapshot(paths, args, server).await?;
    if json {
        let mut value = serde_json::to_value(&snapshot).map_err(|e| e.to_string())?;
        value["server"] = server.map(|s| s.base().to_string()).into();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", describe(&snapshot, server.map(|s| s.base())));
    }
    Ok(ExitCode::SUCCESS)
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

fn describe_gpu(gpu: &GpuStatus) -> String {
    if !gpu.available {
        let message = gpu.message.as_deref().unwrap_or("no NVIDIA GPU detected");
        return format!(
            "GPU:      {message}\n          estimated: LLM {} (Ollama's size_vram), DiffuGen {}\n",
            gib(gpu.llm_bytes),
            gib(gpu.diffugen_bytes)
        );
    }
    let mut text = String::new();
    for g in &gpu.gpus {
        text.push_str(&format!(
            "GPU {}:    {}: {} of {} used (LLM {}, DiffuGen {}, other {}), {} free\n",
            g.index,
            g.name,
            gib(g.used_bytes),
            gib(g.total_bytes),
            gib(g.llm_bytes),
            gib(g.diffugen_bytes),
            gib(g.other_bytes),
            gib(g.free_bytes)
        ));
    }
    text
}

/// The human-readable status.
fn describe(s: &VramSnapshot, server: Option<&str>) -> String {
    let mut text = describe_gpu(&s.gpu);
    let ollama = &s.ollama;
    if ollama.reachable {
        text.push_str(&format!(
            "Ollama:   {} (version {})\n",
            ollama.url,
            ollama.version.as_deref().unwrap_or("?")
        ));
    } else {
        text.push_str(&format!(
            "Ollama:   not reachable ({})\n",
            ollama.error.as_deref().unwrap_or(&ollama.url)
        ));
    }
    if ollama.models.is_empty() {
        text.push_str("LLMs:     none loaded\n");
    }
    for (i, m) in ollama.models.iter().enumerate() {
        let on_gpu = if m.size_bytes > 0.0 {
            (m.vram_bytes / m.size_bytes * 100.0).round()
        } else {
            0.0
        };
        text.push_str(&format!(
            "{}{} {} ({on_gpu}% on the GPU)\n",
            if i == 0 { "LLMs:     " } else { "          " },
            m.name,
            gib(m.size_bytes)
        ));
    }
    match server {
        None => text.push_str("Engine:   no DiffuGen server running\n"),
        Some(url) => {
            let e = &s.engine;
            let worker = match (e.worker_pid, &e.loaded_model) {
                (None, _) => "no worker running".to_string(),
                (Some(pid), None) => format!("worker pid {pid}, no model loaded"),
                (Some(pid), Some(model)) => format!(
                    "worker pid {pid}, {model} loaded{}",
                    e.estimated_bytes
                        .map(|b| format!(" (about {})", gib(b)))
                        .unwrap_or_default()
                ),
            };
            text.push_str(&format!("Engine:   {worker} (server {url})\n"));
        }
    }
    text.push_str(&format!(
        "Phase:    {} for {:.0} s; policy {}, after the queue: {}{}\n",
        s.phase.name(),
        s.phase_seconds,
        json_name(&s.policy),
        json_name(&s.after_queue),
        if s.strict { ", strict" } else { "" }
    ));
    if !s.pending_restore.is_empty() {
        text.push_str(&format!(
            "Restore:  {} (unloaded by DiffuGen)\n",
            s.pending_restore.join(", ")
        ));
    }
    let st = &s.stats;
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.0} ms")).unwrap_or("-".into());
    text.push_str(&format!(
        "Stats:    {} switches (last {}, average {}, max {}), {} requests, {} errors, {} unconfirmed unloads\n",
        st.switches,
        ms(st.last_switch_ms),
        ms(st.average_switch_ms),
        ms(st.max_switch_ms),
        st.requests,
        st.errors,
        st.unload_timeouts
    ));
    text
}

pub fn json_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Where a server-less `switch diffusion` remembers what it unloaded.
fn restore_file(paths: &Config) -> PathBuf {
    paths.data_dir.join("vram-restore.json")
}

async fn switch(
    paths: &Config,
    args: &VramArgs,
    server: Option<&Server>,
    to: SwitchTarget,
) -> Result<ExitCode, String> {
    let report: SwitchReport = match (server, to) {
        (Some(server), target) => {
            let path = match target {
                SwitchTarget::Llm => "/api/v1/vram/llm",
                SwitchTarget::Diffusion => "/api/v1/vram/diffusion",
            };
            let value: serde_json::Value = server
                .json(reqwest::Method::POST, path, Duration::from_secs(900))
                .await?;
            from_value(value)?
        }
        (None, SwitchTarget::Diffusion) => {
            let orchestrator = local(args, paths)?;
            let report = orchestrator
                .switch_to_diffusion()
                .await
                .map_err(|e| e.to_string())?;
            save_restore(paths, &orchestrator.pending_restore())?;
            report
        }
        (None, SwitchTarget::Llm) => {
            let orchestrator = local(args, paths)?;
            orchestrator.set_pending_restore(load_restore(paths));
            let report = orchestrator
                .switch_to_llm()
                .await
                .map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(restore_file(paths));
            report
        }
    };
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let list = |names: &[String]| {
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    };
    match to {
        SwitchTarget::Diffusion => println!(
            "GPU handed to diffusion in {:.0} ms; unloaded {} (memory release confirmed)",
            report.milliseconds,
            list(&report.unloaded)
        ),
        SwitchTarget::Llm => println!(
            "GPU handed to the LLM in {:.0} ms; {}; restored {}",
            report.milliseconds,
            if server.is_some() {
                "DiffuGen's engine freed its memory"
            } else {
                "no DiffuGen server was running"
            },
            list(&report.restored)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn save_restore(paths: &Config, models: &[(String, KeepAlive)]) -> Result<(), String> {
    let mut known = load_restore(paths);
    for (name, keep) in models {
        if !known.iter().any(|(n, _)| n == name) {
            known.push((name.clone(), keep.clone()));
        }
    }
    let list: Vec<serde_json::Value> = known
        .iter()
        .map(|(name, keep)| serde_json::json!({ "model": name, "keep_alive": keep.to_json() }))
        .collect();
    std::fs::create_dir_all(&paths.data_dir)
        .and_then(|_| {
            std::fs::write(
                restore_file(paths),
                serde_json::to_vec_pretty(&list).unwrap_or_default(),
            )
        })
        .map_err(|e| {
            format!(
                "cannot remember the unloaded models in {}: {e}",
                restore_file(paths).display()
            )
        })
}

fn load_restore(paths: &Config) -> Vec<(String, KeepAlive)> {
    let Ok(bytes) = std::fs::read(restore_file(paths)) else {
        return Vec::new();
    };
    let list: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    list.iter()
        .filter_map(|v| {
            let name = v["model"].as_str()?.to_string();
            let keep = KeepAlive::from_json(&v["keep_alive"])?;
            Some((name, keep))
        })
        .collect()
}

async fn watch(
    paths: &Config,
    args: &VramArgs,
    server: Option<&Server>,
    json: bool,
) -> Result<ExitCode, String> {
    let print = |event: &VramEvent| {
        if json {
            if let Ok(line) = serde_json::to_string(event) {
                println!("{line}");
            }
            return;
        }
        match event {
            VramEvent::Snapshot { snapshot } => {
                let s = snapshot;
                let gpu = if s.gpu.available {
                    s.gpu
                        .gpus
                        .iter()
                        .map(|g| {
                            format!(
                                "GPU {} {}/{} (LLM {}, DiffuGen {})",
                                g.index,
                                gib(g.used_bytes),
                                gib(g.total_bytes),
                                gib(g.llm_bytes),
                                gib(g.diffugen_bytes)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("  ")
                } else {
                    format!(
                        "no NVIDIA GPU; estimated LLM {}, DiffuGen {}",
                        gib(s.gpu.llm_bytes),
                        gib(s.gpu.diffugen_bytes)
                    )
                };
                let llms = s
                    .ollama
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "{} {:<9} {gpu}  LLMs: {}",
                    chrono_time(),
                    s.phase.name(),
                    if llms.is_empty() { "-" } else { &llms }
                );
            }
            VramEvent::Phase { phase, reason } => {
                println!("{} phase -> {} ({reason})", chrono_time(), phase.name())
            }
            VramEvent::Switch {
                to,
                milliseconds,
                unloaded,
                restored,
            } => println!(
                "{} switch to {} in {milliseconds:.0} ms (unloaded: {:?}, restored: {:?})",
                chrono_time(),
                to.name(),
                unloaded,
                restored
            ),
            VramEvent::Warning { message } => println!("{} warning: {message}", chrono_time()),
        }
    };
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    match server {
        Some(server) => {
            let reply = server
                .request(reqwest::Method::GET, "/api/v1/vram/events")
                .send()
                .await
                .map_err(|e| format!("cannot follow the server's VRAM events: {e}"))?;
            let mut body = reply.bytes_stream();
            let mut buffer = String::new();
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    chunk = body.next() => {
                        let Some(Ok(chunk)) = chunk else {
                            return Err("the DiffuGen server closed the event stream".into());
                        };
                        buffer.push_str(&String::from_utf8_lossy(&chunk));
                        for data in sse_data(&mut buffer) {
                            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&data) {
                                if let Ok(event) = from_value::<VramEvent>(value) {
                                    print(&event);
                                }
                            }
                        }
                    }
                }
            }
        }
        None => {
            let orchestrator = local(args, paths)?;
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = ticker.tick() => print(&VramEvent::Snapshot {
                        snapshot: Box::new(orchestrator.snapshot().await),
                    }),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn chrono_time() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}
