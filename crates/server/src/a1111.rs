//! AUTOMATIC1111's API (`/sdapi/v1/*`), as Open WebUI's Automatic1111 engine, SillyTavern, Krita plugins and many
//! scripts speak it: txt2img and img2img on the shared queue, models, options (the default model), samplers,
//! schedulers, LoRAs, live progress with a preview, and interrupt.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use diffugen_engine::a1111;
use diffugen_engine::params::{
    HiresRequest, HiresUpscaler, ImageInput, LoraRequest, PreviewRequest, ResizeMode,
};
use diffugen_engine::{GenerateRequest, Stage};
use diffugen_jobs::{JobState, Outcome};
use diffugen_models::Role;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::body::A1111Body;
use crate::error::A1111Error;
use crate::native::enqueue;
use crate::{ApiError, AppState};

type Result<T> = std::result::Result<T, A1111Error>;

/// Our field names as A1111 clients know them.
fn a1111_field(field: &str) -> &str {
    match field {
        "count" => "batch_size",
        "sampler" => "sampler_name",
        "init_image" => "init_images",
        "strength" => "denoising_strength",
        "hires.scale" => "hr_scale",
        "hires.width" => "hr_resize_x",
        "hires.height" => "hr_resize_y",
        "hires.steps" => "hr_second_pass_steps",
        "hires.denoising_strength" => "denoising_strength",
        "control" | "control.image" | "control.module" | "control.model" => {
            "alwayson_scripts.controlnet"
        }
        "control.strength" => "alwayson_scripts.controlnet.args[0].weight",
        "control.low_threshold" => "alwayson_scripts.controlnet.args[0].threshold_a",
        "control.high_threshold" => "alwayson_scripts.controlnet.args[0].threshold_b",
        "control.processor_res" => "alwayson_scripts.controlnet.args[0].processor_res",
        other => other,
    }
}

/// `model.safetensors [abc123]` (A1111 titles) → `model`.
fn checkpoint_id(title: &str) -> String {
    let name = title.split(" [").next().unwrap_or(title).trim();
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((stem, ext))
            if diffugen_models::MODEL_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) =>
        {
            stem.to_string()
        }
        _ => file.to_string(),
    }
}

fn decode_image(field: &str, value: &Value) -> std::result::Result<Vec<u8>, ApiError> {
    let text = value
        .as_str()
        .ok_or_else(|| ApiError::invalid(field, "must be a base64 image string"))?;
    diffugen_engine::params::image_data(text)
        .map_err(|e| ApiError::invalid(field, format!("is not valid base64: {e}")))
}

/// A txt2img or img2img request: the fields DiffuGen reads (A1111 clients send many more, which it leaves alone as
/// A1111 itself does with fields a script does not use).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct A1111Request {
    prompt: Option<String>,
    negative_prompt: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    steps: Option<u32>,
    cfg_scale: Option<f32>,
    /// A1111's sampler label ("DPM++ 2M Karras"), which may name a scheduler too.
    sampler_name: Option<String>,
    /// The older name of `sampler_name`.
    sampler_index: Option<String>,
    scheduler: Option<String>,
    seed: Option<i64>,
    batch_size: Option<u32>,
    n_iter: Option<u32>,
    /// img2img: base64 images (or data URLs); the first is used.
    init_images: Option<Vec<Value>>,
    mask: Option<Value>,
    denoising_strength: Option<f32>,
    /// img2img: how an init image of another shape is brought to the size (0 just resize, 1 crop and resize, 2
    /// resize and fill; 3, a latent upscale, is refused).
    resize_mode: Option<Value>,
    /// `sd_model_checkpoint`, `CLIP_stop_at_last_layers` and DiffuGen's memory options.
    override_settings: Option<Map<String, Value>>,
    /// Hires fix (txt2img): a second pass at `hr_scale` times the size (or `hr_resize_x` × `hr_resize_y`).
    enable_hr: Option<bool>,
    hr_scale: Option<f32>,
    hr_upscaler: Option<String>,
    hr_second_pass_steps: Option<u32>,
    hr_resize_x: Option<u32>,
    hr_resize_y: Option<u32>,
    /// Hires options DiffuGen cannot honour: refused when set rather than ignored.
    hr_checkpoint_name: Option<String>,
    hr_sampler_name: Option<String>,
    hr_scheduler: Option<String>,
    hr_prompt: Option<String>,
    hr_negative_prompt: Option<String>,
    /// Scripts (ControlNet, ADetailer, ...): refused when one would run, never silently skipped.
    alwayson_scripts: Option<Map<String, Value>>,
}

