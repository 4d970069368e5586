//! One job from validated spec to files on disk: render in the engine, save, and report the final stage.
//! Every front door (CLI, HTTP, desktop) runs jobs through here.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::events::{FailureKind, JobEvent, Output, Stage};
use crate::output::{self, Destination, Record};
use crate::params::JobSpec;
use crate::supervisor::{Engine, EngineError};
use crate::upscale::{UpscaleRecord, UpscaleSpec};

/// What a queued job does.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Render images from a prompt (txt2img, img2img, inpainting, hires).
    Generate(Box<JobSpec>),
    /// Enlarge images.
    Upscale(Box<UpscaleSpec>),
}

impl Work {
    /// The model the queue shows: the checkpoint, or the upscaler.
    pub fn model(&self) -> String {
        match self {
            Work::Generate(spec) => spec.model_id.clone(),
            Work::Upscale(spec) => spec.upscaler.name().to_string(),
        }
    }

    /// The prompt the queue shows (an upscale shows its source's, else what it does).
    pub fn prompt(&self) -> String {
        match self {
            Work::Generate(spec) => spec.prompt.clone(),
            Work::Upscale(spec) => spec.prompt(),
        }
    }

    /// The size of the images it makes (after a hires pass, or of an upscale's first image), when known.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match self {
            Work::Generate(spec) => Some(spec.output_size()),
            Work::Upscale(spec) => spec.inputs.first().map(|i| spec.output_size(&i.image)),
        }
    }

    /// Reads a job's work as the queue stored it; a bare `JobSpec` is a render (queues written before upscaling).
    pub fn from_json(text: &str) -> serde_json::Result<Work> {
        serde_json::from_str(text).or_else(|_| {
            serde_json::from_str::<JobSpec>(text).map(|spec| Work::Generate(Box::new(spec)))
        })
    }
}

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
    report_end(job_id, started, result, on_event)
}

/// Runs an upscale job on `engine`, writes the enlarged images to `destination` (each keeping its source's
/// record, with how it was enlarged), and reports every stage, the final one included, to `on_event`.
pub async fn run_upscale(
    engine: &Engine,
    job_id: &str,
    spec: &UpscaleSpec,
    destination: &Destination,
    started: Instant,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobResult, EngineError> {
    let result = upscale_and_save(engine, job_id, spec, destination, started, on_event).await;
    report_end(job_id, started, result, on_event)
}

/// Reports a job's final stage (`done`, `failed` or `cancelled`) and passes its result on.
fn report_end(
    job_id: &str,
    started: Instant,
    result: Result<JobResult, EngineError>,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobResult, EngineError> {
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

/// Reports the `saving` stage (keeping the last percent: saving has no measured duration of its own, so progress
/// never jumps back) and returns the images' creation time, Unix seconds.
fn report_saving(
    job_id: &str,
    started: Instant,
    last_percent: Option<f64>,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> f64 {
    on_event(JobEvent {
        percent: last_percent,
        ..JobEvent::new(job_id, started.elapsed().as_secs_f64(), Stage::Saving)
    });
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Writes one image of a job with its record; the job's output.
fn write(
    destination: &Destination,
    index: usize,
    image: &diffugen_sd::RgbImage,
    record: &Record,
) -> Result<Output, EngineError> {
    let path = output::save(destination, index as u32, image, record).map_err(|e| {
        EngineError::Storage(format!("cannot write the image: {}", output::io_reason(&e)))
    })?;
    Ok(Output {
        path: path.display().to_string(),
        seed: record.seed,
        width: image.width,
        height: image.height,
        gallery_id: None,
    })
}

async fn render_and_save(
    engine: &Engine,
    job_id: &str,
    spec: &JobSpec,
    destination: &Destination,
    started: Instant,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobResult, EngineError> {
    // The render's own time ("took"), without the wait in the queue before it; the wait is recorded apart.
    let render_started = Instant::now();
    let waited = render_started.duration_since(started).as_secs_f64();
    let mut last_percent = None;
    let generated = engine
        .generate(job_id, spec, started, &mut |event: JobEvent| {
            last_percent = event.percent.or(last_percent);
            on_event(event)
        })
        .await?;
    let created = report_saving(job_id, started, last_percent, on_event);
    let seconds = render_started.elapsed().as_secs_f64();
    let inputs = output::save_inputs(destination, spec).map_err(|e| {
        EngineError::Storage(format!(
            "cannot keep the init image: {}",
            output::io_reason(&e)
        ))
    })?;
    let mut outputs = Vec::with_capacity(generated.images.len());
    for (index, image) in generated.images.iter().enumerate() {
        let mut record = Record::new(spec, job_id, index as u32, created, seconds);
        record.queue_seconds = Some((waited * 100.0).round() / 100.0);
        if let Some(path) = &inputs.init_image {
            record.init_image = Some(path.display().to_string());
        }
        if let Some(path) = &inputs.mask {
            record.mask = Some(path.display().to_string());
        }
        if let (Some(control), Some(path)) = (&mut record.control, &inputs.control) {
            control.image = Some(path.display().to_string());
        }
        outputs.push(write(destination, index, image, &record)?);
    }
    Ok(JobResult {
        outputs,
        seed: spec.seed,
        model_was_resident: generated.model_was_resident,
        seconds,
        worker_pid: generated.worker_pid,
    })
}

async fn upscale_and_save(
    engine: &Engine,
    job_id: &str,
    spec: &UpscaleSpec,
    destination: &Destination,
    started: Instant,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<JobResult, EngineError> {
    let render_started = Instant::now();
    let mut last_percent = None;
    let upscaled = engine
        .upscale(job_id, spec, started, &mut |event: JobEvent| {
            last_percent = event.percent.or(last_percent);
            on_event(event)
        })
        .await?;
    let created = report_saving(job_id, started, last_percent, on_event);
    let seconds = render_started.elapsed().as_secs_f64();
    let mut outputs = Vec::with_capacity(upscaled.images.len());
    for (index, (image, input)) in upscaled.images.iter().zip(&spec.inputs).enumerate() {
        let record = Record::upscaled(
            input.origin.as_ref(),
            job_id,
            created,
            seconds,
            UpscaleRecord {
                upscaler: spec.upscaler.name().to_string(),
                scale: crate::upscale::effective_scale(image.width, input.image.width),
                source_width: input.image.width,
                source_height: input.image.height,
                source: input.source.clone(),
            },
        );
        outputs.push(write(destination, index, image, &record)?);
    }
    Ok(JobResult {
        outputs,
        seed: spec
            .inputs
            .first()
            .and_then(|i| i.origin.as_ref())
            .map_or(-1, |o| o.seed),
        model_was_resident: upscaled.model_was_resident,
        seconds,
        worker_pid: upscaled.worker_pid,
    })
}
