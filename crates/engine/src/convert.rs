//! Making a smaller copy of a model file on the user's machine: sd.cpp's `convert` writes its weights in another
//! type (q8_0, q4_k, ...) as GGUF. It runs in an engine worker process of its own — sd.cpp may abort, and the whole
//! model is read into memory — after checking the disk and memory, into a temporary file that is renamed into place
//! only when complete (and removed otherwise).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use diffugen_models::QuantType;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::events::Stage;
use crate::protocol::{FromWorker, ToWorker};
use crate::WorkerCommand;

/// What to convert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvertRequest {
    pub input: PathBuf,
    /// The finished file (GGUF); it must not exist yet.
    pub output: PathBuf,
    pub weight_type: QuantType,
    /// The copy's estimated size, for the disk check.
    pub expected_bytes: f64,
}

/// A conversion's progress, as every door reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConvertEvent {
    Started {
        input: String,
        output: String,
        weight_type: QuantType,
        expected_bytes: f64,
    },
    /// Reading and converting the weights: `done` of `total` (sd.cpp's own count).
    Progress {
        done: u32,
        total: u32,
        percent: f64,
    },
    /// The copy is in place and listed: `model_id` selects the model that uses it.
    Done {
        output: String,
        bytes: f64,
        seconds: f64,
        model_id: String,
    },
    Failed {
        error: String,
    },
}

impl ConvertEvent {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ConvertEvent::Done { .. } | ConvertEvent::Failed { .. }
        )
    }
}

/// What a finished conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: f64,
    pub seconds: f64,
}

/// Free bytes on the file system holding `dir`.
pub fn free_disk(dir: &Path) -> Option<f64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct for a NUL-terminated path; the struct is plain data.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as f64 * stat.f_frsize as f64)
}

fn gib(bytes: f64) -> String {
    format!("{:.2} GiB", bytes / f64::from(1u32 << 30))
}

/// Checks that the copy can be made: the input exists, the output does not, the disk has room for it and the
/// memory has room for the model sd.cpp reads whole.
pub fn check(request: &ConvertRequest) -> Result<(), String> {
    let input_bytes = std::fs::metadata(&request.input)
        .map_err(|e| format!("cannot read {}: {e}", request.input.display()))?
        .len() as f64;
    if request.output.exists() {
        return Err(format!(
            "{} already exists; choose another --output name",
            request.output.display()
        ));
    }
    let dir = request
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let margin = 256.0 * 1024.0 * 1024.0;
    if let Some(free) = free_disk(dir) {
        if free < request.expected_bytes + margin {
            return Err(format!(
                "not enough disk space in {}: the copy needs about {}, {} is free",
                dir.display(),
                gib(request.expected_bytes),
                gib(free)
            ));
        }
    }
    let ram = crate::memory::ram_free();
    // sd.cpp holds the converted weights in memory and reads the source tensor by tensor.
    let need = request.expected_bytes + input_bytes.min(2.0 * f64::from(1u32 << 30));
    if ram < need {
        return Err(format!(
            "not enough free memory to convert: sd.cpp holds the whole copy in memory (about {}), {} is free",
            gib(need),
            gib(ram)
        ));
    }
    Ok(())
}

/// The temporary file a conversion writes before it is complete.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    output.with_file_name(name)
}

/// Converts in a worker process of its own, reporting progress to `on_event`, then lets `finish` list the copy
/// (it returns the model id that uses it) and reports `done` — or `failed`, with nothing left behind.
pub async fn run(
    command: &WorkerCommand,
    job_id: &str,
    request: &ConvertRequest,
    finish: impl FnOnce(&Written) -> Result<String, String>,
    on_event: &mut (dyn FnMut(ConvertEvent) + Send),
) -> Result<String, String> {
    let result = convert(command, job_id, request, on_event)
        .await
        .and_then(|written| finish(&written).map(|id| (written, id)));
    match result {
        Ok((written, model_id)) => {
            tracing::info!(job_id, path = %written.path.display(), "converted");
            on_event(ConvertEvent::Done {
                output: written.path.display().to_string(),
                bytes: written.bytes,
                seconds: written.seconds,
                model_id: model_id.clone(),
            });
            Ok(model_id)
        }
        Err(error) => {
            let _ = std::fs::remove_file(partial_path(&request.output));
            on_event(ConvertEvent::Failed {
                error: error.clone(),
            });
            Err(error)
        }
    }
}

/// Conversions started by the app or the API: one at a time (each reads a whole model into memory), each with
/// its events kept for late subscribers and broadcast live.
#[derive(Clone)]
pub struct Conversions {
    command: WorkerCommand,
    one_at_a_time: std::sync::Arc<tokio::sync::Semaphore>,
    history: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<ConvertEvent>>>>,
    live: tokio::sync::broadcast::Sender<ConvertUpdate>,
}