/// A1111's hires fields as DiffuGen's hires pass; `None` without `enable_hr`. Options it cannot honour are refused
/// by name.
fn hires_from(
    state: &AppState,
    body: &A1111Request,
) -> std::result::Result<Option<HiresRequest>, ApiError> {
    if body.enable_hr != Some(true) {
        return Ok(None);
    }
    let first_pass = |field: &str, value: &Option<String>, what: &str| match value.as_deref() {
        Some(text)
            if !text.trim().is_empty()
                && !text.eq_ignore_ascii_case("use same checkpoint")
                && !text.eq_ignore_ascii_case("use same sampler")
                && !text.eq_ignore_ascii_case("use same scheduler") =>
        {
            Err(ApiError::invalid(
                field,
                format!("the hires pass uses the first pass's {what}; leave {field} out"),
            ))
        }
        _ => Ok(()),
    };
    first_pass("hr_checkpoint_name", &body.hr_checkpoint_name, "model")?;
    first_pass("hr_sampler_name", &body.hr_sampler_name, "sampler")?;
    first_pass("hr_scheduler", &body.hr_scheduler, "scheduler")?;
    first_pass("hr_prompt", &body.hr_prompt, "prompt")?;
    first_pass(
        "hr_negative_prompt",
        &body.hr_negative_prompt,
        "negative prompt",
    )?;
    let mut model = None;
    let upscaler = match body.hr_upscaler.as_deref().map(str::trim) {
        None | Some("") => None,
        // A1111's "None" resizes the pixels plainly (Lanczos).
        Some(name) if name.eq_ignore_ascii_case("none") => Some(HiresUpscaler::Lanczos),
        Some(name) => match HiresUpscaler::from_a1111(name) {
            Some(upscaler) => Some(upscaler),
            None => {
                // An upscaling model by the name /sdapi/v1/upscalers lists it under.
                let library = state.library();
                let upscalers = crate::blocking(|| library.upscalers());
                let Some(entry) = upscalers.iter().find(|e| e.id.eq_ignore_ascii_case(name)) else {
                    let names: Vec<&str> = diffugen_engine::params::HIRES_UPSCALERS
                        .iter()
                        .map(|(_, n)| *n)
                        .chain(upscalers.iter().map(|e| e.id.as_str()))
                        .collect();
                    return Err(ApiError::invalid(
                        "hr_upscaler",
                        format!(
                            "'{name}' is not available; use one of {} (upscaling models are found in the models \
                             folder's ESRGAN folder; see /sdapi/v1/upscalers)",
                            names.join(", ")
                        ),
                    ));
                };
                model = Some(entry.id.clone());
                Some(HiresUpscaler::Model)
            }
        },
    };
    let (width, height) = match (
        body.hr_resize_x.filter(|&x| x > 0),
        body.hr_resize_y.filter(|&y| y > 0),
    ) {
        (None, None) => (None, None),
        sides => sides,
    };
    Ok(Some(HiresRequest {
        scale: (width.is_none() && height.is_none()).then(|| body.hr_scale.unwrap_or(2.0)),
        width,
        height,
        upscaler,
        model,
        steps: body.hr_second_pass_steps.filter(|&s| s > 0),
        // In txt2img, A1111's denoising strength is the hires pass's.
        denoising_strength: body.denoising_strength,
    }))
}

