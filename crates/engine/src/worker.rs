//! The engine worker: the process that links sd.cpp and runs one generation at a time for the supervisor.
//!
//! It keeps the last model's context alive between jobs, so a second job on the same model skips loading. It never
//! decides anything about a job: the supervisor validated it already.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use diffugen_models::StepCache;
use diffugen_sd::{
    Cache, Context, ContextParams, ImageRequest, LogLevel, LoraWeight, PreviewMode, Tiling,
};

use crate::events::Stage;
use crate::params::JobSpec;
use crate::protocol::{FromWorker, RawImage, ToWorker};
use crate::tracker::Tracker;

type Out = Arc<Mutex<BufWriter<File>>>;

fn send(out: &Out, message: &FromWorker) {
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    // If the supervisor is gone there is nobody to tell; the next read of stdin ends the loop.
    if serde_json::to_writer(&mut *out, message).is_ok() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// Moves the protocol to a private duplicate of stdout and points fd 1 at stderr, so that anything sd.cpp or ggml
/// prints with printf cannot interleave with protocol lines.
fn protocol_channel() -> std::io::Result<File> {
    // SAFETY: dup/dup2 on the process's own standard descriptors; the duplicate is owned by the returned File.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(fd))
    }
}

struct Resident {
    params: ContextParams,
    context: Context,
}

fn context_params(spec: &JobSpec) -> ContextParams {
    let c = &spec.components;
    let memory = &spec.memory;
    let (mut backend, mut params_backend) = memory.backends();
    // A ControlNet runs beside the diffusion model at every step: it goes where the diffusion model goes.
    if spec.control.is_some() {
        use diffugen_models::{Group, Placement};
        let add = |list: &mut String| {
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str("control_net=cpu");
        };
        match memory.placement(Group::Diffusion) {
            Some(Placement::Cpu) => {
                add(&mut backend);
                add(&mut params_backend);
            }
            Some(Placement::Offload) => add(&mut params_backend),
            Some(Placement::Gpu) | None => {}
        }
    }
    ContextParams {
        model_path: c.model.clone(),
        diffusion_model_path: c.diffusion_model.clone(),
        vae_path: c.vae.clone(),
        clip_l_path: c.clip_l.clone(),
        clip_g_path: c.clip_g.clone(),
        t5xxl_path: c.t5xxl.clone(),
        llm_path: c.llm.clone(),
        taesd_path: c.taesd.clone(),
        threads: spec.threads.map(|t| t as i32),
        flash_attn: memory.options.flash_attn.unwrap_or(false),
        diffusion_flash_attn: memory.diffusion_flash_attn(),
        mmap: memory.options.mmap.unwrap_or(false),
        backend,
        params_backend,
        max_vram_gib: memory.max_vram_gib().map(|g| g as f32),
        embeddings: spec
            .embeddings
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect(),
        // Part of the context: a new control image keeps the resident model, another ControlNet reloads it.
        control_net_path: spec.control.as_ref().map(|c| c.path.clone()),
    }
}

/// Builds the sd.cpp request for a validated job.
pub fn image_request(spec: &JobSpec) -> Result<ImageRequest, String> {
    Ok(ImageRequest {
        prompt: spec.sd_prompt.clone(),
        negative_prompt: spec.negative_prompt.clone(),
        clip_skip: spec.clip_skip,
        width: spec.width,
        height: spec.height,
        sampler: Some(spec.sampler.clone()),
        scheduler: spec.scheduler.clone(),
        steps: spec.steps,
        cfg_scale: spec.cfg_scale,
        guidance: spec.guidance,
        seed: spec.seed,
        batch_count: spec.count,
        strength: spec.strength.unwrap_or(0.75),
        init_image: spec.init_image.as_ref().map(RawImage::decode).transpose()?,
        mask: spec.mask.as_ref().map(RawImage::decode).transpose()?,
        loras: spec
            .loras
            .iter()
            .map(|l| LoraWeight {
                path: l.path.clone(),
                multiplier: l.weight,
            })
            .collect(),
        vae_tiling: spec.memory.vae_tiling().then(|| Tiling {
            tile_latent: spec.memory.options.vae_tile_size.map(|px| (px / 8) as i32),
            overlap: spec.memory.options.vae_tile_overlap.unwrap_or(0.5) as f32,
        }),
        cache: spec.memory.cache.map(|c| match c {
            StepCache::Ucache { threshold } => Cache::Ucache { threshold },
            StepCache::Easycache { threshold } => Cache::Easycache { threshold },
        }),
        hires: spec.hires.as_ref().map(|h| {
            use crate::params::HiresUpscaler as U;
            use diffugen_sd::HiresUpscaler as Sd;
            diffugen_sd::Hires {
                upscaler: match h.upscaler {
                    U::Latent => Sd::Latent,
                    U::LatentNearest => Sd::LatentNearest,
                    U::LatentNearestExact => Sd::LatentNearestExact,
                    U::LatentAntialiased => Sd::LatentAntialiased,
                    U::LatentBicubic => Sd::LatentBicubic,
                    U::LatentBicubicAntialiased => Sd::LatentBicubicAntialiased,
                    U::Lanczos => Sd::Lanczos,
                    U::Nearest => Sd::Nearest,
                    U::Model => Sd::Model,
                },
                model: h.model.as_ref().map(|m| m.path.clone()),
                width: h.width,
                height: h.height,
                steps: h.steps,
                denoising_strength: h.denoising_strength,
            }
        }),
        control_image: spec.control.as_ref().map(|c| c.map.decode()).transpose()?,
        control_strength: spec.control.as_ref().map_or(0.0, |c| c.strength),
    })
}

