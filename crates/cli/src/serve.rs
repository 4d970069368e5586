//! `diffugen serve`: the runtime with its network doors (the HTTP API and the Ollama gateway), headless.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Args;
use diffugen_runtime::{Config, Flags, Runtime, StartError};
use diffugen_server::{Doors, DoorsConfig, ServerConfig};

use crate::vram::json_name;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: the api_host setting, else 127.0.0.1]. Anything but loopback exposes the
    /// API to your network: set --api-key then.
    #[arg(long)]
    host: Option<IpAddr>,
    /// [default: the api_port setting, else 5199]
    #[arg(long)]
    port: Option<u16>,
    /// Require this key (Bearer, X-API-Key or Basic password) on every route but /health
    /// [default: $DIFFUGEN_API_KEY, else the api_key setting]
    #[arg(long)]
    api_key: Option<String>,
    /// The model for requests that name none or an OpenAI id (dall-e-2, dall-e-3, gpt-image-1)
    /// [default: the first model found]
    #[arg(long, value_name = "ID")]
    default_model: Option<String>,
    /// Allow browser pages from this origin to call the API (repeatable; `*` for any). CORS is off without it.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Accept requests that name this server by this host name too (repeatable). Names of this machine —
    /// localhost, its IP addresses, its host name, host.docker.internal — always work; any other name is refused,
    /// so a web page cannot reach the API through DNS rebinding.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// Let POST /api/v1/models/downloads fetch from this machine and the local network (a model mirror on your
    /// NAS). Without it a client of the API can make DiffuGen download from public addresses only.
    #[arg(long)]
    allow_private_downloads: bool,
    /// Jobs allowed to wait; beyond this the API answers 429 with Retry-After.
    #[arg(long, default_value_t = 32)]
    queue_depth: usize,
    /// Render lanes: engine workers that render side by side, each taking the next job (a job for a model one of
    /// them holds goes to that one). A GPU build runs one per GPU (lane i on card i, as nvidia-smi numbers them),
    /// taking turns with Ollama only on the card its LLMs live on; a CPU-only build runs CPU workers (1 to 16)
    #[arg(long, default_value_t = 1, value_name = "N")]
    lanes: u32,
    #[command(flatten)]
    ollama: crate::vram::OllamaArgs,
    #[command(flatten)]
    vram: crate::vram::PolicyArgs,
    /// Port of the Ollama gateway: point Open WebUI's Ollama URL here so chat and images take turns on the GPU
    /// [default: the gateway_port setting, else 11435]
    #[arg(long, value_name = "PORT")]
    ollama_gateway_port: Option<u16>,
    /// Address the Ollama gateway listens on [default: 127.0.0.1, whatever --host says; like Ollama, it is opened
    /// to the network only on purpose — and then needs --api-key like the API]
    #[arg(long, value_name = "IP")]
    ollama_gateway_host: Option<IpAddr>,
    /// Do not start the Ollama gateway
    #[arg(long)]
    no_ollama_gateway: bool,
    /// Seconds a chat request through the gateway waits for a render to finish before it is refused
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    llm_wait_timeout: u64,
    /// Be the front of a cluster on this NATS server (nats://host:4222, JetStream on): jobs go to a work queue there
    /// and render on `diffugen worker`s (and here, unless --no-engine); their images come back to this gallery
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// With --cluster: render nothing here, only on the workers
    #[arg(long)]
    no_engine: bool,
    /// With --cluster: the name this machine's own render worker has in the cluster
    #[arg(long, default_value = "local", value_name = "NAME")]
    name: String,
    #[command(flatten)]
    connection: crate::cluster::ClusterArgs,
}

impl ServeArgs {
    /// What these flags set in the configuration.
    pub fn flags(&self) -> Flags {
        let flags = Flags::new()
            .set_some("api_host", "--host", self.host)
            .set_some("api_port", "--port", self.port)
            .set_some("api_key", "--api-key", self.api_key.as_ref())
            .set_some(
                "gateway_port",
                "--ollama-gateway-port",
                self.ollama_gateway_port,
            );
        let flags = if self.no_ollama_gateway {
            flags.set("gateway_enabled", "--no-ollama-gateway", "false")
        } else {
            flags
        };
        flags.merge(self.ollama.flags()).merge(self.vram.flags())
    }
}

/// The most render lanes `serve` runs.
pub const MAX_LANES: u32 = 16;

