//! A job as the queue holds it, and the queue's shared state: the jobs, the line of waiting ones, the running one,
//! the history; ending a job and telling the waiting ones their place.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use diffugen_engine::{Destination, JobEvent, Stage, Work};
use tokio::sync::{broadcast, oneshot};

use crate::{now_unix, JobInfo, JobState, JobStore, HISTORY_KEPT};

pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) prompt: String,
    /// What the runner needs; dropped when the job ends.
    pub(crate) work: Option<(Work, Destination)>,
    pub(crate) source: String,
    pub(crate) created: f64,
    pub(crate) finished: Option<f64>,
    pub(crate) accepted: Instant,
    pub(crate) state: JobState,
    pub(crate) events: Vec<JobEvent>,
    /// The lane that took it.
    pub(crate) lane: Option<u32>,
    /// Who renders (or rendered) it: `local`, or a cluster worker's name.
    pub(crate) worker: Option<String>,
    /// The size its images were asked for, kept when `work` is dropped at its end.
    pub(crate) size: Option<(u32, u32)>,
    /// The newest preview frame (previews are not kept in `events`).
    pub(crate) last_preview: Option<JobEvent>,
    pub(crate) sender: broadcast::Sender<JobEvent>,
    /// The queue-wide stream every job's events also go to.
    pub(crate) all: broadcast::Sender<JobEvent>,
}

impl Job {
    pub(crate) fn info(&self, position: Option<u32>) -> JobInfo {
        let last = self
            .events
            .iter()
            .rev()
            .find(|e| !matches!(e.stage, Stage::Preview { .. }))
            .cloned();
        let (outputs, error) = match last.as_ref().map(|e| &e.stage) {
            Some(Stage::Done { outputs }) => (outputs.clone(), None),
            Some(Stage::Failed { error, .. }) => (Vec::new(), Some(error.clone())),
            Some(Stage::Cancelled { reason }) => (Vec::new(), Some(reason.clone())),
            _ => (Vec::new(), None),
        };
        let size = outputs.first().map(|o| (o.width, o.height)).or(self.size);
        JobInfo {
            id: self.id.clone(),
            state: self.state,
            position,
            source: self.source.clone(),
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            created: self.created,
            finished: self.finished,
            outputs,
            error,
            last_event: last,
            lane: self.lane,
            worker: self.worker.clone(),
            starts_in: None,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
        }
    }

    /// Seconds left of a running job by its latest ETA, counted down since that event.
    pub(crate) fn remaining_seconds(&self) -> Option<f64> {
        let last = self.events.iter().rev().find(|e| e.eta_seconds.is_some())?;
        let since = self.accepted.elapsed().as_secs_f64() - last.elapsed_seconds;
        Some((last.eta_seconds? - since).max(0.0))
    }

    /// Records `stage` as happening now, timed from when the queue accepted the job.
    pub(crate) fn record_now(&mut self, stage: Stage) {
        let event = JobEvent::new(&self.id, self.accepted.elapsed().as_secs_f64(), stage);
        self.record(event);
    }

    pub(crate) fn record(&mut self, event: JobEvent) {
        if event.stage.is_final() {
            self.state = match event.stage {
                Stage::Done { .. } => JobState::Done,
                Stage::Cancelled { .. } => JobState::Cancelled,
                _ => JobState::Failed,
            };
        }
        // Previews are live-only: keeping every frame of every job would grow without bound.
        if matches!(event.stage, Stage::Preview { .. }) {
            self.last_preview = Some(event.clone());
        } else {
            self.events.push(event.clone());
        }
        let _ = self.all.send(event.clone());
        let _ = self.sender.send(event);
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) jobs: HashMap<String, Job>,
    pub(crate) queue: VecDeque<String>,
    /// The running jobs with their lanes.
    pub(crate) running: Vec<(String, usize)>,
    /// Lanes that have taken a job and not yet handed the GPU back (a lane stays busy from taking a job until it is
    /// idle again with its lease released).
    pub(crate) busy_lanes: usize,
    /// Cancels a running job while it is outside the engine: waiting for the GPU, or in the assistant's or the
    /// critic's turn.
    pub(crate) preparing: Vec<(String, oneshot::Sender<String>)>,
    pub(crate) finished: VecDeque<String>,
    pub(crate) next_id: u64,
    /// The queue on disk, when it has one.
    pub(crate) store: Option<Arc<JobStore>>,
    /// While set, no lane takes a new job (the running ones finish).
    pub(crate) paused: bool,
    /// A cluster front's jobs handed to the cluster, in the order they were sent, until they end.
    pub(crate) remote: Vec<String>,
}

