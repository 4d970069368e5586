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