fn request_from(
    state: &AppState,
    body: A1111Request,
    img2img: bool,
) -> std::result::Result<GenerateRequest, ApiError> {
    let control = crate::controlnet::control_from_scripts(
        body.alwayson_scripts.as_ref(),
        (body.width.unwrap_or(512), body.height.unwrap_or(512)),
    )?;
    let hires = if img2img {
        None
    } else {
        hires_from(state, &body)?
    };
    let overrides = body.override_settings.unwrap_or_default();
    let model = overrides
        .get("sd_model_checkpoint")
        .and_then(Value::as_str)
        .map(checkpoint_id);
    let (sampler, implied_scheduler) = match body.sampler_name.or(body.sampler_index) {
        Some(name) => {
            let (sampler, scheduler) = a1111::parse_sampler(&name);
            (Some(sampler), scheduler)
        }
        None => (None, None),
    };
    let scheduler = body
        .scheduler
        .map(|s| a1111::parse_scheduler(&s))
        .or(implied_scheduler);
    let batch: u32 = body.batch_size.unwrap_or(1);
    let iterations: u32 = body.n_iter.unwrap_or(1);
    for (field, value) in [("batch_size", batch), ("n_iter", iterations)] {
        if value == 0 {
            return Err(ApiError::invalid(field, "must be at least 1"));
        }
    }
    let max = diffugen_engine::params::MAX_COUNT;
    if batch.saturating_mul(iterations) > max {
        return Err(ApiError::invalid(
            if iterations > 1 { "n_iter" } else { "batch_size" },
            format!(
                "batch_size {batch} x n_iter {iterations} asks for {} images; at most {max} per request",
                batch.saturating_mul(iterations)
            ),
        ));
    }
    let resize_mode = if img2img {
        resize_mode_from(body.resize_mode.as_ref())?
    } else {
        None
    };
    let (init_image, mask, strength) = if img2img {
        let first = body
            .init_images
            .as_deref()
            .and_then(<[Value]>::first)
            .ok_or_else(|| ApiError::invalid("init_images", "needs at least one base64 image"))?;
        let mask = body
            .mask
            .as_ref()
            .filter(|m| !m.is_null())
            .map(|m| decode_image("mask", m))
            .transpose()?;
        let strength = body.denoising_strength.or(Some(0.75));
        (
            Some(ImageInput::Bytes(decode_image("init_images", first)?)),
            mask.map(ImageInput::Bytes),
            strength,
        )
    } else {
        (None, None, None)
    };
    Ok(GenerateRequest {
        model: state.model_for(model.as_deref())?,
        prompt: body.prompt.unwrap_or_default(),
        negative_prompt: body.negative_prompt,
        width: body.width,
        height: body.height,
        steps: body.steps,
        cfg_scale: body.cfg_scale,
        sampler,
        scheduler,
        seed: body.seed,
        count: Some(batch.saturating_mul(iterations)),
        clip_skip: overrides
            .get("CLIP_stop_at_last_layers")
            .and_then(Value::as_i64)
            .map(|c| c as i32),
        loras: Vec::<LoraRequest>::new(),
        init_image,
        mask,
        strength,
        resize_mode,
        threads: None,
        memory: memory_overrides(&overrides)?,
        hires,
        control,
        // A1111 has no prompt assistant: its clients rewrite prompts themselves.
        enhance_prompt: None,
        enhance_model: None,
        critique: None,
        critique_model: None,
        // Cheap latent previews feed /sdapi/v1/progress's current_image.
        preview: Some(PreviewRequest {
            mode: diffugen_engine::params::PreviewMode::Proj,
            interval: 1,
        }),
    })
}

/// A1111's img2img `resize_mode` (a number, or its label) as DiffuGen's; `None` when left out (a stretch, as A1111's
/// default 0).
fn resize_mode_from(value: Option<&Value>) -> std::result::Result<Option<ResizeMode>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let label = value.as_str().map(|s| s.trim().to_ascii_lowercase());
    match (value.as_i64(), label.as_deref()) {
        (Some(0), _) | (_, Some("just resize")) => Ok(Some(ResizeMode::Stretch)),
        (Some(1), _) | (_, Some("crop and resize")) => Ok(Some(ResizeMode::Crop)),
        (Some(2), _) | (_, Some("resize and fill")) => Ok(Some(ResizeMode::Fill)),
        (Some(3), _) | (_, Some("just resize (latent upscale)")) => Err(ApiError::invalid(
            "resize_mode",
            "3 (just resize, latent upscale) is not available; send 0 (just resize), 1 (crop and resize) or 2 \
             (resize and fill)",
        )),
        _ => Err(ApiError::invalid(
            "resize_mode",
            format!(
                "must be 0 (just resize), 1 (crop and resize) or 2 (resize and fill), got {value}"
            ),
        )),
    }
}

