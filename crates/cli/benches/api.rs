//! `cargo bench -p diffugen --bench api`: what the HTTP layer costs, measured in one run on the test model.
//! - the OpenAI route's round trip against a direct engine job with the same parameters (target ratio <= 1.03);
//! - the delay from the supervisor turning a sampling step into an event to an SSE client reading it (p50/p99,
//!   target p99 <= 20 ms; the worker-to-supervisor pipe before it is not included);
//! - 50 concurrent clients on a queue of 64: every request answered, none lost, every image written.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffugen_engine::{Destination, Engine, GenerateRequest, WorkerCommand};
use diffugen_models::Library;
use diffugen_runtime::{Config, Flags, Runtime, StartOptions};
use diffugen_server::{Doors, DoorsConfig};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::{engine_job, median};

const RUNS: usize = 5;

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(diffugen_testkit::test_model(), models.join("tiny.gguf")).unwrap();
    let worker = || WorkerCommand {
        program: env!("CARGO_BIN_EXE_diffugen").into(),
        args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
    };

    // Direct: the engine with no HTTP in front.
    let direct_engine = Engine::new(worker());
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "a lighthouse".into(),
        width: Some(128),
        height: Some(128),
        steps: Some(4),
        seed: Some(42),
        threads: Some(2),
        ..Default::default()
    };
    let spec = diffugen_engine::validate(&request, &Library::new(&models)).unwrap();
    let out = Destination::Folder(dir.path().join("direct"));
    engine_job(&direct_engine, &spec, &out).await; // warm the model

    // Through HTTP: a real server on loopback, as `diffugen serve` runs it with default settings: the VRAM step
    // (policy auto) before each run of jobs, the gallery recording every image — and no Ollama running, as on many
    // users' machines.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let no_ollama = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let flags = Flags::new()
        .set("data_dir", "--data-dir", dir.path().display().to_string())
        .set("ollama_url", "--ollama-url", no_ollama);
    let runtime = Runtime::start(StartOptions {
        config: Config::isolated(flags).unwrap(),
        worker: worker(),
        gpu: Arc::new(diffugen_vram::NoGpu("no NVIDIA GPU (benchmark)".into())),
        queue_depth: 64,
        vram: Some(diffugen_vram::VramConfig::default()),
        durable_queue: true,
        watch_folders: false,
        lanes: 1,
        gallery: true,
        front: false,
    })
    .await
    .unwrap();
    let doors = Doors::open(
        &runtime,
        DoorsConfig {
            api_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..DoorsConfig::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", doors.api.as_ref().unwrap().addr);
    // The background watch learns that Ollama is not running long before a user's first request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "tiny", "prompt": "a lighthouse", "size": "128x128", "steps": 4, "seed": 42, "threads": 2});
    let api_job_of = |body: &Value| {
        let (client, url, body) = (
            client.clone(),
            format!("{base}/v1/images/generations"),
            body.clone(),
        );
        async move {
            let t = Instant::now();
            let response: Value = client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(response["data"][0]["b64_json"].is_string(), "{response}");
            t.elapsed().as_secs_f64()
        }
    };
    let api_job = || api_job_of(&body);
    api_job().await; // warm the model

    let (mut direct, mut api) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        direct.push(engine_job(&direct_engine, &spec, &out).await);
        api.push(api_job().await);
    }
    let (direct, api) = (median(direct), median(api));

    // The hot path at 64x64, 2 steps, where the fixed costs per request weigh most.
    let small = json!({"model": "tiny", "prompt": "a lighthouse", "size": "64x64", "steps": 2, "seed": 42, "threads": 2});
    let small_spec = diffugen_engine::validate(
        &GenerateRequest {
            width: Some(64),
            height: Some(64),
            steps: Some(2),
            ..request.clone()
        },
        &Library::new(&models),
    )
    .unwrap();
    let (mut direct_small, mut api_small) = (Vec::new(), Vec::new());
    for _ in 0..RUNS * 2 {
        direct_small.push(engine_job(&direct_engine, &small_spec, &out).await);
        api_small.push(api_job_of(&small).await);
    }
    direct_engine.stop().await;
    let (direct_small, api_small) = (median(direct_small), median(api_small));
    let vram_errors = runtime.orchestrator().unwrap().stats().await.errors;

    // Event latency: submit a long job and read its SSE stream.
    let submitted = Instant::now();
    let job: Value = client
        .post(format!("{base}/api/v1/jobs"))
        .json(&json!({"model": "tiny", "prompt": "a storm", "width": 64, "height": 64, "steps": 40, "threads": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let mut stream = client
        .get(format!("{base}/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut latencies = Vec::new();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        let received = submitted.elapsed().as_secs_f64();
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let value: Value = serde_json::from_str(data).unwrap();
                if value["phase"] == "sampling" && value["step"].as_u64() > Some(0) {
                    // elapsed_seconds counts from the job's acceptance, a hair after `submitted`.
                    latencies
                        .push((received - value["elapsed_seconds"].as_f64().unwrap()) * 1000.0);
                }
            }
        }
    }

    // 50 concurrent clients.
    let started = Instant::now();
    let small =
        json!({"model": "tiny", "prompt": "a dot", "size": "64x64", "steps": 1, "threads": 2});
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, body) = (
                client.clone(),
                format!("{base}/v1/images/generations"),
                small.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&body)
                    .timeout(Duration::from_secs(600))
                    .send()
                    .await
            })
        })
        .collect();
    let mut answered_ok = 0;
    for task in tasks {
        if let Ok(Ok(response)) = task.await {
            if response.status().is_success() {
                answered_ok += 1;
            }
        }
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    let written = std::fs::read_dir(dir.path().join("outputs"))
        .unwrap()
        .count();
    doors.close().await.unwrap();
    runtime.shutdown().await;

    println!("api benchmark: test model (SDXS), 128x128, 4 steps, 2 threads, median of {RUNS}");
    println!("  direct engine job:               {direct:>7.3} s");
    println!("  POST /v1/images/generations:     {api:>7.3} s");
    println!("  ratio api/direct: {:.3} (target <= 1.03)", api / direct);
    println!("  64x64, 2 steps, median of {}: direct {direct_small:.3} s, POST /v1/images/generations {api_small:.3} s", RUNS * 2);
    println!(
        "  ratio api/direct at 64x64 (VRAM step and gallery included, no Ollama running): {:.3} (target <= 1.02); VRAM errors counted: {vram_errors}",
        api_small / direct_small
    );
    println!(
        "  step event -> SSE client: p50 {:.2} ms, p99 {:.2} ms over {} steps (target p99 <= 20 ms)",
        percentile(latencies.clone(), 0.5),
        percentile(latencies.clone(), 0.99),
        latencies.len()
    );
    println!("  50 concurrent clients, queue of 64: {answered_ok}/50 answered OK in {flood_seconds:.1} s");
    println!(
        "  images written by the server: {written} (expected {}: warm-up, paired runs at both sizes, events, flood)",
        1 + RUNS + RUNS * 2 + 1 + 50
    );
}
