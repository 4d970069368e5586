//! The queue's runners, one per render lane: each takes its next job, makes room on the GPU (the orchestrator's
//! diffusion turn on the lane's card when the LLMs live there, and the memory plan for that card; a CPU lane needs
//! neither), runs it on its engine, records its images in the gallery, ends it, and frees an idle model after the
//! keep-alive.

use std::time::Instant;

use diffugen_engine::{Engine, FailureKind, JobEvent, JobSpec, Output, Stage, Work};
use diffugen_gallery::Gallery;
use diffugen_vram::share::Fit;
use diffugen_vram::{DiffusionLease, LaneDevice, Orchestrator};
use tokio::sync::oneshot;

use crate::state::finish;
use crate::{announce_positions, JobManager, JobState};

impl JobManager {
    pub(crate) async fn run(self, lane: usize) {
        // Held across back-to-back jobs so the LLM is not reloaded between them; dropped when the queue drains.
        let mut lease: Option<DiffusionLease> = None;
        let device = self.shared.devices[lane];
        let engine = self.shared.engines[lane].clone();
        // From taking a job until idle again with the lease given back.
        let mut busy = false;
        loop {
            let held: Vec<Option<String>> = self
                .shared
                .engines
                .iter()
                .map(|e| e.loaded_model())
                .collect();
            let next = {
                let mut state = self.lock();
                let next = if state.paused {
                    None
                } else {
                    state.take_for(lane, &held)
                };
                if let Some(id) = &next {
                    self.shared.idle.send_replace(false);
                    if !busy {
                        busy = true;
                        state.busy_lanes += 1;
                    }
                    state.running.push((id.clone(), lane));
                    if let Some(job) = state.jobs.get_mut(id) {
                        job.state = JobState::Running;
                        job.lane = Some(lane as u32);
                        job.worker = Some(crate::LOCAL_WORKER.into());
                    }
                    if let Some(Err(e)) = state.store.as_ref().map(|s| s.set_running(id)) {
                        tracing::warn!(error = %e, "the queue on disk was not updated");
                    }
                    announce_positions(&mut state);
                }
                next.and_then(|id| {
                    state.jobs.get(&id).and_then(|j| {
                        let (work, destination) = j.work.clone()?;
                        Some((id, work, destination, j.accepted))
                    })
                })
            };
            let Some((id, mut work, destination, accepted)) = next else {
                if let Some(lease) = lease.take() {
                    lease.release().await;
                }
                if busy {
                    busy = false;
                    let mut state = self.lock();
                    state.busy_lanes -= 1;
                    if state.busy_lanes == 0 {
                        self.shared.idle.send_replace(true);
                    }
                }
                self.idle(&engine, lane).await;
                continue;
            };
            // The other free lanes look again: what this lane left may be theirs.
            if self.shared.engines.len() > 1 {
                self.wake_lanes();
            }
            let manager = self.clone();
            let gallery = self.shared.gallery.clone();
            let mut record = |mut event: JobEvent| {
                if let (Some(gallery), Stage::Done { outputs }) = (&gallery, &mut event.stage) {
                    let recorded = blocking(|| record_in_gallery(gallery, outputs));
                    if let Err(error) = recorded {
                        event.stage = Stage::Failed {
                            error,
                            kind: FailureKind::Storage,
                        };
                        event.percent = None;
                    }
                }
                let mut state = manager.lock();
                let ended = event.stage.is_final().then(|| event.job_id.clone());
                if let Some(job) = state.jobs.get_mut(&event.job_id) {
                    job.record(event);
                }
                // In the history at the moment its last event goes out, so a client never misses it there.
                if let Some(id) = ended {
                    finish(&mut state, &id);
                }
            };
            if let Work::Generate(spec) = &mut work {
                for message in self.apply_defaults(spec) {
                    let stage = Stage::Warning { message };
                    record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
                }
            }
            if let Work::Upscale(spec) = &mut work {
                spec.threads = spec.threads.or(self.defaults().threads);
            }
            // The prompt assistant takes the LLM's turn before the job's diffusion turn: a run that holds the GPU
            // gives it back first, and every waiting job that asks for the assistant is rewritten in the same turn,
            // so a queue of them costs one switch.
            if matches!(&work, Work::Generate(spec) if spec.enhance.is_some()) {
                if let Some(held) = lease.take() {
                    held.release().await;
                }
                let enhanced = self
                    .cancellable(
                        &id,
                        self.enhance_waiting(&id, &mut work, accepted, &mut record),
                    )
                    .await;
                let ended = match enhanced {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(Stage::Failed {
                        error,
                        kind: FailureKind::Render,
                    }),
                    Err(reason) => Some(Stage::Cancelled { reason }),
                };
                if let Some(stage) = ended {
                    record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
                    let mut state = self.lock();
                    state.running.retain(|(r, _)| r != &id);
                    finish(&mut state, &id);
                    continue;
                }
            }
            // Lanczos and nearest run on the CPU: they need no turn on the GPU.
            let needs_gpu = !matches!(&work, Work::Upscale(spec) if spec.needed_vram() == 0.0);
            // The orchestrator and the card of a job that takes its turn with the LLMs: every job of the default
            // lane; on a GPU lane, one whose card holds an LLM (or a lease already); never a CPU lane's.
            let orchestrated: Option<(Orchestrator, u32)> = device.card().and_then(|card| {
                let turn = |o: &Orchestrator| {
                    device == LaneDevice::Default || lease.is_some() || o.needs_turn(card)
                };
                let orchestrator = self.shared.orchestrator.clone().filter(turn)?;
                Some((orchestrator, card))
            });
            if let (Some((orchestrator, card)), None, true) = (&orchestrated, &lease, needs_gpu) {
                match self
                    .prepare(orchestrator, *card, &id, &mut work, accepted, &mut record)
                    .await
                {
                    Ok(acquired) => lease = Some(acquired),
                    Err(stage) => {
                        record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
                        let mut state = self.lock();
                        state.running.retain(|(r, _)| r != &id);
                        finish(&mut state, &id);
                        continue;
                    }
                }
            } else if let Work::Generate(spec) = &mut work {
                // Planned for the lane's card as it is now (beside the LLMs on another card, or within the budget
                // of a shared turn).
                let gpu = device
                    .card()
                    .and_then(|card| self.shared.orchestrator.as_ref().map(|o| (o, card)));
                let budget = orchestrated.as_ref().and_then(|(o, _)| o.sharing_budget());
                for stage in plan_stages(gpu, spec, budget) {
                    record(JobEvent::new(&id, accepted.elapsed().as_secs_f64(), stage));
                }
            }
            let critique = match &work {
                Work::Generate(spec) => spec.critique.clone(),
                Work::Upscale(_) => None,
            };
            // The outcome is the job's final event, already recorded.
            match (&mut work, critique) {
                (Work::Generate(spec), Some(asked)) => {
                    self.render_critiqued(
                        &engine,
                        orchestrated.as_ref().map(|(o, card)| (o, *card)),
                        &id,
                        spec,
                        &destination,
                        accepted,
                        asked,
                        &mut lease,
                        &mut record,
                    )
                    .await;
                }
                (Work::Generate(spec), None) => {
                    let _ = diffugen_engine::job::run(
                        &engine,
                        &id,
                        spec,
                        &destination,
                        accepted,
                        &mut record,
                    )
                    .await;
                }
                (Work::Upscale(spec), _) => {
                    let _ = diffugen_engine::job::run_upscale(
                        &engine,
                        &id,
                        spec,
                        &destination,
                        accepted,
                        &mut record,
                    )
                    .await;
                }
            }
            let more = {
                let mut state = self.lock();
                state.running.retain(|(r, _)| r != &id);
                finish(&mut state, &id);
                !state.queue.is_empty()
            };
            // Hand the GPU back when the queue is empty, or between jobs when an LLM request is waiting for it.
            if !more || orchestrated.as_ref().is_some_and(|(o, _)| o.llm_waiting()) {
                // Given back before the next job is taken, so the LLMs are restored (or the waiting request served)
                // before the GPU is asked for again.
                if let Some(lease) = lease.take() {
                    lease.release().await;
                }
            }
        }
    }