/// The memory and speed options a client sets in `override_settings` (DiffuGen's names: `placement`,
/// `vram_budget_gib`, `vae_tiling`, `vae_tile_size`, `vae_tile_overlap`, `flash_attn`, `mmap`, `cache`).
fn memory_overrides(
    overrides: &serde_json::Map<String, Value>,
) -> std::result::Result<diffugen_models::MemoryOptions, ApiError> {
    const KEYS: &[&str] = &[
        "placement",
        "vram_budget_gib",
        "vae_tiling",
        "vae_tile_size",
        "vae_tile_overlap",
        "flash_attn",
        "mmap",
        "cache",
    ];
    let mut options = serde_json::Map::new();
    for key in KEYS {
        if let Some(value) = overrides.get(*key).filter(|v| !v.is_null()) {
            // One at a time, so an error names its key.
            let one = serde_json::json!({ *key: value });
            serde_json::from_value::<diffugen_models::MemoryOptions>(one).map_err(|e| {
                ApiError::invalid(&format!("override_settings.{key}"), e.to_string())
            })?;
            options.insert(key.to_string(), value.clone());
        }
    }
    serde_json::from_value(Value::Object(options))
        .map_err(|e| ApiError::invalid("override_settings", e.to_string()))
}

async fn generate(state: AppState, value: Value, img2img: bool) -> Result<Json<Value>> {
    // The body is echoed back as `parameters`, as A1111 does; what DiffuGen reads is typed.
    let body: A1111Request = crate::body::from_value(value.clone())?;
    let echo = |field: &str| value.get(field).cloned();
    let request = request_from(&state, body, img2img)?;
    let source = if img2img {
        "a1111-img2img"
    } else {
        "a1111-txt2img"
    };
    let id = enqueue(&state, request, source, a1111_field)?;
    let _guard = crate::fields::DropIfQueued {
        jobs: state.jobs().clone(),
        id: id.clone(),
    };
    let outputs = match state.jobs().wait(&id).await.map_err(ApiError::from)? {
        Outcome::Done(outputs) => outputs,
        Outcome::Failed { error, kind } => return Err(ApiError::job_failed(&error, kind).into()),
        Outcome::Cancelled(reason) => {
            // A1111 answers an interrupted job with what it has: here, no images.
            tracing::info!(%id, %reason, "A1111 job interrupted");
            Vec::new()
        }
    };
    let mut images = Vec::with_capacity(outputs.len());
    let mut infotexts = Vec::with_capacity(outputs.len());
    for output in &outputs {
        let bytes = std::fs::read(&output.path).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", output.path),
            )
        })?;
        images.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
        let text = diffugen_engine::output::read_png_text(std::path::Path::new(&output.path))
            .ok()
            .and_then(|chunks| {
                chunks
                    .into_iter()
                    .find(|(k, _)| k == "parameters")
                    .map(|(_, v)| v)
            })
            .unwrap_or_default();
        infotexts.push(text);
    }
    let job = state.jobs().get(&id).map_err(ApiError::from)?;
    let seeds: Vec<i64> = outputs.iter().map(|o| o.seed).collect();
    let first = outputs.first();
    let info = json!({
        "prompt": job.prompt,
        "all_prompts": vec![job.prompt.clone(); outputs.len()],
        "negative_prompt": echo("negative_prompt").unwrap_or(json!("")),
        "seed": seeds.first(),
        "all_seeds": seeds,
        "width": first.map(|o| o.width),
        "height": first.map(|o| o.height),
        "sd_model_name": job.model,
        "sampler_name": echo("sampler_name").unwrap_or(json!("Euler")),
        "steps": echo("steps"),
        "cfg_scale": echo("cfg_scale"),
        "batch_size": outputs.len(),
        "infotexts": infotexts,
        "job_timestamp": job.created,
    });
    Ok(Json(
        json!({ "images": images, "parameters": value, "info": info.to_string() }),
    ))
}

pub async fn txt2img(
    State(state): State<AppState>,
    A1111Body(body): A1111Body<Value>,
) -> Result<Json<Value>> {
    generate(state, body, false).await
}

