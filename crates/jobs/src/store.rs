//! The queue on disk. Every accepted job is written to SQLite (WAL, `queue.sqlite` in the data folder) before its
//! id is returned, so a crash or a restart loses no job: waiting jobs come back in their order with their ids, the
//! one that was rendering is failed as interrupted, and a bounded history of finished jobs stays listable.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use diffugen_engine::{Destination, JobEvent, Work};
use rusqlite::{params, Connection, OptionalExtension};

use crate::JobState;

/// Why the queue could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another DiffuGen (the app or `diffugen serve`) runs on the same data folder and owns its queue.
    #[error("another DiffuGen is running on this data folder and owns its job queue ({0})")]
    InUse(String),
    #[error("the job queue at {path} cannot be used: {message}")]
    Failed { path: String, message: String },
}

/// A job as it was last written.
#[derive(Debug, Clone)]
pub(crate) struct StoredJob {
    pub id: String,
    pub state: JobState,
    /// Kept while the job still has to run; dropped when it finishes (init images make it large).
    pub work: Option<(Work, Destination)>,
    pub source: String,
    pub model: String,
    pub prompt: String,
    pub created: f64,
    /// When it ended (Unix seconds).
    pub finished: Option<f64>,
    /// A finished job's final event.
    pub last_event: Option<JobEvent>,
}

/// The durable queue.
pub struct JobStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Held while this process owns the queue, so two processes never run the same waiting jobs.
    _owner: std::fs::File,
    /// Finished jobs kept.
    history: usize,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    position INTEGER,
    spec TEXT,
    destination TEXT,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    last_event TEXT
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished);
CREATE TABLE IF NOT EXISTS queue_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn parse_state(name: &str) -> Option<JobState> {
    Some(match name {
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        "cancelled" => JobState::Cancelled,
        _ => return None,
    })
}

