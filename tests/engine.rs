//! The supervised engine: a resident model between jobs, a worker killed mid-job, cancel and free memory.
//! Each test takes `ONE_AT_A_TIME`: they compare job times and kill workers, so they must not overlap.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use diffugen_engine::{Destination, EngineError, GenerateRequest, JobEvent, Stage};
use diffugen_models::Library;
use support::{engine, Workspace, ONE_AT_A_TIME};

fn spec(ws: &Workspace, seed: i64) -> diffugen_engine::JobSpec {
    spec_of(ws, "tiny", seed)
}

fn spec_of(ws: &Workspace, model: &str, seed: i64) -> diffugen_engine::JobSpec {
    let request = GenerateRequest {
        model: model.into(),
        prompt: "a mountain".into(),
        width: Some(64),
        height: Some(64),
        steps: Some(2),
        seed: Some(seed),
        threads: Some(2),
        ..Default::default()
    };
    diffugen_engine::validate(&request, &Library::new(ws.models_dir())).expect("valid request")
}

fn loads(events: &[JobEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.stage, Stage::LoadingModel { .. }))
        .count()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test]
async fn a_second_job_on_the_same_model_reuses_the_resident_model() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    let dest = Destination::Folder(ws.path("out"));
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let cold = diffugen_engine::job::run(
        &engine,
        "a",
        &spec(&ws, 1),
        &dest,
        Instant::now(),
        &mut |e| first.push(e),
    )
    .await
    .unwrap();
    let warm = diffugen_engine::job::run(
        &engine,
        "b",
        &spec(&ws, 2),
        &dest,
        Instant::now(),
        &mut |e| second.push(e),
    )
    .await
    .unwrap();
    assert!(loads(&first) > 0 && !cold.model_was_resident);
    assert_eq!(loads(&second), 0, "the second job loaded weights again");
    assert!(warm.model_was_resident);
    assert_eq!(
        cold.worker_pid, warm.worker_pid,
        "the same worker process served both jobs"
    );
    // How much faster the warm job is belongs to a benchmark (a noisy machine can slow any one run), not here.
    engine.stop().await;
}