pub async fn img2img(
    State(state): State<AppState>,
    A1111Body(body): A1111Body<Value>,
) -> Result<Json<Value>> {
    generate(state, body, true).await
}

pub async fn sd_models(State(state): State<AppState>) -> Json<Value> {
    let library = state.library();
    let mut models: Vec<Value> = library
        .scan()
        .into_iter()
        .filter(|m| m.error.is_none() && m.role == Role::Checkpoint)
        .map(|m| json!({ "title": m.id, "model_name": m.id, "hash": null, "sha256": null, "filename": m.path, "config": null }))
        .collect();
    // On a cluster front, the models only its workers hold (their files are on the workers).
    models.extend(library.remote_only().into_iter().map(|m| {
        json!({ "title": m.id, "model_name": m.id, "hash": null, "sha256": null, "filename": null, "config": null })
    }));
    Json(Value::Array(models))
}

pub async fn get_options(State(state): State<AppState>) -> Result<Json<Value>> {
    let model = state.model_for(None).unwrap_or_default();
    Ok(Json(
        json!({ "sd_model_checkpoint": model, "samples_format": "png", "CLIP_stop_at_last_layers": 1 }),
    ))
}

pub async fn set_options(
    State(state): State<AppState>,
    A1111Body(value): A1111Body<Value>,
) -> Result<Json<Value>> {
    if !value.is_object() {
        return Err(ApiError::invalid("body", "options must be a JSON object").into());
    }
    if let Some(title) = value.get("sd_model_checkpoint").and_then(Value::as_str) {
        let id = checkpoint_id(title);
        crate::model_id("sd_model_checkpoint", &id)?;
        state
            .library()
            .resolve(&id)
            .map_err(|e| ApiError::invalid("sd_model_checkpoint", e.to_string()))?;
        *state
            .default_model
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(id);
    }
    Ok(Json(Value::Null))
}

pub async fn samplers() -> Json<Value> {
    let list: Vec<Value> = a1111::SAMPLERS
        .iter()
        .map(|(name, sd)| json!({ "name": name, "aliases": [sd], "options": {} }))
        .collect();
    Json(Value::Array(list))
}

pub async fn schedulers() -> Json<Value> {
    let list: Vec<Value> = a1111::SCHEDULERS
        .iter()
        .map(|(label, sd)| json!({ "name": sd, "label": label, "aliases": null, "default_rho": -1, "need_inner_model": false }))
        .collect();
    Json(Value::Array(list))
}

/// `GET /sdapi/v1/upscalers`: what `/sdapi/v1/extra-single-image` can enlarge with — `None`, Lanczos, Nearest
/// and the ESRGAN models in the models folders (their factor read from their weights). A hires pass takes the
/// first three.
pub async fn upscalers(State(state): State<AppState>) -> Json<Value> {
    let library = state.library();
    let models = tokio::task::spawn_blocking(move || library.upscalers())
        .await
        .unwrap_or_default();
    let mut list: Vec<Value> = ["None"]
        .into_iter()
        .chain(
            diffugen_engine::params::HIRES_UPSCALERS
                .iter()
                .filter(|(u, _)| matches!(u, HiresUpscaler::Lanczos | HiresUpscaler::Nearest))
                .map(|(_, name)| *name),
        )
        .map(|name| json!({ "name": name, "model_name": null, "model_path": null, "model_url": null, "scale": 4 }))
        .collect();
    list.extend(models.into_iter().map(|model| {
        let scale = model
            .variant
            .as_deref()
            .and_then(|v| v.strip_prefix('x'))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(4);
        json!({
            "name": model.id,
            "model_name": "ESRGAN",
            "model_path": null,
            "model_url": null,
            "scale": scale,
        })
    }));
    Json(Value::Array(list))
}

/// `GET /sdapi/v1/latent-upscale-modes`: the latent upscalers of a hires pass.
pub async fn latent_upscale_modes() -> Json<Value> {
    let list: Vec<Value> = diffugen_engine::params::HIRES_UPSCALERS
        .iter()
        .filter(|(u, _)| !matches!(u, HiresUpscaler::Lanczos | HiresUpscaler::Nearest))
        .map(|(_, name)| json!({ "name": name }))
        .collect();
    Json(Value::Array(list))
}

