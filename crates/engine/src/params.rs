//! Generation parameters: what a client asks for ([`GenerateRequest`]), checked field by field against what sd.cpp
//! and the chosen model allow, and turned into the [`JobSpec`] the worker runs. Every problem names its field and
//! the allowed values; nothing is silently clamped.

use std::fmt;
use std::path::PathBuf;

use diffugen_models::{Components, Library, MemoryOptions};
use diffugen_sd::{SAMPLERS, SCHEDULERS};
use serde::{Deserialize, Serialize};

pub use crate::hires::{HiresRequest, HiresSpec, HiresUpscaler, HIRES_UPSCALERS};
use crate::lora;
use crate::raw::RawImage;

/// The longest prompt (and negative prompt) accepted, in characters. CLIP reads 77 tokens per chunk; far longer
/// text only costs time (4 KB took 55 s to encode) and very long text crashed sd.cpp's tokenizer.
pub const MAX_PROMPT_CHARS: usize = 20_000;

/// The largest seed accepted: 2^53 - 1, exact in JavaScript and JSON clients.
pub const MAX_SEED: i64 = (1 << 53) - 1;

/// An image given to a job: a file on this machine's disk (CLI, in process) or the encoded image itself (HTTP
/// clients, the window). In JSON `{"path": "..."}` or `{"base64": "..."}`; the HTTP server refuses paths, since a
/// client must not make it read files from its disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageInput {
    Path(PathBuf),
    /// PNG, JPEG or WebP bytes; base64 (a `data:` URL too) in JSON.
    #[serde(rename = "base64", with = "base64_bytes")]
    Bytes(Vec<u8>),
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::image_data(&text)
            .map_err(|e| serde::de::Error::custom(format!("not valid base64 image data: {e}")))
    }
}

/// The bytes of an image sent as text: base64, or a `data:image/...;base64,` URL.
pub fn image_data(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    let data = text.split_once(";base64,").map_or(text, |(_, data)| data);
    base64::engine::general_purpose::STANDARD.decode(data.trim())
}

/// A LoRA requested by name from the LoRA folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraRequest {
    pub name: String,
    pub weight: f32,
}

/// How preview frames are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum PreviewMode {
    /// A linear projection of the latents: nearly free, blurry.
    #[default]
    Proj,
    /// The tiny autoencoder, when the model has one.
    Tae,
    /// The full VAE: sharp and slow.
    Vae,
}

/// Live previews during sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewRequest {
    pub mode: PreviewMode,
    /// A frame every `interval` steps.
    pub interval: u32,
}

/// A generation as a client asks for it. `None` means "the model's default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// A model id from the models folder, or a path to a model file or preset.
    pub model: String,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: Option<u32>,
    pub cfg_scale: Option<f32>,
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    /// -1 (or none) picks a random seed; the seed used is always reported.
    pub seed: Option<i64>,
    pub count: Option<u32>,
    pub clip_skip: Option<i32>,
    #[serde(default)]
    pub loras: Vec<LoraRequest>,
    pub init_image: Option<ImageInput>,
    pub mask: Option<ImageInput>,
    pub strength: Option<f32>,
    /// How an init image (and its mask) of another shape is brought to the render's size [default: stretch].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<ResizeMode>,
    pub threads: Option<u32>,
    pub preview: Option<PreviewRequest>,
    /// Memory and speed options (placement, VRAM budget, VAE tiling, flash attention, mmap, step cache).
    #[serde(default, skip_serializing_if = "MemoryOptions::is_empty")]
    pub memory: MemoryOptions,
    /// A second, larger pass (text-to-image only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hires: Option<HiresRequest>,
    /// A ControlNet steering the render (SD 1.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<crate::control::ControlRequest>,
    /// The prompt assistant: the local LLM (Ollama) rewrites the prompt for the model's family before the render,
    /// in the LLM's turn on the GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhance_prompt: Option<bool>,
    /// The Ollama model that rewrites it [default: the `assistant_model` setting].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhance_model: Option<String>,
    /// A vision model (Ollama) scores the result against the prompt and, below the pass mark, the job renders once
    /// more with the next seeds; the better take is the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critique: Option<bool>,
    /// The vision model that scores it [default: the `critique_model` setting].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critique_model: Option<String>,
}

