//! What the benchmarks share: the median they quote, the worker they start, one timed engine job.

#![allow(dead_code)] // each benchmark uses its own part

use std::time::Instant;

use diffugen_engine::{Destination, Engine, JobSpec, WorkerCommand};

/// The median of a set of measurements (the figure to quote on a noisy machine).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The engine worker: this package's `diffugen` with the hidden worker subcommand.
pub fn worker() -> WorkerCommand {
    WorkerCommand {
        program: env!("CARGO_BIN_EXE_diffugen").into(),
        args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
    }
}

/// One job straight on the engine (render + PNG), in seconds.
pub async fn engine_job(engine: &Engine, spec: &JobSpec, out: &Destination) -> f64 {
    let t = Instant::now();
    diffugen_engine::job::run(engine, "bench", spec, out, Instant::now(), &mut |_| {})
        .await
        .unwrap();
    t.elapsed().as_secs_f64()
}
