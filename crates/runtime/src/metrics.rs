//! Prometheus metrics of the running DiffuGen (`GET /metrics`), kept with `prometheus-client`.
//!
//! Counters and histograms are fed by two background tasks that read what every door already sees — the queue's
//! event stream (every job, every source) and the VRAM orchestrator's events — so no door and no crate below the
//! runtime knows about metrics. Gauges that describe the present (jobs waiting and running, VRAM per owner) are
//! read when the metrics are scraped.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use diffugen_engine::{JobEvent, Stage};
use diffugen_jobs::{JobManager, JobState};
use diffugen_vram::{Orchestrator, VramEvent, VramSnapshot};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;

type Labels = Vec<(&'static str, String)>;

/// The media type of what `render` writes: OpenMetrics text, which Prometheus negotiates and parses (its `info`
/// type and `# EOF` are not part of the older 0.0.4 text format).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric DiffuGen exports. Cheap to clone; clones share the values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

struct Families {
    registry: Mutex<Registry>,
    jobs_total: Family<Labels, Counter>,
    jobs_queued: Gauge,
    jobs_running: Gauge,
    images_total: Family<Labels, Counter>,
    job_duration: Histogram,
    queue_wait: Histogram,
    step: Histogram,
    model_load: Histogram,
    llm_unload: Histogram,
    llm_restore: Histogram,
    vram_used: Family<Labels, Gauge<f64, AtomicU64>>,
    vram_switches: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let families = Families {
            registry: Mutex::new(Registry::default()),
            jobs_total: Family::default(),
            jobs_queued: Gauge::default(),
            jobs_running: Gauge::default(),
            images_total: Family::default(),
            job_duration: Histogram::new([
                0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            queue_wait: Histogram::new([
                0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            step: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            model_load: Histogram::new([0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]),
            llm_unload: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            llm_restore: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            vram_used: Family::default(),
            vram_switches: Counter::default(),
        };
        {
            let mut registry = families.registry.lock().unwrap_or_else(|e| e.into_inner());
            // Counters get the `_total` suffix from the encoder.
            registry.register(
                "diffugen_jobs",
                "Jobs that ended, by how (done, failed, cancelled) and by the door they came through",
                families.jobs_total.clone(),
            );
            registry.register(
                "diffugen_jobs_queued",
                "Jobs waiting in the queue",
                families.jobs_queued.clone(),
            );
            registry.register(
                "diffugen_jobs_running",
                "Jobs rendering now",
                families.jobs_running.clone(),
            );
            registry.register(
                "diffugen_images_generated",
                "Images written, by model",
                families.images_total.clone(),
            );
            registry.register(
                "diffugen_job_duration_seconds",
                "From a job's start (after its wait in the queue) to its end",
                families.job_duration.clone(),
            );
            registry.register(
                "diffugen_queue_wait_seconds",
                "How long a job waited in the queue before it started",
                families.queue_wait.clone(),
            );
            registry.register(
                "diffugen_sampling_step_seconds",
                "The time of one sampling step, as sd.cpp reported the steps",
                families.step.clone(),
            );
            registry.register(
                "diffugen_model_load_seconds",
                "Time sd.cpp spent loading weights, per load",
                families.model_load.clone(),
            );
            registry.register(
                "diffugen_llm_unload_seconds",
                "Unloading the LLMs until their memory was confirmed free, per switch to diffusion",
                families.llm_unload.clone(),
            );
            registry.register(
                "diffugen_llm_restore_seconds",
                "Reloading the LLMs DiffuGen unloaded, per switch back",
                families.llm_restore.clone(),
            );
            registry.register(
                "diffugen_vram_used_bytes",
                "GPU memory in use, by GPU and by owner (llm, diffugen, other)",
                families.vram_used.clone(),
            );
            registry.register(
                "diffugen_vram_switches",
                "Hand-overs of the GPU that unloaded or restored LLMs",
                families.vram_switches.clone(),
            );
            registry.register(
                "diffugen_build",
                "This build of DiffuGen and the stable-diffusion.cpp it links",
                Info::new(vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("sd_cpp", diffugen_sd::version()),
                ]),
            );
        }
        Metrics {
            inner: Arc::new(families),
        }
    }

    /// Follows the queue's events (every job) and, when there is one, the orchestrator's, until the tasks are
    /// aborted.
    pub fn start(
        &self,
        jobs: &JobManager,
        orchestrator: Option<&Orchestrator>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let metrics = self.clone();
        let mut events = jobs.watch();
        let lookup = jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut jobs: HashMap<String, Track> = HashMap::new();
            loop {
                match events.recv().await {
                    Ok(event) => metrics.job_event(&mut jobs, &lookup, &event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "metrics missed job events")
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }));
        if let Some(orchestrator) = orchestrator {
            let metrics = self.clone();
            let mut events = orchestrator.subscribe();
            tasks.push(tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(event) => metrics.vram_event(&event),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    }
                }
            }));
        }
        tasks
    }

    /// The text format, with the gauges read now: the queue's counts and, given a snapshot, the VRAM per owner.
    pub fn render(&self, jobs: &JobManager, vram: Option<&VramSnapshot>) -> String {
        let families = &self.inner;
        let queue = jobs.queue();
        let count = |state: JobState| queue.iter().filter(|j| j.state == state).count() as i64;
        families.jobs_queued.set(count(JobState::Queued));
        families.jobs_running.set(count(JobState::Running));
        families.vram_used.clear();
        if let Some(snapshot) = vram {
            for gpu in &snapshot.gpu.gpus {
                for (owner, bytes) in [
                    ("llm", gpu.llm_bytes),
                    ("diffugen", gpu.diffugen_bytes),
                    ("other", gpu.other_bytes),
                ] {
                    families
                        .vram_used
                        .get_or_create(&vec![
                            ("gpu", gpu.index.to_string()),
                            ("owner", owner.into()),
                        ])
                        .set(bytes);
                }
            }
        }
        let mut text = String::new();
        let registry = families.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = encode(&mut text, &registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        text
    }

    fn job_event(&self, jobs: &mut HashMap<String, Track>, lookup: &JobManager, event: &JobEvent) {
        let families = &self.inner;
        let track = jobs.entry(event.job_id.clone()).or_insert_with(|| {
            let info = lookup.get(&event.job_id).ok();
            Track {
                source: info
                    .as_ref()
                    .map_or_else(|| "unknown".into(), |j| j.source.clone()),
                model: info.map_or_else(|| "unknown".into(), |j| j.model),
                started: None,
                loading_since: None,
                last_step: None,
            }
        });
        let now = event.elapsed_seconds;
        let stage = &event.stage;
        // A waiting job's prompt can be rewritten before its turn (the assistant): it is still waiting.
        if matches!(
            stage,
            Stage::Queued { .. }
                | Stage::Preview { .. }
                | Stage::EnhancingPrompt { .. }
                | Stage::PromptEnhanced { .. }
        ) {
            return;
        }
        if track.started.is_none() && !stage.is_final() {
            track.started = Some(now);
            families.queue_wait.observe(now);
        }
        match stage {
            Stage::LoadingModel { .. } => {
                track.loading_since.get_or_insert(now);
            }
            _ => {
                if let Some(since) = track.loading_since.take() {
                    families.model_load.observe((now - since).max(0.0));
                }
            }
        }
        if let Stage::Sampling {
            image, step, pass, ..
        } = stage
        {
            let key = (*image, *pass);
            if let Some((last_key, last_step, at)) = track.last_step {
                if last_key == key && *step == last_step + 1 {
                    families.step.observe((now - at).max(0.0));
                }
            }
            track.last_step = Some((key, *step, now));
        }
        if stage.is_final() {
            let track = jobs.remove(&event.job_id).unwrap_or_else(|| unreachable!());
            families
                .jobs_total
                .get_or_create(&vec![
                    ("status", stage.name().to_string()),
                    ("source", track.source.clone()),
                ])
                .inc();
            if let Some(started) = track.started {
                families.job_duration.observe((now - started).max(0.0));
            }
            if let Stage::Done { outputs } = stage {
                families
                    .images_total
                    .get_or_create(&vec![("model", track.model.clone())])
                    .inc_by(outputs.len() as u64);
            }
        }
    }

    fn vram_event(&self, event: &VramEvent) {
        let families = &self.inner;
        if let VramEvent::Switch {
            milliseconds,
            unloaded,
            restored,
            ..
        } = event
        {
            families.vram_switches.inc();
            let seconds = milliseconds / 1000.0;
            if !unloaded.is_empty() {
                families.llm_unload.observe(seconds);
            }
            if !restored.is_empty() {
                families.llm_restore.observe(seconds);
            }
        }
    }
}

