//! A cluster front's side of the queue: waiting jobs handed to the cluster in order, and what the render workers
//! report back — who took a job (and whether another worker had it before), its events, its images. The front's
//! clients see such a job exactly like a local one: the same events, the same history, the same gallery.

use diffugen_engine::{Destination, FailureKind, JobEvent, Output, Stage, Work};

use crate::state::{announce_positions, finish, State};
use crate::{JobManager, JobState, QueueError};

/// A job the dispatcher sends to the cluster.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub id: String,
    pub work: Work,
    /// Who asked (`openai`, `app`, ...).
    pub source: String,
}

/// Why a worker's result was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("no job with id '{0}'")]
    NotFound(String),
    /// Cancelled, failed, or done by another worker already: the result is dropped, nothing is duplicated.
    #[error("job '{id}' has already ended ({state:?})")]
    Ended { id: String, state: JobState },
}

/// Job `id` while it has not ended: a worker's report about it is still wanted.
fn unfinished<'a>(
    state: &'a mut State,
    id: &str,
) -> Result<&'a mut crate::state::Job, ResultError> {
    let job = state
        .jobs
        .get_mut(id)
        .ok_or_else(|| ResultError::NotFound(id.to_string()))?;
    if job.state.is_final() {
        return Err(ResultError::Ended {
            id: id.to_string(),
            state: job.state,
        });
    }
    Ok(job)
}

/// Where a front's job in the cluster stands in line: the jobs sent before it that no worker has taken yet.
pub(crate) fn remote_position(state: &State, id: &str) -> Option<u32> {
    let job = state.jobs.get(id)?;
    if job.state == JobState::Running {
        return Some(0);
    }
    let index = state.remote.iter().position(|r| r == id)?;
    let ahead = state.remote[..index]
        .iter()
        .filter(|r| {
            state
                .jobs
                .get(*r)
                .is_some_and(|j| j.state == JobState::Queued)
        })
        .count();
    let running = state.remote.len()
        - state
            .remote
            .iter()
            .filter(|r| {
                state
                    .jobs
                    .get(*r)
                    .is_some_and(|j| j.state == JobState::Queued)
            })
            .count();
    Some((ahead + running + state.running.len()) as u32)
}

impl JobManager {
    /// Whether this is a cluster front's queue ([`JobManager::start_front`]).
    pub fn is_front(&self) -> bool {
        self.shared.front
    }

    /// Waits for the next job to send to the cluster (none while the queue is paused) and marks it as sent: it
    /// waits in the cluster now, in the order it was sent.
    pub async fn next_dispatch(&self) -> Dispatch {
        loop {
            // Armed before looking, so a job that arrives in between still wakes this.
            let woken = self.shared.dispatch.notified();
            {
                let mut state = self.lock();
                if !state.paused {
                    while let Some(id) = state.queue.pop_front() {
                        let Some(job) = state.jobs.get(&id) else {
                            continue;
                        };
                        let Some((work, _)) = job.work.clone() else {
                            continue;
                        };
                        let source = job.source.clone();
                        state.remote.push(id.clone());
                        announce_positions(&mut state);
                        return Dispatch { id, work, source };
                    }
                }
            }
            woken.await;
        }
    }

    /// Puts a job the cluster could not be given back at the head of the line (the dispatcher tries again).
    pub fn undispatch(&self, id: &str) {
        let mut state = self.lock();
        let waiting = state
            .jobs
            .get(id)
            .is_some_and(|j| j.state == JobState::Queued);
        if waiting && state.remote.iter().any(|r| r == id) {
            state.remote.retain(|r| r != id);
            state.queue.push_front(id.to_string());
            announce_positions(&mut state);
        }
    }

    /// The ids of jobs in the cluster cancelled here, as they are cancelled.
    pub fn watch_remote_cancels(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.shared.remote_cancels.subscribe()
    }

