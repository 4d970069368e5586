//! Model downloads against a local HTTP server started by each test: a full download, a connection cut at 40 %
//! and resumed with `Range`, a wrong checksum, a server without range support, a full disk, cancel — and
//! `diffugen models pull` doing the same from the command line.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use diffugen_downloads::{
    download, DownloadError, DownloadRequest, DownloadStage, Downloads, PullState,
};
use sha2::{Digest, Sha256};
use support::{stderr, Workspace};

const SIZE: usize = 4 << 20;

/// How the test server behaves.
#[derive(Clone, Default)]
struct Behaviour {
    ranges: bool,
    /// Cut the first full-body response after this fraction of the file.
    cut_first_at: Option<f64>,
    /// Claim this Content-Length (and send nothing).
    claim_length: Option<u64>,
    /// Pause between 64 KiB chunks.
    slow: Option<Duration>,
    /// Send no Content-Length (a chunked body of unknown size).
    hide_length: bool,
}

#[derive(Clone)]
struct Server {
    blob: Arc<Vec<u8>>,
    behaviour: Behaviour,
    /// The Range header of every GET (`None` when absent).
    seen: Arc<Mutex<Vec<Option<String>>>>,
    cut_done: Arc<Mutex<bool>>,
}

impl Server {
    async fn start(behaviour: Behaviour) -> (Server, String) {
        let blob: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
        let server = Server {
            blob: Arc::new(blob),
            behaviour,
            seen: Arc::default(),
            cut_done: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/models/tiny-model.gguf", axum::routing::get(serve))
            .route(
                "/moved/tiny-model.gguf",
                axum::routing::get(|| async {
                    Response::builder()
                        .status(StatusCode::FOUND)
                        .header("location", "/models/tiny-model.gguf")
                        .body(Body::empty())
                        .unwrap()
                }),
            )
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/models/tiny-model.gguf",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (server, url)
    }

    fn sha256(&self) -> String {
        Sha256::digest(&*self.blob)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(State(server): State<Server>, headers: HeaderMap) -> Response {
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    server.seen.lock().unwrap().push(range.clone());
    let behaviour = &server.behaviour;
    if let Some(length) = behaviour.claim_length {
        // A body that never comes: the client must refuse before reading it.
        let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        return Response::builder()
            .header("content-length", length)
            .body(Body::from_stream(never))
            .unwrap();
    }
    let total = server.blob.len();
    let start = match (&range, behaviour.ranges) {
        (Some(r), true) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let mut end = total;
    let mut cut = false;
    if let Some(fraction) = behaviour.cut_first_at {
        let mut done = server.cut_done.lock().unwrap();
        if !*done {
            *done = true;
            end = (total as f64 * fraction) as usize;
            cut = true;
        }
    }
    let blob = server.blob.clone();
    let slow = behaviour.slow;
    let chunks: Vec<(usize, usize)> = (start..end)
        .step_by(64 << 10)
        .map(|s| (s, (s + (64 << 10)).min(end)))
        .collect();
    let stream = futures_util::stream::iter(
        chunks.into_iter().map(Some).chain(cut.then_some(None)),
    )
    .then(move |chunk| {
        let blob = blob.clone();
        async move {
            if let Some(pause) = slow {
                tokio::time::sleep(pause).await;
            }
            match chunk {
                Some((a, b)) => Ok(axum::body::Bytes::copy_from_slice(&blob[a..b])),
                // The connection drops mid-body.
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "cut",
                )),
            }
        }
    });
    use futures_util::StreamExt;
    let mut response = Response::builder();
    if !behaviour.hide_length {
        response = response.header("content-length", total - start);
    }
    let mut response = response.header(
        "accept-ranges",
        if behaviour.ranges { "bytes" } else { "none" },
    );
    if start > 0 {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            "content-range",
            format!("bytes {start}-{}/{total}", total - 1),
        );
    }
    response.body(Body::from_stream(stream)).unwrap()
}

fn request(url: &str, dir: &std::path::Path, sha256: Option<String>) -> DownloadRequest {
    DownloadRequest {
        url: url.into(),
        dest_dir: dir.display().to_string(),
        file_name: None,
        sha256,
        size: None,
        token: None,
        ..DownloadRequest::default()
    }
}

async fn fetch(
    request: &DownloadRequest,
) -> (
    Result<std::path::PathBuf, DownloadError>,
    Vec<DownloadStage>,
) {
    let (_cancel, rx) = tokio::sync::watch::channel(false);
    let mut stages = Vec::new();
    let result = download(request, rx, &mut |s| stages.push(s)).await;
    (result, stages)
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_full_download_is_verified_and_renamed_into_place() {
    let (server, url) = Server::start(Behaviour {
        ranges: true,
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (result, stages) = fetch(&request(&url, dir.path(), Some(server.sha256()))).await;
    let path = result.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), *server.blob);
    assert_eq!(files_in(dir.path()), ["tiny-model.gguf"], "no .part left");
    assert!(
        matches!(stages.first(), Some(DownloadStage::Started { total_bytes: Some(t), .. }) if *t == SIZE as f64)
    );
    assert!(stages.contains(&DownloadStage::Verifying));
    assert!(
        matches!(stages.last(), Some(DownloadStage::Done { sha256, verified: true, .. }) if *sha256 == server.sha256())
    );
    assert_eq!(server.seen(), [None]);
}

#[tokio::test]
async fn a_redirect_is_followed_to_the_file() {
    let (server, url) = Server::start(Behaviour::default()).await;
    let moved = url.replace("/models/", "/moved/");
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = fetch(&request(&moved, dir.path(), Some(server.sha256()))).await;
    assert_eq!(std::fs::read(result.unwrap()).unwrap(), *server.blob);
}

#[tokio::test]
async fn a_file_over_the_size_cap_is_refused_when_announced_and_cut_when_it_runs_past_and_nothing_is_left(
) {
    let limit = (SIZE / 2) as u64;
    for hide_length in [false, true] {
        let (server, url) = Server::start(Behaviour {
            hide_length,
            ..Behaviour::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let capped = DownloadRequest {
            max_bytes: Some(limit),
            ..request(&url, dir.path(), None)
        };
        let (result, stages) = fetch(&capped).await;
        match result {
            Err(DownloadError::TooLarge { limit: l, .. }) => assert_eq!(l, limit),
            other => panic!("hide_length {hide_length}: {other:?}"),
        }
        assert!(
            matches!(stages.last(), Some(DownloadStage::Failed { error }) if error.contains("larger than")),
            "{stages:?}"
        );
        assert!(
            files_in(dir.path()).is_empty(),
            "{:?}",
            files_in(dir.path())
        );
        assert_eq!(server.seen().len(), 1, "not retried");
    }
}

#[tokio::test]
async fn a_connection_cut_at_40_percent_is_resumed_with_a_range_request_and_verifies() {
    let (server, url) = Server::start(Behaviour {
        ranges: true,
        cut_first_at: Some(0.4),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (result, stages) = fetch(&request(&url, dir.path(), Some(server.sha256()))).await;
    let path = result.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), *server.blob);
    // It resumes exactly where the received bytes end (at most the 40 % the server sent before the cut).
    let resumed = stages
        .iter()
        .find_map(|s| match s {
            DownloadStage::Retrying { resume_from, .. } => Some(*resume_from as usize),
            _ => None,
        })
        .expect("a retry after the cut");
    assert!(
        resumed > SIZE / 5 && resumed <= SIZE * 2 / 5,
        "resumed at {resumed}"
    );
    assert_eq!(server.seen(), [None, Some(format!("bytes={resumed}-"))]);
    assert!(!stages
        .iter()
        .any(|s| matches!(s, DownloadStage::Restarted { .. })));
}

#[tokio::test]
async fn a_server_without_range_support_restarts_from_zero() {
    let (server, url) = Server::start(Behaviour {
        ranges: false,
        cut_first_at: Some(0.4),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (result, stages) = fetch(&request(&url, dir.path(), Some(server.sha256()))).await;
    assert_eq!(std::fs::read(result.unwrap()).unwrap(), *server.blob);
    assert!(stages.iter().any(
        |s| matches!(s, DownloadStage::Restarted { reason } if reason.contains("no range support"))
    ));
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_wrong_checksum_removes_the_file_with_a_clear_error() {
    let (_server, url) = Server::start(Behaviour {
        ranges: true,
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let (result, stages) = fetch(&request(&url, dir.path(), Some(wrong.clone()))).await;
    let error = result.unwrap_err();
    assert!(
        matches!(&error, DownloadError::ChecksumMismatch { expected, .. } if *expected == wrong)
    );
    assert!(
        error
            .to_string()
            .contains("checksum mismatch for tiny-model.gguf"),
        "{error}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "nothing left behind: {:?}",
        files_in(dir.path())
    );
    assert!(matches!(stages.last(), Some(DownloadStage::Failed { .. })));
}

#[tokio::test]
async fn a_server_offering_another_size_than_the_pinned_one_is_refused_before_a_byte_is_written() {
    let (server, url) = Server::start(Behaviour {
        ranges: true,
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut pinned = request(&url, dir.path(), Some(server.sha256()));
    pinned.size = Some((SIZE + 1) as f64);
    let (result, stages) = fetch(&pinned).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, DownloadError::SizeMismatch { expected, offered, .. }
            if expected == SIZE as u64 + 1 && offered == SIZE as u64),
        "{error}"
    );
    assert!(error.to_string().contains("changed upstream"), "{error}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    assert!(
        !stages
            .iter()
            .any(|s| matches!(s, DownloadStage::Progress { .. })),
        "no byte was downloaded: {stages:?}"
    );

    // The right size goes through and verifies.
    pinned.size = Some(SIZE as f64);
    let (result, stages) = fetch(&pinned).await;
    assert_eq!(std::fs::read(result.unwrap()).unwrap(), *server.blob);
    assert!(
        matches!(
            stages.last(),
            Some(DownloadStage::Done { verified: true, .. })
        ),
        "{stages:?}"
    );

    // A size that is no size is named.
    pinned.size = Some(1.5);
    let (result, _) = fetch(&pinned).await;
    assert!(
        matches!(result, Err(DownloadError::Invalid { field: "size", .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_catalog_component_already_there_is_reused_only_when_it_has_the_pinned_size() {
    let (server, url) = Server::start(Behaviour {
        ranges: true,
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut file = request(&url, dir.path(), Some(server.sha256()));
    file.size = Some(SIZE as f64);
    let plan = diffugen_downloads::PullPlan {
        name: "shared".into(),
        files: vec![file],
        skip_present: true,
        preset: None,
    };
    let pull = |plan: diffugen_downloads::PullPlan| async move {
        let (_cancel, rx) = tokio::sync::watch::channel(false);
        let mut events = Vec::new();
        let result = diffugen_downloads::pull("dl-1", &plan, rx, &mut |e| events.push(e)).await;
        (result, events)
    };
    // Another file of the same name (a different VAE called ae.safetensors, say): a clear error, left untouched.
    std::fs::write(dir.path().join("tiny-model.gguf"), b"someone else's model").unwrap();
    let (result, events) = pull(plan.clone()).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, DownloadError::Occupied { size: 20, expected, .. } if expected == SIZE as u64),
        "{error}"
    );
    assert!(error.to_string().contains("move it aside"), "{error}");
    assert!(matches!(
        events.last().map(|e| &e.stage),
        Some(DownloadStage::Failed { .. })
    ));
    assert_eq!(
        std::fs::read(dir.path().join("tiny-model.gguf")).unwrap(),
        b"someone else's model"
    );
    assert!(server.seen().is_empty(), "nothing was fetched");

    // The component itself: reused without fetching it again.
    std::fs::write(dir.path().join("tiny-model.gguf"), &*server.blob).unwrap();
    let (result, _) = pull(plan).await;
    assert_eq!(result.unwrap(), [dir.path().join("tiny-model.gguf")]);
    assert!(server.seen().is_empty(), "nothing was fetched");
}

#[tokio::test]
async fn a_full_disk_is_a_clean_error_before_any_byte_is_written() {
    // The server announces a petabyte: more than any test disk holds.
    let (_server, url) = Server::start(Behaviour {
        claim_length: Some(1 << 50),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = fetch(&request(&url, dir.path(), None)).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, DownloadError::DiskFull { needed, .. } if needed == 1 << 50),
        "{error}"
    );
    assert!(error.to_string().contains("not enough disk space"));
    assert!(
        files_in(dir.path()).is_empty(),
        "no stray file: {:?}",
        files_in(dir.path())
    );
}

#[tokio::test]
async fn cancel_stops_the_download_and_leaves_nothing_behind() {
    let (_server, url) = Server::start(Behaviour {
        ranges: true,
        slow: Some(Duration::from_millis(30)),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let downloads = Downloads::new(2);
    let plan = diffugen_downloads::plan(&url, dir.path(), None, None).unwrap();
    let id = downloads.start(plan);
    let mut live = until_progress(&downloads, &id).await;
    assert!(downloads.cancel(&id));
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .unwrap()
            .unwrap();
        if event.stage == DownloadStage::Cancelled {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(downloads.list()[0].state, PullState::Cancelled);
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[tokio::test]
async fn cancel_during_the_pause_before_a_retry_stops_at_once_not_after_the_pause() {
    // Nothing listens on this port: every try fails at once and the pauses between tries grow (up to 8 s).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/model.safetensors");
    let (cancel, rx) = tokio::sync::watch::channel(false);
    let (retrying, mut retried) = tokio::sync::mpsc::unbounded_channel();
    let request = request(&url, dir.path(), None);
    let task = tokio::spawn(async move {
        download(&request, rx, &mut |stage| {
            if let DownloadStage::Retrying { attempt, .. } = stage {
                let _ = retrying.send(attempt);
            }
        })
        .await
    });
    // The third try has failed: its pause is 2 s.
    while retried.recv().await.unwrap() < 3 {}
    let asked = Instant::now();
    cancel.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the download ends on cancel")
        .unwrap();
    assert!(
        matches!(result, Err(DownloadError::Cancelled)),
        "{result:?}"
    );
    // Well before that pause would have ended.
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "cancelled after {:?}",
        asked.elapsed()
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

/// Waits until pull `id` has fetched its first bytes; its live events from there on.
async fn until_progress(
    downloads: &Downloads,
    id: &str,
) -> tokio::sync::broadcast::Receiver<diffugen_downloads::DownloadEvent> {
    let (_, _, mut live) = downloads.subscribe(id).unwrap();
    while !matches!(
        live.recv().await.unwrap().stage,
        DownloadStage::Progress { .. }
    ) {}
    live
}

/// Waits until pull `id` is done.
async fn until_done(downloads: &Downloads, id: &str) {
    let (_, state, mut live) = downloads.subscribe(id).unwrap();
    if state != PullState::Done {
        while !matches!(live.recv().await.unwrap().stage, DownloadStage::Done { .. }) {}
    }
}

/// Waits until pull `id` is listed as `state`.
async fn until_listed(downloads: &Downloads, id: &str, state: PullState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !downloads
        .list()
        .iter()
        .any(|p| p.id == id && p.state == state)
    {
        assert!(
            Instant::now() < deadline,
            "{id} never {state:?}: {:?}",
            downloads.list()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cancelled_download_can_be_tried_again_to_the_end_and_an_ended_one_dismissed() {
    let (_server, url) = Server::start(Behaviour {
        ranges: true,
        slow: Some(Duration::from_millis(10)),
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let downloads = Downloads::new(2);
    let id = downloads.start(diffugen_downloads::plan(&url, dir.path(), None, None).unwrap());
    until_progress(&downloads, &id).await;
    assert_eq!(
        downloads.retry(&id),
        None,
        "a running download is not started twice"
    );
    assert!(!downloads.dismiss(&id), "a running download stays listed");
    assert!(downloads.cancel(&id));
    until_listed(&downloads, &id, PullState::Cancelled).await;

    let again = downloads
        .retry(&id)
        .expect("a cancelled download can be tried again");
    assert_ne!(again, id);
    until_listed(&downloads, &again, PullState::Done).await;
    let listed: Vec<String> = downloads.list().into_iter().map(|p| p.id).collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&again),
        "the new try takes the old row's place"
    );
    assert_eq!(files_in(dir.path()), ["tiny-model.gguf"]);
    assert_eq!(
        downloads.retry(&again),
        None,
        "a finished download is not fetched again"
    );
    assert_eq!(downloads.retry("dl-999"), None);

    assert!(downloads.dismiss(&again));
    assert!(downloads.list().is_empty());
    assert!(!downloads.dismiss(&again));
}

#[tokio::test]
async fn downloads_beyond_the_limit_wait_their_turn() {
    let (_server, url) = Server::start(Behaviour {
        ranges: true,
        slow: Some(Duration::from_millis(5)),
        ..Behaviour::default()
    })
    .await;
    let downloads = Downloads::new(1);
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let first =
        downloads.start(diffugen_downloads::plan(&url, first_dir.path(), None, None).unwrap());
    let second =
        downloads.start(diffugen_downloads::plan(&url, second_dir.path(), None, None).unwrap());
    until_progress(&downloads, &first).await;
    let states: Vec<PullState> = downloads.list().iter().map(|p| p.state).collect();
    assert_eq!(states, [PullState::Running, PullState::Waiting]);
    for id in [first, second] {
        until_done(&downloads, &id).await;
    }
    assert_eq!(files_in(second_dir.path()), ["tiny-model.gguf"]);
}

#[tokio::test]
async fn asking_again_for_a_download_that_is_running_gets_the_same_download() {
    let (_server, url) = Server::start(Behaviour {
        ranges: true,
        slow: Some(Duration::from_millis(5)),
        ..Behaviour::default()
    })
    .await;
    let downloads = Downloads::new(2);
    let dir = tempfile::tempdir().unwrap();
    let first = downloads.start(diffugen_downloads::plan(&url, dir.path(), None, None).unwrap());
    let again = downloads.start(diffugen_downloads::plan(&url, dir.path(), None, None).unwrap());
    assert_eq!(again, first, "a double click starts no second copy");
    assert_eq!(downloads.list().len(), 1);
    until_done(&downloads, &first).await;
    // Once it has ended, asking again is a new download.
    let later = downloads.start(diffugen_downloads::plan(&url, dir.path(), None, None).unwrap());
    assert_ne!(later, first);
    downloads.cancel(&later);
}

#[test]
fn models_pull_downloads_a_url_into_the_models_folder_and_survives_a_dropped_connection() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server, url) = runtime.block_on(Server::start(Behaviour {
        ranges: true,
        cut_first_at: Some(0.4),
        ..Behaviour::default()
    }));
    let ws = Workspace::new();
    let output = ws.diffugen(&["models", "pull", &url, "--sha256", &server.sha256()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let file = ws.models_dir().join("tiny-model.gguf");
    assert_eq!(std::fs::read(&file).unwrap(), *server.blob);
    assert!(
        stderr(&output).contains("(sha256 verified)"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("connection lost"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.seen().len(), 2);

    // The file is there now: pulling it again is refused rather than overwriting it.
    let again = ws.diffugen(&["models", "pull", &url]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let bad = ws.diffugen(&["models", "pull", "not-a-model"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("catalog ids: sd-turbo"),
        "{}",
        stderr(&bad)
    );
    let bad = ws.diffugen(&["models", "pull", &url, "--sha256", "xyz"]);
    assert!(stderr(&bad).contains("invalid sha256"), "{}", stderr(&bad));

    let catalog = ws.diffugen(&["models", "catalog"]);
    let text = String::from_utf8_lossy(&catalog.stdout);
    assert!(
        text.contains("flux-schnell-q4") && text.contains("recommended"),
        "{text}"
    );
    drop(runtime);
}

#[tokio::test]
async fn the_api_starts_a_download_streams_its_events_and_lists_the_model() {
    let (server, url) = Server::start(Behaviour {
        ranges: true,
        cut_first_at: Some(0.4),
        ..Behaviour::default()
    })
    .await;
    let ws = Workspace::new();
    let jobs = diffugen_jobs::JobManager::new(Arc::new(support::engine()), 4);
    // The file server runs on this machine, so the API must be allowed to fetch from it.
    let config = diffugen_server::ServerConfig {
        private_downloads: true,
        ..support::server_config(&ws)
    };
    let (api, base) = support::serve_api_with(&ws, &config, jobs).await;
    let client = reqwest::Client::new();

    let started = client
        .post(format!("{base}/api/v1/models/downloads"))
        .json(&serde_json::json!({ "url": url, "sha256": server.sha256() }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let id = started.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The SSE stream ends by itself after the last event.
    let events = client
        .get(format!("{base}/api/v1/models/downloads/{id}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "event: started",
        "event: retrying",
        "event: verifying",
        "event: done",
    ] {
        assert!(events.contains(name), "{name} missing in {events}");
    }
    assert_eq!(
        std::fs::read(ws.models_dir().join("tiny-model.gguf")).unwrap(),
        *server.blob
    );

    let models: serde_json::Value = client
        .get(format!("{base}/api/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["cards"][0]["id"], "tiny");
    assert!(models["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == "tiny-model"));

    let bad = client
        .post(format!("{base}/api/v1/models/downloads"))
        .json(&serde_json::json!({ "model": "no-such-model" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sd-turbo"));
    let missing = client
        .get(format!("{base}/api/v1/models/downloads/dl-999/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    api.shutdown().await.unwrap();
}