#[tokio::test]
async fn killing_the_worker_during_sampling_fails_only_that_job_and_the_next_job_succeeds() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    let dest = Destination::Folder(ws.path("out"));
    let warmup = diffugen_engine::job::run(
        &engine,
        "w",
        &spec(&ws, 1),
        &dest,
        Instant::now(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(warmup.worker_pid > 0);

    let mut events = Vec::new();
    let mut killed = None;
    let result = diffugen_engine::job::run(
        &engine,
        "k",
        &spec(&ws, 2),
        &dest,
        Instant::now(),
        &mut |e| {
            if matches!(e.stage, Stage::Sampling { step: 1, .. }) {
                // The worker rendering right now (read now, not remembered: a remembered pid could by then belong
                // to another process on this machine).
                if let Some(pid) = engine.current_pid().filter(|_| killed.is_none()) {
                    // SAFETY: kills the worker process this test's engine is running.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    killed = Some(pid);
                }
            }
            events.push(e);
        },
    )
    .await;
    let Err(EngineError::Failed(error)) = result else {
        panic!("expected a failed job, got {result:?}")
    };
    assert!(
        error.contains("crashed") && error.contains("signal 9"),
        "{error}"
    );
    assert!(error.contains("while sampling"), "names the phase: {error}");
    assert!(
        error.contains("sd.cpp log"),
        "includes the log tail: {error}"
    );
    assert!(matches!(events.last().unwrap().stage, Stage::Failed { .. }));

    let next = diffugen_engine::job::run(
        &engine,
        "n",
        &spec(&ws, 3),
        &dest,
        Instant::now(),
        &mut |_| {},
    )
    .await;
    let next = next.expect("the job after a crash succeeds");
    assert_ne!(
        Some(next.worker_pid),
        killed,
        "a fresh worker replaced the crashed one"
    );
    engine.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_job_ends_it_as_cancelled_and_ends_the_worker() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = Arc::new(engine());
    let dest = Destination::Folder(ws.path("out"));
    let pid = Arc::new(Mutex::new(None));
    let (canceller, seen) = (engine.clone(), pid.clone());
    let mut events = Vec::new();
    let result = diffugen_engine::job::run(
        &engine,
        "c",
        &spec(&ws, 5),
        &dest,
        Instant::now(),
        &mut |e| {
            if matches!(e.stage, Stage::Sampling { step: 1, .. }) && seen.lock().unwrap().is_none()
            {
                *seen.lock().unwrap() = Some(());
                assert!(canceller.cancel("c", "user pressed cancel"));
            }
            events.push(e);
        },
    )
    .await;
    assert_eq!(
        result.unwrap_err(),
        EngineError::Cancelled("user pressed cancel".into())
    );
    assert!(
        matches!(&events.last().unwrap().stage, Stage::Cancelled { reason } if reason == "user pressed cancel")
    );
    assert_eq!(
        engine.worker_pid().await,
        None,
        "the worker was ended, so its memory is back"
    );
    assert!(
        !std::fs::read_dir(ws.path("out"))
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "nothing was written"
    );

    let after = diffugen_engine::job::run(
        &engine,
        "d",
        &spec(&ws, 6),
        &dest,
        Instant::now(),
        &mut |_| {},
    )
    .await;
    assert!(after.is_ok(), "{after:?}");
    assert!(
        !engine.cancel("nope", "not running"),
        "cancelling an unknown job does nothing"
    );
    engine.stop().await;
}

#[tokio::test]
async fn freeing_memory_unloads_the_model_so_the_next_job_loads_it_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    let dest = Destination::Folder(ws.path("out"));
    let first = diffugen_engine::job::run(
        &engine,
        "1",
        &spec(&ws, 1),
        &dest,
        Instant::now(),
        &mut |_| {},
    )
    .await
    .unwrap();
    engine.unload().await;
    let mut events = Vec::new();
    let second = diffugen_engine::job::run(
        &engine,
        "2",
        &spec(&ws, 1),
        &dest,
        Instant::now(),
        &mut |e| events.push(e),
    )
    .await
    .unwrap();
    assert!(!second.model_was_resident && loads(&events) > 0);
    assert_eq!(
        first.worker_pid, second.worker_pid,
        "unloading keeps the worker process"
    );

    engine.stop().await;
    assert_eq!(engine.worker_pid().await, None);
    assert!(
        !alive(second.worker_pid),
        "stopping ends the worker process"
    );
}

#[tokio::test]
async fn a_job_for_another_model_switches_the_worker_to_it_and_later_jobs_reuse_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    // A second model id: the same weights under another file name, so a different sd.cpp context.
    std::os::unix::fs::symlink(
        diffugen_testkit::test_model(),
        ws.models_dir().join("tiny-copy.gguf"),
    )
    .unwrap();
    let engine = engine();
    let dest = Destination::Folder(ws.path("out"));
    let other = spec_of(&ws, "tiny-copy", 1);

    let mut runs = Vec::new();
    for (id, job) in [("a", spec(&ws, 1)), ("b", other.clone()), ("c", other)] {
        let mut events = Vec::new();
        let result =
            diffugen_engine::job::run(&engine, id, &job, &dest, Instant::now(), &mut |e| {
                events.push(e)
            })
            .await
            .unwrap();
        runs.push((result, loads(&events)));
    }
    assert!(runs[0].1 > 0, "the first model loads");
    assert!(
        runs[1].1 > 0 && !runs[1].0.model_was_resident,
        "switching models loads the new one"
    );
    assert!(
        runs[2].1 == 0 && runs[2].0.model_was_resident,
        "the next job on it reuses it"
    );
    assert!(
        runs.iter()
            .all(|(r, _)| r.worker_pid == runs[0].0.worker_pid),
        "one worker throughout"
    );
    engine.stop().await;
}

/// A request for the test model with these memory options.
fn with_memory(
    ws: &Workspace,
    memory: serde_json::Value,
    size: (u32, u32),
    steps: u32,
) -> Result<diffugen_engine::JobSpec, diffugen_engine::ParamErrors> {
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "a lighthouse".into(),
        width: Some(size.0),
        height: Some(size.1),
        steps: Some(steps),
        seed: Some(7),
        threads: Some(2),
        memory: serde_json::from_value(memory).expect("memory options parse"),
        ..Default::default()
    };
    diffugen_engine::validate(&request, &Library::new(ws.models_dir()))
}