/// sd.cpp's debug lines worth passing on: they show what memory and speed options did (buffer sizes, tiles,
/// backends, the graph cut). Everything else at debug level (one line per tensor) stays in the worker.
fn debug_worth_passing(text: &str) -> bool {
    [
        "compute buffer size",
        "VAE Tile size",
        "processing ",
        "Initializing backend",
        "graph cut",
        "streaming budget",
        "params backend buffer",
        "threads for model loading",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn encode_png(image: &diffugen_sd::RgbImage) -> Option<String> {
    use base64::Engine as _;
    let color = if image.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut bytes = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut bytes),
        &image.data,
        image.width,
        image.height,
        color,
    )
    .ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The supervisor's requests, one line each. The worker must not outlive its supervisor — on a GPU it would hold
/// VRAM while a restarted server starts another: when its stdin closes (the supervisor ended, however it died: the
/// kernel closes its end of the pipe) it exits at once, even in the middle of a render.
///
/// Not `PR_SET_PDEATHSIG`: that signal follows the *thread* that started the process, and the supervisor starts
/// workers from async runtime threads that come and go (a blocking-pool thread ends after 10 s idle), which killed
/// healthy workers in the middle of a job.
fn requests() -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return; // the loop ended (shutdown): the process is exiting anyway
            }
        }
        // Nobody will read what this process makes: stop now, not after the render under way.
        // SAFETY: _exit ends the process without running destructors (nothing here needs them); sd.cpp's threads die
        // with the process.
        unsafe { libc::_exit(0) };
    });
    rx
}

