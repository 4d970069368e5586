//! `cargo bench -p diffugen --bench cluster`: what the cluster adds to a job, measured in one run on the test model
//! against a real `nats-server` on loopback. The same job (64x64, 2 steps) alternates between a local runtime (its
//! own queue and engine) and a cluster front without an engine whose one worker — another runtime in this process,
//! its own engine — renders it; both engines hold the model warm. The cluster's overhead per job is the front's time
//! for the job less the worker's own time for it (its queue's accepted → ended), measured on the same job, so the
//! render's own variation drops out: publishing, the claim, the image through the object store, writing and recording
//! it at the front (target <= 50 ms plus the image's transfer). The local/cluster pair shows the same from outside.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffugen_engine::{Destination, GenerateRequest, JobSpec};
use diffugen_jobs::{JobManager, Outcome};
use diffugen_runtime::{Config, Flags, Runtime, StartOptions};
use support::median;

const PAIRS: usize = 10;

async fn runtime(dir: &std::path::Path, front: bool, gallery: bool) -> Runtime {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(diffugen_testkit::test_model(), models.join("tiny.gguf")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let no_ollama = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let flags = Flags::new()
        .set("data_dir", "--data-dir", dir.display().to_string())
        .set("ollama_url", "--ollama-url", no_ollama)
        .set("vram_policy", "--vram-policy", "never");
    Runtime::start(StartOptions {
        config: Config::isolated(flags).unwrap(),
        worker: support::worker(),
        gpu: Arc::new(diffugen_vram::NoGpu("no NVIDIA GPU (benchmark)".into())),
        queue_depth: 64,
        vram: None,
        durable_queue: false,
        watch_folders: false,
        lanes: 1,
        gallery,
        front,
    })
    .await
    .unwrap()
}

/// One job through `jobs`, from submission to its `done` event, in seconds; with the image's size in bytes.
async fn timed(jobs: &JobManager, spec: &JobSpec, out: &Destination) -> (f64, u64) {
    let t = Instant::now();
    let id = jobs.submit(spec.clone(), out.clone(), "bench").unwrap();
    let Outcome::Done(outputs) = jobs.wait(&id).await.unwrap() else {
        panic!("the benchmark's job failed: {:?}", jobs.get(&id));
    };
    let seconds = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&outputs[0].path).map_or(0, |m| m.len());
    (seconds, bytes)
}

#[tokio::main]
async fn main() {
    let nats = diffugen_testkit::nats::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let local = runtime(&dir.path().join("local"), false, true).await;
    let front = runtime(&dir.path().join("front"), true, true).await;
    let worker = runtime(&dir.path().join("worker"), false, false).await;
    let cluster = |name: &'static str| {
        let url = nats.url.clone();
        async move {
            diffugen_cluster::Cluster::connect(&url, name, None)
                .await
                .unwrap()
        }
    };
    front
        .join_cluster(cluster("front").await, None, Duration::from_secs(30))
        .await
        .unwrap();
    worker
        .work_for_cluster(
            cluster("worker").await,
            worker.jobs().clone(),
            "bench",
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let request = GenerateRequest {
        model: "tiny".into(),
        prompt: "a lighthouse".into(),
        width: Some(64),
        height: Some(64),
        steps: Some(2),
        seed: Some(42),
        threads: Some(2),
        ..Default::default()
    };
    let spec = diffugen_engine::validate(&request, &front.library()).unwrap();
    let local_out = Destination::Folder(dir.path().join("local/outputs"));
    let front_out = Destination::Folder(dir.path().join("front/outputs"));
    // Both engines load the model once before anything is timed.
    timed(local.jobs(), &spec, &local_out).await;
    timed(front.jobs(), &spec, &front_out).await;

    let (mut locals, mut clustered, mut overheads, mut image) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..PAIRS {
        let (l, _) = timed(local.jobs(), &spec, &local_out).await;
        let (c, bytes) = timed(front.jobs(), &spec, &front_out).await;
        let rendered = worker.jobs().history()[0].clone();
        let on_worker = rendered.finished.unwrap() - rendered.created;
        locals.push(l);
        clustered.push(c);
        overheads.push(c - on_worker);
        image = bytes;
    }
    // What recording an image in the gallery costs (the front does it for a cluster job; a local job pays it too).
    let (_, _) = timed(local.jobs(), &spec, &local_out).await;
    let sample = local.jobs().history()[0].outputs[0].path.clone();
    let gallery = local.gallery().unwrap().clone();
    let mut records = Vec::new();
    for i in 0..PAIRS {
        let copy = dir.path().join(format!("local/outputs/copy-{i}.png"));
        std::fs::copy(&sample, &copy).unwrap();
        let t = Instant::now();
        gallery.add(&copy).unwrap();
        records.push(t.elapsed().as_secs_f64());
    }
    let record = median(records);
    let (l, c, o) = (median(locals), median(clustered), median(overheads));
    println!(
        "cluster benchmark: test model (SDXS), 64x64, 2 steps, 2 threads, one worker, nats-server on loopback, \
         median of {PAIRS} pairs"
    );
    println!("  local job (own queue and engine):          {:.3} s", l);
    println!("  cluster job (no-engine front + 1 worker):  {:.3} s", c);
    println!(
        "  front's time beyond the worker's: {:.1} ms, of which recording the image in the gallery {:.1} ms (a local \
         job pays that too)",
        o * 1000.0,
        record * 1000.0
    );
    println!(
        "  cluster overhead per job: {:.1} ms (target <= 50 ms + the image's transfer; image {} KiB); ratio \
         cluster/local {:.3}",
        (o - record) * 1000.0,
        image / 1024,
        c / l
    );
    worker.shutdown().await;
    front.shutdown().await;
    local.shutdown().await;
}