/// How an init image of another size is brought to the render's (A1111's `resize_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Stretched to the size, whatever its shape (A1111's "Just resize").
    #[default]
    Stretch,
    /// Scaled to cover the size, the overflow cut off evenly on both sides ("Crop and resize").
    Crop,
    /// Scaled to fit inside the size, the bands beside it filled with the image's own stretched colours ("Resize and
    /// fill").
    Fill,
}

/// A LoRA resolved to its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub name: String,
    pub path: PathBuf,
    pub weight: f32,
}

/// A textual-inversion embedding a prompt uses, resolved to its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    pub name: String,
    pub path: PathBuf,
}

/// The embeddings whose names appear as words in `texts` (as A1111 does: the name alone, no syntax), in the order of
/// `available`. A word is a run of letters, digits, `_` and `-`; names match exactly.
pub fn embeddings_used(texts: &[&str], available: &[(String, PathBuf)]) -> Vec<EmbeddingSpec> {
    let words: std::collections::HashSet<&str> = texts
        .iter()
        .flat_map(|t| t.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-')))
        .filter(|w| !w.is_empty())
        .collect();
    available
        .iter()
        .filter(|(name, _)| words.contains(name.as_str()))
        .map(|(name, path)| EmbeddingSpec {
            name: name.clone(),
            path: path.clone(),
        })
        .collect()
}

/// A validated job: everything the worker needs, nothing left to default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub model_id: String,
    pub family: diffugen_models::Family,
    pub components: Components,
    pub threads: Option<u32>,
    /// The prompt as the user wrote it (LoRA tags included), for the image's metadata.
    pub prompt: String,
    /// The prompt sd.cpp encodes (LoRA tags removed).
    pub sd_prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub guidance: f32,
    pub sampler: String,
    pub scheduler: Option<String>,
    pub seed: i64,
    pub count: u32,
    pub clip_skip: i32,
    pub loras: Vec<LoraSpec>,
    pub strength: Option<f32>,
    pub init_image: Option<RawImage>,
    pub mask: Option<RawImage>,
    /// Where the init image came from (file name), for the metadata.
    pub init_image_source: Option<String>,
    pub mask_source: Option<String>,
    pub preview: Option<PreviewRequest>,
    /// The memory options asked for (request over model card), checked; the plan is made when the job runs.
    #[serde(default)]
    pub memory: crate::memory::MemorySpec,
    /// A second, larger pass; the images come out at its size.
    #[serde(default)]
    pub hires: Option<HiresSpec>,
    /// The textual-inversion embeddings the prompt and negative prompt name.
    #[serde(default)]
    pub embeddings: Vec<EmbeddingSpec>,
    /// A ControlNet and its control map.
    #[serde(default)]
    pub control: Option<crate::control::ControlSpec>,
    /// The prompt assistant was asked for and has not rewritten the prompt yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhance: Option<Enhance>,
    /// The prompt as written, once the assistant rewrote it (`prompt` then holds the rewrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_prompt: Option<String>,
    /// The result is scored by a vision model and may be rendered once more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critique: Option<Critique>,
    /// Who asked, as the queue names it (`app`, `api`, `openai`, `a1111-txt2img`, `cli`, `mcp`, ...): recorded with the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Which vision model scores a job's result: the request's `critique_model`, or `None` for the `critique_model`
/// setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critique {
    pub model: Option<String>,
}

/// Which Ollama model rewrites a job's prompt: the request's `enhance_model`, or `None` for the `assistant_model`
/// setting (else the LLM Ollama has in memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enhance {
    pub model: Option<String>,
}