async fn render(
    engine: &diffugen_engine::Engine,
    ws: &Workspace,
    id: &str,
    spec: &diffugen_engine::JobSpec,
) -> image::RgbImage {
    let mut events = Vec::new();
    diffugen_engine::job::run(
        engine,
        id,
        spec,
        &Destination::Folder(ws.path(id)),
        Instant::now(),
        &mut |e| events.push(e),
    )
    .await
    .unwrap_or_else(|e| panic!("{id}: {e}"));
    support::pixels(&support::outputs(&events)[0].path)
}

#[tokio::test]
async fn every_memory_option_reaches_sd_cpp_and_its_own_log_shows_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    let mut spec = with_memory(
        &ws,
        serde_json::json!({
            "placement": { "diffusion": "cpu", "text_encoders": "cpu", "vae": "cpu" },
            "vae_tiling": "on", "vae_tile_size": 32, "vae_tile_overlap": 0.25,
            "flash_attn": true, "mmap": true, "cache": "fast"
        }),
        (128, 64),
        4,
    )
    .unwrap();
    // The planner runs for every job: on this CPU-only build every part is on the CPU, the VAE tiled as asked.
    let stages = diffugen_jobs::plan_stages(None, &mut spec, None);
    let Stage::Plan { plan, summary } = &stages[0] else {
        panic!("{stages:?}")
    };
    assert!(
        plan.placement
            .values()
            .all(|p| *p == diffugen_models::Placement::Cpu),
        "{plan:?}"
    );
    assert!(
        plan.vae_tiling && summary.contains("VAE tiled"),
        "{summary}"
    );
    assert_eq!(plan.estimated_vram_peak_bytes, 0.0);

    let image = render(&engine, &ws, "options", &spec).await;
    assert_eq!(
        image.dimensions(),
        (128, 64),
        "tiling keeps the requested size"
    );
    let log = engine.sd_log().join("\n");
    for shown in [
        "UCache enabled",
        "VAE Tile size",
        "Using flash attention",
        "using mmap for",
        "total params memory size",
    ] {
        assert!(log.contains(shown), "sd.cpp's log lacks '{shown}':\n{log}");
    }
}

#[tokio::test]
async fn placing_every_part_on_the_cpu_renders_the_same_pixels_as_the_default_on_a_cpu_build() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    let default = with_memory(&ws, serde_json::json!({}), (64, 64), 2).unwrap();
    let on_cpu = with_memory(
        &ws,
        serde_json::json!({ "placement": { "diffusion": "cpu", "te": "cpu", "vae": "cpu" } }),
        (64, 64),
        2,
    )
    .unwrap();
    assert_eq!(on_cpu.memory.backends().0, "te=cpu,diffusion=cpu,vae=cpu");
    let a = render(&engine, &ws, "default", &default).await;
    let b = render(&engine, &ws, "on-cpu", &on_cpu).await;
    assert!(
        a == b,
        "the same job on the same device gives the same pixels"
    );
}

#[tokio::test]
async fn a_step_cache_preset_changes_the_computation_at_the_same_seed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    let off = with_memory(&ws, serde_json::json!({}), (64, 64), 8).unwrap();
    let faster = with_memory(&ws, serde_json::json!({ "cache": "faster" }), (64, 64), 8).unwrap();
    let a = render(&engine, &ws, "cache-off", &off).await;
    let b = render(&engine, &ws, "cache-faster", &faster).await;
    let log = engine.sd_log().join("\n");
    assert!(
        log.contains("UCache skipped"),
        "sd.cpp reports the steps it reused:\n{log}"
    );
    assert!(a != b, "reused steps change the image");
}