/// `--lanes` from 1 to [`MAX_LANES`] (a GPU build's lanes are then checked against its cards when it starts:
/// `diffugen_runtime::lane_devices`).
pub(crate) fn check_lanes(lanes: u32) -> Result<(), String> {
    if !(1..=MAX_LANES).contains(&lanes) {
        return Err(format!(
            "--lanes must be from 1 to {MAX_LANES}, got {lanes}"
        ));
    }
    Ok(())
}

pub fn run(config: &Config, args: &ServeArgs) -> Result<ExitCode, String> {
    let api_addr = config.api_addr().map_err(|e| e.to_string())?;
    let api_key = config.api_key();
    let gateway_host = args
        .ollama_gateway_host
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let gateway_open_without_key = !gateway_host.is_loopback() && api_key.is_none();
    if !api_addr.ip().is_loopback() && api_key.is_none() {
        eprintln!(
            "WARNING: listening on {} without an API key: anyone on your network can generate images and read \
             your outputs. Set --api-key (or DIFFUGEN_API_KEY).",
            api_addr.ip()
        );
    }
    let doors = DoorsConfig {
        server: ServerConfig {
            api_key,
            default_model: args.default_model.clone(),
            cors_origins: args.cors_origins.clone(),
            allowed_hosts: args.allowed_hosts.clone(),
            private_downloads: args.allow_private_downloads,
        },
        api_addr: Some(api_addr),
        gateway_addr: config
            .gateway_enabled()
            .then(|| config.gateway_addr(gateway_host)),
    };
    let mut vram = args.vram.config(config)?;
    vram.llm_wait_timeout = std::time::Duration::from_secs(args.llm_wait_timeout);
    check_lanes(args.lanes)?;
    if args.no_engine && args.cluster.is_none() {
        return Err("--no-engine needs --cluster: without a cluster, nothing would render".into());
    }
    if args.cluster.is_some() {
        crate::cluster::check_name(&args.name)?;
    }
    let mut options = crate::start_options(config, vram, args.queue_depth, true, args.lanes)?;
    options.front = args.cluster.is_some();
    let tokio = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async {
        let runtime = Runtime::start(options).await.map_err(|e| e.to_string())?;
        if let Some(url) = &args.cluster {
            if let Err(e) = front(&runtime, url, args).await {
                runtime.shutdown().await;
                return Err(e);
            }
        }
        let doors = match Doors::open(&runtime, doors).await {
            Ok(doors) => doors,
            Err(e) => {
                runtime.shutdown().await;
                return Err(match e {
                    StartError::Gateway { .. } => format!(
                        "{e} (choose another --ollama-gateway-port, or --no-ollama-gateway)"
                    ),
                    e => e.to_string(),
                });
            }
        };
        if let Some(api) = &doors.api {
            eprintln!(
                "DiffuGen API on http://{} (OpenAI base URL: http://{}/v1)",
                api.addr, api.addr
            );
        }
        let orchestrator = runtime
            .orchestrator()
            .ok_or("the runtime has no VRAM orchestrator")?;
        let ollama_url = orchestrator.ollama().url().to_string();
        if let Some(gateway) = &doors.gateway {
            eprintln!(
                "Ollama gateway on http://{} -> {ollama_url} (point Open WebUI's Ollama URL here)",
                gateway.addr
            );
            if gateway_open_without_key {
                eprintln!(
                    "WARNING: the Ollama gateway on {} is open to the network without a key (set --api-key).",
                    gateway.addr
                );
            }
        }
        eprintln!(
            "VRAM policy {} (Ollama at {ollama_url})",
            json_name(&orchestrator.config().policy)
        );
        eprintln!(
            "models: {}   outputs: {}",
            config.models_dir.display(),
            config.outputs_dir().display()
        );
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        eprintln!("shutting down");
        let closed = doors.close().await.map_err(|e| e.to_string());
        runtime.shutdown().await;
        closed?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Makes this server a cluster front on `url`: its queue's jobs go to the cluster; unless `--no-engine`, this
/// machine renders too, as a worker named `--name`.
async fn front(runtime: &Runtime, url: &str, args: &ServeArgs) -> Result<(), String> {
    let cluster = args.connection.connect(url, "front").await?;
    let own_worker = (!args.no_engine).then_some(args.name.as_str());
    let front = runtime
        .join_cluster(cluster, own_worker, args.connection.ack_wait()?)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "cluster front on {}{}",
        front.url(),
        if args.no_engine {
            " (rendering on the workers only)".to_string()
        } else {
            format!(" (this machine renders too, as worker '{}')", args.name)
        }
    );
    Ok(())
}