impl JobStore {
    /// Opens (or creates) the queue file; `history` finished jobs are kept.
    pub fn open(path: &Path, history: usize) -> Result<JobStore, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Failed {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let lock_path = path.with_extension("lock");
        let owner = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| fail(&e))?;
        match owner.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse(lock_path.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(&e)),
        }
        let conn = Connection::open(path).map_err(|e| fail(&e))?;
        // FULL: a job whose id a client holds is on disk even if the power goes right after.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| fail(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| fail(&e))?;
        Ok(JobStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            _owner: owner,
            history,
        })
    }

    /// Whether the queue was paused when DiffuGen last stopped.
    pub(crate) fn paused(&self) -> Result<bool, StoreError> {
        self.conn()
            .query_row(
                "SELECT value FROM queue_state WHERE key = 'paused'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|v| v.as_deref() == Some("true"))
            .map_err(|e| self.error(e))
    }

    /// Keeps whether the queue is paused, so a restart does not start the jobs a user held back.
    pub(crate) fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO queue_state (key, value) VALUES ('paused', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [if paused { "true" } else { "false" }],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Writes a newly accepted job at the end of the line.
    pub(crate) fn insert(&self, job: &StoredJob, position: u32) -> Result<(), StoreError> {
        let (spec, destination) = match &job.work {
            Some((spec, destination)) => (
                Some(serde_json::to_string(spec).map_err(|e| self.error(e))?),
                Some(serde_json::to_string(destination).map_err(|e| self.error(e))?),
            ),
            None => (None, None),
        };
        self.conn()
            .execute(
                "INSERT INTO jobs (id, state, position, spec, destination, source, model, prompt, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    job.id,
                    state_name(job.state),
                    position,
                    spec,
                    destination,
                    job.source,
                    job.model,
                    job.prompt,
                    job.created
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The waiting jobs' order (the first runs next).
    pub(crate) fn set_order(&self, waiting: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        for (position, id) in waiting.iter().enumerate() {
            tx.execute(
                "UPDATE jobs SET position = ?2 WHERE id = ?1",
                params![id, position as i64],
            )
            .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// The job has started rendering.
    pub(crate) fn set_running(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE jobs SET state = 'running', position = NULL WHERE id = ?1",
                [id],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The job ended: its final event is kept, its work dropped, and the history trimmed to its bound.
    pub(crate) fn finish(
        &self,
        id: &str,
        state: JobState,
        last_event: Option<&JobEvent>,
        at: f64,
    ) -> Result<(), StoreError> {
        let event = last_event
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.error(e))?;
        let conn = self.conn();
        conn.execute(
            "UPDATE jobs SET state = ?2, position = NULL, spec = NULL, destination = NULL, finished = ?3,
                 last_event = ?4 WHERE id = ?1",
            params![id, state_name(state), at, event],
        )
        .map_err(|e| self.error(e))?;
        conn.execute(
            "DELETE FROM jobs WHERE finished IS NOT NULL AND id NOT IN
                 (SELECT id FROM jobs WHERE finished IS NOT NULL ORDER BY finished DESC LIMIT ?1)",
            [self.history as i64],
        )
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Every stored job: finished ones oldest first, then the one that was running, then the waiting ones in order.
    pub(crate) fn load(&self) -> Result<Vec<StoredJob>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, state, spec, destination, source, model, prompt, created, last_event, finished FROM jobs
                 ORDER BY finished IS NULL, finished, state != 'running', position, created",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, f64>(7)?,
                    row.get::<_, Option<String>>(8)?,
                    row.get::<_, Option<f64>>(9)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut jobs = Vec::new();
        for row in rows {
            let (
                id,
                state,
                spec,
                destination,
                source,
                model,
                prompt,
                created,
                last_event,
                finished,
            ) = row.map_err(|e| self.error(e))?;
            let Some(state) = parse_state(&state) else {
                tracing::warn!(%id, %state, "a stored job with an unknown state was skipped");
                continue;
            };
            let work = match (spec, destination) {
                (Some(spec), Some(destination)) => {
                    match (Work::from_json(&spec), serde_json::from_str(&destination)) {
                        (Ok(spec), Ok(destination)) => Some((spec, destination)),
                        (Err(e), _) | (_, Err(e)) => {
                            // Written by another version: the job is reported failed rather than lost silently.
                            tracing::warn!(%id, error = %e, "a stored job cannot be read back");
                            None
                        }
                    }
                }
                _ => None,
            };
            jobs.push(StoredJob {
                id,
                state,
                work,
                source,
                model,
                prompt,
                created,
                finished,
                last_event: last_event.and_then(|e| serde_json::from_str(&e).ok()),
            });
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffugen_engine::Stage;

    fn finished(id: &str) -> StoredJob {
        StoredJob {
            id: id.into(),
            state: JobState::Queued,
            work: None,
            source: "api".into(),
            model: "tiny".into(),
            prompt: format!("prompt of {id}"),
            created: 1.0,
            finished: None,
            last_event: None,
        }
    }

    #[test]
    fn a_second_process_cannot_own_the_same_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite");
        let first = JobStore::open(&path, 8).unwrap();
        assert!(matches!(
            JobStore::open(&path, 8),
            Err(StoreError::InUse(_))
        ));
        drop(first);
        JobStore::open(&path, 8).expect("free again once the owner is gone");
    }

    #[test]
    fn the_history_keeps_the_newest_finished_jobs_and_their_last_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("queue.sqlite"), 2).unwrap();
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            store.insert(&finished(id), 0).unwrap();
            let event = JobEvent::new(
                id,
                1.0,
                Stage::Cancelled {
                    reason: "by a test".into(),
                },
            );
            store
                .finish(id, JobState::Cancelled, Some(&event), n as f64)
                .unwrap();
        }
        let kept = store.load().unwrap();
        let ids: Vec<&str> = kept.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"], "oldest first, bounded to 2");
        assert_eq!(kept[1].state, JobState::Cancelled);
        assert!(matches!(
            kept[1].last_event.as_ref().map(|e| &e.stage),
            Some(Stage::Cancelled { .. })
        ));
        assert_eq!(kept[1].prompt, "prompt of c");
    }
}