#[test]
fn memory_options_the_model_or_this_build_cannot_use_are_refused_naming_the_field() {
    let ws = Workspace::new();
    let field = |memory: serde_json::Value| -> Vec<(String, String)> {
        with_memory(&ws, memory, (64, 64), 2)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    };
    let errors = field(serde_json::json!({ "placement": { "t5xxl": "cpu" } }));
    assert_eq!(errors[0].0, "memory.placement.t5xxl");
    assert!(errors[0].1.contains("has no t5xxl"), "{errors:?}");
    if !diffugen_engine::memory::GPU_BACKEND {
        let errors = field(serde_json::json!({ "vram_budget_gib": 2.0 }));
        assert_eq!(errors[0].0, "memory.vram_budget_gib");
        let errors = field(serde_json::json!({ "placement": { "diffusion": "offload" } }));
        assert!(errors[0].1.contains("no GPU backend"), "{errors:?}");
    }
    let errors = field(serde_json::json!({ "vae_tile_size": 30, "vae_tile_overlap": 0.9 }));
    let names: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["memory.vae_tile_size", "memory.vae_tile_overlap"]);
    let unknown = serde_json::from_value::<diffugen_models::MemoryOptions>(
        serde_json::json!({ "cache": "turbo" }),
    );
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown variant `turbo`"));
}

/// A queue over `engine` without VRAM orchestration or gallery, with these job defaults.
fn queue_with(
    engine: &Arc<diffugen_engine::Engine>,
    defaults: diffugen_jobs::JobDefaults,
) -> diffugen_jobs::JobManager {
    diffugen_jobs::JobManager::start(
        engine.clone(),
        diffugen_jobs::JobOptions {
            depth: 4,
            orchestrator: None,
            gallery: None,
            defaults,
            store: None,
        },
    )
}

/// `name 123.45MB(...)` in sd.cpp's log line, in bytes.
fn logged_mib(line: &str, name: &str) -> f64 {
    let at = line
        .find(name)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + name.len();
    let number: String = line[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse::<f64>().unwrap() * 1024.0 * 1024.0
}

#[tokio::test]
async fn the_planners_weights_match_what_sd_cpp_allocates_and_its_buffers_never_fall_short() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = engine();
    for side in [64u32, 128] {
        let spec = with_memory(&ws, serde_json::json!({}), (side, side), 2).unwrap();
        render(&engine, &ws, &format!("calibrate-{side}"), &spec).await;
        let log = engine.sd_log();
        let shape = diffugen_models::plan::shape_of(&spec.components, spec.family).unwrap();
        let params = log
            .iter()
            .rev()
            .find(|l| l.contains("total params memory size"))
            .unwrap();
        for (logged, part) in [
            ("text_encoders", diffugen_models::Part::ClipL),
            ("diffusion_model", diffugen_models::Part::Diffusion),
            ("vae", diffugen_models::Part::Vae),
        ] {
            let planned = shape.part(part).map_or(0.0, |p| p.bytes);
            let actual = logged_mib(params, logged);
            assert!(
                (planned / actual - 1.0).abs() < 0.02,
                "{logged}: planned {planned}, sd.cpp {actual}"
            );
        }
        let job = diffugen_models::plan::Job {
            width: side,
            height: side,
            steps: 2,
            cfg: true,
        };
        let (te, unet, vae) = diffugen_models::plan::compute_buffers(&shape, &job, false, false);
        for (runner, planned) in [("clip", te), ("unet", unet), ("taesd", vae)] {
            let line = log
                .iter()
                .rev()
                .find(|l| l.contains(&format!("{runner} compute buffer size")))
                .unwrap_or_else(|| panic!("sd.cpp logged no {runner} buffer"));
            let actual = logged_mib(line, "compute buffer size:");
            assert!(
                planned >= actual,
                "{runner} at {side}: planned {planned}, sd.cpp {actual}"
            );
        }
    }
}

