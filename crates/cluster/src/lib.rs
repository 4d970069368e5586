//! DiffuGen on several machines over NATS JetStream (the `async-nats` crate). A **front** (`diffugen serve
//! --cluster URL`) keeps the API, the gallery, the queue view and the app's data; its queue hands each waiting job
//! to a JetStream work-queue stream, one subject per model. **Workers** (`diffugen worker --cluster URL --name N`,
//! and the front itself unless `--no-engine`) pull the jobs for models they hold, each over its own runtime (lanes,
//! VRAM orchestration), send the live events back on core NATS subjects, the images through the object store, and
//! acknowledge a job only when the front has stored its images. A worker that dies stops sending progress
//! acknowledgements: after the ack wait the stream delivers the job to another worker, and the job's events say so.
//! Workers announce themselves in a key-value bucket with a TTL. See [`protocol`] for the subjects.

use std::time::Duration;

use async_nats::jetstream;

pub mod front;
pub mod protocol;
pub mod worker;

pub use front::{ClusterStatus, Front};
pub use protocol::Announcement;
pub use worker::{Worker, WorkerOptions};

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to the NATS server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the NATS server at {url} does not offer JetStream (start it with -js): {reason}")]
    JetStream { url: String, reason: String },
    #[error("NATS: {0}")]
    Nats(String),
}

impl ClusterError {
    fn nats(e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Nats(e.to_string())
    }
}

/// The largest image (or job) taken from the object store: a 16-image batch of 4096×4096 PNGs fits.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// How long a worker may go without a sign of life on a job before the stream gives the job to another worker.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// How many times a job is delivered (workers that died while rendering it) before it fails.
pub const DEFAULT_MAX_DELIVER: i64 = 5;

/// How long a worker's announcement lives without a heartbeat.
pub const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(10);

/// A connection to the cluster's NATS server with its stream, bucket and object store (created when missing).
#[derive(Clone)]
pub struct Cluster {
    url: String,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    workers: jetstream::kv::Store,
    objects: jetstream::object_store::ObjectStore,
}

impl Cluster {
    /// Connects to `url` (`nats://host:4222`; `tls://` for TLS; `nats://user:password@host` or a token as NATS
    /// takes them) and makes sure the stream, the bucket and the object store exist. `credentials`: a NATS
    /// `.creds` file (NATS accounts), when the server asks for one.
    pub async fn connect(
        url: &str,
        name: &str,
        credentials: Option<&std::path::Path>,
    ) -> Result<Cluster, ClusterError> {
        let connect_error = |reason: String| ClusterError::Connect {
            url: redact(url),
            reason,
        };
        let mut options = match credentials {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| connect_error(format!("credentials {}: {e}", path.display())))?,
            None => async_nats::ConnectOptions::new(),
        };
        options = options
            .name(format!("diffugen {name}"))
            .connection_timeout(Duration::from_secs(5))
            // Once connected, wait out a restart of the server rather than giving up.
            .max_reconnects(None);
        let client = tokio::time::timeout(Duration::from_secs(10), options.connect(url))
            .await
            .map_err(|_| connect_error("no answer within 10 s".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let jetstream_error = |what: &str, e: String| ClusterError::JetStream {
            url: redact(url),
            reason: format!("{what}: {e}"),
        };
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: protocol::STREAM.into(),
                subjects: vec!["diffugen.jobs.>".into()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                // A job the front sends again (after its own restart) is kept once.
                duplicate_window: Duration::from_secs(3600),
                ..Default::default()
            })
            .await
            .map_err(|e| jetstream_error("the job stream", e.to_string()))?;
        // The bucket is made as the stream NATS's key-value convention names (`KV_<bucket>` over `$KV.<bucket>.>`),
        // not through async-nats's `create_key_value`, which first reads account fields nats-server 2.9 (Debian 12's)
        // does not send.
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{}", protocol::WORKERS_BUCKET),
            subjects: vec![format!("$KV.{}.>", protocol::WORKERS_BUCKET)],
            max_messages_per_subject: 1,
            max_age: ANNOUNCEMENT_TTL,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(|e| jetstream_error("the workers bucket", e.to_string()))?;
        let workers = js
            .get_key_value(protocol::WORKERS_BUCKET)
            .await
            .map_err(|e| jetstream_error("the workers bucket", e.to_string()))?;
        let objects = match js.get_object_store(protocol::OBJECTS_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(jetstream::object_store::Config {
                    bucket: protocol::OBJECTS_BUCKET.into(),
                    // Anything left behind by a worker that died between upload and acknowledgement goes after a day.
                    max_age: Duration::from_secs(24 * 3600),
                    ..Default::default()
                })
                .await
                .map_err(|e| jetstream_error("the image store", e.to_string()))?,
        };
        Ok(Cluster {
            url: redact(url),
            client,
            jetstream: js,
            stream,
            workers,
            objects,
        })
    }

