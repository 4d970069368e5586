//! The server as an attacker and a faulty world meet it: half-sent requests, floods of connections, server-side
//! fetches a client chooses, a full disk, restarts with jobs waiting. Real sockets, real processes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use diffugen_jobs::JobManager;
use diffugen_server::{AppState, Limits};
use serde_json::{json, Value};
use support::{engine, Workspace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET's body as text (an SSE stream read to its end).
async fn get_text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// `POST /v1/images/edits` with a multipart form.
async fn post_edit(
    client: &reqwest::Client,
    base: &str,
    form: reqwest::multipart::Form,
) -> reqwest::Response {
    let url = format!("{base}/v1/images/edits");
    client.post(url).multipart(form).send().await.unwrap()
}

#[tokio::test]
async fn half_sent_requests_are_cut_off_at_the_header_deadline_and_cannot_lock_others_out() {
    let ws = Workspace::new();
    let jobs = JobManager::new(Arc::new(engine()), 4);
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 8,
        drain: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = diffugen_server::serve_limited(
        "127.0.0.1:0".parse().unwrap(),
        AppState::new(support::runtime(&ws, jobs), &support::server_config(&ws)),
        limits,
    )
    .await
    .unwrap();
    // Every slot taken by a client that sends half a request head and then nothing.
    let mut stalled = Vec::new();
    for _ in 0..limits.max_connections {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        stalled.push(socket);
    }
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a well-behaved client is served once the stalled ones time out");
    assert!(health.status().is_success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served after {:?}",
        started.elapsed()
    );
    // The stalled connections were closed by the server, not left open.
    for mut socket in stalled {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut buf))
            .await
            .expect("the server closes a connection whose request head never completes");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_that_stops_or_only_trickles_is_cut_off_and_its_connection_closed() {
    let ws = Workspace::new();
    let limits = Limits {
        body_idle_timeout: Duration::from_secs(1),
        body_deadline: Some(Duration::from_secs(3)),
        ..Limits::default()
    };
    let server = diffugen_server::serve_limited(
        "127.0.0.1:0".parse().unwrap(),
        AppState::new(
            support::runtime(&ws, JobManager::new(Arc::new(engine()), 4)),
            &support::server_config(&ws),
        ),
        limits,
    )
    .await
    .unwrap();
    let head =
        "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 100000\r\n\r\n{";
    // One that sends a byte of its body and then nothing.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    // One that sends a byte every half second: never idle, but never done.
    let mut trickle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    trickle.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let dripping = tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::select! {
                read = trickle.read_to_end(&mut buf) => { let _ = read; break; }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        started.elapsed()
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled body is cut off after its idle time")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let cut = tokio::time::timeout(Duration::from_secs(8), dripping)
        .await
        .expect("a trickling body is cut off at its deadline")
        .unwrap();
    assert!(
        cut >= Duration::from_secs(3) && cut < Duration::from_secs(7),
        "cut after {cut:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_the_api_only_model_files_on_public_hosts_are_downloaded() {
    let ws = Workspace::new();
    let jobs = JobManager::new(Arc::new(engine()), 4);
    let (server, base) = support::serve_api(&ws, jobs).await;
    let client = reqwest::Client::new();
    let start = |url: &str| {
        client
            .post(format!("{base}/api/v1/models/downloads"))
            .json(&serde_json::json!({ "url": url }))
            .send()
    };
    for (url, says) in [
        ("http://127.0.0.1:9/model.gguf", "public addresses only"),
        (
            "http://localhost:11434/model.safetensors",
            "public addresses only",
        ),
        ("http://[::1]/model.gguf", "public addresses only"),
        (
            "http://169.254.169.254/latest/model.gguf",
            "public addresses only",
        ),
        ("http://10.0.0.7/model.ckpt", "public addresses only"),
        ("https://example.com/evil.preset.json", "not a model file"),
        ("https://example.com/notes.txt", "not a model file"),
    ] {
        let response = start(url).await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], "url", "{url}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {message}");
    }
    let listed: serde_json::Value =
        support::get_json(&client, format!("{base}/api/v1/models/downloads")).await;
    assert_eq!(
        listed["downloads"],
        serde_json::json!([]),
        "nothing started"
    );
    server.shutdown().await.unwrap();
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, 180])
    })
    .write_to(&mut bytes, image::ImageFormat::Png)
    .unwrap();
    bytes.into_inner()
}