pub async fn loras(State(state): State<AppState>) -> Json<Value> {
    let dir = state.library().lora_dir();
    let mut list = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for path in entries.flatten().map(|e| e.path()) {
            let is_model = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                diffugen_models::MODEL_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
            });
            if let (true, Some(name)) = (is_model, path.file_stem().and_then(|s| s.to_str())) {
                list.push(json!({ "name": name, "alias": name, "path": path.display().to_string(), "metadata": {} }));
            }
        }
    }
    Json(Value::Array(list))
}

/// `GET /sdapi/v1/embeddings`: the textual-inversion embeddings a prompt can name, as A1111 lists them — `loaded`
/// (usable) and `skipped` (files stable-diffusion.cpp cannot read correctly, such as f16 ones), by name.
pub async fn embeddings(State(state): State<AppState>) -> Json<Value> {
    let library = state.library();
    let found = tokio::task::spawn_blocking(move || library.embeddings())
        .await
        .unwrap_or_default();
    let (mut loaded, mut skipped) = (Map::new(), Map::new());
    for embedding in found {
        let entry = json!({
            "step": null,
            "sd_checkpoint": null,
            "sd_checkpoint_name": null,
            "shape": embedding.hidden_size,
            "vectors": embedding.vectors,
        });
        if embedding.unusable().is_some() {
            skipped.insert(embedding.name, entry);
        } else {
            loaded.insert(embedding.name, entry);
        }
    }
    Json(json!({ "loaded": loaded, "skipped": skipped }))
}

#[derive(Deserialize)]
pub struct ProgressQuery {
    #[serde(default)]
    skip_current_image: bool,
}

/// Live progress of the running job, from sd.cpp's real steps.
pub async fn progress(
    State(state): State<AppState>,
    Query(query): Query<ProgressQuery>,
) -> Json<Value> {
    let queue = state.jobs().queue();
    let running = queue.iter().find(|j| j.state == JobState::Running);
    let waiting = queue.iter().filter(|j| j.state == JobState::Queued).count();
    let Some(job) = running else {
        return Json(json!({
            "progress": 0.0, "eta_relative": 0.0, "current_image": null, "textinfo": null,
            "state": { "skipped": false, "interrupted": false, "job": "", "job_count": waiting, "job_timestamp": "0",
                       "job_no": 0, "sampling_step": 0, "sampling_steps": 0 }
        }));
    };
    let last = job.last_event.as_ref();
    let (step, steps, image, images) = match last.map(|e| &e.stage) {
        Some(Stage::Sampling {
            step,
            steps,
            image,
            images,
            ..
        }) => (*step, *steps, *image, *images),
        _ => (0, 0, 1, 1),
    };
    let fraction = last.and_then(|e| e.percent).map_or_else(
        || {
            if steps > 0 {
                f64::from(step) / f64::from(steps)
            } else {
                0.0
            }
        },
        |p| p / 100.0,
    );
    let current_image = if query.skip_current_image {
        None
    } else {
        state
            .jobs()
            .latest_preview(&job.id)
            .and_then(|e| match e.stage {
                Stage::Preview { png_base64, .. } => Some(png_base64),
                _ => None,
            })
    };
    Json(json!({
        "progress": fraction,
        "eta_relative": last.and_then(|e| e.eta_seconds).unwrap_or(0.0),
        "current_image": current_image,
        "textinfo": last.map(|e| e.stage.name()),
        "state": { "skipped": false, "interrupted": false, "job": job.id, "job_count": waiting + 1,
                   "job_timestamp": format!("{}", job.created as u64), "job_no": image.saturating_sub(1),
                   "job_images": images, "sampling_step": step, "sampling_steps": steps }
    }))
}

/// Stops the running job (A1111's Interrupt button).
pub async fn interrupt(State(state): State<AppState>) -> Json<Value> {
    if let Some(job) = state
        .jobs()
        .queue()
        .into_iter()
        .find(|j| j.state == JobState::Running)
    {
        let _ = state
            .jobs()
            .cancel(&job.id, "interrupted by an A1111 client");
    }
    Json(Value::Null)
}
