//! VRAM orchestration against a fake Ollama that keeps the real one's semantics (see support/fake_ollama.rs),
//! with real sd.cpp jobs on the test model: an LLM is unloaded, its release is confirmed before sampling starts,
//! the image renders, and the LLM comes back; chat through the gateway never overlaps a render.

#[path = "support/fake_ollama.rs"]
mod fake_ollama;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffugen_engine::{Destination, GenerateRequest, JobEvent, Stage};
use diffugen_jobs::{JobManager, Outcome};
use diffugen_models::Library;
use diffugen_vram::{
    KeepAlive, NoGpu, OllamaClient, OllamaError, Orchestrator, Phase, Policy, VramConfig,
};
use fake_ollama::{FakeOllama, Happening, GIB};
use serde_json::{json, Value};
use support::{engine, Workspace, ONE_AT_A_TIME};

const QWEN: &str = "qwen2.5:7b";

struct Rig {
    ws: Workspace,
    fake: FakeOllama,
    orchestrator: Orchestrator,
    jobs: JobManager,
}

fn config(policy: Policy) -> VramConfig {
    VramConfig {
        policy,
        unload_timeout: Duration::from_secs(10),
        ..VramConfig::default()
    }
}

impl Rig {
    /// A fake Ollama with a 4.7 GB Qwen resident (kept forever), a simulated 8 GB GPU, and a job queue whose
    /// orchestrator uses `config`.
    async fn start(config: VramConfig) -> Rig {
        let fake = FakeOllama::start(&[(QWEN, 4.7), ("llama3.2:1b", 1.3)]).await;
        fake.preload(QWEN, -1);
        Rig::with(fake, config)
    }

    fn with(fake: FakeOllama, config: VramConfig) -> Rig {
        let ws = Workspace::new();
        let engine = Arc::new(engine());
        let orchestrator = Orchestrator::new(
            config,
            OllamaClient::new(&fake.url()).unwrap(),
            Arc::new(fake.clone()),
            engine.clone(),
        );
        let jobs = JobManager::with_orchestrator(engine, 8, Some(orchestrator.clone()));
        Rig {
            ws,
            fake,
            orchestrator,
            jobs,
        }
    }

    fn submit(&self, seed: i64) -> String {
        let request = GenerateRequest {
            model: "tiny".into(),
            prompt: "a lighthouse at dusk".into(),
            width: Some(64),
            height: Some(64),
            steps: Some(2),
            seed: Some(seed),
            threads: Some(2),
            ..GenerateRequest::default()
        };
        let spec =
            diffugen_engine::validate(&request, &Library::new(self.ws.models_dir())).unwrap();
        self.jobs
            .submit(spec, Destination::Folder(self.ws.path("outputs")), "test")
            .unwrap()
    }

    /// Waits for the job and returns its events with the moment each was seen (call it right after submitting:
    /// events that already happened are stamped with the time of the call).
    async fn follow(&self, id: &str) -> Vec<(Instant, JobEvent)> {
        follow(self.jobs.clone(), id.to_string()).await
    }

