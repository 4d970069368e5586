//! The worker's side: jobs pulled from the stream for the models this machine holds (the one it has in memory
//! first), each claimed at the front, rebound to this machine's files, rendered through this machine's queue (its
//! lanes, its VRAM orchestration), its events sent back live and its images through the object store; the job is
//! acknowledged once the front has stored them, and progress-acknowledged while it renders.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use diffugen_engine::{Destination, FailureKind, JobEvent, Stage, Work};
use diffugen_jobs::JobManager;
use diffugen_models::Library;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use crate::protocol::{
    self, Announcement, Claim, GpuAnnouncement, JobMessage, Reply, ResultImage, ResultRequest,
    WorkerEvent, BUILTIN, WAKE,
};
use crate::{Cluster, ClusterError, Tasks};

/// How a worker runs.
pub struct WorkerOptions {
    /// Its name in the cluster (unique): the jobs it renders say so.
    pub name: String,
    /// Without a progress acknowledgement for this long, the stream gives its job to another worker.
    pub ack_wait: Duration,
    /// Where its renders are written before they go to the front (removed once stored there).
    pub outputs: PathBuf,
    /// Gives up a job after this many deliveries (workers that died while rendering it).
    pub max_deliver: i64,
}

type LibraryFn = dyn Fn() -> Library + Send + Sync;
type GpusFn = dyn Fn() -> Vec<GpuAnnouncement> + Send + Sync;

/// A running worker. Dropping it stops taking jobs (the ones it renders are delivered again elsewhere).
pub struct Worker {
    cluster: Cluster,
    jobs: JobManager,
    library: Box<LibraryFn>,
    gpus: Box<GpusFn>,
    options: WorkerOptions,
    /// The front's job ids it renders, with this queue's ids for them.
    running: Mutex<HashMap<String, String>>,
    tasks: Tasks,
}

impl Worker {
    /// Starts taking jobs from the cluster into `jobs` (this machine's queue; its lanes bound how many run at once).
    /// `library`: this machine's models folders as they are now; `gpus`: its GPUs as NVML reads them now.
    pub async fn start(
        cluster: Cluster,
        jobs: JobManager,
        library: impl Fn() -> Library + Send + Sync + 'static,
        gpus: impl Fn() -> Vec<GpuAnnouncement> + Send + Sync + 'static,
        options: WorkerOptions,
    ) -> Result<Arc<Worker>, ClusterError> {
        let wake = cluster
            .client
            .subscribe(WAKE)
            .await
            .map_err(ClusterError::nats)?;
        let cancels = cluster
            .client
            .subscribe("diffugen.cancel.*")
            .await
            .map_err(ClusterError::nats)?;
        let worker = Arc::new(Worker {
            cluster,
            jobs,
            library: Box::new(library),
            gpus: Box::new(gpus),
            options,
            running: Mutex::new(HashMap::new()),
            tasks: Tasks::default(),
        });
        worker.announce().await?;
        let tasks = vec![
            tokio::spawn(Worker::pull(Arc::downgrade(&worker), wake)),
            tokio::spawn(Worker::heartbeat(Arc::downgrade(&worker))),
            tokio::spawn(Worker::take_cancels(Arc::downgrade(&worker), cancels)),
        ];
        worker.tasks.extend(tasks);
        tracing::info!(worker = %worker.options.name, cluster = %worker.cluster.url(), "taking jobs from the cluster");
        Ok(worker)
    }

    /// Leaves the cluster: no more jobs, the announcement removed. Jobs it still renders finish and are delivered.
    pub async fn leave(&self) {
        self.tasks.abort_all();
        let _ = self.cluster.workers.delete(&self.options.name).await;
    }

    /// The name it has in the cluster.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The queue it renders through.
    pub fn jobs(&self) -> &JobManager {
        &self.jobs
    }