/// What the metrics remember of a job until it ends.
struct Track {
    source: String,
    model: String,
    /// When it left the queue (seconds since it was accepted).
    started: Option<f64>,
    /// When the current weight load began.
    loading_since: Option<f64>,
    /// The last sampling event: (image, pass), step, when.
    last_step: Option<((u32, u32), u32, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_metric_is_described_in_the_text_format_before_anything_ran() {
        let metrics = Metrics::new();
        let jobs = JobManager::new(
            Arc::new(diffugen_engine::Engine::new(
                diffugen_engine::WorkerCommand::current_exe(&["engine-worker"]).unwrap(),
            )),
            4,
        );
        let text = metrics.render(&jobs, None);
        // Families with labels (jobs by status and source, images by model, VRAM by GPU and owner) appear with
        // their first sample; the rest are there from the start.
        for name in [
            "diffugen_jobs_queued",
            "diffugen_jobs_running",
            "diffugen_job_duration_seconds",
            "diffugen_queue_wait_seconds",
            "diffugen_sampling_step_seconds",
            "diffugen_model_load_seconds",
            "diffugen_llm_unload_seconds",
            "diffugen_llm_restore_seconds",
            "diffugen_vram_switches_total",
            "diffugen_build_info",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("diffugen_jobs_queued 0"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
