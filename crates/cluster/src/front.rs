//! The front's side: its queue's waiting jobs published on the stream in order, and the workers' claims, events and
//! results taken back into that queue — so every door, the gallery and the app see a cluster job like a local one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diffugen_engine::{Destination, FailureKind, Output};
use diffugen_jobs::{JobManager, ResultError};
use futures_util::StreamExt;

use crate::protocol::{self, Claim, JobMessage, Reply, ResultRequest, WorkerEvent, WAKE};
use crate::{Announcement, Cluster, ClusterError, Tasks};

/// A job larger than this travels through the object store (NATS refuses messages over its `max_payload`, 1 MiB by
/// default).
const INLINE_JOB_BYTES: usize = 512 * 1024;

/// The cluster as its front sees it (`GET /api/v1/cluster`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterStatus {
    /// The NATS server (without a password).
    pub url: String,
    /// The workers that announced themselves within the TTL, by name.
    pub workers: Vec<Announcement>,
    /// Jobs waiting in the stream for a worker.
    pub waiting: u32,
}

/// A running front. Dropping it stops its tasks.
pub struct Front {
    cluster: Cluster,
    /// The workers' latest announcements, read every few seconds.
    known: Arc<Mutex<Vec<Announcement>>>,
    /// Stopped when the front is dropped.
    _tasks: Tasks,
}

impl Front {
    /// Starts handing `jobs`' waiting jobs to the cluster and taking the workers' reports back. `jobs` must be a
    /// front's queue ([`JobManager::start_front`]); its images are written to each job's destination here and
    /// recorded in its gallery.
    pub async fn start(cluster: Cluster, jobs: JobManager) -> Result<Arc<Front>, ClusterError> {
        let client = cluster.client.clone();
        let claims = client
            .subscribe("diffugen.claim.*")
            .await
            .map_err(ClusterError::nats)?;
        let events = client
            .subscribe("diffugen.events.*")
            .await
            .map_err(ClusterError::nats)?;
        let results = client
            .subscribe("diffugen.result.*")
            .await
            .map_err(ClusterError::nats)?;
        let given_up = client
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
                protocol::STREAM
            ))
            .await
            .map_err(ClusterError::nats)?;
        let known = Arc::new(Mutex::new(cluster.workers().await.unwrap_or_default()));
        let tasks = vec![
            tokio::spawn(dispatch(cluster.clone(), jobs.clone())),
            tokio::spawn(answer_claims(cluster.clone(), jobs.clone(), claims)),
            tokio::spawn(relay_events(jobs.clone(), events)),
            tokio::spawn(take_results(cluster.clone(), jobs.clone(), results)),
            tokio::spawn(forward_cancels(cluster.clone(), jobs.clone())),
            tokio::spawn(give_up(cluster.clone(), jobs.clone(), given_up)),
            tokio::spawn(watch_workers(cluster.clone(), known.clone())),
        ];
        let front = Front {
            cluster,
            known,
            _tasks: Tasks::default(),
        };
        front._tasks.extend(tasks);
        Ok(Arc::new(front))
    }

    /// The workers that announced themselves lately.
    pub async fn workers(&self) -> Result<Vec<Announcement>, ClusterError> {
        self.cluster.workers().await
    }

    /// The models the workers render, as they announced them lately (the same id may come from several workers:
    /// `Library::with_remote` keeps the first), for checking jobs here: their files are the workers', so none is
    /// named.
    pub fn remote_models(&self) -> Vec<diffugen_models::ResolvedModel> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .iter()
            .flat_map(|w| &w.cards)
            .map(|card| diffugen_models::ResolvedModel {
                id: card.id.clone(),
                family: card.family,
                components: Default::default(),
                defaults: card.defaults.clone(),
            })
            .collect()
    }

    /// The cluster as the front sees it: its server, its workers, the jobs waiting in the stream.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let mut stream = self.cluster.stream.clone();
        let waiting = stream
            .info()
            .await
            .map_err(ClusterError::nats)?
            .state
            .messages;
        Ok(ClusterStatus {
            url: self.cluster.url().to_string(),
            workers: self.cluster.workers().await?,
            waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
        })
    }

    /// The NATS server's address (without a password).
    pub fn url(&self) -> &str {
        self.cluster.url()
    }
}

