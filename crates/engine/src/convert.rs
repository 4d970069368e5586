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
    Done {
        output: String,
        bytes: f64,
        seconds: f64,
    },
    Failed {
        error: String,
    },
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

/// Converts in a worker process of its own, reporting progress to `on_event`; returns the finished file's path.
pub async fn run(
    command: &WorkerCommand,
    job_id: &str,
    request: &ConvertRequest,
    on_event: &mut (dyn FnMut(ConvertEvent) + Send),
) -> Result<PathBuf, String> {
    let result = convert(command, job_id, request, on_event).await;
    match &result {
        Ok(path) => tracing::info!(job_id, path = %path.display(), "converted"),
        Err(error) => {
            let _ = std::fs::remove_file(partial_path(&request.output));
            on_event(ConvertEvent::Failed {
                error: error.clone(),
            });
        }
    }
    result
}

async fn convert(
    command: &WorkerCommand,
    job_id: &str,
    request: &ConvertRequest,
    on_event: &mut (dyn FnMut(ConvertEvent) + Send),
) -> Result<PathBuf, String> {
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
    stdin
        .write_all(lines.as_bytes())
        .await
        .map_err(|e| format!("the engine worker did not take the conversion: {e}"))?;
    drop(stdin);

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
    on_event(ConvertEvent::Done {
        output: request.output.display().to_string(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(request.output.clone())
}
