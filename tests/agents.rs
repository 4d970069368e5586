//! The doors for agents and operators: MCP over streamable HTTP (`/mcp`) and stdio (`diffugen mcp`) driven by the
//! official Rust SDK's client with real generations on the test model, the prompt assistant against the fake
//! Ollama (its turn on the GPU comes before the render), and `/metrics` read by a Prometheus text parser.

#[path = "support/fake_ollama.rs"]
mod fake_ollama;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use diffugen_engine::{Destination, GenerateRequest, Stage};
use diffugen_jobs::{JobState, Outcome};
use diffugen_vram::{Policy, VramConfig};
use fake_ollama::{FakeOllama, Happening};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ContentBlock, ProgressNotificationParam,
    Request, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};
use support::{Workspace, ONE_AT_A_TIME};

const QWEN: &str = "qwen2.5:7b";
/// A vision model, for the critique.
const LLAVA: &str = "llava:7b";

/// The runtime as `diffugen serve` starts it (gallery, orchestrator, metrics), over a fake Ollama with Qwen
/// resident and its simulated GPU, with the HTTP API on a free loopback port.
struct Service {
    runtime: diffugen_runtime::Runtime,
    doors: diffugen_server::Doors,
    fake: FakeOllama,
    base: String,
}

impl Service {
    async fn start(ws: &Workspace, policy: Policy, api_key: Option<&str>) -> Service {
        Service::with(ws, policy, api_key, |flags| flags).await
    }

    async fn with(
        ws: &Workspace,
        policy: Policy,
        api_key: Option<&str>,
        flags: impl FnOnce(diffugen_runtime::Flags) -> diffugen_runtime::Flags,
    ) -> Service {
        let fake = FakeOllama::start(&[(QWEN, 4.7), (LLAVA, 4.4)]).await;
        fake.preload(QWEN, -1);
        Service::over(ws, fake, policy, api_key, flags).await
    }

    async fn over(
        ws: &Workspace,
        fake: FakeOllama,
        policy: Policy,
        api_key: Option<&str>,
        flags: impl FnOnce(diffugen_runtime::Flags) -> diffugen_runtime::Flags,
    ) -> Service {
        let flags = flags(
            diffugen_runtime::Flags::new()
                .set(
                    "data_dir",
                    "--data-dir",
                    ws.data_dir().display().to_string(),
                )
                .set("ollama_url", "--ollama-url", fake.url())
                .set("threads", "--threads", "2"),
        );
        let runtime = diffugen_runtime::Runtime::start(diffugen_runtime::StartOptions {
            config: diffugen_runtime::Config::isolated(flags).unwrap(),
            worker: diffugen_engine::WorkerCommand {
                program: support::diffugen_bin(),
                args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
            },
            gpu: Arc::new(fake.clone()),
            queue_depth: 8,
            vram: Some(VramConfig {
                policy,
                unload_timeout: Duration::from_secs(10),
                ..VramConfig::default()
            }),
            durable_queue: false,
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
                    api_key: api_key.map(String::from),
                    default_model: Some("tiny".into()),
                    ..Default::default()
                },
                api_addr: Some("127.0.0.1:0".parse().unwrap()),
                gateway_addr: None,
            },
        )
        .await
        .unwrap();
        let base = format!("http://{}", doors.api.as_ref().unwrap().addr);
        Service {
            runtime,
            doors,
            fake,
            base,
        }
    }

    async fn stop(self) {
        let _ = self.doors.close().await;
        self.runtime.shutdown().await;
    }
}

