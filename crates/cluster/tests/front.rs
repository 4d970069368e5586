//! The front against a real `nats-server`, with the stream driven by hand as a worker would (no sd.cpp): what the
//! front does when workers misbehave or vanish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use diffugen_cluster::protocol::{self, JobMessage};
use diffugen_cluster::{Cluster, Front};
use diffugen_engine::upscale::{UpscaleSpec, Upscaler};
use diffugen_engine::{Destination, Engine, Work, WorkerCommand};
use diffugen_jobs::{JobDefaults, JobManager, JobOptions, JobState};
use diffugen_testkit::nats::NatsServer;
use futures_util::StreamExt;

fn front_queue() -> JobManager {
    let engine = Engine::new(WorkerCommand {
        program: "/nonexistent/diffugen".into(),
        args: Vec::new(),
    });
    JobManager::start_front(
        vec![Arc::new(engine)],
        JobOptions {
            depth: 8,
            orchestrator: None,
            gallery: None,
            defaults: JobDefaults::default(),
            store: None,
        },
    )
}

fn lanczos() -> Work {
    Work::Upscale(Box::new(UpscaleSpec {
        inputs: Vec::new(),
        upscaler: Upscaler::Lanczos,
        scale: Some(2.0),
        size: None,
        tile_size: 128,
        threads: None,
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_every_worker_dropped_fails_with_the_reason_and_leaves_the_stream() {
    let nats = NatsServer::start();
    let cluster = Cluster::connect(&nats.url, "test", None).await.unwrap();
    let jobs = front_queue();
    let front = Front::start(cluster, jobs.clone()).await.unwrap();
    let id = jobs
        .submit_work(lanczos(), Destination::Folder(std::env::temp_dir()), "api")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while front.status().await.unwrap().waiting != 1 {
        assert!(Instant::now() < deadline, "the job reached the stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A worker that takes it and dies without a word, on a consumer that allows one delivery.
    let js = jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let stream = js.get_stream(protocol::STREAM).await.unwrap();
    let consumer = stream
        .get_or_create_consumer(
            "model-builtin",
            pull::Config {
                durable_name: Some("model-builtin".into()),
                filter_subject: protocol::job_subject(protocol::BUILTIN),
                ack_wait: Duration::from_millis(500),
                max_deliver: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let taken = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .unwrap()
        .unwrap();
    let message: JobMessage = serde_json::from_slice(&taken.payload).unwrap();
    assert_eq!(message.id, id, "the message carries the front's job id");
    drop(taken);

    // The other workers keep asking, as workers do; the stream has nothing more to give them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while jobs.get(&id).unwrap().state != JobState::Failed {
        assert!(Instant::now() < deadline, "the front gives the job up");
        let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
        if let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(2), batch.next()).await
        {
            panic!("delivered past max_deliver: {:?}", message.subject);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = jobs.get(&id).unwrap().error.unwrap();
    assert!(error.starts_with("given up after 1 deliveries"), "{error}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while front.status().await.unwrap().waiting != 0 {
        assert!(
            Instant::now() < deadline,
            "the given-up job left the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_for_a_job_cancelled_while_it_waited_is_refused_as_ended() {
    let nats = NatsServer::start();
    let cluster = Cluster::connect(&nats.url, "test", None).await.unwrap();
    let jobs = front_queue();
    let _front = Front::start(cluster, jobs.clone()).await.unwrap();
    let id = jobs
        .submit_work(lanczos(), Destination::Folder(std::env::temp_dir()), "api")
        .unwrap();
    jobs.cancel(&id, "no longer needed").unwrap();
    let client = async_nats::connect(&nats.url).await.unwrap();
    let claim = serde_json::to_vec(&protocol::Claim {
        worker: "a".into(),
        delivery: 1,
    })
    .unwrap();
    let reply = client
        .request(protocol::job_topic("claim", &id), claim.into())
        .await
        .unwrap();
    let reply: protocol::Reply = serde_json::from_slice(&reply.payload).unwrap();
    assert!(!reply.ok && reply.ended, "the worker drops it");
    assert!(reply
        .reason
        .unwrap()
        .contains("has already ended (Cancelled)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_that_is_not_a_png_is_refused_and_fails_the_job_without_writing_anything() {
    let nats = NatsServer::start();
    let cluster = Cluster::connect(&nats.url, "test", None).await.unwrap();
    let jobs = front_queue();
    let _front = Front::start(cluster, jobs.clone()).await.unwrap();
    let outputs = tempfile::tempdir().unwrap();
    let id = jobs
        .submit_work(lanczos(), Destination::Folder(outputs.path().into()), "api")
        .unwrap();
    // A hostile (or broken) worker: it claims the job and sends back something else than a PNG.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let ask = |subject: String, body: Vec<u8>| {
        let client = client.clone();
        async move {
            let reply = client.request(subject, body.into()).await.unwrap();
            serde_json::from_slice::<protocol::Reply>(&reply.payload).unwrap()
        }
    };
    let claim = protocol::Claim {
        worker: "mallory".into(),
        delivery: 1,
    };
    let claimed = ask(
        protocol::job_topic("claim", &id),
        serde_json::to_vec(&claim).unwrap(),
    )
    .await;
    assert!(claimed.ok);
    let js = jetstream::new(client.clone());
    let objects = js.get_object_store(protocol::OBJECTS_BUCKET).await.unwrap();
    let mut script: &[u8] = b"#!/bin/sh\necho not an image\n";
    objects.put("results/evil/0", &mut script).await.unwrap();
    let result = protocol::ResultRequest {
        worker: "mallory".into(),
        images: vec![protocol::ResultImage {
            object: "results/evil/0".into(),
            file_name: "../../.bashrc".into(),
            output: diffugen_engine::Output {
                path: "/etc/passwd".into(),
                seed: 1,
                width: 64,
                height: 64,
                gallery_id: None,
            },
        }],
    };
    let reply = ask(
        protocol::job_topic("result", &id),
        serde_json::to_vec(&result).unwrap(),
    )
    .await;
    assert!(!reply.ok && reply.ended, "refused for good");
    let error = jobs.get(&id).unwrap().error.unwrap();
    assert!(error.contains("not a PNG"), "{error}");
    assert_eq!(jobs.get(&id).unwrap().state, JobState::Failed);
    assert_eq!(
        std::fs::read_dir(outputs.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