    fn announcement(&self) -> Announcement {
        let library = (self.library)();
        let models = library.ids();
        let cards = models
            .iter()
            .filter_map(|id| library.resolve(id).ok())
            .map(|m| protocol::ModelCard {
                id: m.id,
                family: m.family,
                defaults: m.defaults,
            })
            .collect();
        Announcement {
            name: self.options.name.clone(),
            models,
            cards,
            upscalers: library.upscalers().into_iter().map(|e| e.id).collect(),
            lanes: self.jobs.engines().len() as u32,
            gpus: (self.gpus)(),
            jobs: self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    async fn announce(&self) -> Result<(), ClusterError> {
        let payload = serde_json::to_vec(&self.announcement()).map_err(ClusterError::nats)?;
        self.cluster
            .workers
            .put(&self.options.name, payload.into())
            .await
            .map_err(ClusterError::nats)?;
        Ok(())
    }

    async fn heartbeat(worker: std::sync::Weak<Worker>) {
        loop {
            tokio::time::sleep(crate::ANNOUNCEMENT_TTL / 3).await;
            let Some(worker) = worker.upgrade() else {
                return;
            };
            if let Err(e) = worker.announce().await {
                tracing::warn!(error = %e, "the worker's announcement was not renewed");
            }
        }
    }

    async fn take_cancels(worker: std::sync::Weak<Worker>, mut cancels: async_nats::Subscriber) {
        while let Some(message) = cancels.next().await {
            let Some(worker) = worker.upgrade() else {
                return;
            };
            let Some(id) = message.subject.rsplit('.').next() else {
                continue;
            };
            let local = worker
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned();
            if let Some(local) = local {
                let _ = worker.jobs.cancel(&local, "cancelled at the front");
            }
        }
    }

    /// The subject tokens to pull from, in order: the models a lane holds in memory, then every other model and
    /// upscaler here (`here`, the folders' ids, read every few seconds), then the jobs that need no model.
    fn tokens(&self, here: &[String]) -> Vec<String> {
        let held = self.jobs.engines().iter().filter_map(|e| e.loaded_model());
        let mut tokens: Vec<String> = Vec::new();
        for token in held
            .chain(here.iter().cloned())
            .map(|m| protocol::model_token(&m))
            .chain([BUILTIN.to_string()])
        {
            if !tokens.contains(&token) {
                tokens.push(token);
            }
        }
        tokens
    }

    /// The ids of the models and upscalers in this machine's folders.
    fn here(&self) -> Vec<String> {
        let library = (self.library)();
        let mut ids = library.ids();
        ids.extend(library.upscalers().into_iter().map(|e| e.id));
        ids
    }

    async fn consumer(
        &self,
        cache: &mut HashMap<String, jetstream::consumer::Consumer<pull::Config>>,
        token: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, ClusterError> {
        if let Some(consumer) = cache.get(token) {
            return Ok(consumer.clone());
        }
        let name = format!("model-{token}");
        let consumer = self
            .cluster
            .stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: protocol::job_subject(token),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.options.ack_wait,
                    max_deliver: self.options.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(ClusterError::nats)?;
        cache.insert(token.to_string(), consumer.clone());
        Ok(consumer)
    }

    /// Takes a job whenever a lane is free, from the first subject that has one.
    async fn pull(worker: std::sync::Weak<Worker>, mut wake: async_nats::Subscriber) {
        let lanes = match worker.upgrade() {
            Some(w) => w.jobs.engines().len().max(1),
            None => return,
        };
        let free = Arc::new(tokio::sync::Semaphore::new(lanes));
        let mut consumers = HashMap::new();
        // The folders are read again every few seconds, not at every look for work.
        let mut here = match worker.upgrade() {
            Some(w) => (std::time::Instant::now(), w.here()),
            None => return,
        };
        loop {
            let Ok(lane) = free.clone().acquire_owned().await else {
                return;
            };
            let taken = loop {
                let Some(this) = worker.upgrade() else {
                    return;
                };
                let mut taken = None;
                if here.0.elapsed() > Duration::from_secs(5) {
                    here = (std::time::Instant::now(), this.here());
                }
                for token in this.tokens(&here.1) {
                    let consumer = match this.consumer(&mut consumers, &token).await {
                        Ok(consumer) => consumer,
                        Err(e) => {
                            tracing::warn!(error = %e, "a job subject could not be read");
                            continue;
                        }
                    };
                    match next_message(&consumer).await {
                        Ok(Some(message)) => {
                            taken = Some(message);
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!(error = %e, "no job from the stream"),
                    }
                }
                drop(this);
                if let Some(message) = taken {
                    break message;
                }
                // Nothing for this machine: until the front says a job arrived (or a second passes: a job for a
                // model that appeared here meanwhile, a message the wake-up missed).
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.next()).await;
            };
            let Some(this) = worker.upgrade() else {
                return;
            };
            tokio::spawn(async move {
                this.handle(taken).await;
                drop(lane);
            });
        }
    }

    /// Runs one job from the stream to its acknowledgement.
    async fn handle(&self, message: jetstream::Message) {
        let delivery = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let message = Arc::new(message);
        let job = match serde_json::from_slice::<JobMessage>(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(error = %e, "an unreadable job on the stream; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let id = job.id.clone();
        let work = match (job.work, &job.object) {
            (Some(work), _) => Ok(work),
            (None, Some(object)) => self.cluster.get_object(object).await.and_then(|bytes| {
                serde_json::from_slice::<Work>(&bytes).map_err(ClusterError::nats)
            }),
            (None, None) => Err(ClusterError::Nats("the job message holds no job".into())),
        };
        let claim = Claim {
            worker: self.options.name.clone(),
            delivery,
        };
        match self
            .cluster
            .request::<Reply>(
                protocol::job_topic("claim", &id),
                &claim,
                Duration::from_secs(5),
            )
            .await
        {
            Ok(reply) if reply.ok => {}
            Ok(reply) if reply.ended => {
                tracing::info!(job = %id, reason = ?reply.reason, "the front no longer wants the job");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
            refused => {
                // The front is away (restarting) or busy: the job goes back to the stream for a moment.
                tracing::info!(job = %id, answer = ?refused.map(|r| r.reason), "the front did not take the claim; the job waits");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
                return;
            }
        }
        let mut work = match work {
            Ok(work) => work,
            Err(e) => {
                let error = format!("worker '{}': {e}", self.options.name);
                return self.fail(&id, &message, error).await;
            }
        };
        if let Err(e) = diffugen_engine::rebind::rebind(&mut work, &(self.library)()) {
            let error = format!("worker '{}' cannot render it: {e}", self.options.name);
            return self.fail(&id, &message, error).await;
        }
        let folder = self.options.outputs.join(&id);
        let local =
            match self
                .jobs
                .submit_work(work, Destination::Folder(folder.clone()), &job.source)
            {
                Ok(local) => local,
                Err(e) => {
                    let error = format!("worker '{}': {e}", self.options.name);
                    return self.fail(&id, &message, error).await;
                }
            };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), local.clone());
        let ticker = {
            let message = message.clone();
            let every = self.options.ack_wait / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "a progress acknowledgement was not sent");
                    }
                }
            })
        };
        let end = self.follow(&id, &local).await;
        ticker.abort();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let _ = tokio::fs::remove_dir_all(&folder).await;
        match end {
            // Stored at the front (or no longer wanted there): the stream may forget the job.
            End::Delivered => {
                if let Err(e) = message.double_ack().await {
                    tracing::warn!(job = %id, error = %e, "the job's acknowledgement was not confirmed");
                }
            }
            End::Ended => {
                let _ = message.ack_with(AckKind::Term).await;
            }
        }
    }

    /// Fails job `id` at the front before it reached this machine's queue, and drops it from the stream.
    async fn fail(&self, id: &str, message: &jetstream::Message, error: String) {
        let stage = Stage::Failed {
            error,
            kind: FailureKind::Render,
        };
        self.send_event(JobEvent::new(id, 0.0, stage)).await;
        let _ = message.ack_with(AckKind::Term).await;
    }

    /// Sends the local job's events to the front as the front's job `id` until it ends; a finished job's images go
    /// to the front, retried until it has stored them.
    async fn follow(&self, id: &str, local: &str) -> End {
        let Ok(subscription) = self.jobs.subscribe(local) else {
            return End::Ended;
        };
        let mut live = subscription.live;
        let mut pending: std::collections::VecDeque<JobEvent> = subscription.history.into();
        loop {
            let mut event = match pending.pop_front() {
                Some(event) => event,
                None => match live.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return End::Ended,
                },
            };
            event.job_id = id.to_string();
            match &event.stage {
                Stage::Queued { .. } => {}
                Stage::Done { outputs } => {
                    let outputs = outputs.clone();
                    return self.deliver(id, &outputs).await;
                }
                stage if stage.is_final() => {
                    self.send_event(event).await;
                    return End::Ended;
                }
                _ => self.send_event(event).await,
            }
        }
    }

    async fn send_event(&self, event: JobEvent) {
        let subject = protocol::job_topic("events", &event.job_id);
        let message = WorkerEvent {
            worker: self.options.name.clone(),
            event,
        };
        self.cluster.publish(subject, &message).await;
    }

    /// Puts the images in the object store and asks the front to store them, until it has (or no longer wants
    /// them); the objects are removed afterwards.
    async fn deliver(&self, id: &str, outputs: &[diffugen_engine::Output]) -> End {
        let mut images = Vec::new();
        let mut end = End::Delivered;
        for (index, output) in outputs.iter().enumerate() {
            let object = format!("results/{id}/{index}");
            let bytes = match tokio::fs::read(&output.path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let error = format!(
                        "worker '{}' rendered the image but could not read it back: {e}",
                        self.options.name
                    );
                    self.send_event(JobEvent::new(
                        id,
                        0.0,
                        Stage::Failed {
                            error,
                            kind: FailureKind::Storage,
                        },
                    ))
                    .await;
                    return End::Ended;
                }
            };
            loop {
                match self.cluster.put_object(&object, &bytes).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(job = id, error = %e, "an image could not be sent; trying again");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            images.push(ResultImage {
                object,
                file_name: std::path::Path::new(&output.path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                output: output.clone(),
            });
        }
        let request = ResultRequest {
            worker: self.options.name.clone(),
            images: images.clone(),
        };
        loop {
            match self
                .cluster
                .request::<Reply>(
                    protocol::job_topic("result", id),
                    &request,
                    Duration::from_secs(60),
                )
                .await
            {
                Ok(reply) if reply.ok => break,
                Ok(reply) if reply.ended => {
                    tracing::info!(job = id, reason = ?reply.reason, "the front did not take the images");
                    end = End::Ended;
                    break;
                }
                answer => {
                    tracing::warn!(job = id, answer = ?answer.map(|r| r.reason), "the front has not stored the images yet; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        for image in &images {
            self.cluster.delete_object(&image.object).await;
        }
        end
    }
}

/// How a job left this worker.
enum End {
    /// Its images are stored at the front.
    Delivered,
    /// It failed, was cancelled, or the front had ended it: nothing more to do.
    Ended,
}

/// The next message of `consumer`, without waiting when it has none (nor more than a few seconds for a server that
/// does not answer the pull: one was seen to leave a no-wait pull unanswered right after a job was given up).
async fn next_message(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
) -> Result<Option<jetstream::Message>, ClusterError> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .map_err(ClusterError::nats)?;
    match tokio::time::timeout(Duration::from_secs(3), batch.next()).await {
        Ok(Some(Ok(message))) => Ok(Some(message)),
        Ok(Some(Err(e))) => Err(ClusterError::nats(e)),
        Ok(None) | Err(_) => Ok(None),
    }
}
