//! `cargo bench -p diffugen --bench vram`: what VRAM orchestration adds to a job beyond Ollama's own unload and
//! load time, on the fake Ollama (release after 200 ms, load in 100 ms), measured in one run:
//! - Ollama alone: unload request, poll `/api/ps` every 5 ms until the model is gone, load it again;
//! - orchestrated: `acquire_diffusion` (policy always: list, unload, confirm, free-VRAM check) then `release`
//!   (restore with the remaining keep-alive), the engine idle.
//!
//! Target: the difference (orchestration overhead per job) <= 50 ms.

#[path = "../../../tests/support/fake_ollama.rs"]
mod fake_ollama;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffugen_engine::{Engine, WorkerCommand};
use diffugen_vram::{KeepAlive, OllamaClient, Orchestrator, Policy, VramConfig};
use fake_ollama::FakeOllama;

const RUNS: usize = 15;
const MODEL: &str = "qwen2.5:7b";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let fake = FakeOllama::start(&[(MODEL, 4.7)]).await;
    fake.set_release_delay(Duration::from_millis(200));
    fake.preload(MODEL, -1);
    let client = OllamaClient::new(&fake.url()).unwrap();

    let mut alone = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        client.request_unload(MODEL).await.unwrap();
        while client
            .loaded()
            .await
            .unwrap()
            .iter()
            .any(|m| m.name == MODEL)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.load(MODEL, &KeepAlive::FOREVER).await.unwrap();
        alone.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let engine = Arc::new(Engine::new(WorkerCommand {
        program: env!("CARGO_BIN_EXE_diffugen").into(),
        args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
    }));
    let orchestrator = Orchestrator::new(
        VramConfig {
            policy: Policy::Always,
            ..VramConfig::default()
        },
        client.clone(),
        Arc::new(fake.clone()),
        engine,
    );
    let mut orchestrated = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let lease = orchestrator
            .acquire_diffusion(1e9, &mut |_| {})
            .await
            .unwrap();
        lease.release().await;
        orchestrated.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(fake.loaded(), [MODEL], "restored every time");
    }

    let (alone, orchestrated) = (median(alone), median(orchestrated));
    let overhead = orchestrated - alone;
    println!("Ollama alone (unload, wait for release, load): {alone:.1} ms (median of {RUNS})");
    println!("orchestrated job hand-over and restore:        {orchestrated:.1} ms");
    println!(
        "orchestration overhead per job: {overhead:.1} ms (target <= 50 ms): {}",
        if overhead <= 50.0 { "OK" } else { "OVER" }
    );
    let stats = orchestrator.stats().await;
    println!(
        "switches {}, average switch {:.1} ms, max {:.1} ms, errors {}",
        stats.switches,
        stats.average_switch_ms.unwrap_or(0.0),
        stats.max_switch_ms.unwrap_or(0.0),
        stats.errors
    );
}
