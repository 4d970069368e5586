//! The supervisor: starts the engine worker process, sends it one job at a time, turns its reports into
//! [`JobEvent`]s, and survives it. A crash of sd.cpp (abort on a bad file, out of memory) fails the job that was
//! running with the tail of sd.cpp's log, and a fresh worker is started; cancelling ends the process, which is also
//! the only way to be sure its RAM/VRAM comes back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use crate::estimate::Estimator;
use crate::events::JobEvent;
use crate::params::JobSpec;
use crate::protocol::{FromWorker, ToWorker};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a worker: a program and its arguments (normally this executable with a hidden subcommand).
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl WorkerCommand {
    /// The running executable with `args`: the CLI, the server and the app host the worker themselves.
    pub fn current_exe(args: &[&str]) -> std::io::Result<WorkerCommand> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: args.iter().map(|a| a.to_string()).collect(),
        })
    }
}

/// Turns a stage into `(percent, eta_seconds)`: the estimator for a render, tiles for an upscale.
type Observe<'a> =
    dyn FnMut(&crate::events::Stage, Instant) -> (Option<f64>, Option<f64>) + Send + 'a;

/// Why a job did not produce images.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Failed(String),
    /// The result could not be written.
    #[error("{0}")]
    Storage(String),
    #[error("cancelled: {0}")]
    Cancelled(String),
}

/// What a finished generation returns.
#[derive(Debug, Clone)]
pub struct Generated {
    pub images: Vec<diffugen_sd::RgbImage>,
    /// Whether the model was already loaded (no loading phase).
    pub model_was_resident: bool,
    pub worker_pid: u32,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    messages: mpsc::UnboundedReceiver<FromWorker>,
    pid: u32,
}

/// The last lines sd.cpp logged (and anything the worker printed to stderr), for error messages.
#[derive(Debug, Clone, Default)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    const LINES: usize = 12;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn take(&self) -> String {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = lines.iter().cloned().collect::<Vec<_>>().join("\n  ");
        lines.clear();
        text
    }
}

/// sd.cpp's recent log lines, kept longer than the error tail, for diagnostics: what each option did shows there
/// (buffer sizes, tiles, caches, flash attention, mmap).
#[derive(Debug, Clone, Default)]
struct RecentLog(Arc<Mutex<VecDeque<String>>>);

impl RecentLog {
    const LINES: usize = 400;

    fn push(&self, line: &str) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line.trim_end().to_string());
    }
}

/// Runs jobs in a supervised worker process, one at a time.
pub struct Engine {
    recent_log: RecentLog,
    command: WorkerCommand,
    /// Set in each worker's environment (a lane's card: `LaneDevice::worker_env`).
    env: Vec<(String, String)>,
    worker: tokio::sync::Mutex<Option<Worker>>,
    cancel: Mutex<Option<(String, oneshot::Sender<String>)>>,
    estimator: Mutex<Estimator>,
    log_tail: LogTail,
    /// The worker's pid and the model it holds, readable while a job runs (the worker lock is held then).
    live: Mutex<(Option<u32>, Option<String>)>,
}

impl Engine {
    pub fn new(command: WorkerCommand) -> Engine {
        Engine {
            recent_log: RecentLog::default(),
            command,
            env: Vec::new(),
            worker: tokio::sync::Mutex::new(None),
            cancel: Mutex::new(None),
            estimator: Mutex::new(Estimator::default()),
            log_tail: LogTail::default(),
            live: Mutex::new((None, None)),
        }
    }

    /// The same engine with `env` set in each of its workers' environment (a render lane confined to its card).
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Engine {
        self.env = env;
        self
    }