/// An MCP client that keeps every progress notification it receives.
#[derive(Clone, Default)]
struct Agent {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Agent {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

async fn connect_http(base: &str, key: Option<&str>) -> RunningService<RoleClient, Agent> {
    let mut config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{base}/mcp"),
        );
    if let Some(key) = key {
        config = config.auth_header(key);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    Agent::default()
        .serve(transport)
        .await
        .expect("the MCP session opens")
}

fn call(name: &'static str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name).with_arguments(arguments.as_object().unwrap().clone())
}

/// Calls a tool with a progress token (as agents that show progress do) and waits for its result.
async fn call_tool(
    client: &RunningService<RoleClient, Agent>,
    name: &'static str,
    arguments: Value,
) -> CallToolResult {
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(call(name, arguments))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(180), handle.await_response())
        .await
        .expect("the tool answers")
        .unwrap()
    {
        ServerResult::CallToolResult(result) => result,
        other => panic!("not a tool result: {other:?}"),
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pngs_of(result: &CallToolResult) -> Vec<image::RgbImage> {
    result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Image(i) => {
                assert_eq!(i.mime_type, "image/png");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&i.data)
                    .unwrap();
                Some(image::load_from_memory(&bytes).unwrap().to_rgb8())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_agent_lists_the_tools_and_renders_over_mcp_http_with_progress_and_the_parameters_used()
{
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_upscalers();
    let service = Service::start(&ws, Policy::Never, Some("sekrit")).await;

    // The key guards /mcp like every route.
    let refused = reqwest::Client::new()
        .post(format!("{}/mcp", service.base))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let client = connect_http(&service.base, Some("sekrit")).await;
    let info = client.peer_info().expect("the server introduced itself");
    assert_eq!(info.server_info.as_ref().unwrap().name, "diffugen");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for tool in [
        "generate_image",
        "generate_stable_diffusion_image",
        "generate_flux_image",
        "edit_image",
        "upscale_image",
        "list_models",
        "search_gallery",
        "get_job",
        "cancel_job",
    ] {
        assert!(
            tools.contains(&tool.to_string()),
            "{tool} missing from {tools:?}"
        );
    }

    let models = call_tool(&client, "list_models", json!({})).await;
    assert_eq!(
        models.structured_content.as_ref().unwrap()["models"][0]["id"],
        "tiny"
    );

    let result = call_tool(
        &client,
        "generate_image",
        json!({"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 3, "seed": 42, "count": 2}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let images = pngs_of(&result);
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].dimensions(), (64, 64));
    let record = result.structured_content.clone().unwrap();
    assert_eq!(record["seeds"], json!([42, 43]));
    assert_eq!(record["model"], "tiny");
    assert_eq!(record["parameters"]["steps"], 3);
    assert_eq!(record["parameters"]["prompt"], "a lighthouse at dusk");
    let gallery_id = record["images"][0]["gallery_id"]
        .as_u64()
        .expect("a gallery id");
    let job_id = record["job_id"].as_str().unwrap().to_string();
    // The queue shows where the job came from.
    assert_eq!(service.runtime.jobs().get(&job_id).unwrap().source, "mcp");

    // One progress notification per sampling step at least, rising, each naming the job.
    let progress = client.service().progress.lock().unwrap().clone();
    let steps: Vec<&ProgressNotificationParam> = progress
        .iter()
        .filter(|p| p.message.as_deref().is_some_and(|m| m.contains("sampling")))
        .collect();
    assert!(steps.len() >= 6, "{progress:?}");
    assert!(
        progress.windows(2).all(|w| w[1].progress > w[0].progress),
        "{progress:?}"
    );
    assert!(progress.iter().all(|p| p.total == Some(100.0)));
    assert!(progress[0].message.as_deref().unwrap().starts_with(&job_id));

    // The image found again, then edited by its gallery id.
    let found = call_tool(
        &client,
        "search_gallery",
        json!({"query": "lighthouse", "limit": 5}),
    )
    .await;
    let entries = found.structured_content.as_ref().unwrap()["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(entries.len(), 2, "{found:?}");
    assert!(entries.iter().any(|e| e["id"] == gallery_id));
    assert!(found
        .content
        .iter()
        .any(|c| matches!(c, ContentBlock::Image(i) if i.mime_type == "image/jpeg")));
    let edited = call_tool(
        &client,
        "edit_image",
        json!({"gallery_id": gallery_id, "prompt": "a lighthouse in a storm", "strength": 0.5, "steps": 2,
               "width": 64, "height": 64}),
    )
    .await;
    assert_ne!(edited.is_error, Some(true), "{}", text_of(&edited));
    assert_eq!(pngs_of(&edited)[0].dimensions(), (64, 64));
    let source = edited.structured_content.as_ref().unwrap()["parameters"]["strength"].as_f64();
    assert_eq!(source, Some(0.5));

    // Enlarged with the test ESRGAN (x2), from the gallery.
    let upscaled = call_tool(
        &client,
        "upscale_image",
        json!({"gallery_id": gallery_id, "upscaler": "tiny-esrgan-x2"}),
    )
    .await;
    assert_ne!(upscaled.is_error, Some(true), "{}", text_of(&upscaled));
    assert_eq!(pngs_of(&upscaled)[0].dimensions(), (128, 128));

    let job = call_tool(&client, "get_job", json!({"job_id": job_id})).await;
    assert_eq!(job.structured_content.as_ref().unwrap()["state"], "done");

    client.cancel().await.unwrap();
    service.stop().await;
}

#[tokio::test]
async fn bad_tool_arguments_are_refused_naming_the_field() {
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Never, None).await;
    let client = connect_http(&service.base, None).await;
    for (tool, arguments, field) in [
        (
            "generate_image",
            json!({"prompt": "x", "width": 70}),
            "width",
        ),
        ("generate_image", json!({"prompt": "  "}), "prompt"),
        (
            "generate_image",
            json!({"prompt": "x", "model": "nope"}),
            "model",
        ),
        (
            "generate_image",
            json!({"prompt": "x", "output_dir": "/tmp"}),
            "output_dir",
        ),
        (
            "generate_image",
            json!({"prompt": "x", "enhance_model": "qwen"}),
            "enhance_model",
        ),
        ("generate_flux_image", json!({"prompt": "x"}), "model"),
        ("edit_image", json!({"prompt": "x"}), "image"),
        (
            "edit_image",
            json!({"prompt": "x", "image": "not base64!"}),
            "image",
        ),
        ("search_gallery", json!({"limit": 500}), "limit"),
        ("get_job", json!({"job_id": "nope"}), "nope"),
        // An argument no tool takes is named, never silently dropped.
        (
            "generate_image",
            json!({"prompt": "x", "style": "vivid"}),
            "style",
        ),
    ] {
        let result = call_tool(&client, tool, arguments.clone()).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} {arguments}: {result:?}"
        );
        let text = text_of(&result);
        assert!(text.contains(field), "{tool} {arguments}: {text}");
    }
    // Nothing reached the queue.
    assert!(service.runtime.jobs().history().is_empty());
    client.cancel().await.unwrap();
    service.stop().await;
}

#[tokio::test]
async fn cancelling_the_tool_call_cancels_the_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Never, None).await;
    let client = connect_http(&service.base, None).await;
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(call(
                "generate_image",
                json!({"prompt": "a long render", "width": 128, "height": 128, "steps": 150}),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    // Cancelled once sampling is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client.service().progress.lock().unwrap().iter().any(|p| {
        p.message
            .as_deref()
            .is_some_and(|m| m.contains("sampling 2/"))
    }) {
        assert!(Instant::now() < deadline, "sampling never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled_at = Instant::now();
    handle
        .cancel(Some("the user changed their mind".into()))
        .await
        .unwrap();
    let jobs = service.runtime.jobs().clone();
    let job = loop {
        let history = jobs.history();
        if let Some(job) = history.into_iter().find(|j| j.source == "mcp") {
            break job;
        }
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(30),
            "the job went on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.state, JobState::Cancelled);
    assert!(cancelled_at.elapsed() < Duration::from_secs(10));
    client.cancel().await.unwrap();
    service.stop().await;
}

#[tokio::test]
async fn diffugen_mcp_serves_the_tools_over_stdio_with_a_real_render() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let mut command = tokio::process::Command::new(support::diffugen_bin());
    command
        .arg("--data-dir")
        .arg(ws.data_dir())
        .args(["mcp", "--default-model", "tiny"])
        .env_remove("DIFFUGEN_MODELS_DIR")
        .env_remove("OLLAMA_HOST")
        .env("DIFFUGEN_VRAM_POLICY", "never");
    let client = Agent::default()
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .expect("the stdio session opens");
    let result = call_tool(
        &client,
        "generate_stable_diffusion_image",
        json!({"prompt": "a red apple", "width": 64, "height": 64, "steps": 2, "seed": 7, "sampling_method": "euler"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(pngs_of(&result).len(), 1);
    let record = result.structured_content.unwrap();
    assert_eq!(record["seeds"], json!([7]));
    assert_eq!(record["parameters"]["sampler"], "euler");
    assert!(!client.service().progress.lock().unwrap().is_empty());
    // The image is in the shared gallery, where the app finds it.
    let gallery = diffugen_gallery::Gallery::open(ws.data_dir()).unwrap();
    let page = gallery.list(&diffugen_gallery::Query::default()).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].prompt, "a red apple");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn diffugen_mcp_with_server_relays_to_the_running_queue() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Never, Some("sekrit")).await;
    let other = Workspace::new();
    let mut command = tokio::process::Command::new(support::diffugen_bin());
    command.arg("--data-dir").arg(other.data_dir()).args([
        "mcp",
        "--server",
        &service.base,
        "--api-key",
        "sekrit",
    ]);
    let client = Agent::default()
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .expect("the relayed session opens");
    let result = call_tool(
        &client,
        "generate_image",
        json!({"prompt": "a blue boat", "width": 64, "height": 64, "steps": 2}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(pngs_of(&result).len(), 1);
    // Progress came through the relay, and the job ran in the server's queue.
    assert!(!client.service().progress.lock().unwrap().is_empty());
    let job_id = result.structured_content.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(service.runtime.jobs().get(&job_id).unwrap().source, "mcp");
    client.cancel().await.unwrap();
    service.stop().await;
}

/// A job through the native API's path, with the assistant asked for.
fn enhanced(ws: &Workspace, prompt: &str, seed: i64) -> (diffugen_engine::JobSpec, Destination) {
    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: prompt.into(),
        width: Some(64),
        height: Some(64),
        steps: Some(2),
        seed: Some(seed),
        enhance_prompt: Some(true),
        ..GenerateRequest::default()
    };
    let spec = diffugen_engine::validate(&request, &diffugen_models::Library::new(ws.models_dir()))
        .unwrap();
    (spec, Destination::Folder(ws.path("outputs")))
}

#[tokio::test]
async fn an_enhanced_job_asks_the_llm_before_unloading_it_and_renders_the_rewrite() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Always, None).await;
    let jobs = service.runtime.jobs().clone();
    let (spec, destination) = enhanced(&ws, "a cat", 1);
    let id = jobs.submit(spec, destination, "test").unwrap();
    let events = {
        let sub = jobs.subscribe(&id).unwrap();
        let mut events: Vec<(Instant, diffugen_engine::JobEvent)> = sub
            .history
            .into_iter()
            .map(|e| (Instant::now(), e))
            .collect();
        let mut live = sub.live;
        while !events.last().is_some_and(|(_, e)| e.stage.is_final()) {
            let event = tokio::time::timeout(Duration::from_secs(120), live.recv())
                .await
                .unwrap()
                .unwrap();
            events.push((Instant::now(), event));
        }
        events
    };
    let Some((_, last)) = events.last() else {
        unreachable!()
    };
    assert!(matches!(last.stage, Stage::Done { .. }), "{:?}", last.stage);
    let chat_done = service
        .fake
        .when(&Happening::ChatFinished(QWEN.into()))
        .expect("the LLM was asked");
    let unload = service
        .fake
        .when(&Happening::UnloadRequested(QWEN.into()))
        .expect("the LLM was unloaded for the render");
    let first_step = events
        .iter()
        .find(|(_, e)| matches!(e.stage, Stage::Sampling { step: 1, .. }))
        .map(|(at, _)| *at)
        .expect("a first step");
    assert!(chat_done < unload, "chat, then unload");
    assert!(unload < first_step, "unload, then the first step");
    // The rewrite renders, the original is kept, and the events say both.
    let rewritten = events.iter().find_map(|(_, e)| match &e.stage {
        Stage::PromptEnhanced {
            original,
            prompt,
            model,
        } => Some((original.clone(), prompt.clone(), model.clone())),
        _ => None,
    });
    assert_eq!(
        rewritten,
        Some((
            "a cat".to_string(),
            "enhanced: a cat".to_string(),
            QWEN.to_string()
        ))
    );
    let outputs = support::outputs(&events.into_iter().map(|(_, e)| e).collect::<Vec<_>>());
    let text = std::fs::read(&outputs[0].path).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("\"original_prompt\":\"a cat\""),
        "the PNG record keeps the original"
    );
    assert!(text.contains("enhanced: a cat"));
    // The system prompt asked for tags (the test model is SD 1.x-shaped).
    let chats = service.fake.chats();
    assert_eq!(chats.len(), 1);
    assert!(
        chats[0].1.contains("comma-separated tags"),
        "{}",
        chats[0].1
    );
    // ...and the LLM comes back after the queue drains.
    let deadline = Instant::now() + Duration::from_secs(20);
    while service
        .fake
        .count(|h| matches!(h, Happening::Loaded { model, .. } if model == QWEN))
        < 1
    {
        assert!(Instant::now() < deadline, "the LLM was not restored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.stop().await;
}

#[tokio::test]
async fn three_queued_enhanced_jobs_are_rewritten_in_one_llm_turn_and_one_switch() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Always, None).await;
    let jobs = service.runtime.jobs().clone();
    // Paused so the three wait together, as when they arrive during another render.
    jobs.pause();
    let ids: Vec<String> = ["a cat", "a dog", "a fox"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (spec, destination) = enhanced(&ws, p, i as i64);
            jobs.submit(spec, destination, "test").unwrap()
        })
        .collect();
    jobs.resume();
    for id in &ids {
        let outcome = tokio::time::timeout(Duration::from_secs(120), jobs.wait(id))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    }
    let timeline = service.fake.timeline();
    let chats: Vec<Instant> = timeline
        .iter()
        .filter(|(_, h)| matches!(h, Happening::ChatFinished(_)))
        .map(|(at, _)| *at)
        .collect();
    let unloads: Vec<Instant> = timeline
        .iter()
        .filter(|(_, h)| matches!(h, Happening::UnloadRequested(_)))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(chats.len(), 3, "{timeline:?}");
    assert_eq!(
        unloads.len(),
        1,
        "one switch to diffusion for the three: {timeline:?}"
    );
    assert!(
        chats.iter().all(|c| *c < unloads[0]),
        "every rewrite before the switch"
    );
    for (id, prompt) in ids.iter().zip(["a cat", "a dog", "a fox"]) {
        assert_eq!(jobs.get(id).unwrap().prompt, format!("enhanced: {prompt}"));
    }
    service.stop().await;
}