/// Runs the worker loop on stdin until `shutdown` or end of input. Returns the process exit code.
pub fn run() -> i32 {
    let out: Out = match protocol_channel() {
        Ok(file) => Arc::new(Mutex::new(BufWriter::new(file))),
        Err(e) => {
            eprintln!("diffugen engine worker: cannot set up its protocol channel: {e}");
            return 2;
        }
    };
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let job_id = Arc::new(Mutex::new(String::new()));
    let recent_errors = Arc::new(Mutex::new(Vec::<String>::new()));

    {
        let (out, tracker, job_id, recent_errors) = (
            out.clone(),
            tracker.clone(),
            job_id.clone(),
            recent_errors.clone(),
        );
        diffugen_sd::set_log_handler(move |level, text| {
            let stages = tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_log(text);
            emit(&out, &job_id, stages);
            if level == LogLevel::Debug && !debug_worth_passing(text) {
                return;
            }
            if level == LogLevel::Error {
                let mut errors = recent_errors.lock().unwrap_or_else(|e| e.into_inner());
                errors.push(text.to_string());
                let excess = errors.len().saturating_sub(8);
                errors.drain(..excess);
            }
            let level = format!("{level:?}").to_ascii_lowercase();
            send(
                &out,
                &FromWorker::Log {
                    level,
                    text: text.to_string(),
                },
            );
        });
    }
    {
        let (out, tracker, job_id) = (out.clone(), tracker.clone(), job_id.clone());
        diffugen_sd::set_progress_handler(move |step, steps, _seconds| {
            let stages = tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_progress(step, steps);
            emit(&out, &job_id, stages);
        });
    }

    send(
        &out,
        &FromWorker::Ready {
            pid: std::process::id(),
            system_info: diffugen_sd::system_info(),
        },
    );

    let mut resident: Option<Resident> = None;
    let mut upscaler: Option<ResidentUpscaler> = None;
    for line in requests() {
        if line.trim().is_empty() {
            continue;
        }
        let message: ToWorker = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(e) => {
                eprintln!("diffugen engine worker: unreadable request ({e}): {line}");
                continue;
            }
        };
        match message {
            ToWorker::Shutdown => break,
            ToWorker::Convert {
                job_id: id,
                input,
                output,
                weight_type,
            } => {
                begin(&job_id, &recent_errors, &id);
                // Converting reads the whole model into memory: do not hold a rendering model beside it.
                resident = None;
                tracker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .begin_convert();
                let result = diffugen_sd::convert(&input, &output, weight_type.name())
                    .map(|()| false)
                    .map_err(|e| e.to_string());
                tracker.lock().unwrap_or_else(|e| e.into_inner()).finish();
                send(&out, &ended(id, result, &recent_errors));
            }
            ToWorker::Unload => {
                resident = None;
                upscaler = None;
                send(&out, &FromWorker::Unloaded);
            }
            ToWorker::Upscale { job_id: id, spec } => {
                begin(&job_id, &recent_errors, &id);
                diffugen_sd::clear_callbacks();
                let result = upscale(&out, &tracker, &id, &spec, &mut upscaler);
                tracker.lock().unwrap_or_else(|e| e.into_inner()).finish();
                send(&out, &ended(id, result, &recent_errors));
            }
            ToWorker::Generate { job_id: id, spec } => {
                begin(&job_id, &recent_errors, &id);
                let result = generate(&out, &tracker, &id, &spec, &mut resident);
                tracker.lock().unwrap_or_else(|e| e.into_inner()).finish();
                send(&out, &ended(id, result, &recent_errors));
            }
        }
    }
    0
}

