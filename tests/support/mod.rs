//! Shared helpers for the end-to-end specifications: a data folder holding the real test model, and ways to run
//! the real `diffugen` binary and read what it reports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diffugen_engine::{JobEvent, Stage};

/// A throwaway data folder whose models folder holds the test model as `tiny.gguf`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
        std::os::unix::fs::symlink(
            diffugen_testkit::test_model(),
            dir.path().join("models/tiny.gguf"),
        )
        .unwrap();
        Workspace { dir }
    }

    /// The test upscalers (tiny real ESRGAN models, ×2 and ×4) in the models folder's `ESRGAN/` subfolder, as
    /// `tiny-esrgan-x2` and `tiny-esrgan-x4`.
    pub fn with_upscalers(self) -> Workspace {
        let dir = self.dir.path().join("models/ESRGAN");
        std::fs::create_dir_all(&dir).unwrap();
        for scale in [2, 4] {
            std::os::unix::fs::symlink(
                diffugen_testkit::test_upscaler(scale),
                dir.join(format!("tiny-esrgan-x{scale}.gguf")),
            )
            .unwrap();
        }
        self
    }

    /// A real SD 1.x checkpoint (`sd15-test`) and a ControlNet for it (`controlnet/test-control`) beside the test
    /// model: the pair sd.cpp's ControlNet needs (about 2.9 GB, built once per machine).
    pub fn with_sd15_controlnet(self) -> Workspace {
        std::os::unix::fs::symlink(
            diffugen_testkit::test_sd15(),
            self.dir.path().join("models/sd15-test.gguf"),
        )
        .unwrap();
        let dir = self.dir.path().join("models/controlnet");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(
            diffugen_testkit::test_controlnet(),
            dir.join("test-control.gguf"),
        )
        .unwrap();
        self
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn models_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `diffugen --data-dir <ws> ARGS...`, leaving any real Ollama on this machine alone (VRAM policy `never`
    /// unless ARGS say otherwise).
    pub fn diffugen(&self, args: &[&str]) -> Output {
        Command::new(diffugen_bin())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env_remove("DIFFUGEN_MODELS_DIR")
            .env_remove("OLLAMA_HOST")
            .env("DIFFUGEN_VRAM_POLICY", "never")
            .output()
            .expect("diffugen runs")
    }

    /// A small real generation through the CLI with `--json` (64x64, 2 steps on the test model unless `extra`
    /// says otherwise); returns the events.
    pub fn generate_json(&self, extra: &[&str]) -> (Vec<JobEvent>, Output) {
        let mut args = vec!["generate", "--json"];
        for (flag, value) in [
            ("--model", "tiny"),
            ("--width", "64"),
            ("--height", "64"),
            ("--steps", "2"),
            ("--threads", "2"),
        ] {
            if !extra.contains(&flag) {
                args.extend_from_slice(&[flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let output = self.diffugen(&args);
        let events = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JobEvent ({e}): {l}"))
            })
            .collect();
        (events, output)
    }
}

/// The `diffugen` binary: Cargo's own path for the CLI package's specifications, else the one built beside this
/// test executable (the app's specifications run it as their engine worker; `scripts/test.sh` builds every binary
/// with the tests).
pub fn diffugen_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_diffugen") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("diffugen"))
        .expect("the target folder");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p diffugen)",
        bin.display()
    );
    bin
}

/// Tests that compare timings take this first, so they do not measure each other (each sd.cpp job uses every core).
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The engine as the CLI would start it: the real binary as its worker.
pub fn engine() -> diffugen_engine::Engine {
    diffugen_engine::Engine::new(diffugen_engine::WorkerCommand {
        program: diffugen_bin(),
        args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
    })
}

/// The configuration of a workspace as every door resolves it, whatever this machine's environment says: its data
/// folder, models in `models/`, images in `outputs/`.
pub fn config(ws: &Workspace) -> diffugen_runtime::Config {
    diffugen_runtime::Config::isolated(diffugen_runtime::Flags::new().set(
        "data_dir",
        "--data-dir",
        ws.data_dir().display().to_string(),
    ))
    .expect("the workspace's configuration")
}

/// The runtime over `jobs` with the workspace's folders.
pub fn runtime(ws: &Workspace, jobs: diffugen_jobs::JobManager) -> diffugen_runtime::Runtime {
    diffugen_runtime::Runtime::over(jobs, config(ws))
}

/// The HTTP doors' configuration: no key, no CORS, downloads from public hosts only.
pub fn server_config(_ws: &Workspace) -> diffugen_server::ServerConfig {
    diffugen_server::ServerConfig::default()
}

/// The HTTP API over `jobs` and the workspace's folders on a free loopback port with `config`; returns the server
/// and its base URL.
pub async fn serve_api_with(
    ws: &Workspace,
    config: &diffugen_server::ServerConfig,
    jobs: diffugen_jobs::JobManager,
) -> (diffugen_server::ServerHandle, String) {
    let server = diffugen_server::serve(
        "127.0.0.1:0".parse().unwrap(),
        diffugen_server::AppState::new(runtime(ws, jobs), config),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    (server, base)
}

/// The HTTP API over `jobs` on a free loopback port, with the workspace's folders and no key; returns the server
/// and its base URL.
pub async fn serve_api(
    ws: &Workspace,
    jobs: diffugen_jobs::JobManager,
) -> (diffugen_server::ServerHandle, String) {
    serve_api_with(ws, &server_config(ws), jobs).await
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The written files of a finished job's events.
pub fn outputs(events: &[JobEvent]) -> Vec<diffugen_engine::Output> {
    match events.last().map(|e| &e.stage) {
        Some(Stage::Done { outputs }) => outputs.clone(),
        other => panic!("the job did not finish: last stage {other:?}"),
    }
}

pub fn pixels(path: &str) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_rgb8()
}

/// A GET's body as JSON.
pub async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}