/// Publishes the queue's waiting jobs in order, each on its model's subject, with its id as the message id.
async fn dispatch(cluster: Cluster, jobs: JobManager) {
    loop {
        let next = jobs.next_dispatch().await;
        let id = next.id.clone();
        match publish_job(&cluster, next).await {
            Ok(()) => {
                let _ = cluster.client.publish(WAKE, "".into()).await;
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "the job could not be sent to the cluster; trying again");
                jobs.undispatch(&id);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn publish_job(cluster: &Cluster, next: diffugen_jobs::Dispatch) -> Result<(), ClusterError> {
    let subject = protocol::job_subject(&protocol::work_token(&next.work));
    let mut message = JobMessage {
        id: next.id.clone(),
        source: next.source,
        work: Some(next.work),
        object: None,
    };
    let mut payload = serde_json::to_vec(&message).map_err(ClusterError::nats)?;
    if payload.len() > INLINE_JOB_BYTES {
        let object = format!("jobs/{}", next.id);
        let work = serde_json::to_vec(&message.work).map_err(ClusterError::nats)?;
        cluster.put_object(&object, &work).await?;
        message.work = None;
        message.object = Some(object);
        payload = serde_json::to_vec(&message).map_err(ClusterError::nats)?;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", next.id.as_str());
    cluster
        .jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(ClusterError::nats)?
        .await
        .map_err(ClusterError::nats)?;
    Ok(())
}

fn job_of(subject: &str) -> Option<&str> {
    subject.rsplit('.').next().filter(|id| !id.is_empty())
}

async fn respond(cluster: &Cluster, reply: Option<async_nats::Subject>, answer: Reply) {
    if let Some(reply) = reply {
        cluster.publish(reply.to_string(), &answer).await;
    }
}

fn refused(e: &ResultError) -> Reply {
    Reply {
        ok: false,
        ended: true,
        reason: Some(e.to_string()),
    }
}

async fn answer_claims(cluster: Cluster, jobs: JobManager, mut claims: async_nats::Subscriber) {
    while let Some(message) = claims.next().await {
        let Some(id) = job_of(&message.subject) else {
            continue;
        };
        let answer = match serde_json::from_slice::<Claim>(&message.payload) {
            Ok(claim) => match jobs.claim(id, &claim.worker, claim.delivery) {
                Ok(()) => {
                    tracing::info!(job = id, worker = %claim.worker, delivery = claim.delivery, "a worker took the job");
                    Reply {
                        ok: true,
                        ended: false,
                        reason: None,
                    }
                }
                Err(e) => refused(&e),
            },
            Err(e) => Reply {
                ok: false,
                ended: false,
                reason: Some(format!("an unreadable claim: {e}")),
            },
        };
        respond(&cluster, message.reply, answer).await;
    }
}

async fn relay_events(jobs: JobManager, mut events: async_nats::Subscriber) {
    while let Some(message) = events.next().await {
        match serde_json::from_slice::<WorkerEvent>(&message.payload) {
            Ok(WorkerEvent { worker, event }) => jobs.relay(&worker, event),
            Err(e) => {
                tracing::warn!(subject = %message.subject, error = %e, "an unreadable event from a worker")
            }
        }
    }
}

async fn take_results(cluster: Cluster, jobs: JobManager, mut results: async_nats::Subscriber) {
    while let Some(message) = results.next().await {
        let (cluster, jobs) = (cluster.clone(), jobs.clone());
        // Several workers may finish at once; each result is fetched on its own.
        tokio::spawn(async move {
            let Some(id) = job_of(&message.subject).map(str::to_string) else {
                return;
            };
            let answer = match serde_json::from_slice::<ResultRequest>(&message.payload) {
                Ok(request) => store_result(&cluster, &jobs, &id, request).await,
                Err(e) => Reply {
                    ok: false,
                    ended: false,
                    reason: Some(format!("an unreadable result: {e}")),
                },
            };
            respond(&cluster, message.reply, answer).await;
        });
    }
}

/// Fetches a finished job's images from the object store, writes them to the job's destination and ends the job
/// with them (recorded in the gallery). A job that has ended meanwhile takes nothing: the worker drops its images.
async fn store_result(
    cluster: &Cluster,
    jobs: &JobManager,
    id: &str,
    request: ResultRequest,
) -> Reply {
    if let Err(e) = jobs.wants_result(id) {
        return refused(&e);
    }
    let destination = jobs
        .destination(id)
        .unwrap_or_else(|| Destination::Folder(std::env::temp_dir()));
    let mut written: Vec<Output> = Vec::new();
    for (index, image) in request.images.iter().enumerate() {
        let bytes = match cluster.get_object(&image.object).await {
            Ok(bytes) => bytes,
            Err(e) => {
                remove(&written);
                // The worker keeps the job and sends again.
                return Reply {
                    ok: false,
                    ended: false,
                    reason: Some(format!("image {} could not be fetched: {e}", image.object)),
                };
            }
        };
        if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            remove(&written);
            let error = format!(
                "worker '{}' sent image {} that is not a PNG; nothing was written",
                request.worker, image.object
            );
            let _ = jobs.fail_remote(id, error.clone(), FailureKind::Storage);
            return Reply {
                ok: false,
                ended: true,
                reason: Some(error),
            };
        }
        let (destination, file_name) = (destination.clone(), image.file_name.clone());
        let placed = tokio::task::spawn_blocking(move || {
            diffugen_engine::output::save_received(&destination, index as u32, &bytes, &file_name)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
        match placed {
            Ok(path) => written.push(Output {
                path: path.to_string_lossy().into_owned(),
                gallery_id: None,
                ..image.output.clone()
            }),
            Err(e) => {
                remove(&written);
                let error = format!(
                    "the images were rendered by worker '{}' but could not be written here: {}",
                    request.worker,
                    diffugen_engine::output::io_reason(&e)
                );
                let _ = jobs.fail_remote(id, error.clone(), FailureKind::Storage);
                return Reply {
                    ok: false,
                    ended: true,
                    reason: Some(error),
                };
            }
        }
    }
    match jobs.complete(id, &request.worker, written.clone()) {
        Ok(_) => Reply {
            ok: true,
            ended: false,
            reason: None,
        },
        Err(e) => {
            if matches!(e, ResultError::NotFound(_)) {
                remove(&written);
            }
            refused(&e)
        }
    }
}

fn remove(outputs: &[Output]) {
    for output in outputs {
        let _ = std::fs::remove_file(&output.path);
    }
}

async fn forward_cancels(cluster: Cluster, jobs: JobManager) {
    let mut cancels = jobs.watch_remote_cancels();
    loop {
        match cancels.recv().await {
            Ok(id) => {
                let _ = cluster
                    .client
                    .publish(protocol::job_topic("cancel", &id), "".into())
                    .await;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A job the stream stopped delivering (every worker that took it died before finishing: JetStream's
/// max-deliveries advisory) fails here with the reason, and leaves the stream.
async fn give_up(cluster: Cluster, jobs: JobManager, mut advisories: async_nats::Subscriber) {
    #[derive(serde::Deserialize)]
    struct MaxDeliveries {
        stream_seq: u64,
        deliveries: u64,
    }
    while let Some(message) = advisories.next().await {
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&message.payload) else {
            continue;
        };
        let Ok(held) = cluster.stream.get_raw_message(advisory.stream_seq).await else {
            continue;
        };
        let Ok(job) = serde_json::from_slice::<JobMessage>(&held.payload) else {
            continue;
        };
        let error = format!(
            "given up after {} deliveries: every worker that took this job stopped before it finished (a crash, \
             a kill, or a machine that went away); send it again, or check the workers",
            advisory.deliveries
        );
        tracing::warn!(job = %job.id, deliveries = advisory.deliveries, "the cluster gave a job up");
        let _ = jobs.fail_remote(&job.id, error, FailureKind::Interrupted);
        if let Err(e) = cluster.stream.delete_message(advisory.stream_seq).await {
            tracing::warn!(job = %job.id, error = %e, "a given-up job stays in the stream");
        }
    }
}

/// Keeps the workers' latest announcements for [`Front::remote_models`].
async fn watch_workers(cluster: Cluster, known: Arc<Mutex<Vec<Announcement>>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match cluster.workers().await {
            Ok(workers) => *known.lock().unwrap_or_else(|e| e.into_inner()) = workers,
            Err(e) => tracing::debug!(error = %e, "the workers' announcements were not read"),
        }
    }
}
