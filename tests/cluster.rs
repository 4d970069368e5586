//! The cluster on NATS JetStream, end to end with real processes: a real `nats-server` on loopback, a front
//! (`diffugen serve --cluster ... --no-engine`) and render workers (`diffugen worker --cluster ...`), each with its
//! own data and models folders, rendering the real test model.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diffugen_testkit::nats::NatsServer as Nats;
use serde_json::{json, Value};
use support::Workspace;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nats_server() -> Nats {
    Nats::start()
}

/// A `diffugen` process that is killed when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn diffugen(ws: &Workspace, args: &[&str]) -> Process {
    Process(
        Command::new(support::diffugen_bin())
            .arg("--data-dir")
            .arg(ws.data_dir())
            .args(args)
            .env("DIFFUGEN_VRAM_POLICY", "never")
            .env_remove("DIFFUGEN_MODELS_DIR")
            .env_remove("OLLAMA_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A front without an engine on `port`.
fn front(ws: &Workspace, nats: &Nats, port: u16) -> Process {
    diffugen(
        ws,
        &[
            "serve",
            "--port",
            &port.to_string(),
            "--no-ollama-gateway",
            "--cluster",
            &nats.url,
            "--no-engine",
        ],
    )
}

/// A worker named `name` whose jobs go to another worker after 2 s without a sign of life.
fn worker(ws: &Workspace, nats: &Nats, name: &str) -> Process {
    diffugen(
        ws,
        &[
            "worker",
            "--cluster",
            &nats.url,
            "--name",
            name,
            "--ack-wait",
            "2",
        ],
    )
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn up(port: u16) -> Api {
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.client.get(api.url("/health")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the front did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Value {
        support::get_json(&self.client, self.url(path)).await
    }

    /// Submits a 64×64 render of the test model; returns the job's id.
    async fn submit(&self, model: &str, prompt: &str, seed: i64, steps: u32) -> String {
        self.submit_sized(model, prompt, seed, steps, 64).await
    }

    /// Submits a `size`×`size` render of the test model; returns the job's id.
    async fn submit_sized(
        &self,
        model: &str,
        prompt: &str,
        seed: i64,
        steps: u32,
        size: u32,
    ) -> String {
        let response = self
            .client
            .post(self.url("/api/v1/jobs"))
            .json(
                &json!({"model": model, "prompt": prompt, "width": size, "height": size,
                          "steps": steps, "seed": seed, "threads": 1}),
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Waits until job `id` has ended; returns its final state.
    async fn finished(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.get(&format!("/api/v1/jobs/{id}")).await;
            if ["done", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {job}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A finished job's events, as its SSE stream replays them.
    async fn events(&self, id: &str) -> Vec<Value> {
        let body = tokio::time::timeout(Duration::from_secs(30), async {
            self.client
                .get(self.url(&format!("/api/v1/jobs/{id}/events")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await
        .expect("a finished job's event stream ends");
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|data| serde_json::from_str(data.trim()).unwrap())
            .collect()
    }

    async fn gallery_count(&self) -> usize {
        self.get("/api/v1/gallery?limit=100").await["entries"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// A workspace whose models folder also holds the test model as `solo` (a model only some machines have).
fn with_solo(ws: Workspace) -> Workspace {
    std::os::unix::fs::symlink(
        diffugen_testkit::test_model(),
        ws.models_dir().join("solo.gguf"),
    )
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_front_without_an_engine_and_two_workers_share_a_stream_of_jobs_recorded_in_the_fronts_gallery(
) {
    let _serial = support::ONE_AT_A_TIME.lock().await;
    let nats = nats_server();
    // Each machine has its own folders: worker b alone holds `solo` — the front knows it only from b's announcement.
    let (front_ws, a_ws, b_ws) = (
        Workspace::new(),
        Workspace::new(),
        with_solo(Workspace::new()),
    );
    let port = free_port();
    let _front = front(&front_ws, &nats, port);
    let api = Api::up(port).await;
    let _a = worker(&a_ws, &nats, "a");
    let _b = worker(&b_ws, &nats, "b");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let models = api.get("/v1/models").await;
        let ids: Vec<&str> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        if ids.contains(&"solo") {
            assert_eq!(
                ids,
                ["tiny", "solo"],
                "the front's own models, then its workers'"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the front never listed worker b's model: {models}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sd_models = api.get("/sdapi/v1/sd-models").await;
    assert!(
        sd_models
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model_name"] == "solo" && m["filename"].is_null()),
        "A1111 clients see it too, with no file here: {sd_models}"
    );
    let unknown = api
        .client
        .post(api.url("/api/v1/jobs"))
        .json(&json!({"model": "nowhere", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let said = unknown.text().await.unwrap();
    assert!(
        said.contains("unknown model 'nowhere'") && said.contains("solo"),
        "{said}"
    );

    let mut jobs = Vec::new();
    for (i, model) in ["tiny", "tiny", "solo", "tiny", "solo", "tiny"]
        .iter()
        .enumerate()
    {
        let id = api
            .submit(model, "a lighthouse at dusk", 100 + i as i64, 3)
            .await;
        jobs.push((id, *model, 100 + i as i64));
    }
    let mut by_worker: std::collections::HashMap<String, usize> = Default::default();
    for (id, model, seed) in &jobs {
        let job = api.finished(id, Duration::from_secs(240)).await;
        assert_eq!(job["state"], "done", "{job}");
        let worker = job["worker"].as_str().unwrap_or_default().to_string();
        if *model == "solo" {
            assert_eq!(worker, "b", "a model only worker b holds goes to b: {job}");
        }
        *by_worker.entry(worker).or_default() += 1;
        let outputs = job["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1, "{job}");
        assert!(
            outputs[0]["gallery_id"].as_u64().is_some(),
            "recorded in the front's gallery: {job}"
        );
        assert_eq!(outputs[0]["seed"], *seed);
        let path = std::path::Path::new(outputs[0]["path"].as_str().unwrap());
        assert!(
            path.starts_with(front_ws.data_dir()),
            "the image is a file of the front's: {}",
            path.display()
        );
        let events = api.events(id).await;
        let sampled = events.iter().filter(|e| e["phase"] == "sampling").count();
        assert!(
            sampled >= 1,
            "the worker's live steps reached the front: {events:?}"
        );
    }
    assert!(
        by_worker.get("a").copied().unwrap_or(0) >= 1
            && by_worker.get("b").copied().unwrap_or(0) >= 1,
        "both workers rendered: {by_worker:?}"
    );
    assert_eq!(
        api.gallery_count().await,
        6,
        "each job's image is in the front's gallery once"
    );

    // The same job rendered locally gives the same pixels.
    let (id, _, seed) = &jobs[0];
    let job = api.get(&format!("/api/v1/jobs/{id}")).await;
    let clustered = support::pixels(job["outputs"][0]["path"].as_str().unwrap());
    let local_ws = Workspace::new();
    let (events, output) = local_ws.generate_json(&[
        "--prompt",
        "a lighthouse at dusk",
        "--seed",
        &seed.to_string(),
        "--steps",
        "3",
        "--threads",
        "1",
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let local = support::pixels(&support::outputs(&events)[0].path);
    assert!(
        clustered == local,
        "a cluster render is pixel-identical to a local one"
    );

    // The workers announced themselves with what they hold.
    let workers = api.get("/api/v1/cluster").await;
    let names: Vec<&str> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "{workers}");
    assert!(
        workers["workers"][1]["models"]
            .as_array()
            .unwrap()
            .contains(&json!("solo")),
        "{workers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_render_loses_nothing_the_other_worker_finishes_the_job() {
    let _serial = support::ONE_AT_A_TIME.lock().await;
    let nats = nats_server();
    let (front_ws, a_ws, b_ws) = (Workspace::new(), Workspace::new(), Workspace::new());
    let port = free_port();
    let _front = front(&front_ws, &nats, port);
    let api = Api::up(port).await;
    let mut workers = [
        ("a", Some(worker(&a_ws, &nats, "a"))),
        ("b", Some(worker(&b_ws, &nats, "b"))),
    ];
    let id = api.submit("tiny", "a long storm", 7, 120).await;
    // Whichever worker takes it is killed once it samples.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let job = api.get(&format!("/api/v1/jobs/{id}")).await;
        if job["last_event"]["phase"] == "sampling" {
            break job["worker"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the job never started sampling: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, process) = workers.iter_mut().find(|(name, _)| *name == first).unwrap();
    let mut killed = process.take().unwrap();
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();

    let job = api.finished(&id, Duration::from_secs(300)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_ne!(
        job["worker"],
        first.as_str(),
        "the other worker finished it: {job}"
    );
    let events = api.events(&id).await;
    let handed_over = events.iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("worker '{first}' stopped answering")))
    });
    assert!(
        handed_over,
        "the redelivery is in the job's events: {events:?}"
    );
    assert_eq!(job["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(api.gallery_count().await, 1, "nothing lost, nothing twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_restarted_while_jobs_wait_keeps_them_and_a_worker_that_comes_later_renders_them()
{
    let _serial = support::ONE_AT_A_TIME.lock().await;
    let nats = nats_server();
    let (front_ws, a_ws) = (Workspace::new(), Workspace::new());
    let port = free_port();
    let mut first = front(&front_ws, &nats, port);
    let api = Api::up(port).await;
    let ids = [
        api.submit("tiny", "a red kite", 1, 2).await,
        api.submit("tiny", "a blue kite", 2, 2).await,
    ];
    // Sent to the stream (no worker yet), then the front goes down hard and comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("/api/v1/cluster").await["waiting"] != 2 {
        assert!(
            Instant::now() < deadline,
            "the jobs never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _again = front(&front_ws, &nats, port);
    let api = Api::up(port).await;
    for id in &ids {
        let job = api.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(job["state"], "queued", "kept across the restart: {job}");
    }
    let _a = worker(&a_ws, &nats, "a");
    for id in &ids {
        let job = api.finished(id, Duration::from_secs(120)).await;
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(job["worker"], "a");
    }
    // The front sent each job again after its restart; the stream kept one copy of each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.gallery_count().await, 2, "each job rendered once");
}

#[test]
fn a_worker_without_a_reachable_cluster_says_so_and_exits() {
    let ws = Workspace::new();
    let port = free_port();
    let output = ws.diffugen(&[
        "worker",
        "--cluster",
        &format!("nats://127.0.0.1:{port}"),
        "--name",
        "a",
    ]);
    assert!(!output.status.success());
    let said = support::stderr(&output);
    assert!(
        said.contains("cannot connect to the NATS server at nats://127.0.0.1:"),
        "{said}"
    );
    let bad = ws.diffugen(&["worker", "--cluster", "nats://127.0.0.1:1", "--name", "a b"]);
    assert!(!bad.status.success());
    assert!(support::stderr(&bad).contains("--name must be 1 to 64 letters"));
    let alone = ws.diffugen(&["serve", "--no-engine", "--no-ollama-gateway"]);
    assert!(!alone.status.success());
    assert!(support::stderr(&alone).contains("--no-engine needs --cluster"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_front_that_renders_too_shares_the_jobs_with_a_worker_and_a_cancel_reaches_the_worker_holding_the_job(
) {
    let _serial = support::ONE_AT_A_TIME.lock().await;
    let nats = nats_server();
    let (front_ws, a_ws) = (Workspace::new(), Workspace::new());
    let port = free_port();
    // No --no-engine: the front renders too, as the worker named `local`.
    let _front = diffugen(
        &front_ws,
        &[
            "serve",
            "--port",
            &port.to_string(),
            "--no-ollama-gateway",
            "--cluster",
            &nats.url,
            "--ack-wait",
            "2",
        ],
    );
    let api = Api::up(port).await;
    let _a = worker(&a_ws, &nats, "a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get("/api/v1/cluster").await["workers"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "both workers announce themselves"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let long = api
        .submit_sized("tiny", "an endless storm", 3, 150, 256)
        .await;
    let holder = loop {
        let job = api.get(&format!("/api/v1/jobs/{long}")).await;
        if job["last_event"]["phase"] == "sampling" {
            break job["worker"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the long job never sampled: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let short = api.submit("tiny", "a quick sketch", 4, 2).await;
    let job = api.finished(&short, Duration::from_secs(120)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_ne!(
        job["worker"],
        holder.as_str(),
        "the free worker took it: {job}"
    );

    let cancelled = api
        .client
        .post(api.url(&format!("/api/v1/jobs/{long}/cancel")))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success());
    assert_eq!(
        api.get(&format!("/api/v1/jobs/{long}")).await["state"],
        "cancelled"
    );
    // The holder stops rendering it: its announcement no longer lists the job, long before 150 steps at 256×256 could end.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cluster = api.get("/api/v1/cluster").await;
        let still = cluster["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["jobs"].as_array().unwrap().contains(&json!(long)));
        if !still {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker '{holder}' kept rendering a cancelled job: {cluster}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And takes the next job.
    let next = api.submit("tiny", "after the storm", 5, 2).await;
    assert_eq!(
        api.finished(&next, Duration::from_secs(120)).await["state"],
        "done"
    );
    assert_eq!(api.gallery_count().await, 2);
}