/// A job starts: its id for the callbacks' stages, and no sd.cpp errors from an earlier one.
fn begin(job_id: &Mutex<String>, recent_errors: &Mutex<Vec<String>>, id: &str) {
    *job_id.lock().unwrap_or_else(|e| e.into_inner()) = id.to_string();
    recent_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

/// A job's last message: `Finished`, or `Failed` with the error and the sd.cpp errors logged on the way.
fn ended(
    id: String,
    result: Result<bool, String>,
    recent_errors: &Mutex<Vec<String>>,
) -> FromWorker {
    match result {
        Ok(model_was_resident) => FromWorker::Finished {
            job_id: id,
            model_was_resident,
        },
        Err(error) => {
            let errors = recent_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("; ");
            let error = if errors.is_empty() {
                error
            } else {
                format!("{error}: {errors}")
            };
            FromWorker::Failed { job_id: id, error }
        }
    }
}

fn emit(out: &Out, job_id: &Mutex<String>, stages: Vec<Stage>) {
    if stages.is_empty() {
        return;
    }
    let job_id = job_id.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for stage in stages {
        send(
            out,
            &FromWorker::Stage {
                job_id: job_id.clone(),
                stage,
            },
        );
    }
}

fn generate(
    out: &Out,
    tracker: &Arc<Mutex<Tracker>>,
    job_id: &str,
    spec: &JobSpec,
    resident: &mut Option<Resident>,
) -> Result<bool, String> {
    let params = context_params(spec);
    let was_resident = resident.as_ref().is_some_and(|r| r.params == params);
    if !was_resident {
        // Free the old model before loading the next: two resident models may not fit.
        *resident = None;
        let context = Context::new(&params).map_err(|e| e.to_string())?;
        *resident = Some(Resident { params, context });
    }
    let request = image_request(spec)?;

    match &spec.preview {
        Some(preview) => {
            let mode = match preview.mode {
                crate::params::PreviewMode::Proj => PreviewMode::Proj,
                crate::params::PreviewMode::Tae => PreviewMode::Tae,
                crate::params::PreviewMode::Vae => PreviewMode::Vae,
            };
            let (out, job_id, tracker) = (out.clone(), job_id.to_string(), tracker.clone());
            diffugen_sd::set_preview_handler(
                mode,
                preview.interval,
                move |step, frames, _noisy| {
                    let Some(frame) = frames.first() else { return };
                    let image = tracker.lock().unwrap_or_else(|e| e.into_inner()).image();
                    let Some(png_base64) = encode_png(frame) else {
                        return;
                    };
                    let stage = Stage::Preview {
                        image,
                        step: step.max(0) as u32,
                        width: frame.width,
                        height: frame.height,
                        png_base64,
                    };
                    send(
                        &out,
                        &FromWorker::Stage {
                            job_id: job_id.clone(),
                            stage,
                        },
                    );
                },
            );
        }
        None => diffugen_sd::clear_callbacks(),
    }

    tracker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .begin(spec.steps, spec.hires.as_ref().map_or(0, |h| h.steps));
    if was_resident {
        send(
            out,
            &FromWorker::Stage {
                job_id: job_id.to_string(),
                stage: Stage::EncodingPrompt,
            },
        );
    }
    let context = &mut resident
        .as_mut()
        .expect("a context was just ensured")
        .context;
    let images = context.generate(&request).map_err(|e| e.to_string())?;
    for (index, image) in images.iter().enumerate() {
        send(
            out,
            &FromWorker::Image {
                job_id: job_id.to_string(),
                index: index as u32,
                image: RawImage::encode(image),
            },
        );
    }
    Ok(was_resident)
}

/// The last upscaling model, kept loaded beside the rendering model (it is small) until another is asked for.
struct ResidentUpscaler {
    path: std::path::PathBuf,
    tile_size: u32,
    threads: Option<u32>,
    upscaler: diffugen_sd::Upscaler,
}

fn stage(out: &Out, job_id: &str, stage: Stage) {
    send(
        out,
        &FromWorker::Stage {
            job_id: job_id.to_string(),
            stage,
        },
    );
}

/// Enlarges every input of `spec` and sends each result as an `Image`; returns whether the model was resident.
fn upscale(
    out: &Out,
    tracker: &Arc<Mutex<Tracker>>,
    job_id: &str,
    spec: &crate::upscale::UpscaleSpec,
    resident: &mut Option<ResidentUpscaler>,
) -> Result<bool, String> {
    use crate::upscale::{resample, Upscaler};
    *tracker.lock().unwrap_or_else(|e| e.into_inner()) = Tracker::default();
    let mut was_resident = true;
    if let Upscaler::Model { path, .. } = &spec.upscaler {
        let same = resident.as_ref().is_some_and(|r| {
            &r.path == path && r.tile_size == spec.tile_size && r.threads == spec.threads
        });
        if !same {
            was_resident = false;
            *resident = None;
            let threads = spec.threads.map(|t| t as i32);
            let upscaler = diffugen_sd::Upscaler::new(path, threads, spec.tile_size)
                .map_err(|e| format!("{e} ({})", path.display()))?;
            *resident = Some(ResidentUpscaler {
                path: path.clone(),
                tile_size: spec.tile_size,
                threads: spec.threads,
                upscaler,
            });
        }
    }
    let images = spec.inputs.len() as u32;
    for (index, input) in spec.inputs.iter().enumerate() {
        let image = index as u32 + 1;
        let source = input.image.decode()?;
        let (width, height) = spec.output_size(&input.image);
        let result = match (&spec.upscaler, resident.as_mut()) {
            (Upscaler::Model { .. }, Some(model)) => {
                let passes = spec.passes(&input.image, model.upscaler.scale());
                let mut current = source;
                for pass in 1..=passes {
                    tracker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .begin_upscale_pass(image, images, pass, passes);
                    let at = |tile, tiles| Stage::Upscaling {
                        image,
                        images,
                        pass,
                        passes,
                        tile,
                        tiles,
                    };
                    stage(out, job_id, at(0, 0));
                    current = model
                        .upscaler
                        .upscale(&current)
                        .map_err(|e| e.to_string())?;
                    // An image that fits one tile is done in one piece, without a progress callback.
                    let tiled = tracker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .tiles_done();
                    if tiled == 0 {
                        stage(out, job_id, at(1, 1));
                    }
                }
                if (current.width, current.height) == (width, height) {
                    current
                } else {
                    resample(&current, width, height, false)?
                }
            }
            (upscaler, _) => {
                let nearest = *upscaler == Upscaler::Nearest;
                let out_image = resample(&source, width, height, nearest)?;
                stage(
                    out,
                    job_id,
                    Stage::Upscaling {
                        image,
                        images,
                        pass: 1,
                        passes: 1,
                        tile: 1,
                        tiles: 1,
                    },
                );
                out_image
            }
        };
        send(
            out,
            &FromWorker::Image {
                job_id: job_id.to_string(),
                index: index as u32,
                image: RawImage::encode(&result),
            },
        );
    }
    Ok(was_resident)
}