/// The API over a queue that records into a gallery in the workspace's data folder.
async fn serve_with_gallery(
    ws: &Workspace,
) -> (
    diffugen_server::ServerHandle,
    String,
    Arc<diffugen_gallery::Gallery>,
) {
    let gallery = Arc::new(
        diffugen_gallery::Gallery::open(ws.data_dir())
            .unwrap()
            .with_outputs_dir(ws.path("outputs")),
    );
    let jobs = JobManager::start(
        Arc::new(engine()),
        diffugen_jobs::JobOptions {
            depth: 4,
            orchestrator: None,
            gallery: Some(gallery.clone()),
            defaults: Default::default(),
            store: None,
        },
    );
    let (server, base) = support::serve_api(ws, jobs).await;
    (server, base, gallery)
}

#[tokio::test]
async fn an_edit_without_a_size_keeps_the_photos_shape_and_its_remix_renders_the_same_img2img_again(
) {
    let ws = Workspace::new();
    // The test model with a small native size, so the shape can be checked at a cost a test can pay.
    std::fs::write(
        ws.models_dir().join("small.preset.json"),
        serde_json::json!({
            "model": "tiny.gguf",
            "defaults": {"steps": 1, "cfg_scale": 1.0, "sampler": "euler", "width": 128, "height": 128}
        })
        .to_string(),
    )
    .unwrap();
    let (server, base, gallery) = serve_with_gallery(&ws).await;
    let client = reqwest::Client::new();
    // A 16:9 photo, as Open WebUI sends it: no size.
    let form = reqwest::multipart::Form::new()
        .text("model", "small")
        .text("prompt", "a harbor at dawn")
        .text("seed", "11")
        .text("strength", "0.5")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png(320, 180)).file_name("harbor.png"),
        );
    let response = post_edit(&client, &base, form).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let first = image::load_from_memory(
        &base64::engine::general_purpose::STANDARD
            .decode(body["data"][0]["b64_json"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
    .to_rgb8();
    assert_eq!(
        first.dimensions(),
        (192, 128),
        "wide stays wide, at about the model's 128x128 area in multiples of 64"
    );

    let entry = gallery.list(&Default::default()).unwrap().entries.remove(0);
    let remix: serde_json::Value =
        support::get_json(&client, format!("{base}/api/v1/gallery/{}/remix", entry.id)).await;
    assert_eq!(remix["strength"], 0.5, "{remix:.200}");
    assert!(
        remix["init_image"]["base64"].is_string(),
        "the init image comes back"
    );
    let started = client
        .post(format!("{base}/api/v1/jobs"))
        .json(&remix)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let job: serde_json::Value = started.json().await.unwrap();
    let _events = client
        .get(format!(
            "{base}/api/v1/jobs/{}/events",
            job["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let info: serde_json::Value = client
        .get(format!(
            "{base}/api/v1/jobs/{}",
            job["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["state"], "done", "{info}");
    let again = support::pixels(info["outputs"][0]["path"].as_str().unwrap());
    assert!(again == first, "the remix renders the identical image");
    server.shutdown().await.unwrap();
}

/// `diffugen serve` as its own process on a free port.
struct ServeProcess {
    child: std::process::Child,
    base: String,
}

impl ServeProcess {
    async fn start(ws: &Workspace) -> ServeProcess {
        ServeProcess::launch(ws, None).await
    }

    /// With the outputs folder on a file system of `size_kib` of which `free_kib` are free: a real full disk,
    /// in a mount namespace of its own (`unshare -m`), so nothing outside the server sees it.
    async fn with_small_disk(ws: &Workspace, size_kib: u32, free_kib: u32) -> ServeProcess {
        ServeProcess::launch(ws, Some((size_kib, free_kib))).await
    }

    async fn launch(ws: &Workspace, small_disk: Option<(u32, u32)>) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let diffugen = support::diffugen_bin();
        let mut command = match small_disk {
            None => std::process::Command::new(diffugen),
            Some((size, free)) => {
                let outputs = ws.path("outputs");
                std::fs::create_dir_all(&outputs).unwrap();
                let mut unshare = std::process::Command::new("unshare");
                // As root a mount namespace suffices; otherwise a user namespace maps us to root in it.
                let namespaces = if unsafe { libc::geteuid() } == 0 {
                    "-m"
                } else {
                    "-rm"
                };
                unshare.args([namespaces, "sh", "-c"]).arg(format!(
                    "mount -t tmpfs -o size={size}k tmpfs \"$0\" && \
                     head -c {}k /dev/zero > \"$0/.filler\" && exec \"$@\"",
                    size - free
                ));
                unshare.arg(&outputs).arg(diffugen);
                unshare
            }
        };
        command
            .args(["--data-dir", ws.data_dir().to_str().unwrap()])
            .args(["serve", "--port", &port.to_string(), "--no-ollama-gateway"])
            .env("DIFFUGEN_VRAM_POLICY", "never")
            .env_remove("DIFFUGEN_MODELS_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{base}/health")).await.is_err() {
            assert!(Instant::now() < deadline, "serve did not start");
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read as _;
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("serve exited at start ({status}): {stderr}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Not read from here on: a full pipe must not block the server.
        drop(child.stderr.take());
        ServeProcess { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn when_the_disk_is_full_every_dialect_fails_clearly_and_no_file_or_row_is_left() {
    let ws = Workspace::new();
    // 24 KiB free where the images go: a 192x192 render's PNG takes about 50.
    let server = ServeProcess::with_small_disk(&ws, 256, 24).await;
    let client = reqwest::Client::new();
    let openai = client
        .post(server.url("/v1/images/generations"))
        .json(&serde_json::json!({"model": "tiny", "prompt": "a wide sea", "size": "192x192", "steps": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 507);
    let error: serde_json::Value = openai.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot write the image") && message.contains("the disk is full"),
        "{message}"
    );
    assert_eq!(error["error"]["code"], "storage_failed", "{error}");

    let a1111 = client
        .post(server.url("/sdapi/v1/txt2img"))
        .json(&serde_json::json!({"prompt": "a wide sea", "width": 192, "height": 192, "steps": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(a1111.status(), 507);
    let error: serde_json::Value = a1111.json().await.unwrap();
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("the disk is full"),
        "{error}"
    );

    let job: serde_json::Value = client
        .post(server.url("/api/v1/jobs"))
        .json(&serde_json::json!({"model": "tiny", "prompt": "a wide sea", "width": 192, "height": 192, "steps": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let events = get_text(&client, server.url(&format!("/api/v1/jobs/{id}/events"))).await;
    assert!(
        events.contains("event: failed") && events.contains("\"kind\":\"storage\""),
        "{events}"
    );

    let gallery: serde_json::Value =
        support::get_json(&client, server.url("/api/v1/gallery")).await;
    assert_eq!(gallery["entries"], serde_json::json!([]));
    // The small disk as the server sees it (its mount namespace, through /proc): nothing but the filler.
    let seen = std::path::PathBuf::from(format!("/proc/{}/root", server.child.id()))
        .join(ws.path("outputs").strip_prefix("/").unwrap());
    let mut left: Vec<String> = std::fs::read_dir(&seen)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [".filler"],
        "no image, no temporary file left on the full disk"
    );
}

#[tokio::test]
async fn waiting_jobs_survive_a_killed_server_in_order_with_their_ids_and_the_cut_off_one_is_failed(
) {
    let ws = Workspace::new();
    let mut server = ServeProcess::start(&ws).await;
    let client = reqwest::Client::new();
    let submit = |steps: u32, prompt: &'static str| {
        let request = client.post(server.url("/api/v1/jobs")).json(
            &serde_json::json!({"model": "tiny", "prompt": prompt, "width": 64, "height": 64,
                                      "steps": steps, "threads": 2}),
        );
        async move {
            let job: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            job["id"].as_str().unwrap().to_string()
        }
    };
    let long = submit(150, "a long storm").await;
    let second = submit(2, "a calm sea").await;
    let third = submit(2, "a red kite").await;
    let get = |url: String| support::get_json(&client, url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(server.url(&format!("/api/v1/jobs/{long}"))).await["last_event"]["phase"]
        != "sampling"
    {
        assert!(
            Instant::now() < deadline,
            "the first job never started sampling"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server dies at once (SIGKILL), with one job rendering and two waiting.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    // A file a crash left half-written; the restart sweeps it away.
    std::fs::create_dir_all(ws.path("outputs")).unwrap();
    std::fs::write(ws.path("outputs/.diffugen-999-0.png.tmp"), b"half").unwrap();

    let server = ServeProcess::start(&ws).await;
    assert!(
        !ws.path("outputs/.diffugen-999-0.png.tmp").exists(),
        "temporary files are removed at start-up"
    );
    let cut = get(server.url(&format!("/api/v1/jobs/{long}"))).await;
    assert_eq!(cut["state"], "failed", "{cut}");
    assert_eq!(
        cut["error"],
        "interrupted: DiffuGen stopped while this job was rendering"
    );
    assert_eq!(cut["last_event"]["kind"], "interrupted");
    for id in [&second, &third] {
        let events = get_text(&client, server.url(&format!("/api/v1/jobs/{id}/events"))).await;
        assert!(events.contains("event: done"), "{id}: {events}");
    }
    let history = get(server.url("/api/v1/queue/history")).await;
    let order: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [third.as_str(), second.as_str(), long.as_str()],
        "the waiting jobs ran in their order after the cut-off one"
    );
}

#[tokio::test]
async fn what_axum_refuses_by_itself_is_answered_in_each_dialects_shape_naming_the_field() {
    let ws = Workspace::new();
    let jobs = JobManager::new(Arc::new(engine()), 4);
    let (server, base) = support::serve_api(&ws, jobs).await;
    let client = reqwest::Client::new();
    let json = |response: reqwest::Response| async move {
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .map(|a| a.to_str().unwrap().to_string());
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        (status, allow, body)
    };

    // A path parameter that is not a number, a query parameter that is not one: 400 naming it.
    let (status, _, body) = json(
        client
            .get(format!("{base}/api/v1/gallery/abc"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let (status, _, body) = json(
        client
            .get(format!("{base}/api/v1/gallery?limit=lots"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "limit", "{body}");

    // A method the route does not take: 405 with Allow, in the route's own shape.
    let (status, allow, body) = json(
        client
            .get(format!("{base}/v1/images/generations"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(allow.as_deref(), Some("POST"));
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    let (status, _, body) = json(
        client
            .get(format!("{base}/sdapi/v1/txt2img"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("does not take this method"),
        "{body}"
    );
    let (status, _, body) =
        json(client.get(format!("{base}/generate")).send().await.unwrap()).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["success"], false, "{body}");

    // A field of the wrong type in the job API is named, not `body`.
    let (status, _, body) = json(
        client
            .post(format!("{base}/api/v1/jobs"))
            .json(&serde_json::json!({"model": "tiny", "prompt": "x", "width": "wide"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "width", "{body}");

    // An edit whose image is not one names `image`, the field the client sent.
    let form = reqwest::multipart::Form::new()
        .text("prompt", "x")
        .text("model", "tiny")
        .part(
            "image",
            reqwest::multipart::Part::bytes(b"not a picture".to_vec()),
        );
    let (status, _, body) = json(post_edit(&client, &base, form).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "image", "{body}");

    // 60 MB of multipart is too large: 413, not 400.
    let form = reqwest::multipart::Form::new().text("prompt", "x").part(
        "image",
        reqwest::multipart::Part::bytes(vec![0u8; 60 << 20]),
    );
    let (status, _, body) = json(post_edit(&client, &base, form).await).await;
    assert_eq!(status, 413, "{body}");

    // A1111: batch_size x n_iter over the limit names n_iter, the field that multiplied it.
    let (status, _, body) = json(
        client
            .post(format!("{base}/sdapi/v1/txt2img"))
            .json(&serde_json::json!({"prompt": "x", "batch_size": 4, "n_iter": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().starts_with("n_iter"),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

/// A PNG that declares `width`x`height` in its header but carries one pixel of data: what an image bomb looks like
/// to a server that reads the header first.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = png(1, 1);
    // The IHDR chunk starts after the 8-byte signature: length (4), "IHDR" (4), width (4), height (4), ...
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[tokio::test]
async fn an_image_that_declares_too_many_pixels_is_refused_before_it_is_decoded() {
    let ws = Workspace::new();
    let (server, base) = support::serve_api(&ws, JobManager::new(Arc::new(engine()), 8)).await;
    let client = reqwest::Client::new();
    let bomb = base64::engine::general_purpose::STANDARD.encode(png_declaring(12_000, 12_000));
    let response = client
        .post(format!("{base}/api/v1/jobs"))
        .json(&json!({"model": "tiny", "prompt": "x", "init_image": {"base64": bomb}}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let error: Value = response.json().await.unwrap();
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "init_image", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("12000x12000") && message.contains("4096x4096"),
        "{message}"
    );
    let form = reqwest::multipart::Form::new()
        .text("prompt", "x")
        .text("model", "tiny")
        .part(
            "image",
            reqwest::multipart::Part::bytes(png_declaring(12_000, 12_000)).file_name("bomb.png"),
        );
    let response = post_edit(&client, &base, form).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("megapixels"),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_answers_within_100_ms_while_a_thousand_half_sent_requests_and_image_bombs_arrive() {
    let ws = Workspace::new();
    let (server, base) = support::serve_api(&ws, JobManager::new(Arc::new(engine()), 8)).await;
    let addr = base.trim_start_matches("http://").to_string();
    // 1,100 clients that send half a request head and then nothing.
    let mut stalled = Vec::new();
    for _ in 0..1_100 {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket
            .write_all(b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        stalled.push(socket);
    }
    // Four image bombs at once (12000x12000 PNGs of a few hundred bytes).
    let client = reqwest::Client::new();
    let bomb = base64::engine::general_purpose::STANDARD.encode(png_declaring(12_000, 12_000));
    let bombs: Vec<_> = (0..4)
        .map(|_| {
            let request = client
                .post(format!("{base}/api/v1/jobs"))
                .json(&json!({"model": "tiny", "prompt": "x", "init_image": {"base64": bomb}}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut latencies = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert!(health.status().is_success());
        latencies.push(started.elapsed());
    }
    for bomb in bombs {
        assert_eq!(bomb.await.unwrap().unwrap(), 400, "a bomb is refused");
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(100),
        "/health took {median:?} (median of {latencies:?})"
    );
    drop(stalled);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_body_is_refused_naming_it_never_ignored_and_a_favorite_needs_no_body() {
    let ws = Workspace::new();
    let (server, base, gallery) = serve_with_gallery(&ws).await;
    let file = ws.path("outputs/kept.png");
    std::fs::create_dir_all(ws.path("outputs")).unwrap();
    std::fs::write(&file, png(8, 8)).unwrap();
    let id = gallery.add(&file).unwrap();
    let client = reqwest::Client::new();
    let tags = client
        .post(format!("{base}/api/v1/gallery/{id}/tags"))
        .header("content-type", "application/json")
        .body("{\"tags\": [\"sea\"")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 400);
    let error: Value = tags.json().await.unwrap();
    assert_eq!(error["error"]["param"], "body", "{error}");
    let favorite = client
        .post(format!("{base}/api/v1/gallery/{id}/favorite"))
        .send()
        .await
        .unwrap();
    assert_eq!(favorite.status(), 200);
    let entry: Value = favorite.json().await.unwrap();
    assert_eq!(entry["favorite"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn links_out_of_the_outputs_folder_unknown_a1111_routes_options_that_are_no_object_and_tag_floods_are_refused(
) {
    let ws = Workspace::new();
    let (server, base, gallery) = serve_with_gallery(&ws).await;
    let client = reqwest::Client::new();
    std::fs::create_dir_all(ws.path("outputs")).unwrap();
    std::fs::write(ws.path("secret.png"), png(4, 4)).unwrap();
    std::os::unix::fs::symlink(ws.path("secret.png"), ws.path("outputs/link.png")).unwrap();
    let linked = client
        .get(format!("{base}/images/link.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        linked.status(),
        404,
        "a link is not followed out of the outputs folder"
    );

    let unknown = client
        .get(format!("{base}/sdapi/v1/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "NotFound", "A1111's shape: {body}");

    let options = client
        .post(format!("{base}/sdapi/v1/options"))
        .json(&json!("str"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 422);

    std::fs::write(ws.path("outputs/kept.png"), png(8, 8)).unwrap();
    let id = gallery.add(&ws.path("outputs/kept.png")).unwrap();
    let flood: Vec<String> = (0..1000).map(|n| format!("tag{n}")).collect();
    let tags = client
        .post(format!("{base}/api/v1/gallery/{id}/tags"))
        .json(&json!({ "tags": flood }))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 400);
    let long = client
        .post(format!("{base}/api/v1/gallery/{id}/boards"))
        .json(&json!({ "board": "b".repeat(1000) }))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_paused_queue_stays_paused_after_a_restart_and_its_waiting_job_waits_for_resume() {
    let ws = Workspace::new();
    let mut server = ServeProcess::start(&ws).await;
    let client = reqwest::Client::new();
    let paused: serde_json::Value = client
        .post(server.url("/api/v1/queue/pause"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    let job: serde_json::Value = client
        .post(server.url("/api/v1/jobs"))
        .json(
            &serde_json::json!({"model": "tiny", "prompt": "a held job", "width": 64, "height": 64,
                                  "steps": 2, "threads": 2}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = ServeProcess::start(&ws).await;
    let state = support::get_json(&client, server.url("/api/v1/queue/state")).await;
    assert_eq!(state["paused"], true, "the pause outlives the restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = support::get_json(&client, server.url(&format!("/api/v1/jobs/{id}"))).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");

    client
        .post(server.url("/api/v1/queue/resume"))
        .send()
        .await
        .unwrap();
    let events = get_text(&client, server.url(&format!("/api/v1/jobs/{id}/events"))).await;
    assert!(events.contains("event: done"), "{events}");
    let state = support::get_json(&client, server.url("/api/v1/queue/state")).await;
    assert_eq!(state["paused"], false);
}

/// `initialize` on `/mcp`, as an MCP client opens a session.
async fn open_mcp_session(client: &reqwest::Client, base: &str) -> reqwest::Response {
    client
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-03-26",
                "capabilities": {},
                "clientInfo": {"name": "flood", "version": "1"}
            }
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_mcp_sessions_stops_at_the_cap_with_a_503_and_a_closed_session_makes_room() {
    let ws = Workspace::new();
    let (server, base) = support::serve_api(&ws, JobManager::new(Arc::new(engine()), 4)).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..diffugen_server::mcp::MAX_SESSIONS {
        let opened = open_mcp_session(&client, &base).await;
        assert_eq!(opened.status(), 200);
        let id = opened.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    let refused = open_mcp_session(&client, &base).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "{} MCP sessions are open",
            diffugen_server::mcp::MAX_SESSIONS
        )),
        "{message}"
    );
    assert!(message.contains("DELETE /mcp"), "{message}");
    // An open session keeps working while new ones are refused.
    let listed = client
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &ids[0])
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(listed.status().is_success(), "{}", listed.status());
    // Closing one makes room for the next client.
    let closed = client
        .delete(format!("{base}/mcp"))
        .header("mcp-session-id", ids.pop().unwrap())
        .send()
        .await
        .unwrap();
    assert!(closed.status().is_success(), "{}", closed.status());
    let reopened = open_mcp_session(&client, &base).await;
    assert_eq!(reopened.status(), 200);
    server.shutdown().await.unwrap();
}
