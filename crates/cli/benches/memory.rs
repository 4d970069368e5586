//! `cargo bench -p diffugen --bench memory`: what the memory and speed options buy, measured in one run on the test
//! model (SDXS, f16, 64×64, 2 threads), each figure a median of paired, interleaved runs:
//! - step cache presets (`fast`, `faster`: sd.cpp's UCache on this UNet) against `off`, at 8 and 20 steps;
//! - `models convert` throughput (f16 → q8_0), megabytes of input per second.

mod support;

use std::time::Instant;

use diffugen_engine::convert::ConvertRequest;
use diffugen_engine::{Destination, Engine, GenerateRequest, JobSpec};
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

    engine.stop().await;
}