    /// Rewrites the prompt of `work` (the job about to run) and of every waiting job that asks for the assistant, in
    /// one LLM turn on the GPU. A waiting job whose rewrite fails keeps its prompt and tries again when its turn
    /// comes; the error is the running job's.
    async fn enhance_waiting(
        &self,
        id: &str,
        work: &mut Work,
        accepted: Instant,
        record: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<(), String> {
        let Work::Generate(spec) = work else {
            return Ok(());
        };
        let Some(orchestrator) = &self.shared.orchestrator else {
            return Err(
                "enhance_prompt: this queue has no Ollama to ask (no VRAM orchestrator)".into(),
            );
        };
        let waiting: Vec<(String, JobSpec, Instant)> = {
            let state = self.lock();
            state
                .queue
                .iter()
                .filter_map(|queued| {
                    let job = state.jobs.get(queued)?;
                    match &job.work {
                        Some((Work::Generate(spec), _)) if spec.enhance.is_some() => {
                            Some((queued.clone(), (**spec).clone(), job.accepted))
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        let _turn = orchestrator
            .acquire_llm()
            .await
            .map_err(|e| format!("enhance_prompt: the LLM could not have the GPU: {e}"))?;
        let ollama = orchestrator.ollama();
        let setting = self.defaults().assistant_model;
        enhance(ollama, setting.as_deref(), id, spec, accepted, record).await?;
        if let Some(job) = self.lock().jobs.get_mut(id) {
            job.prompt = spec.prompt.clone();
        }
        for (queued, mut spec, accepted) in waiting {
            match enhance(
                ollama,
                setting.as_deref(),
                &queued,
                &mut spec,
                accepted,
                record,
            )
            .await
            {
                Ok(()) => {
                    let mut state = self.lock();
                    if let Some(job) = state.jobs.get_mut(&queued) {
                        if let (JobState::Queued, Some((Work::Generate(held), _))) =
                            (job.state, job.work.as_mut())
                        {
                            job.prompt = spec.prompt.clone();
                            **held = spec;
                        }
                    }
                }
                Err(error) => {
                    tracing::info!(job = %queued, %error, "a waiting job's prompt is rewritten at its turn")
                }
            }
        }
        Ok(())
    }

    /// Renders a job whose result a vision model scores: the take is scored in the LLM's turn after the render; one
    /// below the pass mark is rendered once more with the next seeds (the GPU asked for again) and scored too. The
    /// better take is the job's result; the other is kept in the gallery. A critique that cannot be made is a
    /// warning: the images are delivered unscored.
    #[allow(clippy::too_many_arguments)]
    async fn render_critiqued(
        &self,
        engine: &Engine,
        orchestrated: Option<(&Orchestrator, u32)>,
        id: &str,
        spec: &mut JobSpec,
        destination: &diffugen_engine::Destination,
        accepted: Instant,
        asked: diffugen_engine::params::Critique,
        lease: &mut Option<DiffusionLease>,
        record: &mut (dyn FnMut(JobEvent) + Send),
    ) {
        let mut takes: Vec<(JobEvent, f64)> = Vec::new();
        for attempt in 1..=2u32 {
            if attempt > 1 {
                if let (Some((orchestrator, card)), None) = (orchestrated, &*lease) {
                    let mut work = Work::Generate(Box::new(spec.clone()));
                    match self
                        .prepare(orchestrator, card, id, &mut work, accepted, record)
                        .await
                    {
                        Ok(acquired) => *lease = Some(acquired),
                        Err(stage) => {
                            // The first take stands.
                            let message = format!(
                                "critique: the second take could not have the GPU: {}",
                                stage.name()
                            );
                            record(JobEvent::new(
                                id,
                                accepted.elapsed().as_secs_f64(),
                                Stage::Warning { message },
                            ));
                            break;
                        }
                    }
                    if let Work::Generate(planned) = work {
                        *spec = *planned;
                    }
                }
            }
            let mut held = None;
            {
                let mut hold = |event: JobEvent| {
                    if matches!(event.stage, Stage::Done { .. }) {
                        held = Some(event);
                    } else {
                        record(event);
                    }
                };
                let _ =
                    diffugen_engine::job::run(engine, id, spec, destination, accepted, &mut hold)
                        .await;
            }
            // A take that failed or was cancelled has ended the job (its final event went out).
            let Some(mut done) = held else {
                return;
            };
            let first_image = match &done.stage {
                Stage::Done { outputs } => outputs.first().map(|o| o.path.clone()),
                _ => None,
            };
            // The critic's turn on the GPU comes after the render's.
            if let Some(held) = lease.take() {
                held.release().await;
            }
            let verdict = match (&self.shared.orchestrator, first_image) {
                (Some(orchestrator), Some(path)) => {
                    let critique = self.critique(orchestrator, &asked, &spec.prompt, &path);
                    match self.cancellable(id, critique).await {
                        Ok(verdict) => verdict,
                        Err(reason) => {
                            // The take's images stay in the gallery; the job ends as cancelled.
                            if let (Some(gallery), Stage::Done { outputs }) =
                                (&self.shared.gallery, &mut done.stage)
                            {
                                let _ = blocking(|| record_in_gallery(gallery, outputs));
                            }
                            let stage = Stage::Cancelled { reason };
                            record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
                            return;
                        }
                    }
                }
                (None, _) => {
                    Err("critique: this queue has no Ollama to ask (no VRAM orchestrator)".into())
                }
                (_, None) => Err("critique: the take has no image".into()),
            };
            match verdict {
                Ok(verdict) => {
                    let retry = attempt == 1 && verdict.score < crate::assistant::PASS_MARK;
                    let stage = Stage::Critique {
                        model: verdict.model,
                        attempt,
                        score: verdict.score,
                        reason: verdict.reason,
                        retry,
                    };
                    record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
                    takes.push((done, verdict.score));
                    if !retry {
                        break;
                    }
                    // The next take: the seeds after this take's.
                    spec.seed = spec.seed.saturating_add(i64::from(spec.count));
                }
                Err(message) => {
                    record(JobEvent::new(
                        id,
                        accepted.elapsed().as_secs_f64(),
                        Stage::Warning { message },
                    ));
                    takes.push((done, f64::NEG_INFINITY));
                    break;
                }
            }
        }
        // The better take (the first on a tie) is the result; the other stays in the gallery.
        let best = takes.iter().enumerate().fold(
            0,
            |best, (i, (_, score))| if *score > takes[best].1 { i } else { best },
        );
        for (i, (event, _)) in takes.iter_mut().enumerate() {
            if i == best {
                continue;
            }
            if let (Some(gallery), Stage::Done { outputs }) =
                (&self.shared.gallery, &mut event.stage)
            {
                let recorded = blocking(|| record_in_gallery(gallery, outputs));
                if let Err(error) = recorded {
                    tracing::warn!(%error, "a take that was not kept is not in the gallery");
                }
            }
        }
        if let Some((done, _)) = takes.into_iter().nth(best) {
            record(done);
        }
    }

    /// Runs `work` for the running job `id` so that a cancel ends it at once, as a wait for the GPU does: the
    /// assistant's and the critic's turns are not in the engine, which is what cancels a render. `Err` holds the
    /// cancel's reason.
    async fn cancellable<T>(
        &self,
        id: &str,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.lock().preparing.push((id.to_string(), cancel_tx));
        let result = tokio::select! {
            out = work => Ok(out),
            reason = cancel_rx => Err(reason.unwrap_or_else(|_| "cancelled".into())),
        };
        self.lock().preparing.retain(|(p, _)| p != id);
        result
    }

    /// The vision model's verdict on the image at `path`, in its turn on the GPU.
    async fn critique(
        &self,
        orchestrator: &Orchestrator,
        asked: &diffugen_engine::params::Critique,
        prompt: &str,
        path: &str,
    ) -> Result<crate::assistant::Verdict, String> {
        let image = tokio::fs::read(path)
            .await
            .map_err(|e| format!("critique: cannot read {path}: {e}"))?;
        let _turn = orchestrator
            .acquire_llm()
            .await
            .map_err(|e| format!("critique: the vision model could not have the GPU: {e}"))?;
        let setting = self.defaults().critique_model;
        crate::assistant::critique(
            orchestrator.ollama(),
            asked.model.as_deref(),
            setting.as_deref(),
            prompt,
            &image,
        )
        .await
    }

    /// Fills what a job left out from the settings' defaults; returns warnings for defaults that do not apply.
    fn apply_defaults(&self, spec: &mut JobSpec) -> Vec<String> {
        let defaults = self.defaults();
        spec.threads = spec.threads.or(defaults.threads);
        if spec.preview.is_none() {
            spec.preview = self
                .shared
                .preview
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        diffugen_engine::memory::apply_defaults(spec, &defaults.memory)
    }

    /// Waits for the next job; after the keep-alive with no job, frees the engine's model (the worker stays).
    async fn idle(&self, engine: &Engine, lane: usize) {
        let keep_alive = self.defaults().keep_alive;
        let wake = &self.shared.wake[lane];
        match keep_alive {
            Some(idle) if engine.loaded_model().is_some() => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {
                        tracing::info!(seconds = idle.as_secs_f64(), lane, "the model was idle: freeing its memory");
                        engine.unload().await;
                    }
                }
            }
            _ => wake.notified().await,
        }
    }

    /// Asks the orchestrator for the GPU with the job's memory planner (it may share the GPU with resident LLMs
    /// or unload them), plans the job for the room it got, and reports both as the job's events; a cancel while
    /// waiting ends the job before it reaches the engine. The error is the job's final stage.
    async fn prepare(
        &self,
        orchestrator: &Orchestrator,
        card: u32,
        id: &str,
        work: &mut Work,
        accepted: Instant,
        record: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<DiffusionLease, Stage> {
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.lock().preparing.push((id.to_string(), cancel_tx));
        let mut planner: Box<dyn FnMut(f64) -> Fit + Send> = match &*work {
            Work::Generate(spec) => Box::new(fit_for(spec, orchestrator, card)),
            Work::Upscale(spec) => {
                let vram_bytes = spec.needed_vram();
                Box::new(move |_free: f64| Fit {
                    fits: true,
                    vram_bytes,
                    seconds: 1.0,
                })
            }
        };
        let mut on_stage = |progress: diffugen_vram::Progress| {
            record(JobEvent::new(
                id,
                accepted.elapsed().as_secs_f64(),
                progress.into(),
            ));
        };
        let result = tokio::select! {
            lease = orchestrator.acquire_diffusion_planned_on(card, &mut planner, &mut on_stage) => {
                lease.map_err(|e| Stage::Failed { error: e.to_string(), kind: FailureKind::Gpu })
            }
            reason = cancel_rx => Err(Stage::Cancelled {
                reason: reason.unwrap_or_else(|_| "cancelled".into()),
            }),
        };
        self.lock().preparing.retain(|(p, _)| p != id);
        let (lease, budget) = result?;
        if let Work::Generate(spec) = work {
            for stage in plan_stages(Some((orchestrator, card)), spec, budget) {
                record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
            }
        }
        Ok(lease)
    }
}

/// The job's memory planner as the orchestrator asks it: with `free` bytes of VRAM on card `card`, would the job
/// fit, how much would it take, and how long would it run.
pub fn fit_for(
    spec: &JobSpec,
    orchestrator: &Orchestrator,
    card: u32,
) -> impl FnMut(f64) -> Fit + Send {
    let mut spec = spec.clone();
    let total = orchestrator
        .gpu_memory_for_diffusion_on(card)
        .map(|(total, _)| total);
    move |free: f64| {
        let gpu = total.map(|t| (t, free.min(t)));
        match diffugen_engine::memory::plan_job(&mut spec, &diffugen_engine::memory::resources(gpu))
        {
            // Beside an LLM, a plan that moves the diffusion model to the CPU is no way to share the GPU.
            Ok(plan) => Fit {
                fits: plan.fits
                    && (gpu.is_none()
                        || plan.group(diffugen_models::Group::Diffusion)
                            != Some(diffugen_models::Placement::Cpu)),
                vram_bytes: plan.estimated_vram_peak_bytes,
                seconds: plan.estimated_seconds,
            },
            Err(_) => Fit {
                fits: true,
                vram_bytes: needed_vram(&spec),
                seconds: 0.0,
            },
        }
    }
}

/// Plans a job's memory (where each part runs, tiling, budget) with what the GPU and RAM hold now, keeps the plan
/// in the spec for the worker, and returns the stages that tell the job's clients: the plan, and a warning with
/// advice when even the best plan does not fit (the job still runs: the estimate errs on the generous side).
/// `gpu`: the orchestrator that reads the cards and the card the job renders on (`None`: the CPU). `budget`: the
/// VRAM the job may use when it shares the GPU with resident LLMs (else what is free now).
pub fn plan_stages(
    gpu: Option<(&Orchestrator, u32)>,
    spec: &mut JobSpec,
    budget: Option<f64>,
) -> Vec<Stage> {
    let gpu = gpu
        .and_then(|(orchestrator, card)| orchestrator.gpu_memory_for_diffusion_on(card))
        .map(|(total, free)| (total, budget.map_or(free, |b| b.min(total))));
    let resources = diffugen_engine::memory::resources(gpu);
    match diffugen_engine::memory::plan_job(spec, &resources) {
        Ok(plan) => {
            let mut stages = vec![Stage::Plan {
                summary: plan.summary(),
                plan: plan.clone(),
            }];
            if !plan.fits {
                stages.push(Stage::Warning {
                    message: format!(
                        "this job may not fit the memory at hand: {}",
                        plan.advice.join("; ")
                    ),
                });
            }
            stages
        }
        Err(error) => vec![Stage::Warning {
            message: format!("could not plan the job's memory ({error}); sd.cpp decides"),
        }],
    }
}

/// The VRAM a job's plan needs at its peak (everything on the GPU when it has no plan).
pub fn needed_vram(spec: &JobSpec) -> f64 {
    spec.memory.plan.as_ref().map_or_else(
        || {
            diffugen_models::plan::full_gpu_need(
                &spec.components,
                spec.family,
                spec.output_size().0,
                spec.output_size().1,
                spec.cfg_scale > 1.0,
            )
        },
        |p| p.estimated_vram_peak_bytes,
    )
}

/// Records finished images in the gallery. An image the gallery cannot record fails the job (a client must never
/// be told of an image its gallery lacks); the message says where the files are, so nothing is lost.
pub fn record_in_gallery(gallery: &Gallery, outputs: &mut [Output]) -> Result<(), String> {
    for output in outputs.iter_mut() {
        match gallery.add(std::path::Path::new(&output.path)) {
            Ok(id) => output.gallery_id = Some(id),
            Err(e) => {
                tracing::warn!(path = %output.path, error = %e, "not recorded in the gallery");
                let files: Vec<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
                return Err(format!(
                    "the image was rendered but the gallery could not record it ({}{e}); nothing is lost: {} \
                     {} kept and will be listed after `diffugen gallery reindex`",
                    if e.is_disk_full() { "the disk is full: " } else { "" },
                    files.join(", "),
                    if files.len() == 1 { "is" } else { "are" },
                ));
            }
        }
    }
    Ok(())
}

/// Runs `work` that blocks (SQLite, thumbnails) telling a multi-threaded runtime, so other tasks move to another
/// thread meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Rewrites one job's prompt with the assistant and reports it as the job's events; the spec then holds the rewrite
/// (what sd.cpp encodes and what the image records) and the original.
async fn enhance(
    ollama: &diffugen_vram::OllamaClient,
    setting: Option<&str>,
    id: &str,
    spec: &mut JobSpec,
    accepted: Instant,
    record: &mut (dyn FnMut(JobEvent) + Send),
) -> Result<(), String> {
    let Some(asked) = spec.enhance.take() else {
        return Ok(());
    };
    let model = crate::assistant::choose_model(ollama, asked.model.as_deref(), setting)
        .await
        .map_err(|e| e.to_string())?;
    let stage = Stage::EnhancingPrompt {
        model: model.clone(),
    };
    record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
    let original = spec.prompt.clone();
    let rewrite = crate::assistant::rewrite(ollama, &model, spec.family, &original, 0)
        .await
        .map_err(|e| e.to_string())?;
    // sd.cpp reads the prompt without LoRA tags (the LoRAs were resolved at validation).
    spec.sd_prompt = diffugen_engine::lora::extract(&rewrite)
        .map(|(text, _)| text)
        .map_err(|e| format!("enhance_prompt: the rewrite is not a usable prompt: {e}"))?;
    spec.prompt = rewrite.clone();
    spec.original_prompt = Some(original.clone());
    let stage = Stage::PromptEnhanced {
        model,
        original,
        prompt: rewrite,
    };
    record(JobEvent::new(id, accepted.elapsed().as_secs_f64(), stage));
    Ok(())
}
