//! `diffugen`: the headless door onto DiffuGen's job API. It validates a request, runs it through the supervised
//! engine worker (which is this same executable, started with a hidden subcommand), and reports progress.

mod client;
mod cluster;
mod convert;
mod fit;
mod gallery;
mod generate;
mod mcp;
mod models;
mod paths;
mod serve;
mod settings;
mod upscale;
mod vram;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diffugen_runtime::{Config, Flags};

#[derive(Parser)]
#[command(
    name = "diffugen",
    version,
    about = "Local image generation with stable-diffusion.cpp"
)]
struct Cli {
    #[command(flatten)]
    paths: paths::PathArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a prompt.
    Generate(Box<generate::GenerateArgs>),
    /// Enlarge images with an ESRGAN model from the models folder, or with Lanczos / nearest.
    Upscale(Box<upscale::UpscaleArgs>),
    /// Serve the local HTTP API (OpenAI Images, DiffuGen's job API) until Ctrl+C.
    Serve(serve::ServeArgs),
    /// Render jobs of a cluster: take them from a front's NATS JetStream queue (`serve --cluster`) for the models
    /// in this machine's folders, until Ctrl+C.
    Worker(cluster::WorkerArgs),
    /// The MCP tools over stdin/stdout for agents (in this process, or relayed to a running DiffuGen with
    /// --server).
    Mcp(mcp::McpArgs),
    /// Models in your folders (cards and files, identified from their headers); show, save, catalog, pull.
    Models(models::ModelsArgs),
    /// Browse, search and tend the gallery: list, search, show, favorite, board, delete, restore, reindex.
    Gallery(gallery::GalleryArgs),
    /// Show or change the settings file shared with the desktop app (<data dir>/settings.json).
    Settings(settings::SettingsArgs),
    /// VRAM shared with Ollama: status, switch llm|diffusion, watch.
    Vram(vram::VramArgs),
    /// Internal: run as the engine worker process (spoken to over stdin/stdout by a supervisor).
    #[command(name = "engine-worker", hide = true)]
    EngineWorker,
}

/// The runtime for this process: `config`, this executable as the engine worker, the GPU through NVML. `serve`
/// keeps its queue on disk; a one-shot `generate` keeps it in memory.
fn start_options(
    config: &Config,
    vram: diffugen_vram::VramConfig,
    queue_depth: usize,
    durable_queue: bool,
    lanes: u32,
) -> Result<diffugen_runtime::StartOptions, String> {
    let worker = diffugen_engine::WorkerCommand::current_exe(&[diffugen_engine::WORKER_SUBCOMMAND])
        .map_err(|e| format!("cannot find the diffugen executable: {e}"))?;
    Ok(diffugen_runtime::StartOptions {
        config: config.clone(),
        worker,
        gpu: std::sync::Arc::new(diffugen_vram::Nvml::new()),
        queue_depth,
        vram: Some(vram),
        durable_queue,
        watch_folders: false,
        lanes,
        gallery: true,
        front: false,
    })
}

impl Command {
    /// What the command's own flags set in the configuration (besides the global folder flags).
    fn flags(&self) -> Flags {
        match self {
            Command::Generate(args) => args.flags(),
            Command::Upscale(args) => args.flags(),
            Command::Serve(args) => args.flags(),
            Command::Worker(args) => args.flags(),
            Command::Mcp(args) => args.flags(),
            Command::Vram(args) => args.flags(),
            _ => Flags::new(),
        }
    }
}

/// Whether the command only prints what it reads: then `diffugen models | head` ends it quietly, as `ls | head`
/// does, instead of a broken-pipe panic. Commands that talk to an engine worker over pipes keep Rust's handling (a
/// write to a worker that died is an error they report, not a signal that ends them), and so do the servers.
fn prints_only(command: &Command) -> bool {
    match command {
        Command::Models(args) => args.prints_only(),
        Command::Gallery(_) | Command::Settings(_) => true,
        _ => false,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::EngineWorker) {
        return ExitCode::from(diffugen_engine::worker::run().clamp(0, 255) as u8);
    }
    #[cfg(unix)]
    if prints_only(&cli.command) {
        // SAFETY: restores the default disposition of one signal, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIFFUGEN_LOG").unwrap_or_else(|_| {
                // One-shot commands show the orchestrator's warnings themselves (as job events or messages).
                if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
                    "warn".into()
                } else {
                    "warn,diffugen_vram=error".into()
                }
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // One resolution for every command: its flags, then the environment, then the settings file, then defaults.
    let paths = match Config::resolve(cli.paths.flags().merge(cli.command.flags())) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Generate(args) => generate::run(&paths, *args),
        Command::Upscale(args) => upscale::run(&paths, *args),
        Command::Models(args) => models::run(&paths, &args),
        Command::Serve(args) => serve::run(&paths, &args),
        Command::Worker(args) => cluster::run_worker(&paths, &args),
        Command::Mcp(args) => mcp::run(&paths, &args),
        Command::Vram(args) => vram::run(&paths, &args),
        Command::Gallery(args) => gallery::run(&paths, &args),
        Command::Settings(args) => settings::run(&paths, &args),
        Command::EngineWorker => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}