#[tokio::test]
async fn an_idle_model_is_freed_after_the_keep_alive_and_the_next_job_loads_it_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = Arc::new(engine());
    let jobs = queue_with(
        &engine,
        diffugen_jobs::JobDefaults {
            keep_alive: Some(std::time::Duration::from_millis(400)),
            ..Default::default()
        },
    );
    let run = |seed| {
        let jobs = jobs.clone();
        let spec = spec(&ws, seed);
        let out = Destination::Folder(ws.path("out"));
        async move {
            let id = jobs.submit(spec, out, "test").unwrap();
            let mut sub = jobs.subscribe(&id).unwrap();
            let mut events = sub.history;
            while !events.last().is_some_and(|e| e.stage.is_final()) {
                let event = sub.live.recv().await.unwrap();
                if event.job_id == id {
                    events.push(event);
                }
            }
            events
        }
    };
    let first = run(1).await;
    assert!(loads(&first) > 0);
    assert_eq!(
        engine.loaded_model().as_deref(),
        Some("tiny"),
        "resident right after the job"
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while engine.loaded_model().is_some() {
        assert!(Instant::now() < deadline, "the idle model was not freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = engine.current_pid();
    assert!(
        pid.is_some_and(alive),
        "the worker stays; only the model goes"
    );
    let second = run(2).await;
    assert!(loads(&second) > 0, "the next job loads the model again");
}

#[tokio::test]
async fn the_threads_setting_reaches_sd_cpp_for_jobs_that_do_not_ask_for_a_number() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let engine = Arc::new(engine());
    let jobs = queue_with(
        &engine,
        diffugen_jobs::JobDefaults {
            threads: Some(1),
            ..Default::default()
        },
    );
    // As the OpenAI and A1111 routes submit: no thread count of their own.
    let mut spec = spec(&ws, 3);
    spec.threads = None;
    let id = jobs
        .submit(spec, Destination::Folder(ws.path("out")), "test")
        .unwrap();
    let mut sub = jobs.subscribe(&id).unwrap();
    let mut done = sub.history.iter().any(|e| e.stage.is_final());
    while !done {
        let event = sub.live.recv().await.unwrap();
        done = event.job_id == id && event.stage.is_final();
    }
    let log = engine.sd_log().join("\n");
    assert!(log.contains("using 1 threads for model loading"), "{log}");
}

/// Waits until process `pid` is gone (or `seconds` pass); whether it went.
fn gone_within(pid: u32, seconds: f64) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        // A zombie still answers kill(0): reap it if it is ours, and count it as gone (it runs nothing).
        unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !alive(pid) || zombie {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn a_worker_whose_stdin_closes_mid_render_stops_at_once() {
    use std::io::{BufRead, Write};
    let ws = Workspace::new();
    let mut spec = spec(&ws, 4);
    spec.steps = 150;
    let request = diffugen_engine::protocol::ToWorker::Generate {
        job_id: "long".into(),
        spec: Box::new(spec),
    };
    let mut child = std::process::Command::new(support::diffugen_bin())
        .arg(diffugen_engine::WORKER_SUBCOMMAND)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", serde_json::to_string(&request).unwrap()).unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        if line.contains("\"phase\":\"sampling\"") && line.contains("\"step\":2") {
            break;
        }
    }
    let started = Instant::now();
    drop(stdin);
    let gone = gone_within(child.id(), 3.0);
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    assert!(gone, "the worker kept rendering after its stdin closed");
    assert!(seconds < 3.0);
}

