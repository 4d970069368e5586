//! `diffugen serve`: the local HTTP API, headless.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use diffugen_engine::WorkerCommand;
use diffugen_server::service::{Service, ServiceConfig};
use diffugen_server::ServerConfig;

use crate::paths::Paths;
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
    /// Require this key (Bearer, X-API-Key or Basic password) on every route but /health.
    #[arg(long, env = "DIFFUGEN_API_KEY", hide_env_values = true)]
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
}

pub fn run(paths: &Paths, args: &ServeArgs) -> Result<ExitCode, String> {
    let settings = &paths.settings;
    let host: IpAddr = match (args.host, &settings.api_host) {
        (Some(host), _) => host,
        (None, Some(text)) => text
            .parse()
            .map_err(|_| format!("invalid setting api_host: '{text}' is not an IP address"))?,
        (None, None) => IpAddr::from([127, 0, 0, 1]),
    };
    let port = args.port.or(settings.api_port).unwrap_or(5199);
    let api_key = args
        .api_key
        .clone()
        .or_else(|| settings.api_key.clone())
        .filter(|k| !k.is_empty());
    let gateway_port = args
        .ollama_gateway_port
        .or(settings.gateway_port)
        .unwrap_or(diffugen_vram::DEFAULT_GATEWAY_PORT);
    let gateway_enabled = !args.no_ollama_gateway && settings.gateway_enabled != Some(false);
    let gateway_host = args
        .ollama_gateway_host
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let gateway_open_without_key = !gateway_host.is_loopback() && api_key.is_none();
    if !host.is_loopback() && api_key.is_none() {
        eprintln!(
            "WARNING: listening on {host} without an API key: anyone on your network can generate images and read \
             your outputs. Set --api-key (or DIFFUGEN_API_KEY)."
        );
    }
    let config = ServerConfig {
        models_dir: paths.models_dir.clone(),
        extra_models_dirs: paths.extra_models_dirs.clone(),
        outputs_dir: paths.outputs_dir(),
        api_key,
        default_model: args.default_model.clone(),
        cors_origins: args.cors_origins.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        private_downloads: args.allow_private_downloads,
    };
    let mut vram_config = args.vram.config(settings)?;
    vram_config.llm_wait_timeout = std::time::Duration::from_secs(args.llm_wait_timeout);
    let worker = WorkerCommand::current_exe(&[diffugen_engine::WORKER_SUBCOMMAND])
        .map_err(|e| format!("cannot find the diffugen executable: {e}"))?;
    let service_config = ServiceConfig {
        data_dir: paths.data_dir.clone(),
        worker,
        queue_depth: args.queue_depth,
        ollama: args.ollama.client(settings)?,
        vram: vram_config,
        gpu: Arc::new(diffugen_vram::Nvml::new()),
        api_addr: Some(SocketAddr::new(host, port)),
        gateway_addr: gateway_enabled.then(|| SocketAddr::new(gateway_host, gateway_port)),
        job_defaults: diffugen_jobs::JobDefaults::from_settings(settings),
        server: config,
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let service = Service::start(service_config).await.map_err(|e| {
            if e.contains("Ollama gateway") {
                format!("{e} (choose another --ollama-gateway-port, or --no-ollama-gateway)")
            } else {
                e
            }
        })?;
        if let Some(api) = &service.api {
            eprintln!(
                "DiffuGen API on http://{} (OpenAI base URL: http://{}/v1)",
                api.addr, api.addr
            );
        }
        let ollama_url = service.orchestrator.ollama().url().to_string();
        if let Some(gateway) = &service.gateway {
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
            json_name(&service.orchestrator.config().policy)
        );
        eprintln!(
            "models: {}   outputs: {}",
            paths.models_dir.display(),
            paths.outputs_dir().display()
        );
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        eprintln!("shutting down");
        service.stop().await?;
        Ok(ExitCode::SUCCESS)
    })
}