    /// The server's address, without a password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The workers that announced themselves within the TTL, by name.
    pub async fn workers(&self) -> Result<Vec<Announcement>, ClusterError> {
        use futures_util::StreamExt;
        let mut keys = self.workers.keys().await.map_err(ClusterError::nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(ClusterError::nats)?);
        }
        let mut found = Vec::new();
        for name in names {
            if let Ok(Some(bytes)) = self.workers.get(&name).await {
                match serde_json::from_slice::<Announcement>(&bytes) {
                    Ok(announcement) => found.push(announcement),
                    Err(e) => {
                        tracing::warn!(worker = %name, error = %e, "an unreadable announcement")
                    }
                }
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn put_object(&self, name: &str, bytes: &[u8]) -> Result<(), ClusterError> {
        let mut reader = bytes;
        self.objects
            .put(name, &mut reader)
            .await
            .map_err(ClusterError::nats)?;
        Ok(())
    }

    /// An object's bytes, at most [`MAX_OBJECT_BYTES`] (a larger one is refused, not read).
    async fn get_object(&self, name: &str) -> Result<Vec<u8>, ClusterError> {
        use tokio::io::AsyncReadExt;
        let object = self.objects.get(name).await.map_err(ClusterError::nats)?;
        let mut bytes = Vec::new();
        object
            .take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(ClusterError::nats)?;
        if bytes.len() as u64 > MAX_OBJECT_BYTES {
            return Err(ClusterError::Nats(format!(
                "object {name} is larger than {} MiB",
                MAX_OBJECT_BYTES >> 20
            )));
        }
        Ok(bytes)
    }

    async fn delete_object(&self, name: &str) {
        if let Err(e) = self.objects.delete(name).await {
            tracing::debug!(object = name, error = %e, "an object was not deleted");
        }
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, ClusterError> {
        let payload = serde_json::to_vec(body).map_err(ClusterError::nats)?;
        let reply = tokio::time::timeout(timeout, self.client.request(subject, payload.into()))
            .await
            .map_err(|_| ClusterError::Nats("the front did not answer in time".into()))?
            .map_err(ClusterError::nats)?;
        serde_json::from_slice(&reply.payload).map_err(ClusterError::nats)
    }

    async fn publish(&self, subject: String, body: &impl serde::Serialize) {
        match serde_json::to_vec(body) {
            Ok(payload) => {
                if let Err(e) = self.client.publish(subject, payload.into()).await {
                    tracing::warn!(error = %e, "a message to the cluster was not sent");
                }
            }
            Err(e) => tracing::warn!(error = %e, "a message to the cluster could not be encoded"),
        }
    }
}

/// Background tasks that end together: when [`Tasks::abort_all`] is called, or when dropped.
#[derive(Default)]
struct Tasks(std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl Tasks {
    fn extend(&self, tasks: impl IntoIterator<Item = tokio::task::JoinHandle<()>>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
    }

    fn abort_all(&self) {
        for task in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// `url` without the password (or token) it may carry, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_never_reaches_a_message() {
        assert_eq!(
            redact("nats://diffugen:s3cret@nas.local:4222"),
            "nats://***@nas.local:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