    /// Waits until the orchestrator settles in `phase` (restores run in the background after the queue drains).
    async fn settle(&self, phase: Phase) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.orchestrator.phase() != phase {
            assert!(
                Instant::now() < deadline,
                "the orchestrator stayed in {:?}, expected {phase:?}",
                self.orchestrator.phase()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn follow(jobs: JobManager, id: String) -> Vec<(Instant, JobEvent)> {
    let sub = jobs.subscribe(&id).unwrap();
    let mut events: Vec<(Instant, JobEvent)> = sub
        .history
        .into_iter()
        .map(|e| (Instant::now(), e))
        .collect();
    let mut live = sub.live;
    while !events.last().is_some_and(|(_, e)| e.stage.is_final()) {
        match tokio::time::timeout(Duration::from_secs(120), live.recv()).await {
            Ok(Ok(event)) => events.push((Instant::now(), event)),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("the job's events stopped: {other:?}"),
        }
    }
    events
}

/// The warnings among a job's events.
fn warnings(events: &[(Instant, JobEvent)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match &e.stage {
            Stage::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn first_sampling(events: &[(Instant, JobEvent)]) -> Instant {
    events
        .iter()
        .find(|(_, e)| matches!(e.stage, Stage::Sampling { .. }))
        .map(|(t, _)| *t)
        .expect("the job sampled")
}

fn done_at(events: &[(Instant, JobEvent)]) -> Instant {
    match events.last() {
        Some((t, e)) if matches!(e.stage, Stage::Done { .. }) => *t,
        other => panic!("the job did not finish: {other:?}"),
    }
}

fn is_load(h: &Happening) -> bool {
    matches!(h, Happening::Loaded { .. })
}

fn is_unload(h: &Happening) -> bool {
    matches!(h, Happening::UnloadRequested(_))
}

#[tokio::test]
async fn a_resident_llm_is_unloaded_confirmed_free_rendered_past_and_restored_in_that_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    let id = rig.submit(1);
    let events = rig.follow(&id).await;
    rig.settle(Phase::Llm).await;

    let unload = rig
        .fake
        .when(&Happening::UnloadRequested(QWEN.into()))
        .expect("unloaded");
    let released = rig
        .fake
        .when(&Happening::Released(QWEN.into()))
        .expect("released");
    let sampling = first_sampling(&events);
    let done = done_at(&events);
    let restored = rig
        .fake
        .timeline()
        .into_iter()
        .find(|(_, h)| is_load(h))
        .expect("the LLM was restored");
    assert!(unload < released, "Ollama answers before it releases");
    assert!(
        released < sampling,
        "sampling must not start before the release"
    );
    assert!(
        done < restored.0,
        "the LLM comes back after the render, not during it"
    );
    // It was kept forever before, so it is restored forever: the number -1, never the string "-1".
    assert_eq!(
        restored.1,
        Happening::Loaded {
            model: QWEN.into(),
            keep_alive: json!(-1)
        }
    );
    assert_eq!(rig.fake.loaded(), [QWEN]);

    // The job's own events say why it waited, naming what was unloaded, before the engine started.
    let freeing = events
        .iter()
        .position(|(_, e)| matches!(&e.stage, Stage::FreeingVram { models, .. } if models == &[QWEN.to_string()]))
        .expect("a freeing_vram event names the model");
    let loading = events
        .iter()
        .position(|(_, e)| matches!(e.stage, Stage::LoadingModel { .. }))
        .unwrap();
    assert!(freeing < loading);
    assert!(warnings(&events).is_empty());

    let snapshot = rig.orchestrator.snapshot().await;
    assert_eq!(
        snapshot.stats.switches, 2,
        "one switch to diffusion, one back"
    );
    assert_eq!(snapshot.stats.errors, 0);
    assert!(snapshot.stats.last_switch_ms.is_some() && snapshot.stats.max_switch_ms.is_some());
    assert!(snapshot.stats.seconds_in.diffusion > 0.0);
    assert!(snapshot.pending_restore.is_empty());
}

#[tokio::test]
async fn a_slow_release_is_waited_for() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    rig.fake.set_release_delay(Duration::from_secs(2));
    let id = rig.submit(2);
    let events = rig.follow(&id).await;
    let unload = rig
        .fake
        .when(&Happening::UnloadRequested(QWEN.into()))
        .unwrap();
    let sampling = first_sampling(&events);
    assert!(
        sampling.duration_since(unload) >= Duration::from_secs(2),
        "sampling started {:?} after the unload request",
        sampling.duration_since(unload)
    );
    assert!(warnings(&events).is_empty());
}

#[tokio::test]
async fn two_queued_jobs_cost_one_unload_and_one_restore() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    let first = rig.submit(3);
    let second = rig.submit(4);
    rig.follow(&first).await;
    let events = rig.follow(&second).await;
    done_at(&events);
    rig.settle(Phase::Llm).await;
    assert_eq!(rig.fake.count(is_unload), 1);
    assert_eq!(rig.fake.count(is_load), 1);
    // The second job found the GPU already free: no preparing of its own.
    assert!(!events
        .iter()
        .any(|(_, e)| matches!(e.stage, Stage::FreeingVram { .. })));
}

#[tokio::test]
async fn auto_unloads_only_when_the_job_cannot_fit_beside_the_llm_even_offloaded() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // 8 GB GPU: 4.7 GB Qwen + 0.25 GB other leaves about 3 GB, enough for the small test job.
    let rig = Rig::start(config(Policy::Auto)).await;
    let id = rig.submit(5);
    done_at(&rig.follow(&id).await);
    rig.settle(Phase::Idle).await;
    assert_eq!(rig.fake.count(is_unload), 0, "the job fit: Qwen stays");

    // A 5 GB GPU leaves nothing beside Qwen, not even for an offloaded job: Qwen goes and comes back.
    rig.fake.set_total_vram(5 * GIB);
    let id = rig.submit(6);
    done_at(&rig.follow(&id).await);
    rig.settle(Phase::Llm).await;
    assert_eq!(rig.fake.count(is_unload), 1);
    assert_eq!(rig.fake.count(is_load), 1);
}

#[tokio::test]
async fn a_chat_through_the_gateway_during_a_render_waits_and_is_then_served() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    let gateway =
        diffugen_server::gateway::serve("127.0.0.1:0".parse().unwrap(), rig.orchestrator.clone())
            .await
            .unwrap();
    let id = rig.submit(7);
    let following = tokio::spawn(follow(rig.jobs.clone(), id.clone()));
    // Wait until the engine has the GPU.
    let mut live = rig.jobs.subscribe(&id).unwrap().live;
    loop {
        let event = live.recv().await.unwrap();
        if matches!(event.stage, Stage::LoadingModel { .. }) {
            break;
        }
    }
    // Metadata passes straight through while rendering.
    let client = reqwest::Client::new();
    let tags: Value = client
        .get(format!("http://{}/api/tags", gateway.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"].as_array().unwrap().len(), 2);
    assert!(rig
        .fake
        .when(&Happening::ChatStarted(QWEN.into()))
        .is_none());

    let chat = client
        .post(format!("http://{}/api/chat", gateway.addr))
        .json(&json!({"model": QWEN, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let body = chat.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "every streamed chunk came through: {body}");
    let text: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from the fake Ollama");

    let events = following.await.unwrap();
    let done = done_at(&events);
    let chat_started = rig.fake.when(&Happening::ChatStarted(QWEN.into())).unwrap();
    assert!(chat_started > done, "the chat ran during the render");
    // The engine handed its memory back before the chat ran.
    assert_eq!(rig.jobs.engine().current_pid(), None);
    assert_eq!(rig.orchestrator.phase(), Phase::Llm);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_waits_for_a_chat_that_is_streaming() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    let gateway =
        diffugen_server::gateway::serve("127.0.0.1:0".parse().unwrap(), rig.orchestrator.clone())
            .await
            .unwrap();
    let chat = reqwest::Client::new()
        .post(format!("http://{}/api/chat", gateway.addr))
        .json(&json!({"model": QWEN, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    // The chat's headers are in; its body is still streaming when the job arrives.
    let id = rig.submit(8);
    let body = chat.text().await.unwrap();
    assert!(body.contains("\"done\":true"));
    let events = rig.follow(&id).await;
    let finished = rig
        .fake
        .when(&Happening::ChatFinished(QWEN.into()))
        .unwrap();
    let unload = rig
        .fake
        .when(&Happening::UnloadRequested(QWEN.into()))
        .unwrap();
    assert!(
        unload > finished,
        "the LLM was unloaded while it was answering"
    );
    assert!(first_sampling(&events) > finished);
    gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_ollama_down_the_job_renders_with_one_warning_and_the_outage_is_counted_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let ws = Workspace::new();
    let engine = Arc::new(engine());
    let orchestrator = Orchestrator::new(
        config(Policy::Always),
        OllamaClient::new(&url).unwrap(),
        Arc::new(NoGpu("no NVIDIA GPU detected (simulated)".into())),
        engine.clone(),
    );
    let jobs = JobManager::with_orchestrator(engine, 8, Some(orchestrator.clone()));
    let rig = Rig {
        ws,
        fake: FakeOllama::start(&[]).await,
        orchestrator,
        jobs,
    };
    let first = rig.follow(&rig.submit(9)).await;
    done_at(&first);
    let first_warnings = warnings(&first);
    assert_eq!(first_warnings.len(), 1, "{first_warnings:?}");
    assert!(
        first_warnings[0].contains("not reachable") && first_warnings[0].contains(&url),
        "{}",
        first_warnings[0]
    );
    rig.settle(Phase::Idle).await;

    let second = rig.follow(&rig.submit(10)).await;
    done_at(&second);
    assert!(
        warnings(&second).is_empty(),
        "one warning per outage, not one per job"
    );
    let snapshot = rig.orchestrator.snapshot().await;
    assert_eq!(
        snapshot.stats.errors, 1,
        "an outage learned moments ago is not asked about again by the next job"
    );
    assert!(!snapshot.ollama.reachable);
    assert!(!snapshot.gpu.available);
    assert!(snapshot
        .gpu
        .message
        .unwrap()
        .contains("no NVIDIA GPU detected"));
}

#[tokio::test]
async fn ollama_restarting_mid_switch_is_waited_out_and_the_llm_is_restored() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    rig.fake.set_release_delay(Duration::from_secs(3));
    let id = rig.submit(11);
    // Restart Ollama while the orchestrator waits for the release.
    let mut live = rig.jobs.subscribe(&id).unwrap().live;
    loop {
        if matches!(live.recv().await.unwrap().stage, Stage::FreeingVram { .. }) {
            break;
        }
    }
    rig.fake.restart(Duration::from_millis(500)).await;
    let events = rig.follow(&id).await;
    done_at(&events);
    rig.settle(Phase::Llm).await;
    assert_eq!(rig.fake.loaded(), [QWEN], "restored after the restart");
    assert!(warnings(&events).is_empty());
}

#[tokio::test]
async fn an_unconfirmed_unload_warns_and_renders_or_fails_the_job_when_strict() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let lenient = VramConfig {
        unload_timeout: Duration::from_millis(500),
        ..config(Policy::Always)
    };
    let rig = Rig::start(lenient.clone()).await;
    rig.fake.set_release_delay(Duration::from_secs(30));
    let events = rig.follow(&rig.submit(12)).await;
    done_at(&events);
    assert!(events.iter().any(|(_, e)| matches!(&e.stage,
        Stage::Warning { message } if message.contains("did not release") && message.contains(QWEN))));
    assert_eq!(rig.orchestrator.snapshot().await.stats.unload_timeouts, 1);

    let rig = Rig::start(VramConfig {
        strict: true,
        ..lenient
    })
    .await;
    rig.fake.set_release_delay(Duration::from_secs(30));
    let id = rig.submit(13);
    let events = rig.follow(&id).await;
    match &events.last().unwrap().1.stage {
        Stage::Failed { error, kind } => {
            assert_eq!(*kind, diffugen_engine::FailureKind::Gpu);
            assert!(
                error.contains("did not release") && error.contains("strict"),
                "{error}"
            )
        }
        other => panic!("expected the job to fail under strict: {other:?}"),
    }
    assert!(!events
        .iter()
        .any(|(_, e)| matches!(e.stage, Stage::LoadingModel { .. })));
    assert!(matches!(
        rig.jobs.wait(&id).await.unwrap(),
        Outcome::Failed { .. }
    ));
    // What was asked to unload comes back once the queue is empty.
    rig.settle(Phase::Llm).await;
    assert_eq!(rig.fake.count(is_load), 1);
}

#[tokio::test]
async fn concurrent_switch_requests_are_serialised() {
    let rig = Rig::start(config(Policy::Always)).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let orchestrator = rig.orchestrator.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                orchestrator.switch_to_diffusion().await.map(|r| r.phase)
            } else {
                orchestrator.switch_to_llm().await.map(|r| r.phase)
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(rig.fake.max_management_calls_at_once(), 1);
    // Between an unload request and its release, nothing else was loaded.
    let timeline = rig.fake.timeline();
    let mut unloading = false;
    for (_, happening) in &timeline {
        match happening {
            Happening::UnloadRequested(_) => unloading = true,
            Happening::Released(_) => unloading = false,
            Happening::Loaded { .. } => {
                assert!(!unloading, "a load overlapped an unload: {timeline:?}")
            }
            _ => {}
        }
    }
    let stats = rig.orchestrator.snapshot().await.stats;
    assert!(stats.switches >= 2, "{stats:?}");
    assert!(rig.fake.count(is_load) <= rig.fake.count(is_unload));
}

#[tokio::test]
async fn switching_to_the_llm_frees_the_engine_and_switching_back_unloads_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Never)).await;
    let id = rig.submit(14);
    done_at(&rig.follow(&id).await);
    assert_eq!(
        rig.fake.count(is_unload),
        0,
        "policy never leaves Ollama alone"
    );
    assert!(rig.jobs.engine().current_pid().is_some());
    assert_eq!(rig.jobs.engine().loaded_model().as_deref(), Some("tiny"));

    let report = rig.orchestrator.switch_to_llm().await.unwrap();
    assert_eq!(report.phase, Phase::Llm);
    assert_eq!(
        rig.jobs.engine().current_pid(),
        None,
        "the engine worker ended"
    );

    let report = rig.orchestrator.switch_to_diffusion().await.unwrap();
    assert_eq!(report.unloaded, [QWEN]);
    assert!(rig.fake.loaded().is_empty(), "confirmed gone");
    let report = rig.orchestrator.switch_to_llm().await.unwrap();
    assert_eq!(report.restored, [QWEN]);
}

#[tokio::test]
async fn the_ollama_client_speaks_ollamas_dialect() {
    let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
    let client = OllamaClient::new(&fake.url()).unwrap();
    assert_eq!(client.version().await.unwrap(), "0.12.6");
    assert_eq!(client.installed().await.unwrap()[0].name, QWEN);

    // Unknown models are a clear error, never retried as if transient.
    let error = client
        .load("nope:1b", &KeepAlive::FOREVER)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        OllamaError::UnknownModel {
            model: "nope:1b".into()
        }
    );
    assert!(error.to_string().contains("ollama pull nope:1b"));
    // Unloading a model that is installed but not loaded is fine.
    client.request_unload(QWEN).await.unwrap();

    // "forever" travels as the number -1; a duration as a string.
    client
        .load(QWEN, &KeepAlive::parse("-1").unwrap())
        .await
        .unwrap();
    let loaded = client.loaded().await.unwrap();
    assert_eq!(loaded[0].size_vram, (4.7 * GIB as f64) as u64);
    assert_eq!(loaded[0].remaining_keep_alive(), KeepAlive::FOREVER);
    assert_eq!(fake.count(|h| matches!(h, Happening::Rejected(_))), 0);
    assert!(fake.timeline().iter().any(|(_, h)| *h
        == Happening::Loaded {
            model: QWEN.into(),
            keep_alive: json!(-1)
        }));

    // The fake, like Ollama, rejects the string "-1": proof that the client never sends it.
    let raw = reqwest::Client::new()
        .post(format!("{}/api/generate", fake.url()))
        .json(&json!({"model": QWEN, "keep_alive": "-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert!(raw
        .text()
        .await
        .unwrap()
        .contains("missing unit in duration"));
}

#[tokio::test]
async fn a_5xx_is_retried_and_a_refused_connection_gives_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = OllamaClient::new(&url).unwrap();
    let started = Instant::now();
    let error = client.loaded().await.unwrap_err();
    assert!(
        matches!(error, OllamaError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&url));
    // Four tries with backoff 100, 200, 400 ms (±50 %) between them.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_api_reports_the_vram_snapshot_and_health_carries_the_statistics() {
    let rig = Rig::start(config(Policy::Always)).await;
    let (server, base) = support::serve_api(&rig.ws, rig.jobs.clone()).await;
    let client = reqwest::Client::new();
    let snapshot: Value = client
        .get(format!("{base}/api/v1/vram"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["phase"], "idle");
    assert_eq!(snapshot["policy"], "always");
    assert_eq!(snapshot["gpu"]["available"], true);
    assert_eq!(
        snapshot["gpu"]["gpus"][0]["total_bytes"],
        json!((8 * GIB) as f64)
    );
    assert_eq!(
        snapshot["gpu"]["gpus"][0]["llm_bytes"],
        json!((4.7 * GIB as f64) as u64 as f64)
    );
    assert_eq!(snapshot["ollama"]["models"][0]["name"], QWEN);

    let report: Value = client
        .post(format!("{base}/api/v1/vram/diffusion"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["unloaded"], json!([QWEN]));
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["vram"]["phase"], "diffusion");
    assert_eq!(health["vram"]["stats"]["switches"], 1);
    let report: Value = client
        .post(format!("{base}/api/v1/vram/llm"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["restored"], json!([QWEN]));
    server.shutdown().await.unwrap();
}

#[test]
fn vram_status_without_a_server_shows_the_gpu_state_and_ollamas_models() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(async {
        let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
        fake.preload(QWEN, 300);
        fake
    });
    let ws = Workspace::new();
    let no_server = "http://127.0.0.1:9"; // discard port: nothing answers
    let output = ws.diffugen(&[
        "vram",
        "status",
        "--json",
        "--ollama-url",
        &fake.url(),
        "--server",
        no_server,
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["server"], Value::Null);
    assert_eq!(status["ollama"]["reachable"], true);
    assert_eq!(status["ollama"]["models"][0]["name"], QWEN);
    assert_eq!(status["engine"]["worker_pid"], Value::Null);
    if status["gpu"]["available"] == false {
        // No NVIDIA GPU here (CI): one clear state, and the meter falls back to Ollama's size_vram.
        assert!(status["gpu"]["message"]
            .as_str()
            .unwrap()
            .contains("no NVIDIA GPU detected"));
        assert_eq!(
            status["gpu"]["llm_bytes"],
            json!((4.7 * GIB as f64) as u64 as f64)
        );
    }

    let output = ws.diffugen(&[
        "vram",
        "status",
        "--ollama-url",
        &fake.url(),
        "--server",
        no_server,
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(QWEN)
            && text.contains("Phase:")
            && text.contains("no DiffuGen server running"),
        "{text}"
    );

    // Switch to diffusion and back without a server: the unloaded model is remembered and restored.
    let output = ws.diffugen(&[
        "vram",
        "switch",
        "diffusion",
        "--ollama-url",
        &fake.url(),
        "--server",
        no_server,
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains(QWEN));
    assert!(fake.loaded().is_empty());
    let output = ws.diffugen(&[
        "vram",
        "switch",
        "llm",
        "--ollama-url",
        &fake.url(),
        "--server",
        no_server,
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("restored {QWEN}")));
    assert_eq!(fake.loaded(), [QWEN]);

    let output = ws.diffugen(&["vram", "switch", "sideways"]);
    assert!(!output.status.success());
    assert!(support::stderr(&output).contains("llm"));
    drop(runtime);
}

#[test]
fn cli_generate_unloads_the_llm_and_restores_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(async {
        let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
        fake.preload(QWEN, -1);
        fake
    });
    let ws = Workspace::new();
    let (events, output) = ws.generate_json(&[
        "--prompt",
        "a lighthouse",
        "--ollama-url",
        &fake.url(),
        "--vram-policy",
        "always",
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    assert!(events.iter().any(
        |e| matches!(&e.stage, Stage::FreeingVram { models, .. } if models == &[QWEN.to_string()])
    ));
    assert_eq!(fake.count(is_unload), 1);
    assert_eq!(fake.count(is_load), 1);
    assert_eq!(fake.loaded(), [QWEN]);

    let output = ws.diffugen(&[
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "x",
        "--vram-policy",
        "sometimes",
    ]);
    assert!(!output.status.success());
    assert!(support::stderr(&output).contains("always, auto, share or never"));
    drop(runtime);
}

#[tokio::test]
async fn an_llm_removed_from_ollama_during_a_render_is_reported_clearly_instead_of_restored() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Always)).await;
    let mut vram_events = rig.orchestrator.subscribe();
    let id = rig.submit(15);
    let following = tokio::spawn(follow(rig.jobs.clone(), id.clone()));
    let mut live = rig.jobs.subscribe(&id).unwrap().live;
    while !matches!(live.recv().await.unwrap().stage, Stage::LoadingModel { .. }) {}
    rig.fake.uninstall(QWEN); // `ollama rm` while the image renders
    done_at(&following.await.unwrap());
    rig.settle(Phase::Llm).await;
    let warning = loop {
        match tokio::time::timeout(Duration::from_secs(5), vram_events.recv()).await {
            Ok(Ok(diffugen_vram::VramEvent::Warning { message })) => break message,
            Ok(Ok(_)) => {}
            other => panic!("no warning about the missing model: {other:?}"),
        }
    };
    assert!(
        warning.contains(&format!("Ollama has no model '{QWEN}'")),
        "{warning}"
    );
    assert_eq!(rig.orchestrator.snapshot().await.stats.errors, 1);
    assert!(rig.fake.loaded().is_empty());
}

#[test]
fn vram_watch_prints_the_meter_every_second_until_ctrl_c() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(async {
        let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
        fake.preload(QWEN, -1);
        fake
    });
    let ws = Workspace::new();
    let child = std::process::Command::new(support::diffugen_bin())
        .args(["--data-dir"])
        .arg(ws.data_dir())
        .args(["vram", "watch", "--json", "--server", "http://127.0.0.1:9"])
        .args(["--ollama-url", &fake.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: sending SIGINT to the child we started; it is still ours (not yet waited for).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "Ctrl+C ends watch cleanly: {}",
        support::stderr(&output)
    );
    let snapshots: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!((2..=4).contains(&snapshots.len()), "{snapshots:?}");
    for s in &snapshots {
        assert_eq!(s["type"], "snapshot");
        assert_eq!(s["snapshot"]["ollama"]["models"][0]["name"], QWEN);
    }
    drop(runtime);
}

#[tokio::test]
async fn a_chat_client_that_gives_up_waiting_is_no_longer_counted() {
    let rig = Rig::start(config(Policy::Never)).await;
    let gateway =
        diffugen_server::gateway::serve("127.0.0.1:0".parse().unwrap(), rig.orchestrator.clone())
            .await
            .unwrap();
    // A render holds the GPU.
    let lease = rig
        .orchestrator
        .acquire_diffusion(0.0, &mut |_| {})
        .await
        .unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("http://{}/api/chat", gateway.addr))
        .json(&json!({"model": QWEN, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert!(impatient.is_err(), "the request waited for the render");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !rig.orchestrator.llm_waiting(),
        "the queue would hand the GPU over between jobs for nobody"
    );
    assert_eq!(rig.orchestrator.snapshot().await.llm_requests_waiting, 0);
    drop(lease);
    gateway.shutdown().await.unwrap();
}

/// The runtime and its doors as `diffugen serve` starts them, over the workspace and the fake Ollama.
struct Service {
    runtime: diffugen_runtime::Runtime,
    doors: diffugen_server::Doors,
}

impl Service {
    async fn start(
        ws: &Workspace,
        fake: &FakeOllama,
        policy: Policy,
        api_key: Option<String>,
        api_addr: Option<std::net::SocketAddr>,
        gateway_addr: Option<std::net::SocketAddr>,
    ) -> Service {
        let flags = diffugen_runtime::Flags::new()
            .set(
                "data_dir",
                "--data-dir",
                ws.data_dir().display().to_string(),
            )
            .set("ollama_url", "--ollama-url", fake.url());
        let runtime = diffugen_runtime::Runtime::start(diffugen_runtime::StartOptions {
            config: diffugen_runtime::Config::isolated(flags).unwrap(),
            worker: diffugen_engine::WorkerCommand {
                program: support::diffugen_bin(),
                args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
            },
            gpu: Arc::new(fake.clone()),
            queue_depth: 4,
            vram: Some(config(policy)),
            durable_queue: true,
            watch_folders: false,
            lanes: 1,
            gallery: true,
            front: false,
        })
        .await
        .unwrap();
        let doors = diffugen_server::Doors::open(
            &runtime,
            diffugen_server::DoorsConfig {
                server: diffugen_server::ServerConfig {
                    api_key,
                    ..support::server_config(ws)
                },
                api_addr,
                gateway_addr,
            },
        )
        .await
        .unwrap();
        Service { runtime, doors }
    }

    fn orchestrator(&self) -> &diffugen_vram::Orchestrator {
        self.runtime.orchestrator().unwrap()
    }

    async fn stop(self) -> std::io::Result<()> {
        let closed = self.doors.close().await;
        self.runtime.shutdown().await;
        closed
    }
}

#[tokio::test]
async fn the_whole_service_as_serve_runs_it_unloads_renders_records_and_restores() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
    fake.preload(QWEN, -1);
    let ws = Workspace::new();
    let service = Service::start(
        &ws,
        &fake,
        Policy::Always,
        None,
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let api = format!("http://{}", service.doors.api.as_ref().unwrap().addr);
    let reply: Value = reqwest::Client::new()
        .post(format!("{api}/v1/images/generations"))
        .json(&json!({"prompt": "a harbour at night", "size": "64x64", "steps": 2, "seed": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(reply["data"][0]["b64_json"].is_string(), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while service.orchestrator().phase() != Phase::Llm {
        assert!(Instant::now() < deadline, "the LLM was not restored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((fake.count(is_unload), fake.count(is_load)), (1, 1));
    let gallery: Value = reqwest::get(format!("{api}/api/v1/gallery?query=harbour"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        gallery["entries"][0]["seed"], 5,
        "the image is in the gallery"
    );
    // The gateway answers listings through to Ollama.
    let gateway = format!("http://{}", service.doors.gateway.as_ref().unwrap().addr);
    let version: Value = reqwest::get(format!("{gateway}/api/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], "0.12.6");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn share_keeps_a_small_llm_on_the_gpu_and_renders_beside_it_within_a_budget() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let fake = FakeOllama::start(&[("qwen3:1.7b", 1.9)]).await;
    fake.preload("qwen3:1.7b", -1);
    let rig = Rig::with(fake, config(Policy::Share));
    let id = rig.submit(21);
    let mut live = rig.jobs.subscribe(&id).unwrap().live;
    // While the job renders, the meter shows the budget DiffuGen holds itself to.
    let budget = loop {
        let event = live.recv().await.unwrap();
        if matches!(event.stage, Stage::Sampling { .. }) {
            break rig.orchestrator.snapshot().await.engine.budget_bytes;
        }
    };
    let events = rig.follow(&id).await;
    done_at(&events);
    assert_eq!(rig.fake.count(is_unload), 0, "the 1.9 GB LLM stays loaded");
    assert_eq!(rig.fake.loaded(), ["qwen3:1.7b"]);
    let why: Vec<String> = events
        .iter()
        .filter_map(|(_, e)| match &e.stage {
            Stage::Preparing { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(why.iter().any(|m| m.contains("sharing the GPU")), "{why:?}");
    let free = 8.0 * GIB as f64 - 1.9 * GIB as f64;
    let budget = budget.expect("a budget while sharing");
    assert!(budget <= free && budget > 5.0 * GIB as f64, "{budget}");
    let plan = events
        .iter()
        .find_map(|(_, e)| match &e.stage {
            Stage::Plan { plan, .. } => Some(plan.clone()),
            _ => None,
        })
        .expect("a plan event");
    assert!(
        plan.fits && plan.estimated_vram_peak_bytes <= budget,
        "{plan:?}"
    );
    rig.settle(Phase::Idle).await;
    assert_eq!(rig.orchestrator.snapshot().await.engine.budget_bytes, None);
}

#[tokio::test]
async fn share_swaps_a_large_llm_out_when_the_job_does_not_fit_beside_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(config(Policy::Share)).await;
    // 4.7 GB Qwen on a 5 GB card: no room beside it.
    rig.fake.set_total_vram(5 * GIB);
    let id = rig.submit(22);
    let events = rig.follow(&id).await;
    done_at(&events);
    assert_eq!(rig.fake.count(is_unload), 1);
    assert!(
        events.iter().any(|(_, e)| matches!(&e.stage,
            Stage::Preparing { message } if message.contains("does not fit"))),
        "the job's events say why it swapped"
    );
    rig.settle(Phase::Llm).await;
    assert_eq!(
        rig.fake.count(is_load),
        1,
        "Qwen comes back after the queue"
    );
}

#[tokio::test]
async fn with_an_api_key_the_gateway_wants_it_too_and_refuses_foreign_hosts_and_pages() {
    let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
    let ws = Workspace::new();
    let service = Service::start(
        &ws,
        &fake,
        Policy::Never,
        Some("s3cret".into()),
        None,
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let gateway = format!("http://{}", service.doors.gateway.as_ref().unwrap().addr);
    let client = reqwest::Client::new();
    let tags = format!("{gateway}/api/tags");

    let without = client.get(&tags).send().await.unwrap();
    assert_eq!(without.status(), 401);
    assert!(without.headers().contains_key("www-authenticate"));
    let body: Value = without.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("API key"),
        "Ollama's error shape: {body}"
    );
    let pull = client
        .post(format!("{gateway}/api/pull"))
        .json(&json!({"model": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        pull.status(),
        401,
        "a pull without the key never reaches Ollama"
    );

    for auth in [("authorization", "Bearer s3cret"), ("x-api-key", "s3cret")] {
        let with = client
            .get(&tags)
            .header(auth.0, auth.1)
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), 200, "{auth:?}");
    }
    let foreign = client
        .get(&tags)
        .bearer_auth("s3cret")
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let page = client
        .get(&tags)
        .bearer_auth("s3cret")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    service.stop().await.unwrap();
}

#[test]
fn serve_keeps_the_gateway_on_this_machine_when_the_api_listens_on_the_network() {
    use std::io::BufRead;
    let ws = Workspace::new();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, gateway_port) = (free(), free());
    let mut server = std::process::Command::new(support::diffugen_bin())
        .args([
            "--data-dir",
            ws.data_dir().to_str().unwrap(),
            "serve",
            "--host",
            "0.0.0.0",
        ])
        .args(["--port", &port.to_string(), "--api-key", "k"])
        .args(["--ollama-gateway-port", &gateway_port.to_string()])
        .env("DIFFUGEN_VRAM_POLICY", "never")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(server.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("Ollama gateway on"));
    let _ = server.kill();
    let _ = server.wait();
    let line = line.expect("serve announces its gateway");
    assert!(
        line.contains(&format!("http://127.0.0.1:{gateway_port}")),
        "{line}"
    );
}

/// Two simulated cards: the fake's GPU as card 0, where Ollama's models live, and an idle card 1 beside it.
struct TwoCards(FakeOllama);

impl diffugen_vram::GpuProbe for TwoCards {
    fn read(&self) -> Result<Vec<diffugen_vram::GpuReading>, String> {
        let mut cards = diffugen_vram::GpuProbe::read(&self.0)?;
        let total = cards[0].total_bytes;
        let desktop = 0.25 * GIB as f64;
        cards.push(diffugen_vram::GpuReading {
            index: 1,
            name: "Simulated idle GPU".into(),
            total_bytes: total,
            used_bytes: desktop,
            free_bytes: total - desktop,
            processes: Vec::new(),
        });
        Ok(cards)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lane_per_gpu_only_the_llms_card_is_handed_over_and_the_other_renders_beside_the_llm(
) {
    use diffugen_vram::LaneDevice;
    let _serial = ONE_AT_A_TIME.lock().await;
    let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
    fake.preload(QWEN, -1);
    // The LLM takes two seconds to leave card 0: a job on card 1 must not wait for that.
    fake.set_release_delay(Duration::from_secs(2));
    let devices = [LaneDevice::Gpu { index: 0 }, LaneDevice::Gpu { index: 1 }];
    let engines: Vec<Arc<diffugen_engine::Engine>> = devices
        .iter()
        .map(|d| Arc::new(engine().with_env(d.worker_env())))
        .collect();
    let cards = devices
        .iter()
        .zip(&engines)
        .map(|(d, e)| {
            let e: Arc<dyn diffugen_vram::DiffusionEngine> = e.clone();
            (d.card().unwrap(), e)
        })
        .collect();
    let orchestrator = Orchestrator::with_cards(
        config(Policy::Always),
        OllamaClient::new(&fake.url()).unwrap(),
        Arc::new(TwoCards(fake.clone())),
        cards,
    );
    let jobs = JobManager::start_on_devices(
        engines.iter().cloned().zip(devices).collect(),
        diffugen_jobs::JobOptions {
            depth: 8,
            orchestrator: Some(orchestrator.clone()),
            gallery: None,
            defaults: diffugen_jobs::JobDefaults::default(),
            store: None,
        },
    );
    let rig = Rig {
        ws: Workspace::new(),
        fake,
        orchestrator,
        jobs,
    };
    let (a, b) = (rig.submit(11), rig.submit(12));
    let (events_a, events_b) = tokio::join!(rig.follow(&a), rig.follow(&b));
    let lane = |id: &str| rig.jobs.get(id).unwrap().lane;
    let mut by_lane = [(lane(&a), events_a), (lane(&b), events_b)];
    by_lane.sort_by_key(|(lane, _)| *lane);
    let [(Some(0), on_llm_card), (Some(1), on_idle_card)] = by_lane else {
        panic!(
            "the two jobs did not run one on each lane: {:?}",
            [lane(&a), lane(&b)]
        );
    };
    done_at(&on_llm_card);
    done_at(&on_idle_card);

    let unload = rig
        .fake
        .when(&Happening::UnloadRequested(QWEN.into()))
        .expect("the LLM was unloaded for the job on its card");
    assert!(on_llm_card
        .iter()
        .any(|(_, e)| matches!(e.stage, Stage::FreeingVram { .. })));
    assert!(first_sampling(&on_llm_card).duration_since(unload) >= Duration::from_secs(2));
    // The job on the other card never asked Ollama for anything and sampled while the LLM was still leaving.
    assert!(!on_idle_card
        .iter()
        .any(|(_, e)| matches!(e.stage, Stage::FreeingVram { .. } | Stage::Preparing { .. })));
    let plan = on_idle_card.iter().find_map(|(_, e)| match &e.stage {
        Stage::Plan { plan, .. } => Some(plan.clone()),
        _ => None,
    });
    // Card 1 has 7.75 GiB free (less the planner's reserve); card 0, with the 4.7 GiB LLM, has at most 3.3.
    let available = plan
        .expect("the job on card 1 was planned")
        .vram_available_bytes
        .unwrap_or(0.0);
    assert!(
        available > 7.0 * GIB as f64,
        "planned for card 1's memory, not the LLM's card: {available}"
    );
    assert!(
        first_sampling(&on_idle_card) < unload + Duration::from_secs(2),
        "card 1's job waited for card 0's hand-over"
    );

    // The worker on card 1 stays resident, seeing only its card.
    let pid = engines[1]
        .current_pid()
        .expect("card 1's worker stays resident after its job");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for var in ["CUDA_VISIBLE_DEVICES=1", "CUDA_DEVICE_ORDER=PCI_BUS_ID"] {
        assert!(
            environ.split('\0').any(|v| v == var),
            "{var} missing: {environ}"
        );
    }

    // The LLM comes back once, when the queue is empty.
    rig.settle(Phase::Llm).await;
    assert_eq!(rig.fake.count(is_unload), 1);
    assert_eq!(rig.fake.count(is_load), 1);
    // Card 0's worker was ended for the LLM; card 1's keeps its model.
    assert_eq!(engines[0].current_pid(), None);
    assert_eq!(engines[1].current_pid(), Some(pid));
}