impl JobSpec {
    /// The size of the images the job writes: the hires pass's when it has one.
    pub fn output_size(&self) -> (u32, u32) {
        self.hires
            .as_ref()
            .map_or((self.width, self.height), |h| (h.width, h.height))
    }

    /// Sampling steps over every pass.
    pub fn total_steps(&self) -> u32 {
        self.steps + self.hires.as_ref().map_or(0, |h| h.steps)
    }
}

/// An Ollama model a request asks to use with a flag (`enhance_prompt` + `enhance_model`, `critique` +
/// `critique_model`): `Some(model named, if any)` when the flag is on; a model named without the flag is refused by
/// `field`, saying which flag it needs.
fn llm_asked(
    on: Option<bool>,
    model: Option<&str>,
    (field, flag): (&str, &str),
    check: &mut Checker,
) -> Option<Option<String>> {
    let model = model.map(str::trim).filter(|m| !m.is_empty());
    match (on, model) {
        (Some(true), model) => Some(model.map(String::from)),
        (_, Some(_)) => {
            check.fail(field, format!("only applies with {flag}"));
            None
        }
        _ => None,
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParamErrors(pub Vec<FieldError>);

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl ParamErrors {
    /// The first invalid field (what single-error formats such as OpenAI's report).
    pub fn first(&self) -> &FieldError {
        &self.0[0]
    }
}

struct Checker(Vec<FieldError>);

impl Checker {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn size(&mut self, field: &str, value: u32, multiple: u32, family: &str) {
        if !(64..=2048).contains(&value) || !value.is_multiple_of(multiple) {
            let why = if multiple > 8 {
                format!(" (what sd.cpp needs for {family} models)")
            } else {
                String::new()
            };
            self.fail(
                field,
                format!("must be a multiple of {multiple}{why} from 64 to 2048, got {value}"),
            );
        }
    }

    fn range_f32(&mut self, field: &str, value: f32, min: f32, max: f32) {
        if !value.is_finite() || value < min || value > max {
            self.fail(
                field,
                format!("must be a number from {min} to {max}, got {value}"),
            );
        }
    }
}

fn random_seed() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    // Seeds in the 32-bit range, as A1111 and sd.cpp users are used to seeing.
    (hasher.finish() & 0xffff_ffff) as i64
}

/// The most pixels an input image may declare: 4096×4096. A compressed image can declare far more than it weighs
/// (a 420 KB PNG of 12000×12000 decodes to 432 MB), so the size is read from the header before anything is decoded.
pub const MAX_INPUT_PIXELS: u64 = 4096 * 4096;

/// Decodes an image after checking the size its header declares against [`MAX_INPUT_PIXELS`].
pub(crate) fn decode_bounded(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let (width, height) = reader.into_dimensions().map_err(|e| e.to_string())?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_INPUT_PIXELS {
        return Err(format!(
            "is {width}x{height} ({:.0} megapixels); images of up to {:.1} megapixels (4096x4096) are accepted",
            pixels as f64 / 1e6,
            MAX_INPUT_PIXELS as f64 / 1e6
        ));
    }
    image::load_from_memory(bytes).map_err(|e| e.to_string())
}

/// The most images one job makes.
pub const MAX_COUNT: u32 = 16;

/// A side length rounded to the nearest multiple, within the sizes a job may have.
fn round_side(side: f64, multiple: u32) -> u32 {
    let rounded = (side / f64::from(multiple)).round() as u32 * multiple;
    rounded.clamp(
        64_u32.div_ceil(multiple) * multiple,
        2048 / multiple * multiple,
    )
}

/// The size with `dims`' aspect ratio whose area is closest to `area`, each side a multiple of `multiple`.
fn fit_area(dims: (u32, u32), area: u32, multiple: u32) -> (u32, u32) {
    let aspect = f64::from(dims.0.max(1)) / f64::from(dims.1.max(1));
    let width = (f64::from(area) * aspect).sqrt();
    let height = (f64::from(area) / aspect).sqrt();
    (round_side(width, multiple), round_side(height, multiple))
}

fn load_image(input: &ImageInput) -> Result<(image::DynamicImage, Option<String>), String> {
    match input {
        ImageInput::Path(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let image = decode_bounded(&bytes).map_err(|e| {
                format!(
                    "{} is not a usable PNG, JPEG or WebP image: {e}",
                    path.display()
                )
            })?;
            Ok((
                image,
                path.file_name().map(|n| n.to_string_lossy().into_owned()),
            ))
        }
        ImageInput::Bytes(bytes) => decode_bounded(bytes)
            .map(|image| (image, None))
            .map_err(|e| format!("not a usable PNG, JPEG or WebP image: {e}")),
    }
}

/// `image` brought to `width`×`height` by `mode`: stretched, cropped to cover, or fitted inside with the bands filled
/// by the image itself stretched (so the edges continue rather than turning black).
pub fn fitted(
    image: &image::DynamicImage,
    width: u32,
    height: u32,
    mode: ResizeMode,
) -> image::DynamicImage {
    use image::imageops::FilterType::Lanczos3;
    if image.width() == width && image.height() == height {
        return image.clone();
    }
    match mode {
        ResizeMode::Stretch => image.resize_exact(width, height, Lanczos3),
        ResizeMode::Crop => image.resize_to_fill(width, height, Lanczos3),
        ResizeMode::Fill => {
            let mut canvas = image.resize_exact(width, height, Lanczos3);
            let inner = image.resize(width, height, Lanczos3);
            let x = (width - inner.width()) / 2;
            let y = (height - inner.height()) / 2;
            image::imageops::overlay(&mut canvas, &inner, i64::from(x), i64::from(y));
            canvas
        }
    }
}

pub(crate) fn to_raw(
    image: &image::DynamicImage,
    width: u32,
    height: u32,
    channels: u32,
) -> RawImage {
    let resized = if image.width() == width && image.height() == height {
        image.clone()
    } else {
        image.resize_exact(width, height, image::imageops::FilterType::Lanczos3)
    };
    let data = if channels == 1 {
        resized.to_luma8().into_raw()
    } else {
        resized.to_rgb8().into_raw()
    };
    RawImage::encode(&diffugen_sd::RgbImage {
        width,
        height,
        channels,
        data,
    })
}

/// Checks a request and resolves its model, LoRAs and images. Returns every problem at once.
pub fn validate(request: &GenerateRequest, library: &Library) -> Result<JobSpec, ParamErrors> {
    let model = (!request.model.trim().is_empty()).then(|| library.resolve(request.model.trim()));
    validate_resolved(request, model, library)
}

/// [`validate`] with the request's model already resolved (`None`: the request names none), for a door that
/// needed the model before validation (its defaults) and resolves it once.
pub fn validate_resolved(
    request: &GenerateRequest,
    model: Option<Result<diffugen_models::ResolvedModel, diffugen_models::ModelError>>,
    library: &Library,
) -> Result<JobSpec, ParamErrors> {
    let mut check = Checker(Vec::new());

    let model = match model {
        None => {
            check.fail(
                "model",
                format!(
                    "is required; available models: {}",
                    library.ids().join(", ")
                ),
            );
            None
        }
        Some(Ok(model)) => Some(model),
        Some(Err(e)) => {
            check.fail("model", e.to_string());
            None
        }
    };

    if request.prompt.contains('\0') {
        check.fail("prompt", "must not contain NUL characters");
    }
    let negative_prompt = request.negative_prompt.clone().unwrap_or_default();
    if negative_prompt.contains('\0') {
        check.fail("negative_prompt", "must not contain NUL characters");
    }
    for (field, text) in [
        ("prompt", &request.prompt),
        ("negative_prompt", &negative_prompt),
    ] {
        let length = text.chars().count();
        if length > MAX_PROMPT_CHARS {
            check.fail(
                field,
                format!("must be at most {MAX_PROMPT_CHARS} characters, got {length}"),
            );
        }
    }
    let (sd_prompt, prompt_loras) = match lora::extract(&request.prompt) {
        Ok(parts) => parts,
        Err(message) => {
            check.fail("prompt", message);
            (request.prompt.clone(), Vec::new())
        }
    };

    let init = match &request.init_image {
        Some(input) => match load_image(input) {
            Ok(image) => Some(image),
            Err(message) => {
                check.fail("init_image", message);
                None
            }
        },
        None => None,
    };
    let mask = match &request.mask {
        Some(_) if request.init_image.is_none() => {
            check.fail(
                "mask",
                "needs an init_image to paint into (inpainting = init image + mask)",
            );
            None
        }
        Some(input) => match load_image(input) {
            Ok(image) => Some(image),
            Err(message) => {
                check.fail("mask", message);
                None
            }
        },
        None => None,
    };

    let defaults = model.as_ref().map(|m| m.defaults.clone());
    let multiple = defaults.as_ref().map_or(8, |d| d.size_multiple.max(1));
    let family = model.as_ref().map_or("this", |m| m.family.as_str());
    // With an init image and no explicit size, keep its aspect ratio at the model's native pixel area; with one
    // side given, the other follows the image's aspect ratio.
    let native = defaults
        .as_ref()
        .map_or((512, 512), |d| (d.width, d.height));
    let init_dims = init.as_ref().map(|(i, _)| (i.width(), i.height()));
    let (width, height) = match (request.width, request.height, init_dims) {
        (Some(w), Some(h), _) => (w, h),
        (None, None, Some(dims)) => fit_area(dims, native.0 * native.1, multiple),
        (Some(w), None, Some((iw, ih))) => (
            w,
            round_side(f64::from(w) * f64::from(ih) / f64::from(iw), multiple),
        ),
        (None, Some(h), Some((iw, ih))) => (
            round_side(f64::from(h) * f64::from(iw) / f64::from(ih), multiple),
            h,
        ),
        (w, h, None) => (w.unwrap_or(native.0), h.unwrap_or(native.1)),
    };
    check.size("width", width, multiple, family);
    check.size("height", height, multiple, family);

    let steps = request
        .steps
        .or(defaults.as_ref().map(|d| d.steps))
        .unwrap_or(20);
    if !(1..=150).contains(&steps) {
        check.fail("steps", format!("must be from 1 to 150, got {steps}"));
    }
    let cfg_scale = request
        .cfg_scale
        .or(defaults.as_ref().map(|d| d.cfg_scale))
        .unwrap_or(7.0);
    check.range_f32("cfg_scale", cfg_scale, 0.0, 30.0);

    let sampler = request
        .sampler
        .clone()
        .or(defaults.as_ref().map(|d| d.sampler.clone()))
        .unwrap_or_else(|| "euler".into());
    if !SAMPLERS.contains(&sampler.as_str()) {
        check.fail(
            "sampler",
            format!(
                "unknown sampler '{sampler}'; allowed: {}",
                SAMPLERS.join(", ")
            ),
        );
    }
    let scheduler = request
        .scheduler
        .clone()
        .or(defaults.as_ref().and_then(|d| d.scheduler.clone()));
    if let Some(name) = &scheduler {
        if !SCHEDULERS.contains(&name.as_str()) {
            check.fail(
                "scheduler",
                format!(
                    "unknown scheduler '{name}'; allowed: {}",
                    SCHEDULERS.join(", ")
                ),
            );
        }
    }

    let seed = match request.seed {
        None | Some(-1) => random_seed(),
        Some(seed) if (0..=MAX_SEED).contains(&seed) => seed,
        Some(seed) => {
            check.fail(
                "seed",
                format!("must be -1 (random) or from 0 to {MAX_SEED}, got {seed}"),
            );
            0
        }
    };
    let count = request.count.unwrap_or(1);
    if !(1..=MAX_COUNT).contains(&count) {
        check.fail(
            "count",
            format!("must be from 1 to {MAX_COUNT}, got {count}"),
        );
    }
    let clip_skip = request.clip_skip.unwrap_or(-1);
    if !(clip_skip == -1 || (0..=12).contains(&clip_skip)) {
        check.fail(
            "clip_skip",
            format!("must be -1 or 0 (model default) or from 1 to 12, got {clip_skip}"),
        );
    }
    if let Some(threads) = request.threads {
        if !(1..=256).contains(&threads) {
            check.fail("threads", format!("must be from 1 to 256, got {threads}"));
        }
    }
    if request.resize_mode.is_some() && request.init_image.is_none() {
        check.fail(
            "resize_mode",
            "only applies to an init image: give an init_image too, or leave resize_mode out",
        );
    }
    let resize_mode = request.resize_mode.unwrap_or_default();
    let strength = match (request.strength, &request.init_image) {
        (Some(_), None) => {
            check.fail(
                "strength",
                "only applies to img2img: give an init_image too",
            );
            None
        }
        (Some(s), Some(_)) => {
            check.range_f32("strength", s, 0.0, 1.0);
            Some(s)
        }
        (None, Some(_)) => Some(0.75),
        (None, None) => None,
    };
    if let Some(preview) = &request.preview {
        if preview.interval == 0 {
            check.fail(
                "preview.interval",
                "must be at least 1 (a frame every N steps)",
            );
        }
    }

    let enhance = llm_asked(
        request.enhance_prompt,
        request.enhance_model.as_deref(),
        (
            "enhance_model",
            "enhance_prompt: true (the prompt assistant)",
        ),
        &mut check,
    )
    .map(|model| Enhance { model });
    let critique = llm_asked(
        request.critique,
        request.critique_model.as_deref(),
        (
            "critique_model",
            "critique: true (the result scored by a vision model)",
        ),
        &mut check,
    )
    .map(|model| Critique { model });
    if enhance.is_some() && request.prompt.trim().is_empty() {
        check.fail(
            "enhance_prompt",
            "needs a prompt to rewrite: write a few words of what to draw",
        );
    }

    let mut loras = Vec::new();
    let named = request
        .loras
        .iter()
        .map(|l| (l.name.clone(), l.weight))
        .chain(prompt_loras.into_iter().map(|t| (t.name, t.weight)));
    for (name, weight) in named {
        if !weight.is_finite() || !(-10.0..=10.0).contains(&weight) {
            check.fail(
                "loras",
                format!("LoRA '{name}' weight must be from -10 to 10, got {weight}"),
            );
            continue;
        }
        match library.resolve_lora(&name) {
            Ok(path) => loras.push(LoraSpec { name, path, weight }),
            Err(e) => check.fail("loras", e.to_string()),
        }
    }

    let hires = request.hires.as_ref().and_then(|hires| {
        crate::hires::resolve(
            hires,
            (width, height),
            steps,
            multiple,
            init.is_some(),
            library,
            &mut |f, m| check.fail(&format!("hires.{f}"), m),
        )
    });

    if request.control.is_some() && hires.is_some() {
        check.fail(
            "control",
            "a ControlNet with a hires pass is not available yet; leave out one of them",
        );
    }
    let control = request.control.as_ref().and_then(|control| {
        crate::control::resolve(
            control,
            model.as_ref().map(|m| m.family),
            (width, height),
            library,
            &mut |f, m| check.fail(&format!("control.{f}"), m),
        )
    });

    let memory = model.as_ref().map(|m| {
        let options = request.memory.or(&m.defaults.memory);
        match crate::memory::MemorySpec::checked(options, m.family, &m.components) {
            Ok(spec) => spec,
            Err(errors) => {
                for (field, message) in errors {
                    check.fail(&format!("memory.{field}"), message);
                }
                crate::memory::MemorySpec::default()
            }
        }
    });

    if !check.0.is_empty() {
        return Err(ParamErrors(check.0));
    }
    // Only the embeddings the prompts use are opened (their headers say whether sd.cpp can read them).
    let embeddings = embeddings_used(&[&sd_prompt, &negative_prompt], &library.embedding_files());
    for used in &embeddings {
        if let Some(reason) =
            diffugen_models::Embedding::read(used.name.clone(), used.path.clone()).unusable()
        {
            check.fail("prompt", reason);
        }
    }
    if !check.0.is_empty() {
        return Err(ParamErrors(check.0));
    }
    let model = model.expect("no errors means the model resolved");
    let guidance = model.defaults.guidance;
    Ok(JobSpec {
        model_id: model.id,
        family: model.family,
        components: model.components,
        threads: request.threads,
        prompt: request.prompt.clone(),
        sd_prompt,
        negative_prompt,
        width,
        height,
        steps,
        cfg_scale,
        guidance,
        sampler,
        scheduler,
        seed,
        count,
        clip_skip,
        loras,
        strength,
        init_image: init
            .as_ref()
            .map(|(image, _)| to_raw(&fitted(image, width, height, resize_mode), width, height, 3)),
        init_image_source: init.and_then(|(_, source)| source),
        mask: mask
            .as_ref()
            .map(|(image, _)| to_raw(&fitted(image, width, height, resize_mode), width, height, 1)),
        mask_source: mask.and_then(|(_, source)| source),
        preview: request.preview.clone(),
        memory: memory.unwrap_or_default(),
        hires,
        embeddings,
        control,
        enhance,
        original_prompt: None,
        client: None,
        critique,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_init_image_of_another_shape_is_stretched_cropped_or_fitted_as_asked() {
        // 200×100: white along the top (y < 10) and the left (x < 20), black elsewhere.
        let wide = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(200, 100, |x, y| {
            image::Luma([if y < 10 || x < 20 { 255 } else { 0 }])
        }));
        let white =
            |image: &image::DynamicImage, x: u32, y: u32| image.to_luma8().get_pixel(x, y)[0] > 128;
        let stretched = fitted(&wide, 100, 100, ResizeMode::Stretch);
        assert!(white(&stretched, 5, 50) && white(&stretched, 50, 5) && !white(&stretched, 50, 27));
        // Cropped to cover: the middle 100 columns; the left band is cut off, the top one kept.
        let cropped = fitted(&wide, 100, 100, ResizeMode::Crop);
        assert!(!white(&cropped, 5, 50) && white(&cropped, 50, 5));
        // Fitted inside at half size, centred (rows 25..75); the band above shows the stretched image.
        let filled = fitted(&wide, 100, 100, ResizeMode::Fill);
        assert!(white(&filled, 50, 27) && !white(&filled, 50, 15) && white(&filled, 50, 5));
        for image in [&stretched, &cropped, &filled] {
            assert_eq!((image.width(), image.height()), (100, 100));
        }
    }

    #[test]
    fn an_init_image_without_a_size_keeps_its_aspect_ratio_at_the_models_native_area() {
        // A 4032x3024 phone photo on SD 1.5 (512x512, multiples of 64): about 4:3 at about 262,144 pixels.
        assert_eq!(fit_area((4032, 3024), 512 * 512, 64), (576, 448));
        // On a DiT family with multiples of 8 it is closer still.
        assert_eq!(fit_area((4032, 3024), 512 * 512, 8), (592, 440));
        // On SDXL (1024x1024, multiples of 64 for this test).
        let (w, h) = fit_area((4032, 3024), 1024 * 1024, 64);
        assert_eq!((w, h), (1152, 896));
        // A portrait stays a portrait; a square stays square.
        let (w, h) = fit_area((1080, 1920), 512 * 512, 8);
        assert!(h > w, "{w}x{h}");
        assert_eq!(fit_area((300, 300), 512 * 512, 8), (512, 512));
        // An extreme panorama is clamped to the largest side a job may have.
        assert_eq!(fit_area((20_000, 100), 1024 * 1024, 8).0, 2048);
    }
}
