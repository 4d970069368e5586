//! The cluster doors: `diffugen worker` (a render node) and what `serve --cluster` adds to a front.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use diffugen_cluster::Cluster;
use diffugen_runtime::{Config, Flags, Runtime};

/// How to reach the cluster (shared by `serve --cluster` and `worker`).
#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// A NATS credentials file (.creds) for a server that requires one; a user and password or a token go in the
    /// URL (nats://user:password@host:4222), TLS with a tls:// URL
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// Seconds a worker may go without a sign of life on a job before the job goes to another worker (the
    /// stream's ack wait; a worker renewing it every third of it while it renders)
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub ack_wait: u64,
}

impl ClusterArgs {
    pub fn ack_wait(&self) -> Result<Duration, String> {
        if !(1..=3600).contains(&self.ack_wait) {
            return Err(format!(
                "--ack-wait must be from 1 to 3600 seconds, got {}",
                self.ack_wait
            ));
        }
        Ok(Duration::from_secs(self.ack_wait))
    }

    pub async fn connect(&self, url: &str, name: &str) -> Result<Cluster, String> {
        Cluster::connect(url, name, self.nats_creds.as_deref())
            .await
            .map_err(|e| e.to_string())
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The cluster's NATS server (nats://host:4222), where a front (`diffugen serve --cluster`) sends its jobs
    #[arg(long, value_name = "URL")]
    cluster: String,
    /// This worker's name in the cluster, unique among its workers (letters, digits, - and _); the jobs it renders
    /// name it
    #[arg(long)]
    name: String,
    /// Render lanes on this machine (1 to 16; a GPU build runs one per GPU, as for serve)
    #[arg(long, default_value_t = 1, value_name = "N")]
    lanes: u32,
    #[command(flatten)]
    connection: ClusterArgs,
    #[command(flatten)]
    ollama: crate::vram::OllamaArgs,
    #[command(flatten)]
    vram: crate::vram::PolicyArgs,
}

impl WorkerArgs {
    pub fn flags(&self) -> Flags {
        self.ollama.flags().merge(self.vram.flags())
    }
}

/// A worker's name, checked: it is a key in the cluster's bucket and appears in every job it renders.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name must be 1 to 64 letters, digits, - or _, got '{name}'"
        ))
    }
}

pub fn run_worker(config: &Config, args: &WorkerArgs) -> Result<ExitCode, String> {
    check_name(&args.name)?;
    args.connection.ack_wait()?;
    crate::serve::check_lanes(args.lanes)?;
    let vram = args.vram.config(config)?;
    let mut options = crate::start_options(config, vram, 64, false, args.lanes)?;
    options.gallery = false;
    options.watch_folders = true;
    let tokio = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    tokio.block_on(async {
        let cluster = args.connection.connect(&args.cluster, &args.name).await?;
        let shown = cluster.url().to_string();
        let runtime = Runtime::start(options).await.map_err(|e| e.to_string())?;
        let jobs = runtime.jobs().clone();
        let ack_wait = args.connection.ack_wait()?;
        if let Err(e) = runtime
            .work_for_cluster(cluster, jobs, &args.name, ack_wait)
            .await
        {
            runtime.shutdown().await;
            return Err(e.to_string());
        }
        let models = runtime.library().ids();
        eprintln!(
            "worker '{}' taking jobs from {} ({} lane{}; models: {})",
            args.name,
            shown,
            args.lanes,
            if args.lanes == 1 { "" } else { "s" },
            if models.is_empty() {
                "none yet".to_string()
            } else {
                models.join(", ")
            }
        );
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        eprintln!("leaving the cluster");
        runtime.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
