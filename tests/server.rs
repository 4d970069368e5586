//! The local HTTP API over a real socket, with real sd.cpp jobs behind it: requests exactly as Open WebUI and
//! OpenAI clients send them, DiffuGen's job API with SSE, and every bad input answered with its documented error.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use diffugen_jobs::JobManager;
use diffugen_server::{AppState, ServerConfig, ServerHandle};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{engine, Workspace};

struct Api {
    ws: Workspace,
    server: Option<ServerHandle>,
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(api_key: Option<&str>, depth: usize) -> Api {
        Api::start_with(api_key, depth, Vec::new()).await
    }

    async fn start_with(api_key: Option<&str>, depth: usize, cors_origins: Vec<String>) -> Api {
        let ws = Workspace::new();
        let config = ServerConfig {
            api_key: api_key.map(str::to_string),
            cors_origins,
            ..support::server_config(&ws)
        };
        let jobs = JobManager::new(Arc::new(engine()), depth);
        let server = diffugen_server::serve(
            "127.0.0.1:0".parse().unwrap(),
            AppState::new(support::runtime(&ws, jobs), &config),
        )
        .await
        .unwrap();
        let base = format!("http://{}", server.addr);
        Api {
            ws,
            server: Some(server),
            base,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth("")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/images/edits` with a multipart form.
    async fn edit(&self, form: reqwest::multipart::Form) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/v1/images/edits"))
            .bearer_auth("")
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A GET's JSON body.
    async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// The queue as `GET /api/v1/queue` lists it.
    async fn queue(&self) -> Value {
        self.get_json("/api/v1/queue").await
    }

    /// A GET's body as text (an SSE stream read to its end).
    async fn text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }
}

/// The event names of an SSE stream, in order.
fn event_names(stream: &str) -> Vec<&str> {
    stream
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect()
}

/// An OpenAI image request shaped like Open WebUI's, with sd.cpp controls merged in (its "API params" setting).
fn open_webui_body() -> Value {
    json!({ "model": "dall-e-2", "prompt": "a watercolor fox", "n": 1, "size": "64x64",
            "response_format": "b64_json", "steps": 2, "seed": 11 })
}

fn assert_openai_error(body: &Value, param: Option<&str>) {
    let error = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "error body lacks '{key}': {body}");
    }
    assert!(!error["message"].as_str().unwrap_or_default().is_empty());
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{body}");
    }
}

#[tokio::test]
async fn an_open_webui_request_with_an_empty_bearer_gets_a_real_png_as_b64_json() {
    let api = Api::start(None, 32).await;
    let (status, body) = api.post("/v1/images/generations", open_webui_body()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["size"], "64x64");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));

    let (status, models) = api
        .post(
            "/v1/images/generations",
            // The official client's `user` and `moderation: low` (DiffuGen filters nothing) are accepted.
            json!({"prompt": "x", "n": 2, "size": "64x64",
        "steps": 1, "output_format": "jpeg", "user": "user-1234", "moderation": "low"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{models}");
    assert_eq!(models["data"].as_array().unwrap().len(), 2);
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(models["data"][1]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        image::guess_format(&jpeg).unwrap(),
        image::ImageFormat::Jpeg
    );
    api.stop().await;
}

#[tokio::test]
async fn a_url_response_points_at_the_served_file_and_nothing_outside_the_outputs_folder_is_served()
{
    let api = Api::start(None, 32).await;
    let mut body = open_webui_body();
    body["response_format"] = json!("url");
    let (status, body) = api.post("/v1/images/generations", body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["data"][0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&api.base) && url.contains("/images/"),
        "{url}"
    );
    let file = api.client.get(url).send().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "image/png");
    assert_eq!(
        image::load_from_memory(&file.bytes().await.unwrap())
            .unwrap()
            .width(),
        64
    );

    for sneaky in [
        "/images/..%2F..%2Fetc%2Fpasswd",
        "/images/.hidden.png",
        "/images/..png",
        "/images/x.txt",
    ] {
        let response = api.client.get(api.url(sneaky)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{sneaky}");
    }
    api.stop().await;
}

#[tokio::test]
async fn models_are_listed_with_their_real_ids() {
    let api = Api::start(None, 32).await;
    let body: Value = api.get_json("/v1/models").await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "tiny");
    api.stop().await;
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_status_and_error_body_and_the_server_keeps_serving() {
    let api = Api::start(None, 32).await;
    let cases: Vec<(&str, Value, StatusCode, Option<&str>)> = vec![
        (
            "missing prompt",
            json!({"n": 1}),
            StatusCode::BAD_REQUEST,
            Some("prompt"),
        ),
        (
            "n = 0",
            json!({"prompt": "x", "n": 0}),
            StatusCode::BAD_REQUEST,
            Some("n"),
        ),
        (
            "n = 11",
            json!({"prompt": "x", "n": 11}),
            StatusCode::BAD_REQUEST,
            Some("n"),
        ),
        (
            "size abc",
            json!({"prompt": "x", "size": "abc"}),
            StatusCode::BAD_REQUEST,
            Some("size"),
        ),
        (
            "size 4096",
            json!({"prompt": "x", "size": "4096x4096"}),
            StatusCode::BAD_REQUEST,
            Some("size"),
        ),
        (
            "steps 0",
            json!({"prompt": "x", "steps": 0}),
            StatusCode::BAD_REQUEST,
            Some("steps"),
        ),
        (
            "unknown model",
            json!({"prompt": "x", "model": "nope"}),
            StatusCode::BAD_REQUEST,
            Some("model"),
        ),
        (
            "unknown sampler",
            json!({"prompt": "x", "sampler": "warp9"}),
            StatusCode::BAD_REQUEST,
            Some("sampler"),
        ),
        (
            "transparent",
            json!({"prompt": "x", "background": "transparent"}),
            StatusCode::BAD_REQUEST,
            Some("background"),
        ),
        // OpenAI's fields DiffuGen cannot honour are refused by name, never ignored.
        (
            "a DALL-E 3 style",
            json!({"prompt": "x", "style": "vivid"}),
            StatusCode::BAD_REQUEST,
            Some("style"),
        ),
        (
            "OpenAI's content filter",
            json!({"prompt": "x", "moderation": "auto"}),
            StatusCode::BAD_REQUEST,
            Some("moderation"),
        ),
        (
            "GPT Image's input fidelity",
            json!({"prompt": "x", "input_fidelity": "high"}),
            StatusCode::BAD_REQUEST,
            Some("input_fidelity"),
        ),
        (
            "strength without an image",
            json!({"prompt": "x", "strength": 0.5}),
            StatusCode::BAD_REQUEST,
            Some("strength"),
        ),
        (
            "clip_skip 99",
            json!({"prompt": "x", "clip_skip": 99}),
            StatusCode::BAD_REQUEST,
            Some("clip_skip"),
        ),
        (
            "a 300-character user",
            json!({"prompt": "x", "user": "u".repeat(300)}),
            StatusCode::BAD_REQUEST,
            Some("user"),
        ),
    ];
    for (name, body, expected, param) in cases {
        let (status, body) = api.post("/v1/images/generations", body).await;
        assert_eq!(status, expected, "{name}: {body}");
        assert_openai_error(&body, param);
    }
    let (status, body) = api
        .post(
            "/v1/images/generations",
            json!({"prompt": "x", "colour": "teal"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "an unknown field is named: {body}"
    );
    let (_, unknown) = api
        .post(
            "/v1/images/generations",
            json!({"prompt": "x", "model": "nope"}),
        )
        .await;
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tiny"),
        "lists the valid ids: {unknown}"
    );

    let malformed = api
        .client
        .post(api.url("/v1/images/generations"))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_openai_error(&malformed.json().await.unwrap(), Some("body"));

    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(60 << 20));
    let response = api
        .client
        .post(api.url("/v1/images/generations"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_openai_error(&body, None);

    let missing = api
        .client
        .get(api.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let health = api.client.get(api.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the server still serves");
    let (status, _) = api.post("/v1/images/generations", open_webui_body()).await;
    assert_eq!(status, StatusCode::OK, "and still generates");
    api.stop().await;
}

#[tokio::test]
async fn with_an_api_key_a_wrong_or_missing_key_is_refused_and_bearer_x_api_key_and_basic_work() {
    let api = Api::start(Some("s3cret"), 32).await;
    let models = api.url("/v1/models");
    let wrong = api
        .client
        .get(&models)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        "Bearer realm=\"diffugen\"",
        "a 401 says how to authenticate"
    );
    assert_openai_error(&wrong.json().await.unwrap(), None);
    let a1111 = api
        .client
        .get(api.url("/sdapi/v1/sd-models"))
        .send()
        .await
        .unwrap();
    assert_eq!(a1111.status(), StatusCode::UNAUTHORIZED);
    let body: Value = a1111.json().await.unwrap();
    assert_eq!(body["error"], "Unauthorized", "A1111's shape: {body}");
    assert_eq!(
        api.client.get(&models).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.client
            .get(&models)
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.client
            .get(&models)
            .header("x-api-key", "s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let basic = api
        .client
        .get(&models)
        .basic_auth("anyone", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert_eq!(
        api.client
            .get(api.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "health is open"
    );
    api.stop().await;
}

#[tokio::test]
async fn the_job_api_streams_typed_events_and_replays_them_to_a_late_subscriber() {
    let api = Api::start(None, 32).await;
    let (status, job) = api
        .post(
            "/api/v1/jobs",
            json!({"model": "tiny", "prompt": "a kite", "width": 64, "height": 64, "steps": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();

    let live = api
        .client
        .get(api.url(&format!("/api/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let text = live.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"queued"));
    assert_eq!(names.last(), Some(&"done"), "{text}");
    assert!(names.contains(&"sampling") && names.contains(&"saving"));
    let steps: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["phase"] == "sampling" && e["step"].as_u64() > Some(0))
        .filter_map(|e| e["step"].as_u64())
        .collect();
    assert_eq!(steps, [1, 2]);

    let replay = api.text(&format!("/api/v1/jobs/{id}/events")).await;
    let replayed = event_names(&replay);
    assert_eq!(replayed, names, "a late subscriber sees the same events");

    let info: Value = api.get_json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(info["state"], "done");
    assert!(info["outputs"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with(".png"));
    let unknown = api
        .client
        .get(api.url("/api/v1/jobs/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test]
async fn the_job_api_takes_images_in_the_request_and_opens_no_file_a_client_names_on_the_server() {
    let api = Api::start(None, 32).await;
    // A picture on the server's disk that a client must not be able to pull into a job.
    let private = api.ws.path("private.png");
    std::fs::write(
        &private,
        base64::engine::general_purpose::STANDARD
            .decode(png_b64(64, 64))
            .unwrap(),
    )
    .unwrap();
    let job = |extra: Value| {
        let mut body =
            json!({"model": "tiny", "prompt": "a lighthouse", "steps": 2, "strength": 0.5});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    for (field, extra) in [
        ("init_image", json!({"init_image": {"path": private}})),
        (
            "mask",
            json!({"init_image": {"base64": png_b64(64, 64)}, "mask": {"path": private}}),
        ),
    ] {
        let (status, body) = api.post("/api/v1/jobs", job(extra)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["param"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("not accepted over HTTP") && message.contains("base64"),
            "{message}"
        );
    }
    let model_path = api.ws.models_dir().join("tiny.gguf");
    let (status, body) = api
        .post(
            "/api/v1/jobs",
            json!({"model": model_path, "prompt": "a lighthouse", "steps": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is a path"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/v1/images/generations",
            json!({"model": "../models/tiny.gguf", "prompt": "a lighthouse"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_openai_error(&body, Some("model"));
    let (status, body) = api
        .post(
            "/api/v1/jobs",
            job(json!({"init_image": {"base64": "not an image!"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("init_image") && message.contains("base64"),
        "{message}"
    );
    let queue = api.queue().await;
    assert_eq!(queue, json!([]), "a refused request queues nothing");

    // The image itself, as base64 or a data URL, makes a real img2img job.
    let (status, job) = api
        .post(
            "/api/v1/jobs",
            job(json!({"init_image": {"base64": format!("data:image/png;base64,{}", png_b64(64, 64))},
                       "width": 64, "height": 64})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let events = api
        .client
        .get(api.url(&format!("/api/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("event: done"), "{events}");
    let info: Value = api.get_json(&format!("/api/v1/jobs/{id}")).await;
    let written = image::open(info["outputs"][0]["path"].as_str().unwrap()).unwrap();
    assert_eq!(
        (written.width(), written.height()),
        (64, 64),
        "img2img renders at the size asked for"
    );
    api.stop().await;
}

#[tokio::test]
async fn the_cli_sends_its_init_image_and_mask_to_the_server_inside_the_request() {
    let api = Api::start(None, 32).await;
    let init = api.ws.path("init.png");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 60])
    })
    .save(&init)
    .unwrap();
    let mask = api.ws.path("mask.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();
    let (data, base) = (api.ws.data_dir().to_path_buf(), api.base.clone());
    let model_path = api.ws.models_dir().join("tiny.gguf");
    let (data_, base_) = (data.clone(), base.clone());
    let refused = tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::diffugen_bin())
            .arg("--data-dir")
            .arg(&data_)
            .args(["generate", "--server", &base_, "-p", "a harbor", "-m"])
            .arg(&model_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    let error = support::stderr(&refused);
    assert!(
        error.contains("not queued") && error.contains("400") && error.contains("is a path"),
        "the server's refusal reaches the CLI user: {error}"
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::diffugen_bin())
            .arg("--data-dir")
            .arg(&data)
            .args(["generate", "--json", "--server", &base, "-m", "tiny"])
            .args([
                "-p",
                "a painted harbor",
                "--steps",
                "2",
                "-W",
                "64",
                "-H",
                "64",
            ])
            .arg("--init-image")
            .arg(&init)
            .arg("--mask")
            .arg(&mask)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["phase"], "done", "{last}");
    let written = image::open(last["outputs"][0]["path"].as_str().unwrap()).unwrap();
    assert_eq!((written.width(), written.height()), (64, 64));
    api.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_a_queued_job_can_be_cancelled() {
    let api = Api::start(None, 1).await;
    let job = json!({"model": "tiny", "prompt": "a bridge", "width": 64, "height": 64, "steps": 2});
    let (first, running) = api.post("/api/v1/jobs", job.clone()).await;
    let (second, queued) = api.post("/api/v1/jobs", job.clone()).await;
    assert_eq!(
        (first, second),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{running} {queued}"
    );
    // The first may still be waiting for the runner; keep submitting until the one free place is taken.
    let mut refused = None;
    for _ in 0..3 {
        let response = api
            .client
            .post(api.url("/api/v1/jobs"))
            .json(&job)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a full queue refuses a job");
    assert!(refused.headers().get("retry-after").is_some());
    assert_openai_error(&refused.json().await.unwrap(), None);

    let queue = api.queue().await;
    let waiting: Vec<String> = queue
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "queued")
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!waiting.is_empty());
    for id in &waiting {
        let (status, body) = api
            .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
            .await;
        assert_eq!(
            (status, body["cancelled"].as_bool()),
            (StatusCode::OK, Some(true))
        );
        let info: Value = api.get_json(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(info["state"], "cancelled");
    }
    let ws_outputs = api.ws.path("outputs");
    let running_id = running["id"].as_str().unwrap();
    let events = api
        .client
        .get(api.url(&format!("/api/v1/jobs/{running_id}/events")))
        .send()
        .await
        .unwrap();
    assert!(events.text().await.unwrap().contains("event: done"));
    assert_eq!(
        std::fs::read_dir(ws_outputs).unwrap().count(),
        1,
        "only the job that ran wrote an image"
    );
    api.stop().await;
}

fn png_b64(width: u32, height: u32) -> String {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 3) as u8, 90])
    })
    .write_to(&mut bytes, image::ImageFormat::Png)
    .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

#[tokio::test]
async fn an_a1111_client_reads_options_then_gets_real_images_from_txt2img_and_img2img() {
    let api = Api::start(None, 32).await;
    // What Open WebUI's Automatic1111 engine does: read the options, then txt2img (with "Basic " when no auth is set).
    let options: Value = api
        .client
        .get(api.url("/sdapi/v1/options"))
        .header("authorization", "Basic ")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(options["sd_model_checkpoint"], "tiny");
    let (status, body) = api
        .post("/sdapi/v1/txt2img", json!({"prompt": "a harbor", "negative_prompt": "fog", "batch_size": 1,
            "width": 64, "height": 64, "steps": 2, "seed": 21, "sampler_name": "Euler a", "cfg_scale": 7}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["images"][0].as_str().unwrap())
        .unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 64);
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["seed"], 21);
    assert!(
        info["infotexts"][0]
            .as_str()
            .unwrap()
            .contains("Sampler: Euler a"),
        "{info}"
    );

    let (status, body) = api
        .post("/sdapi/v1/img2img", json!({"prompt": "a harbor at night", "steps": 2, "width": 64, "height": 64,
            "init_images": [format!("data:image/png;base64,{}", png_b64(64, 64))], "denoising_strength": 0.5,
            "mask": png_b64(64, 64)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["images"][0].as_str().unwrap())
        .unwrap();
    let image = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (image.width(), image.height()),
        (64, 64),
        "img2img renders at the size asked for"
    );
    api.stop().await;
}

#[tokio::test]
async fn a1111_model_lists_samplers_and_option_changes_use_a1111_names_and_errors() {
    let api = Api::start(None, 32).await;
    let models: Value = api.get_json("/sdapi/v1/sd-models").await;
    assert_eq!(models[0]["model_name"], "tiny");
    for key in ["title", "hash", "sha256", "filename", "config"] {
        assert!(models[0].get(key).is_some(), "sd-models entry lacks {key}");
    }
    let samplers: Value = api.get_json("/sdapi/v1/samplers").await;
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Euler a") && names.contains(&"DPM++ 2M"),
        "{names:?}"
    );

    let (status, body) = api
        .post(
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": "nope.safetensors [abc]"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for key in ["error", "detail", "body", "errors"] {
        assert!(body.get(key).is_some(), "A1111 error lacks {key}: {body}");
    }
    let (status, _) = api
        .post(
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": "tiny.gguf [0123abcd]"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = api
        .post(
            "/sdapi/v1/txt2img",
            json!({"prompt": "x", "sampler_name": "Warp 9"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"].as_str().unwrap().starts_with("sampler_name"),
        "{body}"
    );
    api.stop().await;
}

#[tokio::test]
async fn a1111_progress_follows_real_steps_with_a_preview_and_interrupt_stops_the_job() {
    let api = Api::start(None, 32).await;
    let request = json!({"prompt": "a slow storm", "width": 64, "height": 64, "steps": 40});
    let client = api.client.clone();
    let txt2img = tokio::spawn({
        let url = api.url("/sdapi/v1/txt2img");
        async move {
            client
                .post(url)
                .json(&request)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let mut seen = None;
    for _ in 0..600 {
        let progress: Value = api.get_json("/sdapi/v1/progress").await;
        if progress["state"]["sampling_step"].as_u64() >= Some(2)
            && !progress["current_image"].is_null()
        {
            seen = Some(progress);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let progress = seen.expect("progress reports sampling steps and a preview");
    assert_eq!(progress["state"]["sampling_steps"], 40);
    let fraction = progress["progress"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction < 1.0, "{progress}");
    let preview = base64::engine::general_purpose::STANDARD
        .decode(progress["current_image"].as_str().unwrap())
        .unwrap();
    assert!(image::load_from_memory(&preview).is_ok());

    api.client
        .post(api.url("/sdapi/v1/interrupt"))
        .send()
        .await
        .unwrap();
    let body = txt2img.await.unwrap();
    assert_eq!(
        body["images"].as_array().map(Vec::len),
        Some(0),
        "an interrupted job returns no images: {body}"
    );
    let idle: Value = api.get_json("/sdapi/v1/progress").await;
    assert_eq!(idle["progress"], 0.0);
    api.stop().await;
}

fn png_bytes(width: u32, height: u32, luma: bool) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    if luma {
        image::GrayImage::from_fn(width, height, |x, _| {
            image::Luma([if x < width / 2 { 255 } else { 0 }])
        })
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
    } else {
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 200]))
            .write_to(&mut bytes, image::ImageFormat::Png)
            .unwrap();
    }
    bytes.into_inner()
}

#[tokio::test]
async fn edits_take_a_multipart_image_and_mask_and_return_an_image_of_the_requested_size() {
    use reqwest::multipart::{Form, Part};
    let api = Api::start(None, 32).await;
    let form = Form::new()
        .part(
            "image",
            Part::bytes(png_bytes(96, 96, false))
                .file_name("in.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .part(
            "mask",
            Part::bytes(png_bytes(64, 64, true))
                .file_name("mask.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("prompt", "a stained glass window")
        .text("size", "64x64")
        .text("steps", "2")
        .text("strength", "0.6")
        .text("response_format", "b64_json");
    let (status, body) = api.edit(form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 64);

    // Open WebUI sends repeated image[] fields, no mask and no size; the first image is edited with its aspect
    // ratio at the model's native area (here a preset of the test model with a native 128x128), in the multiples
    // the family allows (64 for this UNet model): 150x64 becomes 192x64.
    std::fs::write(
        api.ws.models_dir().join("small.preset.json"),
        json!({"model": "tiny.gguf",
               "defaults": {"steps": 1, "cfg_scale": 1.0, "sampler": "euler", "width": 128, "height": 128}})
        .to_string(),
    )
    .unwrap();
    let form = Form::new()
        .text("model", "small")
        .part(
            "image[]",
            Part::bytes(png_bytes(150, 64, false)).file_name("a.png"),
        )
        .part(
            "image[]",
            Part::bytes(png_bytes(64, 64, false)).file_name("b.png"),
        )
        .text("prompt", "the same, at night")
        .text("steps", "1");
    let (_, body) = api.edit(form).await;
    assert_eq!(body["size"], "192x64", "{body}");

    let form = Form::new().text("prompt", "no image");
    let (status, body) = api.edit(form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&body, Some("image"));
    api.stop().await;
}

#[tokio::test]
async fn streaming_sends_partial_images_from_real_previews_then_the_completed_image_then_done() {
    let api = Api::start(None, 32).await;
    let mut body = open_webui_body();
    body["stream"] = json!(true);
    body["partial_images"] = json!(2);
    body["steps"] = json!(6);
    let response = api
        .client
        .post(api.url("/v1/images/generations"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = data.iter().filter_map(|d| d["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.completed"
        ],
        "{text}"
    );
    assert_eq!(
        (
            data[0]["partial_image_index"].as_u64(),
            data[1]["partial_image_index"].as_u64()
        ),
        (Some(0), Some(1))
    );
    for partial in &data[..2] {
        let png = base64::engine::general_purpose::STANDARD
            .decode(partial["b64_json"].as_str().unwrap())
            .unwrap();
        assert!(image::load_from_memory(&png).is_ok());
    }
    let done = &data[2];
    assert_eq!(done["size"], "64x64");
    assert!(done.get("usage").is_some());
    let png = base64::engine::general_purpose::STANDARD
        .decode(done["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 64);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    api.stop().await;
}

#[tokio::test]
async fn the_original_generate_routes_answer_in_their_own_shape_and_pick_models_by_family() {
    let api = Api::start(None, 32).await;
    let request = json!({"prompt": "a paper crane", "width": 64, "height": 64, "steps": 2, "seed": 5,
        "cfg_scale": 1.0, "sampling_method": "euler", "negative_prompt": "blur"});
    let (status, body) = api.post("/generate", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["model"], "tiny");
    let url = body["image_url"].as_str().unwrap();
    assert!(body["markdown_response"].as_str().unwrap().contains(url));
    assert!(std::path::Path::new(body["image_path"].as_str().unwrap()).is_file());
    assert_eq!(
        api.client.get(url).send().await.unwrap().status(),
        StatusCode::OK
    );

    let (status, body) = api.post("/generate/stable", request.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an SDXS model is a Stable Diffusion model: {body}"
    );
    let (status, body) = api.post("/generate/flux", request.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (body["success"].as_bool(), body["param"].as_str()),
        (Some(false), Some("model")),
        "{body}"
    );
    let (status, body) = api.post("/generate", json!({"width": 64})).await;
    assert_eq!(
        (status, body["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("prompt"))
    );

    let images: Value = api.get_json("/images").await;
    assert_eq!(images["images"].as_array().unwrap().len(), 2);
    let models: Value = api.get_json("/models").await;
    assert_eq!(models["default_model"], "tiny");
    assert_eq!(models["models"][0]["family"], "sdxs");
    api.stop().await;
}

#[tokio::test]
async fn the_streaming_twins_send_real_step_progress_then_complete_then_done() {
    let api = Api::start(None, 32).await;
    let text = api
        .client
        .post(api.url("/generate/stream"))
        .json(&json!({"prompt": "a lantern", "width": 64, "height": 64, "steps": 3}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(&events[events.len() - 2..], ["complete", "done"], "{text}");
    assert!(events[..events.len() - 2].iter().all(|e| *e == "progress"));
    let progress: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|d| d.get("phase").is_some())
        .collect();
    let steps: Vec<u64> = progress
        .iter()
        .filter(|p| p["phase"] == "sampling" && p["step"].as_u64() > Some(0))
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    assert!(progress
        .iter()
        .all(|p| p["total_steps"] == 3 || p["phase"] != "sampling"));
    assert!(
        text.contains("\"image_url\""),
        "complete carries the result: {text}"
    );

    let text = api
        .client
        .post(api.url("/v1/images/generations/stream"))
        .json(&json!({"prompt": "a lantern", "size": "64x64", "steps": 1}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("event: complete")
            && text.contains("b64_json")
            && text.trim_end().ends_with("data: {}")
    );
    api.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_describes_exactly_the_routes_the_server_mounts() {
    let api = Api::start(None, 32).await;
    let served: Value = api.get_json("/openapi.json").await;
    let doc: openapiv3::OpenAPI =
        serde_json::from_value(served.clone()).expect("a valid OpenAPI 3.0 document");

    // Every $ref points at something that exists.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&served, &mut all);
    for r in &all {
        assert!(
            served.pointer(r.trim_start_matches('#')).is_some(),
            "dangling $ref {r}"
        );
    }

    // The document and the router list the same paths (every module that mounts routes).
    let source = [
        include_str!("../crates/server/src/lib.rs"),
        include_str!("../crates/server/src/legacy.rs"),
        include_str!("../crates/server/src/mcp.rs"),
    ]
    .concat();
    let mounted: std::collections::BTreeSet<String> = source
        .split(".route(")
        .flat_map(|part| part.split(".route_service("))
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    let documented: std::collections::BTreeSet<String> = doc.paths.paths.keys().cloned().collect();
    assert_eq!(documented, mounted, "openapi.json and the router disagree");

    // And every documented operation reaches a handler (not the 404 fallback, not 405 for a wrong method).
    for (path, item) in doc.paths.iter() {
        let item = item.as_item().unwrap();
        let url = api.url(
            &path
                .replace("{id}", "no-such-job")
                .replace("{file}", "missing.png"),
        );
        for (method, _) in item.iter() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = api
                .client
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !body.contains("no such route"),
                "{method} {path} is documented but not served"
            );
        }
    }
    api.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_only_the_configured_origins() {
    let preflight = |api: &Api, origin: &str| {
        api.client
            .request(reqwest::Method::OPTIONS, api.url("/v1/images/generations"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let closed = Api::start(None, 32).await;
    let response = preflight(&closed, "http://localhost:3000").await.unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    closed.stop().await;

    let open = Api::start_with(None, 32, vec!["http://localhost:3000".into()]).await;
    let allowed = preflight(&open, "http://localhost:3000").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let other = preflight(&open, "http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    open.stop().await;
}

/// The `async-openai` crate — an OpenAI client someone else wrote — pointed at DiffuGen.
fn openai_client(api: &Api) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    let config = async_openai::config::OpenAIConfig::new()
        .with_api_base(api.url("/v1"))
        .with_api_key("");
    async_openai::Client::with_config(config)
}

#[tokio::test]
async fn the_async_openai_client_generates_streams_and_edits_against_diffugen() {
    use async_openai::types::images::{
        CreateImageEditRequestArgs, CreateImageRequestArgs, ImageEditInput, ImageGenStreamEvent,
        ImageInput, ImageModel, ImageResponseFormat, ImageSize,
    };
    use futures_util::StreamExt;
    let api = Api::start(None, 32).await;
    let client = openai_client(&api);

    let request = CreateImageRequestArgs::default()
        .prompt("a koi pond")
        .model(ImageModel::GptImage2)
        .size(ImageSize::Other("64x64".into()))
        .response_format(ImageResponseFormat::B64Json)
        .n(2)
        .build()
        .unwrap();
    let response = client
        .images()
        .generate(request)
        .await
        .expect("the client accepts our response");
    assert_eq!(response.data.len(), 2);

    let request = CreateImageRequestArgs::default()
        .prompt("a koi pond")
        .model(ImageModel::Other("tiny".into()))
        .size(ImageSize::Other("64x64".into()))
        .partial_images(1)
        .build()
        .unwrap();
    let mut stream = client
        .images()
        .generate_stream(request)
        .await
        .expect("streaming starts");
    let (mut partials, mut completed) = (0, 0);
    while let Some(event) = stream.next().await {
        match event.expect("the client parses every event") {
            ImageGenStreamEvent::PartialImage(_) => partials += 1,
            ImageGenStreamEvent::Completed(done) => {
                completed += 1;
                let png = base64::engine::general_purpose::STANDARD
                    .decode(done.b64_json)
                    .unwrap();
                assert_eq!(image::load_from_memory(&png).unwrap().width(), 64);
            }
        }
    }
    assert_eq!((partials, completed), (1, 1));

    let edit = CreateImageEditRequestArgs::default()
        .image(ImageEditInput::Image(ImageInput::from_vec_u8(
            "in.png".into(),
            png_bytes(64, 64, false),
        )))
        .prompt("the pond at night")
        .model(ImageModel::Other("tiny".into()))
        .size(ImageSize::Other("64x64".into()))
        .response_format(ImageResponseFormat::B64Json)
        .build()
        .unwrap();
    let response = client
        .images()
        .edit(edit)
        .await
        .expect("the client accepts our edit response");
    assert_eq!(response.data.len(), 1);
    api.stop().await;
}

#[tokio::test]
async fn a_queued_job_whose_client_went_away_is_dropped_from_the_queue() {
    let api = Api::start(None, 32).await;
    // Occupy the engine with a long job.
    let (_, running) = api
        .post("/api/v1/jobs", json!({"model": "tiny", "prompt": "a long storm", "width": 64, "height": 64, "steps": 40}))
        .await;
    // A client that gives up while its job still waits.
    let impatient = api
        .client
        .post(api.url("/v1/images/generations"))
        .json(&open_webui_body())
        .timeout(std::time::Duration::from_millis(400))
        .send()
        .await;
    assert!(
        impatient.is_err(),
        "the request timed out on the client side"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let queue = api.queue().await;
    let waiting = queue
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "queued")
        .count();
    assert_eq!(waiting, 0, "the abandoned job left the queue: {queue}");

    let running_id = running["id"].as_str().unwrap();
    api.post(&format!("/api/v1/jobs/{running_id}/cancel"), json!({}))
        .await;
    let events = api
        .client
        .get(api.url(&format!("/api/v1/jobs/{running_id}/events")))
        .send()
        .await
        .unwrap();
    assert!(events.text().await.unwrap().contains("event: cancelled"));
    assert!(
        !api.ws.path("outputs").exists()
            || std::fs::read_dir(api.ws.path("outputs")).unwrap().count() == 0
    );
    api.stop().await;
}

#[tokio::test]
async fn memory_options_arrive_through_the_job_api_and_a1111_override_settings_and_bad_ones_are_named(
) {
    let api = Api::start(None, 8).await;
    // The job API: a step cache and VAE tiling, recorded in the image's JSON record with the plan it ran under.
    let (status, job) = api
        .post(
            "/api/v1/jobs",
            json!({"model": "tiny", "prompt": "a kite", "width": 64, "height": 64, "steps": 4,
                   "memory": {"cache": "fast", "vae_tiling": "on"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let events = api
        .client
        .get(api.url(&format!("/api/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        events.contains("event: plan") && events.contains("VAE tiled"),
        "{events}"
    );
    let info: Value = api.get_json(&format!("/api/v1/jobs/{id}")).await;
    let path = info["outputs"][0]["path"].as_str().unwrap().to_string();
    let texts = diffugen_engine::output::read_png_text(std::path::Path::new(&path)).unwrap();
    let (_, text) = texts
        .iter()
        .find(|(key, _)| key == diffugen_engine::output::RECORD_KEY)
        .expect("the JSON record");
    let record: Value = serde_json::from_str(text).unwrap();
    assert_eq!(record["memory"]["cache"], "fast");
    assert_eq!(record["memory"]["vae_tiling"], "on");
    assert_eq!(record["step_cache"]["ucache"]["threshold"], 1.0);
    assert!(
        record["plan"].as_str().unwrap().contains("VAE tiled"),
        "{record}"
    );

    for (body, field) in [
        (json!({"cache": "turbo"}), "memory"),
        (
            json!({"placement": {"t5xxl": "cpu"}}),
            "memory.placement.t5xxl",
        ),
        (json!({"vae_tile_size": 30}), "memory.vae_tile_size"),
    ] {
        let (status, error) = api
            .post(
                "/api/v1/jobs",
                json!({"model": "tiny", "prompt": "x", "memory": body}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        let text = error.to_string();
        assert!(text.contains(field), "{field}: {text}");
    }

    // A1111: the same keys in override_settings; an unknown one is named.
    let (status, reply) = api
        .post(
            "/sdapi/v1/txt2img",
            json!({"prompt": "a kite", "width": 64, "height": 64, "steps": 2,
                   "override_settings": {"sd_model_checkpoint": "tiny", "cache": "fast"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, error) = api
        .post(
            "/sdapi/v1/txt2img",
            json!({"prompt": "a kite", "override_settings": {"sd_model_checkpoint": "tiny", "cache": "turbo"}}),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    assert!(
        error.to_string().contains("override_settings.cache"),
        "{error}"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_smaller_copy_is_made_over_http_with_its_preview_first_and_sse_progress_to_the_new_model()
{
    let api = Api::start(None, 8).await;
    let (status, started) = api
        .post(
            "/api/v1/models/convert",
            json!({"model": "tiny", "type": "q8_0"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let preview = &started["preview"];
    assert!(
        preview["expected_bytes"].as_f64().unwrap() < preview["current_bytes"].as_f64().unwrap()
    );
    assert!(
        preview["vram_after_bytes"].as_f64().unwrap() < preview["vram_now_bytes"].as_f64().unwrap()
    );
    assert_eq!(preview["new_model_id"], "tiny-q8_0");
    let id = started["id"].as_str().unwrap();
    let events = api
        .text(&format!("/api/v1/models/converts/{id}/events"))
        .await;
    let names = event_names(&events);
    assert_eq!(names.first(), Some(&"started"), "{events}");
    assert!(names.contains(&"progress"), "{events}");
    assert_eq!(names.last(), Some(&"done"), "{events}");
    assert!(events.contains("\"model_id\":\"tiny-q8_0\""), "{events}");
    let (status, job) = api
        .post(
            "/api/v1/jobs",
            json!({"model": "tiny-q8_0", "prompt": "a kite", "width": 64, "height": 64, "steps": 2}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the copy is a model at once: {job}"
    );

    for (body, field) in [
        (json!({"model": "tiny", "type": "q9"}), None),
        (
            json!({"model": "/etc/passwd", "type": "q8_0"}),
            Some("model"),
        ),
        (
            json!({"model": "tiny", "type": "q4_0", "output": "../../outside"}),
            Some("output"),
        ),
        (
            json!({"model": "tiny", "type": "q4_0", "part": "t5xxl"}),
            Some("part"),
        ),
        (json!({"model": "tiny", "type": "q8_0"}), None),
    ] {
        let (status, error) = api.post("/api/v1/models/convert", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        if let Some(field) = field {
            assert_eq!(error["error"]["param"], field, "{body}: {error}");
        }
    }
    assert!(!api.ws.models_dir().join("../outside.gguf").exists());
    api.stop().await;
}

#[tokio::test]
async fn a_prompt_over_20000_characters_is_refused_naming_prompt_in_every_dialect_before_the_engine_sees_it(
) {
    let api = Api::start(None, 8).await;
    let long = "a ".repeat(10_001);
    for (route, body) in [
        (
            "/v1/images/generations",
            json!({"model": "tiny", "prompt": long}),
        ),
        ("/api/v1/jobs", json!({"model": "tiny", "prompt": long})),
        (
            "/sdapi/v1/txt2img",
            json!({"prompt": long, "override_settings": {"sd_model_checkpoint": "tiny"}}),
        ),
        ("/generate", json!({"model": "tiny", "prompt": long})),
        (
            "/api/v1/jobs",
            json!({"model": "tiny", "prompt": "x", "negative_prompt": long}),
        ),
    ] {
        let (status, error) = api.post(route, body).await;
        assert!(status.is_client_error(), "{route}: {status}");
        let text = error.to_string();
        assert!(
            text.contains("prompt") && text.contains("20000"),
            "{route}: {text}"
        );
    }
    // Nothing reached the queue.
    let queue = api.queue().await;
    assert_eq!(queue.as_array().map(Vec::len), Some(0), "{queue}");
    api.stop().await;
}

#[tokio::test]
async fn a_web_page_cannot_drive_the_api_by_dns_rebinding_or_a_cross_site_form() {
    let api = Api::start(None, 8).await;
    let port = api.base.rsplit(':').next().unwrap().to_string();
    let get = |path: &str, host: &str| {
        api.client
            .get(api.url(path))
            .header(reqwest::header::HOST, host)
            .send()
    };
    // DNS rebinding: the page's own name in Host.
    for (path, shape) in [
        ("/api/v1/gallery", "openai"),
        ("/sdapi/v1/options", "a1111"),
        ("/models", "legacy"),
    ] {
        let response = get(path, &format!("evil.example:{port}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = response.json().await.unwrap();
        match shape {
            "openai" => assert_eq!(body["error"]["code"], "host_not_allowed", "{body}"),
            "a1111" => assert!(
                body["detail"].as_str().unwrap().contains("--allowed-host"),
                "{body}"
            ),
            _ => assert_eq!(body["success"], false, "{body}"),
        }
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("host.docker.internal:{port}"),
    ] {
        let response = get("/api/v1/queue", &host).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }

    // A cross-site multipart form (no preflight) to the edits route: refused, nothing queued.
    let form = reqwest::multipart::Form::new()
        .text("prompt", "a stolen render")
        .text("model", "tiny")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png_bytes(64, 64, false)).file_name("a.png"),
        );
    let response = api
        .client
        .post(api.url("/v1/images/edits"))
        .header(reqwest::header::ORIGIN, "http://evil.example")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_not_allowed", "{body}");
    let queue = api.queue().await;
    assert_eq!(queue, json!([]));
    // The server's own origin passes.
    let own = api
        .client
        .get(api.url("/api/v1/queue"))
        .header(reqwest::header::ORIGIN, api.base.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    api.stop().await;

    // --allowed-host and --cors-origin open exactly what they name.
    let mut config_api = Api::start_with(None, 8, vec!["http://localhost:8080".into()]).await;
    let response = config_api
        .client
        .get(config_api.url("/api/v1/queue"))
        .header(reqwest::header::ORIGIN, "http://localhost:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    if let Some(server) = config_api.server.take() {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_preset_pointing_outside_the_model_folders_is_a_400_naming_model_whether_or_not_the_file_exists(
) {
    let api = Api::start(None, 8).await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        diffugen_testkit::test_model(),
        outside.path().join("there.gguf"),
    )
    .unwrap();
    for (name, target) in [
        ("exists", outside.path().join("there.gguf")),
        ("absent", outside.path().join("absent.gguf")),
    ] {
        std::fs::write(
            api.ws.models_dir().join(format!("{name}.preset.json")),
            json!({ "model": target }).to_string(),
        )
        .unwrap();
    }
    let mut messages = Vec::new();
    for name in ["exists", "absent"] {
        let (status, error) = api
            .post(
                "/api/v1/jobs",
                json!({"model": name, "prompt": "x", "width": 64, "height": 64}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["param"], "model", "{error}");
        let message = error["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("outside the model folders"), "{message}");
        messages.push(
            message
                .replace("there.gguf", "F")
                .replace("absent.gguf", "F")
                .replace(name, "NAME"),
        );
    }
    assert_eq!(
        messages[0], messages[1],
        "the answer must not tell whether the outside file exists"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_sha256_that_is_not_one_and_override_settings_that_are_no_object_are_named() {
    let api = Api::start(None, 8).await;
    let (status, error) = api
        .post(
            "/api/v1/models/downloads",
            json!({"url": "http://127.0.0.1:9/x.gguf", "sha256": "zz"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["param"], "sha256", "{error}");
    let (status, error) = api
        .post(
            "/sdapi/v1/txt2img",
            json!({"prompt": "x", "override_settings": "str"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .starts_with("override_settings"),
        "{error}"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_refused_naming_it_in_every_dialect_and_a_body_that_is_no_object_names_body(
) {
    let api = Api::start(None, 4).await;
    for (path, body, field) in [
        (
            "/v1/images/generations",
            json!({"prompt": "x", "n": "two"}),
            "n",
        ),
        (
            "/v1/images/generations",
            json!({"prompt": "x", "quality": "ultra"}),
            "quality",
        ),
        (
            "/generate",
            json!({"prompt": "x", "width": "wide"}),
            "width",
        ),
        ("/v1/images/generations", json!(["a", "list"]), "body"),
    ] {
        let (status, answer) = api.post(path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        let param = answer["error"]["param"]
            .as_str()
            .or(answer["param"].as_str())
            .unwrap_or_default();
        assert_eq!(param, field, "{path} {body}: {answer}");
    }
    // A1111 answers 422 with the field in its detail.
    let (status, answer) = api
        .post("/sdapi/v1/txt2img", json!({"prompt": "x", "steps": "many"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("steps"),
        "{answer}"
    );
    // An edit's form fields are typed the same way.
    let form = reqwest::multipart::Form::new()
        .text("prompt", "x")
        .text("n", "two")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png_bytes(64, 64, false)).file_name("in.png"),
        );
    let (_, answer) = api.edit(form).await;
    assert_eq!(answer["error"]["param"], "n", "{answer}");
    api.stop().await;
}

#[tokio::test]
async fn a_paused_queue_holds_its_jobs_until_resumed_and_a_cancelled_job_can_be_put_back_in_line() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let api = Api::start(None, 8).await;
    let job = json!({"model": "tiny", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "threads": 2});

    // One lane, idle before its first job: no model, no job.
    let lanes = json!([{"lane": 0, "device": {"kind": "default"}, "model": null, "job": null, "worker_pid": null}]);
    let (status, paused) = api.post("/api/v1/queue/pause", json!({})).await;
    assert_eq!(
        (status, &paused),
        (StatusCode::OK, &json!({"paused": true, "lanes": lanes}))
    );
    assert_eq!(
        api.get_json("/api/v1/queue/state").await,
        json!({"paused": true, "lanes": lanes})
    );
    let (status, first) = api.post("/api/v1/jobs", job.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first = first["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        api.get_json(&format!("/api/v1/jobs/{first}")).await["state"],
        "queued",
        "a paused queue started a job"
    );

    // Cancelled while waiting, then put back in line: a new job with the same request.
    let (status, _) = api
        .post(&format!("/api/v1/jobs/{first}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = api
        .post(&format!("/api/v1/jobs/{first}/requeue"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["state"], "queued");
    assert_eq!(again["prompt"], "a lighthouse");
    let again = again["id"].as_str().unwrap().to_string();
    assert_ne!(again, first);
    // A job still in line, or one that never was, cannot be put back.
    let (status, refused) = api
        .post(&format!("/api/v1/jobs/{again}/requeue"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "not_requeueable");
    let (status, _) = api.post("/api/v1/jobs/job-none/requeue", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, resumed) = api.post("/api/v1/queue/resume", json!({})).await;
    assert_eq!(
        (
            status,
            &resumed["paused"],
            resumed["lanes"].as_array().map(Vec::len)
        ),
        (StatusCode::OK, &json!(false), Some(1)),
        "{resumed}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = api.get_json(&format!("/api/v1/jobs/{again}")).await;
        if info["state"] == "done" {
            assert_eq!(info["outputs"].as_array().map(Vec::len), Some(1), "{info}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the requeued job did not run: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A finished image is remixed from the gallery, not put back in line.
    let (status, _) = api
        .post(&format!("/api/v1/jobs/{again}/requeue"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.stop().await;
}

#[tokio::test]
async fn a1111_hires_fix_and_the_job_apis_hires_pass_return_the_larger_image_and_unsupported_hires_options_are_named(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let api = Api::start(None, 8).await;
    let (status, body) = api
        .post(
            "/sdapi/v1/txt2img",
            json!({"prompt": "a harbour", "width": 64, "height": 64, "steps": 2, "seed": 4,
                   "enable_hr": true, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
                   "denoising_strength": 0.6}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(body["images"][0].as_str().unwrap())
        .unwrap();
    let image = image::load_from_memory(&png).unwrap();
    assert_eq!((image.width(), image.height()), (128, 128));
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][0].as_str().unwrap();
    assert!(infotext.contains("Hires upscale: 2"), "{infotext}");
    assert!(infotext.contains("Denoising strength: 0.6"), "{infotext}");

    // What an A1111 client offers as hr_upscaler: the pixel upscalers and the latent modes.
    let names = |list: Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_string())
            .collect()
    };
    let upscalers = names(api.get_json("/sdapi/v1/upscalers").await);
    assert_eq!(upscalers, ["None", "Lanczos", "Nearest"]);
    let latent = names(api.get_json("/sdapi/v1/latent-upscale-modes").await);
    assert!(
        latent.contains(&"Latent (nearest)".to_string()),
        "{latent:?}"
    );

    for (field, extra) in [
        ("hr_upscaler", json!({"hr_upscaler": "R-ESRGAN 4x+"})),
        ("hr_prompt", json!({"hr_prompt": "something else"})),
        ("hr_scale", json!({"hr_scale": 9})),
    ] {
        let mut request =
            json!({"prompt": "x", "width": 64, "height": 64, "steps": 1, "enable_hr": true});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let (status, body) = api.post("/sdapi/v1/txt2img", request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{field}: {body}"
        );
    }

    // The job API: `hires` on the request, the output at its size.
    let (status, job) = api
        .post(
            "/api/v1/jobs",
            json!({"model": "tiny", "prompt": "a harbour", "width": 64, "height": 64, "steps": 2,
                   "hires": {"width": 128, "height": 192, "upscaler": "lanczos", "steps": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let events = api
        .text(&format!(
            "/api/v1/jobs/{}/events",
            job["id"].as_str().unwrap()
        ))
        .await;
    let done = events
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|e| e["phase"] == "done")
        .unwrap_or_else(|| panic!("no done event: {events}"));
    assert_eq!(
        (&done["outputs"][0]["width"], &done["outputs"][0]["height"]),
        (&json!(128), &json!(192)),
        "{done}"
    );
    api.stop().await;
}

#[tokio::test]
async fn a1111_embeddings_lists_usable_embeddings_as_loaded_and_f16_ones_as_skipped() {
    let api = Api::start(None, 4).await;
    let dir = api.ws.path("models/embeddings");
    std::fs::create_dir_all(&dir).unwrap();
    use diffugen_testkit::gguf::DType;
    diffugen_testkit::write_test_embedding(&dir.join("goodemb.gguf"), 3, 1, DType::F32).unwrap();
    diffugen_testkit::write_test_embedding(&dir.join("halfemb.gguf"), 1, 2, DType::F16).unwrap();
    let list = api.get_json("/sdapi/v1/embeddings").await;
    assert_eq!(list["loaded"]["goodemb"]["vectors"], 3);
    assert_eq!(list["loaded"]["goodemb"]["shape"], 768);
    assert!(list["loaded"].get("halfemb").is_none(), "{list}");
    assert_eq!(list["skipped"]["halfemb"]["vectors"], 1);
    api.stop().await;
}