#[tokio::test]
async fn without_ollama_an_enhanced_job_fails_with_an_error_naming_enhance_prompt() {
    let ws = Workspace::new();
    // Ollama's address answers nothing.
    let service = Service::with(&ws, Policy::Auto, None, |flags| {
        flags.set("ollama_url", "--ollama-url", "http://127.0.0.1:9")
    })
    .await;
    let events = render_native(
        &service,
        json!({"model": "tiny", "prompt": "a cat", "width": 64, "height": 64, "steps": 2, "enhance_prompt": true}),
    )
    .await;
    let Some(Stage::Failed { error, .. }) = events.last().map(|e| &e.stage) else {
        panic!("{events:?}")
    };
    assert!(error.starts_with("enhance_prompt:"), "{error}");
    assert!(
        error.contains("Ollama is not reachable at http://127.0.0.1:9"),
        "{error}"
    );
    service.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_ran() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Always, Some("sekrit")).await;
    let client = reqwest::Client::new();
    // Behind the key.
    let refused = client
        .get(format!("{}/metrics", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    for seed in [1, 2] {
        let reply: Value = json_of(client
            .post(format!("{}/v1/images/generations", service.base))
            .bearer_auth("sekrit")
            .json(&json!({"prompt": "a lighthouse", "model": "tiny", "size": "64x64", "steps": 3, "seed": seed, "n": 2}))).await;
        assert_eq!(reply["data"].as_array().map(Vec::len), Some(2), "{reply}");
    }
    let failed: Value = json_of(client
        .post(format!("{}/api/v1/jobs", service.base))
        .bearer_auth("sekrit")
        .header("x-diffugen-source", "cli")
        .json(&json!({"model": "tiny", "prompt": "a long one", "width": 64, "height": 64, "steps": 150}))).await;
    let id = failed["id"].as_str().unwrap().to_string();
    // Cancelled while it renders, so its wait and its time count too.
    let mut live = service.runtime.jobs().subscribe(&id).unwrap().live;
    while !matches!(
        live.recv().await.unwrap().stage,
        Stage::Sampling { step: 2, .. }
    ) {}
    service.runtime.jobs().cancel(&id, "test").unwrap();
    service.runtime.jobs().wait(&id).await.unwrap();
    // The LLM comes back after the queue drains: the restore is counted too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !service.fake.loaded().contains(&QWEN.to_string()) {
        assert!(Instant::now() < deadline, "the LLM was not restored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reply = client
        .get(format!("{}/metrics", service.base))
        .bearer_auth("sekrit")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = reply.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count)
                }
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value(
            "diffugen_jobs_total",
            &[("status", "done"), ("source", "openai")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            "diffugen_jobs_total",
            &[("status", "cancelled"), ("source", "cli")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value("diffugen_images_generated_total", &[("model", "tiny")]),
        4.0,
        "{text}"
    );
    assert_eq!(value("diffugen_jobs_queued", &[]), 0.0);
    assert_eq!(value("diffugen_jobs_running", &[]), 0.0);
    // Two renders of three steps, two images each: the steps after the first of each image are timed.
    assert!(
        value("diffugen_sampling_step_seconds_count", &[]) >= 8.0,
        "{text}"
    );
    assert_eq!(
        value("diffugen_job_duration_seconds_count", &[]),
        3.0,
        "{text}"
    );
    assert_eq!(
        value("diffugen_queue_wait_seconds_count", &[]),
        3.0,
        "{text}"
    );
    assert!(
        value("diffugen_model_load_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        value("diffugen_llm_unload_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        value("diffugen_llm_restore_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(value("diffugen_vram_switches_total", &[]) >= 2.0, "{text}");
    assert!(
        value(
            "diffugen_vram_used_bytes",
            &[("gpu", "0"), ("owner", "llm")]
        ) > 4e9,
        "{text}"
    );
    assert!(text.contains("diffugen_build_info{"), "{text}");
    // Every series the Grafana dashboard in docs/ queries is one this scrape has.
    let dashboard = include_str!("../docs/grafana-dashboard.json");
    let queried: std::collections::BTreeSet<&str> = dashboard
        .match_indices("diffugen_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| *name != "diffugen_")
        .collect();
    assert!(queried.len() >= 12, "{queried:?}");
    for name in queried {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "the dashboard queries {name}, which /metrics does not serve"
        );
    }
    assert!(
        text.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    service.stop().await;
}

#[tokio::test]
async fn the_enhance_endpoint_offers_rewrites_in_the_families_style_and_names_bad_fields() {
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Auto, None).await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        client
            .post(format!("{}/api/v1/prompt/enhance", service.base))
            .json(&body)
            .send()
    };
    let reply = post(json!({"prompt": "a cat", "model": "tiny", "count": 3}))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    // The LLM Ollama has in memory writes them (no assistant_model is set).
    assert_eq!(body["model"], QWEN);
    assert_eq!(body["prompts"].as_array().unwrap().len(), 3);
    assert_eq!(body["prompts"][0], "enhanced: a cat");
    let chats = service.fake.chats();
    assert_eq!(chats.len(), 3);
    assert!(chats[0].1.contains("comma-separated tags"));
    assert!(
        chats[1].2.contains("take 2"),
        "each take asks for a different one: {}",
        chats[1].2
    );

    for (body, field) in [
        (json!({"prompt": " ", "model": "tiny"}), "prompt"),
        (
            json!({"prompt": "a cat", "model": "tiny", "count": 9}),
            "count",
        ),
        (json!({"prompt": "a cat", "model": "nope"}), "model"),
        (
            json!({"prompt": "a cat", "model": "tiny", "enhance_model": "missing:1b"}),
            "enhance_model",
        ),
        (
            json!({"prompt": "a cat", "model": "tiny", "style": "vivid"}),
            "style",
        ),
    ] {
        let reply = post(body.clone()).await.unwrap();
        assert_eq!(reply.status(), 400, "{body}");
        let error: Value = reply.json().await.unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    service.stop().await;

    let service = Service::with(&ws, Policy::Auto, None, |flags| {
        flags.set("ollama_url", "--ollama-url", "http://127.0.0.1:9")
    })
    .await;
    let reply = reqwest::Client::new()
        .post(format!("{}/api/v1/prompt/enhance", service.base))
        .json(&json!({"prompt": "a cat", "model": "tiny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);
    let error: Value = reply.json().await.unwrap();
    assert_eq!(error["error"]["param"], "enhance_prompt");
    assert_eq!(error["error"]["code"], "assistant_unavailable");
    service.stop().await;
}

#[tokio::test]
async fn diffugen_generate_enhance_renders_the_rewrite_and_keeps_the_original_in_the_png() {
    let ws = Workspace::new();
    let fake = FakeOllama::start(&[(QWEN, 4.7)]).await;
    fake.preload(QWEN, -1);
    let url = fake.url();
    // The CLI runs while the fake answers on this test's runtime.
    let (events, output, _ws) = tokio::task::spawn_blocking(move || {
        let (events, output) = ws.generate_json(&[
            "--prompt",
            "a lighthouse",
            "--enhance",
            "--ollama-url",
            &url,
            "--vram-policy",
            "always",
        ]);
        (events, output, ws)
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    let asked = events
        .iter()
        .position(|e| matches!(e.stage, Stage::EnhancingPrompt { .. }));
    let rewritten = events
        .iter()
        .position(|e| matches!(e.stage, Stage::PromptEnhanced { .. }));
    let sampling = events
        .iter()
        .position(|e| matches!(e.stage, Stage::Sampling { .. }));
    assert!(asked < rewritten && rewritten < sampling, "{events:?}");
    let outputs = support::outputs(&events);
    let png = String::from_utf8_lossy(&std::fs::read(&outputs[0].path).unwrap()).into_owned();
    assert!(
        png.contains("\"prompt\":\"enhanced: a lighthouse\""),
        "the rewrite is what rendered"
    );
    assert!(png.contains("\"original_prompt\":\"a lighthouse\""));
    assert!(
        fake.when(&Happening::UnloadRequested(QWEN.into())).unwrap()
            > fake.when(&Happening::ChatFinished(QWEN.into())).unwrap()
    );

    // Without a model to name or one in memory, the error names what to do.
    let ws = Workspace::new();
    let empty = FakeOllama::start(&[]).await;
    let url = empty.url();
    let output = tokio::task::spawn_blocking(move || {
        ws.diffugen(&[
            "generate",
            "--model",
            "tiny",
            "-p",
            "a cat",
            "--enhance",
            "--ollama-url",
            &url,
        ])
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = support::stderr(&output);
    assert!(
        stderr.contains("enhance_prompt: no assistant model"),
        "{stderr}"
    );
    assert!(
        stderr.contains("enhance_model") && stderr.contains("assistant_model"),
        "{stderr}"
    );
}

/// Sends a request and reads its JSON answer.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Submits a small job through the native API and follows it to its end; returns its events.
async fn render_native(service: &Service, body: Value) -> Vec<diffugen_engine::JobEvent> {
    let reply: Value = json_of(
        reqwest::Client::new()
            .post(format!("{}/api/v1/jobs", service.base))
            .json(&body),
    )
    .await;
    let id = reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string();
    let sub = service.runtime.jobs().subscribe(&id).unwrap();
    let mut events = sub.history;
    let mut live = sub.live;
    while !events.last().is_some_and(|e| e.stage.is_final()) {
        let event = tokio::time::timeout(Duration::from_secs(120), live.recv())
            .await
            .unwrap()
            .unwrap();
        events.push(event);
    }
    events
}

#[tokio::test]
async fn a_low_critique_score_renders_one_more_take_and_the_better_take_is_the_result() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Always, None).await;
    service.fake.set_scores(&[3.0, 8.0]);
    let events = render_native(
        &service,
        json!({"model": "tiny", "prompt": "two red apples", "width": 64, "height": 64, "steps": 2, "seed": 10,
               "critique": true, "critique_model": LLAVA}),
    )
    .await;
    let phases: Vec<&str> = events
        .iter()
        .map(|e| e.stage.name())
        .filter(|p| matches!(*p, "sampling" | "critique" | "done"))
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut seen, p| {
            if seen.last() != Some(&p) {
                seen.push(p);
            }
            seen
        });
    assert_eq!(
        phases,
        ["sampling", "critique", "sampling", "critique", "done"],
        "{events:?}"
    );
    let verdicts: Vec<(u32, f64, bool)> = events
        .iter()
        .filter_map(|e| match &e.stage {
            Stage::Critique {
                attempt,
                score,
                retry,
                model,
                ..
            } => {
                assert_eq!(model, LLAVA);
                Some((*attempt, *score, *retry))
            }
            _ => None,
        })
        .collect();
    assert_eq!(verdicts, [(1, 3.0, true), (2, 8.0, false)]);
    // The second take (the next seed) scored better: it is the result; both are in the gallery.
    let outputs = support::outputs(&events);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].seed, 11);
    let gallery = service.runtime.gallery().unwrap();
    let page = gallery.list(&diffugen_gallery::Query::default()).unwrap();
    let mut seeds: Vec<i64> = page.entries.iter().filter_map(|e| e.seed).collect();
    seeds.sort();
    assert_eq!(seeds, [10, 11]);
    // The critic saw the prompt.
    let asked = service.fake.chats();
    assert!(asked
        .iter()
        .all(|(m, _, user)| m == LLAVA && user.contains("two red apples")));

    // A take that passes is the result at once.
    service.fake.set_scores(&[9.0]);
    let events = render_native(
        &service,
        json!({"model": "tiny", "prompt": "a pear", "width": 64, "height": 64, "steps": 2, "seed": 5,
               "critique": true, "critique_model": LLAVA}),
    )
    .await;
    let verdicts = events
        .iter()
        .filter(|e| e.stage.name() == "critique")
        .count();
    assert_eq!(verdicts, 1);
    assert_eq!(support::outputs(&events)[0].seed, 5);
    service.stop().await;
}

#[tokio::test]
async fn a_critique_without_a_vision_model_warns_by_name_and_delivers_the_images() {
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Never, None).await;
    let events = render_native(
        &service,
        json!({"model": "tiny", "prompt": "a pear", "width": 64, "height": 64, "steps": 2, "critique": true}),
    )
    .await;
    let warning = events.iter().find_map(|e| match &e.stage {
        Stage::Warning { message } => Some(message.clone()),
        _ => None,
    });
    let warning = warning.expect("a warning");
    assert!(
        warning.starts_with("critique: no vision model"),
        "{warning}"
    );
    assert!(warning.contains("critique_model"), "{warning}");
    assert_eq!(support::outputs(&events).len(), 1);
    // critique_model alone is refused naming it.
    let reply = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", service.base))
        .json(&json!({"model": "tiny", "prompt": "a pear", "critique_model": LLAVA}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let error: Value = reply.json().await.unwrap();
    assert_eq!(error["error"]["param"], "critique_model");
    service.stop().await;
}

#[tokio::test]
async fn cancelling_a_job_while_the_llm_rewrites_its_prompt_ends_it_at_once() {
    let ws = Workspace::new();
    let service = Service::start(&ws, Policy::Never, None).await;
    service.fake.set_chat_delay(Duration::from_secs(20));
    let jobs = service.runtime.jobs().clone();
    let (spec, destination) = enhanced(&ws, "a slow cat", 1);
    let id = jobs.submit(spec, destination, "test").unwrap();
    let mut live = jobs.subscribe(&id).unwrap().live;
    while !matches!(
        live.recv().await.unwrap().stage,
        Stage::EnhancingPrompt { .. }
    ) {}
    let asked = Instant::now();
    assert!(jobs.cancel(&id, "changed my mind").unwrap());
    let outcome = tokio::time::timeout(Duration::from_secs(5), jobs.wait(&id))
        .await
        .expect("the cancel does not wait for the LLM")
        .unwrap();
    assert_eq!(outcome, Outcome::Cancelled("changed my mind".into()));
    assert!(asked.elapsed() < Duration::from_secs(2));
    service.stop().await;
}
