//! `cargo bench -p diffugen --bench engine`: what the supervised worker process costs, measured in one run on the
//! test model. Prints the end-to-end time through the worker against a direct in-process sd.cpp call of the same
//! generation (target ratio <= 1.03), a warm second job against the cold first one, and the worker's peak RSS.

use std::time::Instant;

use diffugen_engine::{Destination, Engine, GenerateRequest, WorkerCommand};
use diffugen_models::Library;

const WARM_RUNS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let model = diffugen_testkit::test_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(&model, models.join("tiny.gguf")).unwrap();
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "a lighthouse on a cliff at dusk".into(),
        width: Some(128),
        height: Some(128),
        steps: Some(4),
        seed: Some(42),
        threads: Some(2),
        ..Default::default()
    };
    let spec = diffugen_engine::validate(&request, &Library::new(&models)).expect("valid request");
    let sd_request = diffugen_engine::worker::image_request(&spec).unwrap();
    let destination = Destination::Folder(dir.path().join("out"));

    // Direct: sd.cpp in this process, no worker, no files.
    diffugen_sd::set_log_handler(|_, _| {});
    diffugen_sd::set_progress_handler(|_, _, _| {});
    let params = diffugen_sd::ContextParams {
        model_path: Some(model.clone()),
        threads: Some(2),
        ..Default::default()
    };
    let t = Instant::now();
    let mut context = diffugen_sd::Context::new(&params).expect("context");
    context.generate(&sd_request).expect("direct generation");
    let direct_cold = t.elapsed().as_secs_f64();

    // Supervised: the real diffugen binary as the worker, images written as PNG like any job.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::new(WorkerCommand {
        program: env!("CARGO_BIN_EXE_diffugen").into(),
        args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
    });
    let run = |id: &str| {
        let t = Instant::now();
        let result = runtime
            .block_on(diffugen_engine::job::run(
                &engine,
                id,
                &spec,
                &destination,
                Instant::now(),
                &mut |_| {},
            ))
            .expect("supervised generation");
        (t.elapsed().as_secs_f64(), result)
    };
    let (supervised_cold, first) = run("cold");

    // Warm runs interleaved, so drift on a noisy machine hits both sides alike.
    let (mut direct, mut supervised) = (Vec::new(), Vec::new());
    for i in 0..WARM_RUNS {
        let t = Instant::now();
        context.generate(&sd_request).expect("direct generation");
        direct.push(t.elapsed().as_secs_f64());
        supervised.push(run(&format!("warm-{i}")).0);
    }
    let (direct_warm, supervised_warm) = (median(direct), median(supervised));
    let rss = peak_rss_mib(first.worker_pid);
    runtime.block_on(engine.stop());

    println!("engine benchmark: test model (SDXS, 441 M params, f16), 128x128, 4 steps, 2 threads, median of {WARM_RUNS}");
    println!("  direct in-process, cold (load + generate):               {direct_cold:>7.3} s");
    println!("  supervised worker, cold (spawn + load + generate + PNG): {supervised_cold:>7.3} s");
    println!("  direct in-process, warm:                                 {direct_warm:>7.3} s");
    println!("  supervised worker, warm (generate + PNG):                {supervised_warm:>7.3} s");
    println!(
        "  ratio supervised/direct, warm: {:.3} (target <= 1.03)",
        supervised_warm / direct_warm
    );
    println!(
        "  ratio supervised/direct, cold: {:.3}",
        supervised_cold / direct_cold
    );
    println!(
        "  ratio warm/cold job through the worker: {:.3}",
        supervised_warm / supervised_cold
    );
    match rss {
        Some(mib) => println!("  worker peak RSS: {mib:.0} MiB"),
        None => println!("  worker peak RSS: unavailable (no /proc)"),
    }
}
