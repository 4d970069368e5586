//! `cargo bench -p diffugen --bench memory`: what the memory and speed options buy, measured in one run on the test
//! model (SDXS, f16, 64×64, 2 threads), each figure a median of paired, interleaved runs:
//! - step cache presets (`fast`, `faster`: sd.cpp's UCache on this UNet) against `off`, at 8 and 20 steps;
//! - `models convert` throughput (f16 → q8_0), megabytes of input per second;
//! - the hot path: a job through the service as `diffugen serve` runs it — default settings (VRAM policy `auto`),
//!   the VRAM step, the gallery, no Ollama running — against a direct engine job (target ratio <= 1.02).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffugen_engine::convert::ConvertRequest;
use diffugen_engine::{Destination, Engine, GenerateRequest, JobSpec, Stage};
use diffugen_models::Library;
use support::{engine_job, median, worker};

const PAIRS: usize = 5;

fn spec(models: &std::path::Path, steps: u32, cache: Option<&str>) -> JobSpec {
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "a lighthouse on a cliff".into(),
        width: Some(64),
        height: Some(64),
        steps: Some(steps),
        seed: Some(42),
        threads: Some(2),
        memory: serde_json::from_value(serde_json::json!({ "cache": cache.unwrap_or("off") }))
            .unwrap(),
        ..Default::default()
    };
    diffugen_engine::validate(&request, &Library::new(models)).unwrap()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let model = diffugen_testkit::test_model();
    std::os::unix::fs::symlink(&model, models.join("tiny.gguf")).unwrap();
    let out = Destination::Folder(dir.path().join("out"));
    let engine = Engine::new(worker());

    println!("memory benchmark: test model (SDXS, 441 M params, f16), 64x64, 2 threads, median of {PAIRS}");
    for steps in [8, 20] {
        let off = spec(&models, steps, None);
        engine_job(&engine, &off, &out).await; // load the model once
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for _ in 0..PAIRS {
            for (i, cache) in [None, Some("fast"), Some("faster")].into_iter().enumerate() {
                times[i].push(engine_job(&engine, &spec(&models, steps, cache), &out).await);
            }
        }
        let [off, fast, faster]: [f64; 3] = [0, 1, 2].map(|i| median(times[i].clone()));
        println!(
            "  {steps:>2} steps: off {off:.3} s, fast {fast:.3} s ({:.3}), faster {faster:.3} s ({:.3})",
            fast / off,
            faster / off
        );
    }
    let log = engine.sd_log().join("\n");
    if let Some(line) = log.lines().rev().find(|l| l.contains("UCache skipped")) {
        println!(
            "  sd.cpp: {}",
            line.split(" - ").last().unwrap_or(line).trim()
        );
    }

    // Convert throughput.
    let input_bytes = std::fs::metadata(&model).unwrap().len() as f64;
    let mut seconds = Vec::new();
    for run in 0..3 {
        let output = dir.path().join(format!("copy-{run}.gguf"));
        let request = ConvertRequest {
            input: model.clone(),
            output: output.clone(),
            weight_type: diffugen_models::QuantType::Q8_0,
            expected_bytes: input_bytes * 0.8,
        };
        let t = Instant::now();
        diffugen_engine::convert::run(
            &worker(),
            "bench",
            &request,
            |_| Ok("copy".into()),
            &mut |_| {},
        )
        .await
        .unwrap();
        seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(output);
    }
    let convert = median(seconds);
    println!(
        "  convert f16 -> q8_0: {:.0} MB in {convert:.2} s = {:.0} MB/s (worker start included)",
        input_bytes / 1e6,
        input_bytes / 1e6 / convert
    );

    // The hot path with default settings and no Ollama running.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let service =
        diffugen_server::service::Service::start(diffugen_server::service::ServiceConfig {
            server: diffugen_server::ServerConfig {
                models_dir: models.clone(),
                extra_models_dirs: Vec::new(),
                outputs_dir: dir.path().join("outputs"),
                api_key: None,
                default_model: None,
                cors_origins: Vec::new(),
            },
            data_dir: dir.path().to_path_buf(),
            worker: worker(),
            queue_depth: 8,
            ollama: diffugen_vram::OllamaClient::new(&nobody).unwrap(),
            vram: diffugen_vram::VramConfig::default(),
            gpu: Arc::new(diffugen_vram::NoGpu("no NVIDIA GPU (benchmark)".into())),
            api_addr: None,
            gateway_addr: None,
            job_defaults: Default::default(),
        })
        .await
        .unwrap();
    // Let the background Ollama watch learn that nobody is there, as it would long before a user's first job.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hot = spec(&models, 2, None);
    let through_service = |spec: JobSpec| {
        let jobs = service.jobs.clone();
        async move {
            let t = Instant::now();
            let id = jobs
                .submit(
                    spec,
                    Destination::Folder(std::env::temp_dir().join("diffugen-bench")),
                    "bench",
                )
                .unwrap();
            let mut live = jobs.subscribe(&id).unwrap();
            let mut done = live.history.iter().any(|e| e.stage.is_final());
            while !done {
                let event = live.live.recv().await.unwrap();
                done = event.job_id == id && event.stage.is_final();
                if let Stage::Failed { error } = &event.stage {
                    panic!("{error}");
                }
            }
            t.elapsed().as_secs_f64()
        }
    };
    engine_job(&engine, &hot, &out).await;
    through_service(hot.clone()).await;
    let (mut direct, mut served) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS * 2 {
        direct.push(engine_job(&engine, &hot, &out).await);
        served.push(through_service(hot.clone()).await);
        // The queue drains between jobs, as it does between a user's requests.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (direct, served) = (median(direct), median(served));
    println!("  direct engine job, 64x64, 2 steps:                 {direct:.3} s");
    println!("  through the service (auto policy, gallery, no Ollama): {served:.3} s");
    println!(
        "  ratio service/direct: {:.3} (target <= 1.02)",
        served / direct
    );
    let stats = service.orchestrator.stats().await;
    println!(
        "  VRAM errors counted over {} jobs: {}",
        PAIRS * 2 + 1,
        stats.errors
    );
    engine.stop().await;
    service.stop().await.unwrap();
}