    async fn spawn(&self) -> Result<Worker, EngineError> {
        let mut child = Command::new(&self.command.program)
            .args(&self.command.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                EngineError::Failed(format!(
                    "cannot start the engine worker {}: {e}",
                    self.command.program.display()
                ))
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, mut messages) = mpsc::unbounded_channel();
        let tail = self.log_tail.clone();
        let recent = self.recent_log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<FromWorker>(&line) {
                    Ok(FromWorker::Log { level, text }) => {
                        tracing::debug!(target: "sd.cpp", "{level}: {text}");
                        recent.push(&text);
                        if level != "debug" {
                            tail.push(text);
                        }
                    }
                    Ok(message) => {
                        if tx.send(message).is_err() {
                            break;
                        }
                    }
                    Err(_) => tail.push(line),
                }
            }
        });
        let tail = self.log_tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "engine-worker", "{line}");
                tail.push(line);
            }
        });
        match tokio::time::timeout(READY_TIMEOUT, messages.recv()).await {
            Ok(Some(FromWorker::Ready { pid, system_info })) => {
                tracing::info!(pid, %system_info, "engine worker started");
                Ok(Worker {
                    child,
                    stdin,
                    messages,
                    pid,
                })
            }
            other => {
                let _ = child.kill().await;
                Err(EngineError::Failed(format!(
                    "the engine worker did not start ({}): {}",
                    if other.is_err() {
                        "timed out"
                    } else {
                        "it exited"
                    },
                    self.log_tail.take()
                )))
            }
        }
    }

    /// The worker's process id, if one is running.
    /// How this engine starts its workers (conversions start theirs the same way).
    pub fn command(&self) -> &WorkerCommand {
        &self.command
    }

    /// sd.cpp's most recent log lines (up to 400), oldest first.
    pub fn sd_log(&self) -> Vec<String> {
        let lines = self.recent_log.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }

    pub async fn worker_pid(&self) -> Option<u32> {
        self.worker.lock().await.as_ref().map(|w| w.pid)
    }

    /// The worker's process id as last known, without waiting for a running job.
    pub fn current_pid(&self) -> Option<u32> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The model the worker holds in memory (after a successful job, until unload/stop/crash).
    pub fn loaded_model(&self) -> Option<String> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn set_live(&self, pid: Option<u32>, model: Option<String>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = (pid, model);
    }

    /// Cancels `job_id` if it is the one running (by ending the worker). Returns whether it was.
    pub fn cancel(&self, job_id: &str, reason: &str) -> bool {
        let mut slot = self.cancel.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(id, _)| id == job_id) {
            let (_, sender) = slot.take().expect("checked above");
            let _ = sender.send(reason.to_string());
            return true;
        }
        false
    }

    /// Frees the model's memory but keeps the worker (waits for a running job to finish first).
    pub async fn unload(&self) {
        let mut guard = self.worker.lock().await;
        let Some(worker) = guard.as_mut() else { return };
        let unloaded = async {
            worker
                .stdin
                .write_all(b"{\"type\":\"unload\"}\n")
                .await
                .ok()?;
            worker.stdin.flush().await.ok()?;
            while let Some(message) = worker.messages.recv().await {
                if matches!(message, FromWorker::Unloaded) {
                    return Some(());
                }
            }
            None
        };
        if tokio::time::timeout(UNLOAD_TIMEOUT, unloaded)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            if let Some(mut worker) = guard.take() {
                let _ = worker.child.kill().await;
            }
        }
        self.set_live(guard.as_ref().map(|w| w.pid), None);
    }

    /// Ends the worker process: every byte of RAM/VRAM it held comes back. The next job starts a new one.
    pub async fn stop(&self) {
        let mut guard = self.worker.lock().await;
        self.set_live(None, None);
        if let Some(mut worker) = guard.take() {
            let _ = worker.stdin.write_all(b"{\"type\":\"shutdown\"}\n").await;
            if tokio::time::timeout(Duration::from_secs(5), worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
    }

    /// How long `spec` would take on this engine by its measured history (`None` before its model has run here);
    /// `resident` when the worker will already hold the model.
    pub fn predict_seconds(&self, spec: &JobSpec, resident: bool) -> Option<f64> {
        let (width, height) = spec.output_size();
        self.estimator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .predict(
                &spec.model_id,
                spec.total_steps(),
                spec.count,
                width,
                height,
                resident,
            )
    }

    /// Runs one validated job, reporting every stage to `on_event`, and returns its images.
    pub async fn generate(
        &self,
        job_id: &str,
        spec: &JobSpec,
        started: Instant,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<Generated, EngineError> {
        self.estimator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start(
                &spec.model_id,
                spec.total_steps(),
                spec.count,
                spec.output_size().0,
                spec.output_size().1,
                started,
            );
        let request = ToWorker::Generate {
            job_id: job_id.to_string(),
            spec: Box::new(spec.clone()),
        };
        let mut observe = |stage: &crate::events::Stage, now: Instant| {
            self.estimator
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .observe(stage, now)
        };
        let (result, pid) = self
            .run_job(job_id, &request, started, &mut observe, on_event)
            .await;
        self.set_live(pid, result.is_ok().then(|| spec.model_id.clone()));
        self.estimator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(result.is_ok(), Instant::now());
        result
    }

    /// Enlarges a validated upscale job's images, reporting every stage (by tile) to `on_event`. The rendering
    /// model stays loaded in the worker beside the upscaling model.
    pub async fn upscale(
        &self,
        job_id: &str,
        spec: &crate::upscale::UpscaleSpec,
        started: Instant,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> Result<Generated, EngineError> {
        let request = ToWorker::Upscale {
            job_id: job_id.to_string(),
            spec: Box::new(spec.clone()),
        };
        let mut clock = crate::estimate::TileClock::default();
        let mut observe = |stage: &crate::events::Stage, now: Instant| clock.observe(stage, now);
        let (result, pid) = self
            .run_job(job_id, &request, started, &mut observe, on_event)
            .await;
        self.live.lock().unwrap_or_else(|e| e.into_inner()).0 = pid;
        result
    }

    /// Sends one job to the worker (one at a time: the worker lock), cancellable through [`Engine::cancel`] while it
    /// runs; returns the outcome and the pid of the worker left running.
    async fn run_job(
        &self,
        job_id: &str,
        request: &ToWorker,
        started: Instant,
        observe: &mut Observe<'_>,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
    ) -> (Result<Generated, EngineError>, Option<u32>) {
        let mut guard = self.worker.lock().await;
        let (cancel_tx, mut cancel_rx) = oneshot::channel();
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((job_id.to_string(), cancel_tx));
        let result = self
            .run(
                &mut guard,
                job_id,
                request,
                started,
                observe,
                on_event,
                &mut cancel_rx,
            )
            .await;
        self.cancel.lock().unwrap_or_else(|e| e.into_inner()).take();
        (result, guard.as_ref().map(|w| w.pid))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        slot: &mut Option<Worker>,
        job_id: &str,
        request: &ToWorker,
        started: Instant,
        observe: &mut Observe<'_>,
        on_event: &mut (dyn FnMut(JobEvent) + Send),
        cancel: &mut oneshot::Receiver<String>,
    ) -> Result<Generated, EngineError> {
        if let Some(worker) = slot.as_mut() {
            if worker.child.try_wait().ok().flatten().is_some() {
                *slot = None;
            }
        }
        if slot.is_none() {
            *slot = Some(self.spawn().await?);
        }
        let worker = slot.as_mut().expect("a worker was just ensured");
        let pid = worker.pid;
        // The meter attributes the worker's VRAM while the job runs, the first one included.
        self.live.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(pid);
        let mut line =
            serde_json::to_vec(request).map_err(|e| EngineError::Failed(e.to_string()))?;
        line.push(b'\n');
        let _ = self.log_tail.take();
        if let Err(e) = worker.stdin.write_all(&line).await {
            *slot = None;
            return Err(EngineError::Failed(format!(
                "the engine worker stopped accepting jobs: {e}"
            )));
        }
        let _ = worker.stdin.flush().await;

        let mut images = Vec::new();
        let mut last_phase = "starting";
        loop {
            let message = tokio::select! {
                message = worker.messages.recv() => message,
                reason = &mut *cancel => {
                    let reason = reason.unwrap_or_else(|_| "cancelled".into());
                    let _ = worker.child.kill().await;
                    *slot = None;
                    tracing::info!(job_id, %reason, "job cancelled; engine worker ended");
                    return Err(EngineError::Cancelled(reason));
                }
            };
            match message {
                Some(FromWorker::Stage { job_id: id, stage }) if id == job_id => {
                    let (percent, eta_seconds) = observe(&stage, Instant::now());
                    last_phase = stage.name();
                    on_event(JobEvent {
                        job_id: job_id.to_string(),
                        elapsed_seconds: started.elapsed().as_secs_f64(),
                        percent,
                        eta_seconds,
                        stage,
                    });
                }
                Some(FromWorker::Image {
                    job_id: id, image, ..
                }) if id == job_id => {
                    images.push(image.decode().map_err(|e| {
                        EngineError::Failed(format!("engine sent a bad image: {e}"))
                    })?);
                }
                Some(FromWorker::Finished {
                    job_id: id,
                    model_was_resident,
                }) if id == job_id => {
                    return Ok(Generated {
                        images,
                        model_was_resident,
                        worker_pid: pid,
                    });
                }
                Some(FromWorker::Failed { job_id: id, error }) if id == job_id => {
                    return Err(EngineError::Failed(error));
                }
                Some(_) => {}
                None => {
                    let status = worker
                        .child
                        .wait()
                        .await
                        .map(describe_exit)
                        .unwrap_or_else(|e| e.to_string());
                    *slot = None;
                    // Let the stderr reader drain what the dying process printed.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let tail = self.log_tail.take();
                    let message = format!(
                        "the engine process crashed ({status}) while {last_phase}; the job failed, the app did not. \
                         Last sd.cpp log lines:\n  {}",
                        if tail.is_empty() { "(none)".into() } else { tail }
                    );
                    tracing::warn!(job_id, "{message}");
                    // Restart at once, so the next job finds a worker waiting.
                    *slot = self.spawn().await.ok();
                    return Err(EngineError::Failed(message));
                }
            }
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        _ => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => " (SIGABRT: sd.cpp aborted)",
        libc::SIGKILL => " (SIGKILL: killed, e.g. out of memory)",
        libc::SIGSEGV => " (SIGSEGV: sd.cpp crashed)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

/// The orchestrator's view of the engine: its worker, its model, and stopping it to free the GPU.
impl diffugen_vram::DiffusionEngine for Engine {
    fn worker_pid(&self) -> Option<u32> {
        self.current_pid()
    }

    fn loaded_model(&self) -> Option<String> {
        Engine::loaded_model(self)
    }

    fn stop(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(Engine::stop(self))
    }
}
