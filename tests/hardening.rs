//! The server as an attacker and a faulty world meet it: half-sent requests, floods of connections, server-side
//! fetches a client chooses, a full disk, restarts with jobs waiting. Real sockets, real processes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffugen_jobs::JobManager;
use diffugen_server::{AppState, Limits};
use support::{engine, Workspace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn half_sent_requests_are_cut_off_at_the_header_deadline_and_cannot_lock_others_out() {
    let ws = Workspace::new();
    let jobs = JobManager::new(Arc::new(engine()), 4);
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 8,
        drain: Duration::from_secs(1),
    };
    let server = diffugen_server::serve_limited(
        "127.0.0.1:0".parse().unwrap(),
        AppState::new(jobs, &support::server_config(&ws)),
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
    let listed: serde_json::Value = client
        .get(format!("{base}/api/v1/models/downloads"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let response = client
        .post(format!("{base}/v1/images/edits"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    use base64::Engine as _;
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
    let remix: serde_json::Value = client
        .get(format!("{base}/api/v1/gallery/{}/remix", entry.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

/// `diffugen serve` as its own process on a free port, with `limit` applied to it before it starts.
struct ServeProcess {
    child: std::process::Child,
    base: String,
}

impl ServeProcess {
    async fn start(ws: &Workspace, limit: impl Fn() + Send + Sync + 'static) -> ServeProcess {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_diffugen"));
        command
            .args(["--data-dir", ws.data_dir().to_str().unwrap()])
            .args(["serve", "--port", &port.to_string(), "--no-ollama-gateway"])
            .env("DIFFUGEN_VRAM_POLICY", "never")
            .env_remove("DIFFUGEN_MODELS_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: the closure only makes async-signal-safe calls (setrlimit, signal) in the child.
        unsafe {
            command.pre_exec(move || {
                limit();
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{base}/health")).await.is_err() {
            assert!(Instant::now() < deadline, "serve did not start");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// Files under `dir` (recursively), by name.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[tokio::test]
async fn when_the_disk_cannot_take_the_image_every_dialect_fails_clearly_and_no_file_or_row_is_left(
) {
    let ws = Workspace::new();
    // The gallery exists before the limit applies; a file left half-written by an earlier crash is there too.
    assert!(ws.diffugen(&["gallery", "list"]).status.success());
    std::fs::create_dir_all(ws.path("outputs")).unwrap();
    std::fs::write(ws.path("outputs/.diffugen-999-0.png.tmp"), b"").unwrap();
    // No file can grow past 32 KiB: a 192x192 render's PNG is larger (about 50 KiB), a 64x64 one fits (about 7)
    // but the gallery's write-ahead log then cannot take its row.
    let server = ServeProcess::start(&ws, || unsafe {
        let limit = libc::rlimit {
            rlim_cur: 32 << 10,
            rlim_max: 32 << 10,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    })
    .await;
    assert!(
        !ws.path("outputs/.diffugen-999-0.png.tmp").exists(),
        "temporary files are removed at start-up"
    );
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
    assert!(message.contains("cannot write the image"), "{message}");
    assert_eq!(error["error"]["code"], "storage_failed", "{error}");

    let files = files_under(&ws.path("outputs"));
    assert!(files.is_empty(), "nothing half-written is left: {files:?}");

    let a1111 = client
        .post(server.url("/sdapi/v1/txt2img"))
        .json(&serde_json::json!({"prompt": "a wide sea", "width": 64, "height": 64, "steps": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(a1111.status(), 507);
    let error: serde_json::Value = a1111.json().await.unwrap();
    let detail = error["detail"].as_str().unwrap();
    assert!(
        detail.contains("the gallery could not record it") && detail.contains(".png"),
        "{detail}"
    );
    // The rendered image is kept (nothing lost), and the message said where.
    let files = files_under(&ws.path("outputs"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(detail.contains(&files[0]), "{detail}");
    let gallery: serde_json::Value = client
        .get(server.url("/api/v1/gallery"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gallery["entries"], serde_json::json!([]));
}