#[tokio::test]
async fn a_killed_servers_worker_does_not_outlive_it_and_its_lanes_are_listed() {
    let ws = Workspace::new();
    for lanes in ["0", "17"] {
        let refused = ws.diffugen(&["serve", "--lanes", lanes, "--no-ollama-gateway"]);
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("--lanes must be from 1 to 16"), "{said}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(support::diffugen_bin())
        .args(["--data-dir", ws.data_dir().to_str().unwrap()])
        .args(["serve", "--port", &port.to_string(), "--no-ollama-gateway"])
        .args(["--lanes", "2"])
        .env("DIFFUGEN_VRAM_POLICY", "never")
        .env_remove("DIFFUGEN_MODELS_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .send()
                .await?
                .json::<serde_json::Value>()
                .await
        }
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while get(format!("{base}/health")).await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let job: serde_json::Value = client
        .post(format!("{base}/api/v1/jobs"))
        .json(
            &serde_json::json!({"model": "tiny", "prompt": "a long storm", "width": 64,
                                  "height": 64, "steps": 150, "threads": 2}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    // Either lane may take the job: the queue's state lists both, and the one running it names its worker.
    let worker = loop {
        assert!(Instant::now() < deadline, "the job never started sampling");
        let info = get(format!("{base}/api/v1/jobs/{id}")).await.unwrap();
        let lanes = get(format!("{base}/api/v1/queue/state")).await.unwrap()["lanes"].clone();
        assert_eq!(lanes.as_array().map(Vec::len), Some(2), "{lanes}");
        // A CPU-only build: the default device takes the turns with Ollama, the second lane is a CPU worker.
        assert_eq!(
            lanes[0]["device"],
            serde_json::json!({"kind": "default"}),
            "{lanes}"
        );
        assert_eq!(
            lanes[1]["device"],
            serde_json::json!({"kind": "cpu"}),
            "{lanes}"
        );
        if info["last_event"]["phase"] == "sampling" {
            let lane = &lanes[info["lane"].as_u64().unwrap() as usize];
            assert_eq!(lane["job"], id.as_str(), "{lanes}");
            if let Some(pid) = lane["worker_pid"].as_u64() {
                break pid as u32;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(alive(worker));
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        gone_within(worker, 3.0),
        "the worker kept rendering after its server was killed"
    );
}

#[test]
fn a_worker_started_from_a_runtime_thread_that_ends_keeps_running_its_jobs() {
    // The server starts workers from async runtime threads, which come and go (a blocking-pool thread ends when it
    // has been idle for its keep-alive). A worker must not die with the thread that started it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(std::time::Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _serial = ONE_AT_A_TIME.lock().await;
        let ws = Workspace::new();
        let engine = Arc::new(engine());
        let dest = Destination::Folder(ws.path("out"));
        let (first_engine, first_spec, first_dest) = (engine.clone(), spec(&ws, 1), dest.clone());
        let first = tokio::task::spawn_blocking(move || {
            tokio::runtime::Handle::current().block_on(diffugen_engine::job::run(
                &first_engine,
                "a",
                &first_spec,
                &first_dest,
                Instant::now(),
                &mut |_| {},
            ))
        })
        .await
        .unwrap()
        .unwrap();
        // The pool thread that started the worker has ended by now.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            alive(first.worker_pid),
            "the worker outlives the thread that started it"
        );
        let second = diffugen_engine::job::run(
            &engine,
            "b",
            &spec(&ws, 2),
            &dest,
            Instant::now(),
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(second.worker_pid, first.worker_pid);
        assert!(second.model_was_resident);
        engine.stop().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lanes_render_side_by_side_and_a_job_goes_to_the_lane_that_holds_its_model() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    // The same weights under a second name: a second model as the lanes see it.
    std::os::unix::fs::symlink(
        diffugen_testkit::test_model(),
        ws.models_dir().join("other.gguf"),
    )
    .unwrap();
    let jobs = diffugen_jobs::JobManager::start_lanes(
        vec![Arc::new(engine()), Arc::new(engine())],
        diffugen_jobs::JobOptions {
            depth: 8,
            orchestrator: None,
            gallery: None,
            defaults: Default::default(),
            store: None,
        },
    );
    let out = || Destination::Folder(ws.path("out"));
    let mut all = jobs.watch();
    // Follows every job of `ids` to its end; answers when each one's sampling started and ended, in order of `ids`.
    async fn follow(
        all: &mut tokio::sync::broadcast::Receiver<JobEvent>,
        ids: &[&String],
    ) -> Vec<(Option<f64>, Option<f64>)> {
        let start = Instant::now();
        let mut spans = vec![(None::<f64>, None::<f64>); ids.len()];
        while spans.iter().any(|(_, end)| end.is_none()) {
            let event = tokio::time::timeout(std::time::Duration::from_secs(120), all.recv())
                .await
                .expect("the jobs end within 120 s")
                .unwrap();
            let Some(i) = ids.iter().position(|id| **id == event.job_id) else {
                continue;
            };
            let now = start.elapsed().as_secs_f64();
            match &event.stage {
                Stage::Sampling { .. } => {
                    spans[i].0.get_or_insert(now);
                }
                Stage::Done { .. } => spans[i].1 = Some(now),
                other if other.is_final() => panic!("job {} ended: {other:?}", ids[i]),
                _ => {}
            }
        }
        spans
    }

    // Two long jobs at once: each lane takes one, and both sample at the same time.
    let long = |model: &str, seed| {
        let mut spec = spec_of(&ws, model, seed);
        spec.steps = 12;
        spec
    };
    let a = jobs.submit(long("tiny", 1), out(), "test").unwrap();
    let b = jobs.submit(long("tiny", 2), out(), "test").unwrap();
    let spans = follow(&mut all, &[&a, &b]).await;
    let (a_start, a_end) = (spans[0].0.unwrap(), spans[0].1.unwrap());
    let (b_start, b_end) = (spans[1].0.unwrap(), spans[1].1.unwrap());
    assert!(
        a_start < b_end && b_start < a_end,
        "the two jobs sample side by side: {spans:?}"
    );
    let lanes: Vec<Option<u32>> = [&a, &b]
        .iter()
        .map(|id| jobs.get(id).unwrap().lane)
        .collect();
    assert!(
        lanes.contains(&Some(0)) && lanes.contains(&Some(1)),
        "{lanes:?}"
    );

    // One lane now holds `other`, the other `tiny`. With both waiting, each job goes to the lane holding its model.
    let c = jobs
        .submit(spec_of(&ws, "other", 3), out(), "test")
        .unwrap();
    follow(&mut all, &[&c]).await;
    jobs.until_idle().await;
    let other_lane = jobs.get(&c).unwrap().lane.unwrap();
    let held: Vec<Option<String>> = jobs.lanes().into_iter().map(|l| l.model).collect();
    assert_eq!(
        held[other_lane as usize].as_deref(),
        Some("other"),
        "{held:?}"
    );
    assert_eq!(
        held[1 - other_lane as usize].as_deref(),
        Some("tiny"),
        "{held:?}"
    );
    jobs.pause();
    let d = jobs.submit(spec_of(&ws, "tiny", 4), out(), "test").unwrap();
    let e = jobs
        .submit(spec_of(&ws, "other", 5), out(), "test")
        .unwrap();
    assert_eq!(jobs.get(&e).unwrap().position, Some(1));
    jobs.resume();
    follow(&mut all, &[&d, &e]).await;
    assert_eq!(
        jobs.get(&e).unwrap().lane,
        Some(other_lane),
        "the lane holding `other` runs it"
    );
    assert_eq!(
        jobs.get(&d).unwrap().lane,
        Some(1 - other_lane),
        "the lane holding `tiny` runs it"
    );
    jobs.until_idle().await;
    assert!(jobs.lanes().iter().all(|l| l.job.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_says_when_it_should_start_once_its_model_has_run_here() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let jobs = queue_with(&Arc::new(engine()), Default::default());
    let out = || Destination::Folder(ws.path("out"));
    // While the queue is paused no waiting job says when it starts.
    jobs.pause();
    let a = jobs.submit(spec(&ws, 1), out(), "test").unwrap();
    let b = jobs.submit(spec(&ws, 2), out(), "test").unwrap();
    assert_eq!(
        jobs.get(&a).unwrap().starts_in,
        None,
        "paused: nothing starts"
    );
    jobs.resume();
    jobs.until_idle().await;
    // Measured now: with the lane busy on one job, the next waits about as long as that job takes.
    jobs.pause();
    let c = jobs.submit(spec(&ws, 3), out(), "test").unwrap();
    let d = jobs.submit(spec(&ws, 4), out(), "test").unwrap();
    let took = jobs.engine().predict_seconds(&spec(&ws, 3), true).unwrap();
    jobs.resume();
    let waiting = jobs.queue();
    let starts: Vec<Option<f64>> = waiting
        .iter()
        .filter(|j| (j.id == c || j.id == d) && j.state == diffugen_jobs::JobState::Queued)
        .map(|j| j.starts_in)
        .collect();
    match starts.as_slice() {
        // Both still waiting: c now, d after c.
        [Some(first), Some(second)] => {
            assert!(*first < 0.5, "{starts:?}");
            assert!(
                (second - first - took).abs() < 0.5,
                "{starts:?}, a job takes {took} s"
            );
        }
        // The lane took c already (before its first ETA, its prediction stands in): d starts when c ends,
        // within one job's time.
        [Some(second)] => assert!(*second <= took + 0.5, "{starts:?}, a job takes {took} s"),
        other => panic!("{other:?}"),
    }
    jobs.until_idle().await;
    assert!(
        jobs.get(&b).unwrap().starts_in.is_none(),
        "an ended job has no start"
    );
}
