//! One job from validated spec to files on disk: render in the engine, save, and report the final stage.
//! Every front door (CLI, HTTP, desktop) runs jobs through here.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::events::{FailureKind, JobEvent, Output, Stage};
use crate::output::{self, Destination, Record};
use crate::params::JobSpec;
use crate::supervisor::{Engine, EngineError};

/// A finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outputs: Vec<Output>,
    pub seed: i64,
    pub model_was_resident: bool,
    pub seconds: f64,
    pub worker_pid: u32,
}

/// Runs `spec` on `engine`, writes its images to `destination`, and reports every stage — the final one included
/// (`done`, `failed` or `cancelled`) — to `on_event`.
pub async fn run(
    engine: &Engine,
    job_id: &str,
    spec: &JobSpec,
    destination: &Destination,
    started: Instant,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobResult, EngineError> {
    let result = render_and_save(engine, job_id, spec, destination, started, on_event).await;
    let stage = match &result {
        Ok(done) => Stage::Done {
            outputs: done.outputs.clone(),
        },
        Err(EngineError::Cancelled(reason)) => Stage::Cancelled {
            reason: reason.clone(),
        },
        Err(EngineError::Failed(error)) => Stage::Failed {
            error: error.clone(),
            kind: FailureKind::Render,
        },
        Err(EngineError::Storage(error)) => Stage::Failed {
            error: error.clone(),
            kind: FailureKind::Storage,
        },
    };
    let finished = result.is_ok();
    on_event(JobEvent {
        percent: finished.then_some(100.0),
        eta_seconds: finished.then_some(0.0),
        ..JobEvent::new(job_id, started.elapsed().as_secs_f64(), stage)
    });
    result
}

async fn render_and_save(
    engine: &Engine,
    job_id: &str,
    spec: &JobSpec,
    destination: &Destination,
    started: Instant,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobResult, EngineError> {
    // The render's own time ("took"), without the wait in the queue before it.
    let render_started = Instant::now();
    // Saving has no measured duration of its own: it keeps the last percent, so progress never jumps back.
    let mut last_percent = None;
    let generated = engine
        .generate(job_id, spec, started, &mut |event: JobEvent| {
            last_percent = event.percent.or(last_percent);
            on_event(event)
        })
        .await?;
    on_event(JobEvent {
        percent: last_percent,
        ..JobEvent::new(job_id, started.elapsed().as_secs_f64(), Stage::Saving)
    });
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let seconds = render_started.elapsed().as_secs_f64();
    let (init_image, mask) = output::save_inputs(destination, spec).map_err(|e| {
        EngineError::Storage(format!(
            "cannot keep the init image: {}",
            output::io_reason(&e)
        ))
    })?;
    let mut outputs = Vec::with_capacity(generated.images.len());
    for (index, image) in generated.images.iter().enumerate() {
        let mut record = Record::new(spec, job_id, index as u32, created, seconds);
        if let Some(path) = &init_image {
            record.init_image = Some(path.display().to_string());
        }
        if let Some(path) = &mask {
            record.mask = Some(path.display().to_string());
        }
        let path = output::save(destination, index as u32, image, &record).map_err(|e| {
            EngineError::Storage(format!("cannot write the image: {}", output::io_reason(&e)))
        })?;
        outputs.push(Output {
            path: path.display().to_string(),
            seed: record.seed,
            width: image.width,
            height: image.height,
            gallery_id: None,
        });
    }
    Ok(JobResult {
        outputs,
        seed: spec.seed,
        model_was_resident: generated.model_was_resident,
        seconds,
        worker_pid: generated.worker_pid,
    })
}