    /// A worker takes job `id` (its `delivery`-th delivery from the stream). Refused when the job has ended (it
    /// was cancelled while it waited in the stream): the worker drops it. A job another worker had is now this
    /// worker's, and the job's events say so.
    pub fn claim(&self, id: &str, worker: &str, delivery: u32) -> Result<(), ResultError> {
        let mut state = self.lock();
        let job = unfinished(&mut state, id)?;
        let before = job.worker.replace(worker.to_string());
        if delivery > 1 || before.as_deref().is_some_and(|b| b != worker) {
            let message = match before.filter(|b| b != worker) {
                Some(before) => format!(
                    "worker '{before}' stopped answering; worker '{worker}' renders the job again (delivery \
                     {delivery})"
                ),
                None => format!("delivered again (delivery {delivery}): worker '{worker}' renders it"),
            };
            job.record_now(Stage::Warning { message });
        }
        job.state = JobState::Running;
        if let Some(index) = state.queue.iter().position(|q| q == id) {
            // Sent again after a restart of the front, taken before the dispatcher got to it.
            state.queue.remove(index);
        }
        if !state.remote.iter().any(|r| r == id) {
            state.remote.push(id.to_string());
        }
        if let Some(Err(e)) = state.store.as_ref().map(|s| s.set_running(id)) {
            tracing::warn!(error = %e, "the queue on disk was not updated");
        }
        announce_positions(&mut state);
        Ok(())
    }

    /// An event of job `id` from the worker that renders it, timed from when this queue accepted the job. Events of
    /// a worker the job has left (it stopped answering and another took over) are dropped; a failure or a cancel
    /// ends the job. A `done` comes only through [`JobManager::complete`], once the images are stored here.
    pub fn relay(&self, worker: &str, mut event: JobEvent) {
        let id = event.job_id.clone();
        let mut state = self.lock();
        let Some(job) = state.jobs.get_mut(&id) else {
            return;
        };
        if job.state.is_final() || matches!(event.stage, Stage::Done { .. } | Stage::Queued { .. })
        {
            return;
        }
        match job.worker.as_deref() {
            Some(current) if current != worker => return,
            // After a restart of the front, the worker that still renders the job reports first.
            None => job.worker = Some(worker.to_string()),
            Some(_) => {}
        }
        job.state = JobState::Running;
        event.elapsed_seconds = job.accepted.elapsed().as_secs_f64();
        let ended = event.stage.is_final();
        job.record(event);
        if ended {
            finish(&mut state, &id);
        }
    }

    /// Whether a worker's images for job `id` are still wanted (before it sends them).
    pub fn wants_result(&self, id: &str) -> Result<(), ResultError> {
        unfinished(&mut self.lock(), id).map(|_| ())
    }

    /// Where the front writes job `id`'s images (the job's destination here).
    pub fn destination(&self, id: &str) -> Option<Destination> {
        self.lock()
            .jobs
            .get(id)
            .and_then(|j| j.work.as_ref().map(|(_, d)| d.clone()))
    }

    /// Ends job `id` with the images `worker` rendered, written here: recorded in the gallery, then the `done`
    /// event. Refused when the job ended meanwhile (the caller removes the files it wrote).
    pub fn complete(
        &self,
        id: &str,
        worker: &str,
        mut outputs: Vec<Output>,
    ) -> Result<Vec<Output>, ResultError> {
        self.wants_result(id)?;
        let stage = match &self.shared.gallery {
            Some(gallery) => match crate::runner::record_in_gallery(gallery, &mut outputs) {
                Ok(()) => Stage::Done {
                    outputs: outputs.clone(),
                },
                Err(error) => Stage::Failed {
                    error,
                    kind: FailureKind::Storage,
                },
            },
            None => Stage::Done {
                outputs: outputs.clone(),
            },
        };
        let mut state = self.lock();
        // Cancelled while the images were written: the gallery keeps them, the job stays cancelled.
        let job = unfinished(&mut state, id)?;
        job.worker = Some(worker.to_string());
        job.record_now(stage);
        finish(&mut state, id);
        Ok(outputs)
    }

    /// Fails job `id` from the front's side (its images could not be fetched or written).
    pub fn fail_remote(
        &self,
        id: &str,
        error: String,
        kind: FailureKind,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let job = state
            .jobs
            .get_mut(id)
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        if !job.state.is_final() {
            job.record_now(Stage::Failed { error, kind });
            finish(&mut state, id);
        }
        Ok(())
    }
}

impl JobState {
    /// Done, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use diffugen_engine::upscale::{UpscaleSpec, Upscaler};
    use diffugen_engine::{Engine, WorkerCommand};

    use super::*;
    use crate::{JobDefaults, JobOptions};