/// A conversion's event with its id, for listeners of every conversion (the app).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct ConvertUpdate {
    pub id: String,
    pub event: ConvertEvent,
}

impl Conversions {
    pub fn new(command: WorkerCommand) -> Conversions {
        Conversions {
            command,
            one_at_a_time: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            history: Default::default(),
            live: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// Starts a conversion on the current runtime (it waits while another runs); `finish` lists the copy.
    pub fn start(
        &self,
        request: ConvertRequest,
        finish: impl FnOnce(&Written) -> Result<String, String> + Send + 'static,
    ) -> String {
        let id = format!(
            "convert-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Vec::new());
        let this = self.clone();
        let job = id.clone();
        tokio::spawn(async move {
            let _turn = this.one_at_a_time.clone().acquire_owned().await;
            let mut publish = |event: ConvertEvent| this.publish(&job, event);
            let _ = run(&this.command, &job, &request, finish, &mut publish).await;
        });
        id
    }

    fn publish(&self, id: &str, event: ConvertEvent) {
        if let Some(events) = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            events.push(event.clone());
        }
        let _ = self.live.send(ConvertUpdate {
            id: id.to_string(),
            event,
        });
    }

    /// A conversion's events so far and the live stream of every conversion; `None` for an unknown id.
    pub fn subscribe(
        &self,
        id: &str,
    ) -> Option<(
        Vec<ConvertEvent>,
        tokio::sync::broadcast::Receiver<ConvertUpdate>,
    )> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let events = history.get(id)?.clone();
        Some((events, self.live.subscribe()))
    }

    /// Every conversion's events as they happen.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<ConvertUpdate> {
        self.live.subscribe()
    }
}

async fn convert(
    command: &WorkerCommand,
    job_id: &str,
    request: &ConvertRequest,
    on_event: &mut (dyn FnMut(ConvertEvent) + Send),
) -> Result<Written, String> {
    check(request)?;
    let started = Instant::now();
    on_event(ConvertEvent::Started {
        input: request.input.display().to_string(),
        output: request.output.display().to_string(),
        weight_type: request.weight_type,
        expected_bytes: request.expected_bytes,
    });
    let partial = partial_path(&request.output);
    let mut child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start an engine worker: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = String::new();
    for message in [
        ToWorker::Convert {
            job_id: job_id.to_string(),
            input: request.input.clone(),
            output: partial.clone(),
            weight_type: request.weight_type,
        },
        ToWorker::Shutdown,
    ] {
        lines.push_str(&serde_json::to_string(&message).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    // Stdin stays open until the worker is done: a worker whose stdin closes stops at once.
    stdin
        .write_all(lines.as_bytes())
        .await
        .map_err(|e| format!("the engine worker did not take the conversion: {e}"))?;

    let mut reader = BufReader::new(stdout).lines();
    let mut last_error = Vec::new();
    let mut finished = None;
    while let Ok(Some(line)) = reader.next_line().await {
        match serde_json::from_str::<FromWorker>(&line) {
            Ok(FromWorker::Stage {
                stage:
                    Stage::LoadingModel {
                        tensors_loaded,
                        tensors_total,
                        ..
                    },
                ..
            }) if tensors_total > 0 => on_event(ConvertEvent::Progress {
                done: tensors_loaded,
                total: tensors_total,
                percent: 100.0 * f64::from(tensors_loaded) / f64::from(tensors_total),
            }),
            Ok(FromWorker::Log { level, text }) if level == "error" => {
                last_error.push(text.trim().to_string())
            }
            Ok(FromWorker::Finished { .. }) => finished = Some(Ok(())),
            Ok(FromWorker::Failed { error, .. }) => finished = Some(Err(error)),
            _ => {}
        }
    }
    drop(stdin);
    let status = child.wait().await.map_err(|e| e.to_string())?;
    match finished {
        Some(Ok(())) => {}
        Some(Err(error)) => return Err(format!("sd.cpp could not convert the model: {error}")),
        None => {
            return Err(format!(
                "the engine worker ended ({status}) before the conversion finished; nothing was written. {}",
                last_error.join("; ")
            ))
        }
    }
    let bytes = std::fs::metadata(&partial)
        .map_err(|e| format!("the converted file is missing: {e}"))?
        .len() as f64;
    std::fs::rename(&partial, &request.output)
        .map_err(|e| format!("cannot move the copy into place: {e}"))?;
    Ok(Written {
        path: request.output.clone(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