impl State {
    /// The lane running job `id`, when it runs.
    pub(crate) fn lane_of(&self, id: &str) -> Option<usize> {
        self.running
            .iter()
            .find(|(r, _)| r == id)
            .map(|(_, lane)| *lane)
    }

    /// Takes the job lane `lane` should run next: the first waiting job for the model it holds, else the first one
    /// whose model no other free lane holds (that lane takes it).
    pub(crate) fn take_for(&mut self, lane: usize, held: &[Option<String>]) -> Option<String> {
        let model_of = |id: &String| self.jobs.get(id).map(|j| j.model.as_str());
        let own = held.get(lane).cloned().flatten();
        let busy: Vec<usize> = self.running.iter().map(|(_, l)| *l).collect();
        let held_by_other_free_lane = |model: Option<&str>| {
            held.iter().enumerate().any(|(other, m)| {
                other != lane && !busy.contains(&other) && m.is_some() && m.as_deref() == model
            })
        };
        let index = own
            .as_deref()
            .and_then(|own| self.queue.iter().position(|id| model_of(id) == Some(own)))
            .or_else(|| {
                self.queue
                    .iter()
                    .position(|id| !held_by_other_free_lane(model_of(id)))
            })?;
        self.queue.remove(index)
    }
}

/// Moves an ended job to the history (once; later calls do nothing).
pub(crate) fn finish(state: &mut State, id: &str) {
    if state.finished.iter().rev().any(|f| f == id) {
        return;
    }
    if let Some(job) = state.jobs.get_mut(id) {
        // What the runner needed (init images among it) is not kept for the history — except for the last few
        // cancelled or failed jobs, which can be put back in line (undo a cancel, run a failed job again).
        if job.state == JobState::Done {
            job.work = None;
        }
        let at = now_unix();
        job.finished = Some(at);
        if let Some(store) = &state.store {
            if let Err(e) = store.finish(id, job.state, job.events.last(), at) {
                tracing::warn!(error = %e, "the queue on disk was not updated");
            }
        }
    }
    state.remote.retain(|r| r != id);
    state.finished.push_back(id.to_string());
    let mut undoable = 0;
    for old in state.finished.iter().rev() {
        if let Some(job) = state.jobs.get_mut(old).filter(|j| j.work.is_some()) {
            undoable += 1;
            if undoable > crate::UNDO_KEPT {
                job.work = None;
            }
        }
    }
    while state.finished.len() > HISTORY_KEPT {
        if let Some(old) = state.finished.pop_front() {
            state.jobs.remove(&old);
        }
    }
}

/// Tells every waiting job its new place in line.
pub(crate) fn announce_positions(state: &mut State) {
    let offset = state.running.len() as u32;
    let waiting: Vec<String> = state.queue.iter().cloned().collect();
    if let Some(Err(e)) = state.store.as_ref().map(|s| s.set_order(&waiting)) {
        tracing::warn!(error = %e, "the queue on disk was not updated");
    }
    for (index, id) in waiting.iter().enumerate() {
        if let Some(job) = state.jobs.get_mut(id) {
            job.record_now(Stage::Queued {
                position: index as u32 + offset,
            });
        }
    }
}