    /// A front's queue; its engine never starts (a front renders nothing itself).
    fn front() -> JobManager {
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

    fn upscale() -> Work {
        Work::Upscale(Box::new(UpscaleSpec {
            inputs: Vec::new(),
            upscaler: Upscaler::Lanczos,
            scale: Some(2.0),
            size: None,
            tile_size: 128,
            threads: None,
        }))
    }

    fn submit(jobs: &JobManager) -> String {
        jobs.submit_work(upscale(), Destination::Folder("/tmp".into()), "api")
            .unwrap()
    }

    fn warnings(jobs: &JobManager, id: &str) -> Vec<String> {
        jobs.subscribe(id)
            .unwrap()
            .history
            .into_iter()
            .filter_map(|e| match e.stage {
                Stage::Warning { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn jobs_go_to_the_cluster_in_order_and_wait_there_until_a_worker_takes_them() {
        let jobs = front();
        let (a, b) = (submit(&jobs), submit(&jobs));
        assert_eq!(jobs.next_dispatch().await.id, a);
        assert_eq!(jobs.next_dispatch().await.id, b);
        let listed: Vec<(String, JobState, Option<u32>)> = jobs
            .queue()
            .into_iter()
            .map(|j| (j.id, j.state, j.position))
            .collect();
        assert_eq!(
            listed,
            [
                (a.clone(), JobState::Queued, Some(0)),
                (b.clone(), JobState::Queued, Some(1))
            ]
        );
        jobs.claim(&b, "gaming-pc", 1).unwrap();
        let info = jobs.get(&b).unwrap();
        assert_eq!(
            (info.state, info.worker.as_deref()),
            (JobState::Running, Some("gaming-pc"))
        );
        assert_eq!(
            jobs.get(&a).unwrap().position,
            Some(1),
            "one renders ahead of it"
        );
    }

    #[tokio::test]
    async fn a_job_taken_over_by_another_worker_says_so_and_drops_the_first_workers_events() {
        let jobs = front();
        let id = submit(&jobs);
        jobs.next_dispatch().await;
        jobs.claim(&id, "a", 1).unwrap();
        jobs.claim(&id, "b", 2).unwrap();
        assert_eq!(
            warnings(&jobs, &id),
            ["worker 'a' stopped answering; worker 'b' renders the job again (delivery 2)"]
        );
        let late = Stage::Failed {
            error: "worker a's engine died".into(),
            kind: FailureKind::Render,
        };
        jobs.relay("a", JobEvent::new(&id, 1.0, late));
        assert_eq!(
            jobs.get(&id).unwrap().state,
            JobState::Running,
            "a's news is stale"
        );
        let outputs = vec![Output {
            path: "/tmp/x.png".into(),
            seed: 1,
            width: 128,
            height: 128,
            gallery_id: None,
        }];
        jobs.complete(&id, "b", outputs.clone()).unwrap();
        let info = jobs.get(&id).unwrap();
        assert_eq!(
            (info.state, info.outputs),
            (JobState::Done, outputs.clone())
        );
        assert_eq!(
            jobs.complete(&id, "a", outputs),
            Err(ResultError::Ended {
                id: id.clone(),
                state: JobState::Done
            }),
            "a second result is refused: nothing twice"
        );
    }

    #[tokio::test]
    async fn a_job_cancelled_in_the_cluster_is_refused_to_the_worker_that_takes_it_and_the_cluster_is_told(
    ) {
        let jobs = front();
        let mut told = jobs.watch_remote_cancels();
        let id = submit(&jobs);
        jobs.next_dispatch().await;
        assert!(jobs.cancel(&id, "changed my mind").unwrap());
        assert_eq!(told.recv().await.unwrap(), id);
        assert_eq!(jobs.get(&id).unwrap().state, JobState::Cancelled);
        assert!(matches!(
            jobs.claim(&id, "a", 1),
            Err(ResultError::Ended {
                state: JobState::Cancelled,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_paused_front_sends_nothing_until_resumed() {
        let jobs = front();
        jobs.pause();
        let id = submit(&jobs);
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), jobs.next_dispatch()).await;
        assert!(waited.is_err(), "nothing goes out while paused");
        jobs.resume();
        assert_eq!(jobs.next_dispatch().await.id, id);
    }
}
