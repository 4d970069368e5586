//! An sd.cpp context (a loaded model) and one image generation on it.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use diffusion_rs_sys as sys;

use crate::names::{sampler_from_name, scheduler_from_name};
use crate::SdError;

/// Where a model's components live and how the context runs them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContextParams {
    /// A single-file checkpoint (SD 1.x, SDXL, ...).
    pub model_path: Option<PathBuf>,
    /// A standalone diffusion model (FLUX, Z-Image, ...).
    pub diffusion_model_path: Option<PathBuf>,
    pub vae_path: Option<PathBuf>,
    pub clip_l_path: Option<PathBuf>,
    pub clip_g_path: Option<PathBuf>,
    pub t5xxl_path: Option<PathBuf>,
    pub llm_path: Option<PathBuf>,
    pub taesd_path: Option<PathBuf>,
    /// CPU threads; `None` lets sd.cpp use the physical core count.
    pub threads: Option<i32>,
    /// Flash attention everywhere (text encoders, VAE, diffusion model).
    pub flash_attn: bool,
    /// Flash attention in the diffusion model only.
    pub diffusion_flash_attn: bool,
    /// Map weight files into memory instead of reading them.
    pub mmap: bool,
    /// Where each module computes, e.g. `te=cpu,vae=cpu` (empty: the best device for all).
    pub backend: String,
    /// Where each module's weights live, e.g. `diffusion=cpu` to keep them in RAM (empty: where it computes).
    pub params_backend: String,
    /// GiB of VRAM for the diffusion model's weights, the rest streamed in from RAM (`None`: no streaming).
    pub max_vram_gib: Option<f32>,
    /// Textual-inversion embeddings by the word a prompt uses for each (name, file).
    pub embeddings: Vec<(String, PathBuf)>,
    /// A ControlNet model (SD 1.x): loaded with the context; each generation may give a control image.
    pub control_net_path: Option<PathBuf>,
}

/// VAE tiling for one generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Tile side in latent pixels (image pixels / 8); `None` for sd.cpp's default (32).
    pub tile_latent: Option<i32>,
    /// Overlap as a fraction of a tile (0 to 0.5).
    pub overlap: f32,
}

/// A step cache for one generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cache {
    /// UNet models.
    Ucache { threshold: f32 },
    /// DiT models.
    Easycache { threshold: f32 },
}

/// How the first pass is enlarged before the hires pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiresUpscaler {
    /// In latent space (bilinear), the usual choice.
    Latent,
    LatentNearest,
    LatentNearestExact,
    LatentAntialiased,
    LatentBicubic,
    LatentBicubicAntialiased,
    /// Decoded, enlarged as pixels (Lanczos), encoded again.
    Lanczos,
    /// Decoded, enlarged as pixels (nearest neighbour), encoded again.
    Nearest,
    /// Decoded, enlarged by the upscaling (ESRGAN) model in [`Hires::model`], encoded again.
    Model,
}

/// A second, larger pass over the first pass's result (A1111's "hires fix").
#[derive(Debug, Clone, PartialEq)]
pub struct Hires {
    pub upscaler: HiresUpscaler,
    /// The upscaling model's file, for [`HiresUpscaler::Model`].
    pub model: Option<std::path::PathBuf>,
    /// The final size (multiples of the model's size multiple).
    pub width: u32,
    pub height: u32,
    /// Sampling steps of the second pass; 0 takes the first pass's.
    pub steps: u32,
    /// How much of the enlarged image the second pass repaints, 0..1.
    pub denoising_strength: f32,
}

/// An 8-bit image in row-major order with 1 (mask) or 3 (RGB) channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Copies an image out of sd.cpp's memory.
    ///
    /// # Safety
    /// `image.data` must be NULL or point to `width * height * channel` readable bytes.
    pub(crate) unsafe fn copy_from_raw(image: &sys::sd_image_t) -> Option<RgbImage> {
        if image.data.is_null() {
            return None;
        }
        let len = (image.width as usize) * (image.height as usize) * (image.channel as usize);
        // SAFETY: guaranteed by the caller.
        let data = unsafe { std::slice::from_raw_parts(image.data, len) }.to_vec();
        Some(RgbImage {
            width: image.width,
            height: image.height,
            channels: image.channel,
            data,
        })
    }

    pub(crate) fn check(&self, field: &'static str, channels: u32) -> Result<(), SdError> {
        let expected = (self.width as usize) * (self.height as usize) * (channels as usize);
        if self.channels != channels || self.data.len() != expected {
            return Err(SdError::BadImage {
                field,
                message: format!(
                    "expected {}x{} with {channels} channel(s) ({expected} bytes), got {} channel(s) and {} bytes",
                    self.width,
                    self.height,
                    self.channels,
                    self.data.len()
                ),
            });
        }
        Ok(())
    }

    /// A borrowed view for sd.cpp. sd.cpp takes `uint8_t*` but only reads through it.
    pub(crate) fn as_raw(&self) -> sys::sd_image_t {
        sys::sd_image_t {
            width: self.width,
            height: self.height,
            channel: self.channels,
            data: self.data.as_ptr().cast_mut(),
        }
    }
}

/// A LoRA file applied with a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraWeight {
    pub path: PathBuf,
    pub multiplier: f32,
}

/// One call of `generate_image`. `None` for sampler or scheduler lets sd.cpp pick the model's default.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// `<= 0` leaves the model's default.
    pub clip_skip: i32,
    pub width: u32,
    pub height: u32,
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    pub steps: u32,
    pub cfg_scale: f32,
    /// Distilled guidance for FLUX-style models.
    pub guidance: f32,
    pub seed: i64,
    pub batch_count: u32,
    pub strength: f32,
    pub init_image: Option<RgbImage>,
    /// One channel; white areas are repainted.
    pub mask: Option<RgbImage>,
    pub loras: Vec<LoraWeight>,
    pub vae_tiling: Option<Tiling>,
    pub cache: Option<Cache>,
    pub hires: Option<Hires>,
    /// The control map for the context's ControlNet (RGB, the image's size), and how strongly it steers.
    pub control_image: Option<RgbImage>,
    pub control_strength: f32,
}

impl Default for ImageRequest {
    fn default() -> Self {
        ImageRequest {
            prompt: String::new(),
            negative_prompt: String::new(),
            clip_skip: -1,
            width: 512,
            height: 512,
            sampler: None,
            scheduler: None,
            steps: 20,
            cfg_scale: 7.0,
            guidance: 3.5,
            seed: 42,
            batch_count: 1,
            strength: 0.75,
            init_image: None,
            mask: None,
            loras: Vec::new(),
            vae_tiling: None,
            cache: None,
            hires: None,
            control_image: None,
            control_strength: 0.9,
        }
    }
}

/// A loaded model. Weights are read lazily by the first generation and stay resident until the context is dropped.
pub struct Context {
    ptr: NonNull<sys::sd_ctx_t>,
}

// SAFETY: an sd_ctx_t is not tied to the thread that created it; `&mut self` on `generate` keeps use exclusive.
unsafe impl Send for Context {}

pub(crate) fn c_string(field: &'static str, value: &str) -> Result<CString, SdError> {
    CString::new(value).map_err(|_| SdError::Nul { field })
}

fn c_path(field: &'static str, path: &Option<PathBuf>) -> Result<Option<CString>, SdError> {
    path.as_deref()
        .map(|p: &Path| c_string(field, &p.to_string_lossy()))
        .transpose()
}

fn ptr_or_null(value: &Option<CString>) -> *const std::os::raw::c_char {
    value.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

impl Context {
    /// Validates the model's metadata and prepares a context (about 0.1 s; weights load on first use).
    pub fn new(params: &ContextParams) -> Result<Context, SdError> {
        let model = c_path("model_path", &params.model_path)?;
        let diffusion = c_path("diffusion_model_path", &params.diffusion_model_path)?;
        let vae = c_path("vae_path", &params.vae_path)?;
        let clip_l = c_path("clip_l_path", &params.clip_l_path)?;
        let clip_g = c_path("clip_g_path", &params.clip_g_path)?;
        let t5xxl = c_path("t5xxl_path", &params.t5xxl_path)?;
        let llm = c_path("llm_path", &params.llm_path)?;
        let taesd = c_path("taesd_path", &params.taesd_path)?;
        let control_net = c_path("control_net_path", &params.control_net_path)?;
        let backend = c_string("backend", &params.backend)?;
        let params_backend = c_string("params_backend", &params.params_backend)?;
        let embedding_strings = params
            .embeddings
            .iter()
            .map(|(name, path)| {
                Ok((
                    c_string("embedding", name)?,
                    c_string("embedding", &path.to_string_lossy())?,
                ))
            })
            .collect::<Result<Vec<_>, SdError>>()?;
        let embeddings: Vec<sys::sd_embedding_t> = embedding_strings
            .iter()
            .map(|(name, path)| sys::sd_embedding_t {
                name: name.as_ptr(),
                path: path.as_ptr(),
            })
            .collect();

        // SAFETY: sd_ctx_params_t is plain data; sd_ctx_params_init fills every field with sd.cpp's defaults.
        let mut raw: sys::sd_ctx_params_t = unsafe { std::mem::zeroed() };
        unsafe { sys::sd_ctx_params_init(&mut raw) };
        raw.model_path = ptr_or_null(&model);
        raw.diffusion_model_path = ptr_or_null(&diffusion);
        raw.vae_path = ptr_or_null(&vae);
        raw.clip_l_path = ptr_or_null(&clip_l);
        raw.clip_g_path = ptr_or_null(&clip_g);
        raw.t5xxl_path = ptr_or_null(&t5xxl);
        raw.llm_path = ptr_or_null(&llm);
        raw.taesd_path = ptr_or_null(&taesd);
        raw.control_net_path = ptr_or_null(&control_net);
        if let Some(threads) = params.threads {
            raw.n_threads = threads;
        }
        raw.flash_attn = params.flash_attn;
        raw.diffusion_flash_attn = params.diffusion_flash_attn;
        raw.enable_mmap = params.mmap;
        if !params.backend.is_empty() {
            raw.backend = backend.as_ptr();
        }
        if !params.params_backend.is_empty() {
            raw.params_backend = params_backend.as_ptr();
        }
        if !embeddings.is_empty() {
            raw.embeddings = embeddings.as_ptr();
            raw.embedding_count = embeddings.len() as u32;
        }
        if let Some(gib) = params.max_vram_gib {
            raw.max_vram = gib;
            // Residency and prefetch on top of the graph cut (needs the diffusion weights in RAM).
            raw.stream_layers = true;
        }

        // SAFETY: every pointer in `raw` refers to a CString (or the embeddings array) that outlives this call; sd.cpp
        // copies what it keeps.
        let ptr = unsafe { sys::new_sd_ctx(&raw) };
        NonNull::new(ptr)
            .map(|ptr| Context { ptr })
            .ok_or(SdError::ContextCreation)
    }

    /// Runs one generation and returns `batch_count` images.
    pub fn generate(&mut self, request: &ImageRequest) -> Result<Vec<RgbImage>, SdError> {
        let prompt = c_string("prompt", &request.prompt)?;
        let negative = c_string("negative_prompt", &request.negative_prompt)?;
        let lora_paths = request
            .loras
            .iter()
            .map(|l| c_string("lora", &l.path.to_string_lossy()))
            .collect::<Result<Vec<_>, _>>()?;
        let hires_model_path = request
            .hires
            .as_ref()
            .and_then(|h| h.model.as_ref())
            .map(|path| c_string("hires model", &path.to_string_lossy()))
            .transpose()?;
        let loras: Vec<sys::sd_lora_t> = request
            .loras
            .iter()
            .zip(&lora_paths)
            .map(|(l, path)| sys::sd_lora_t {
                is_high_noise: false,
                multiplier: l.multiplier,
                path: path.as_ptr(),
            })
            .collect();

        // SAFETY: plain data, filled with sd.cpp's defaults.
        let mut raw: sys::sd_img_gen_params_t = unsafe { std::mem::zeroed() };
        unsafe { sys::sd_img_gen_params_init(&mut raw) };
        raw.prompt = prompt.as_ptr();
        raw.negative_prompt = negative.as_ptr();
        raw.clip_skip = request.clip_skip;
        raw.width = i32::try_from(request.width).unwrap_or(i32::MAX);
        raw.height = i32::try_from(request.height).unwrap_or(i32::MAX);
        raw.seed = request.seed;
        raw.batch_count = i32::try_from(request.batch_count.max(1)).unwrap_or(i32::MAX);
        raw.strength = request.strength;
        raw.loras = if loras.is_empty() {
            std::ptr::null()
        } else {
            loras.as_ptr()
        };
        raw.lora_count = loras.len() as u32;
        raw.sample_params.sample_steps = i32::try_from(request.steps).unwrap_or(i32::MAX);
        raw.sample_params.guidance.txt_cfg = request.cfg_scale;
        raw.sample_params.guidance.distilled_guidance = request.guidance;
        if let Some(name) = &request.sampler {
            raw.sample_params.sample_method =
                sampler_from_name(name).ok_or_else(|| SdError::UnknownName {
                    field: "sampler",
                    value: name.clone(),
                })?;
        }
        if let Some(name) = &request.scheduler {
            raw.sample_params.scheduler =
                scheduler_from_name(name).ok_or_else(|| SdError::UnknownName {
                    field: "scheduler",
                    value: name.clone(),
                })?;
        }
        if let Some(init) = &request.init_image {
            init.check("init_image", 3)?;
            raw.init_image = init.as_raw();
        }
        if let Some(mask) = &request.mask {
            mask.check("mask", 1)?;
            raw.mask_image = mask.as_raw();
        }
        if let Some(control) = &request.control_image {
            control.check("control_image", 3)?;
            raw.control_image = control.as_raw();
            raw.control_strength = request.control_strength;
        }
        if let Some(tiling) = &request.vae_tiling {
            raw.vae_tiling_params.enabled = true;
            if let Some(tile) = tiling.tile_latent {
                raw.vae_tiling_params.tile_size_x = tile;
                raw.vae_tiling_params.tile_size_y = tile;
            }
            raw.vae_tiling_params.target_overlap = tiling.overlap;
        }
        if let Some(cache) = &request.cache {
            // SAFETY: plain data; sd_cache_params_init fills sd.cpp's defaults for every field.
            unsafe { sys::sd_cache_params_init(&mut raw.cache) };
            let (mode, threshold) = match *cache {
                Cache::Ucache { threshold } => (sys::sd_cache_mode_t::SD_CACHE_UCACHE, threshold),
                Cache::Easycache { threshold } => {
                    (sys::sd_cache_mode_t::SD_CACHE_EASYCACHE, threshold)
                }
            };
            raw.cache.mode = mode;
            raw.cache.reuse_threshold = threshold;
        }
        if let Some(hires) = &request.hires {
            use sys::sd_hires_upscaler_t as U;
            raw.hires.enabled = true;
            raw.hires.upscaler = match hires.upscaler {
                HiresUpscaler::Latent => U::SD_HIRES_UPSCALER_LATENT,
                HiresUpscaler::LatentNearest => U::SD_HIRES_UPSCALER_LATENT_NEAREST,
                HiresUpscaler::LatentNearestExact => U::SD_HIRES_UPSCALER_LATENT_NEAREST_EXACT,
                HiresUpscaler::LatentAntialiased => U::SD_HIRES_UPSCALER_LATENT_ANTIALIASED,
                HiresUpscaler::LatentBicubic => U::SD_HIRES_UPSCALER_LATENT_BICUBIC,
                HiresUpscaler::LatentBicubicAntialiased => {
                    U::SD_HIRES_UPSCALER_LATENT_BICUBIC_ANTIALIASED
                }
                HiresUpscaler::Lanczos => U::SD_HIRES_UPSCALER_LANCZOS,
                HiresUpscaler::Nearest => U::SD_HIRES_UPSCALER_NEAREST,
                HiresUpscaler::Model => U::SD_HIRES_UPSCALER_MODEL,
            };
            if let Some(path) = &hires_model_path {
                raw.hires.model_path = path.as_ptr();
            }
            raw.hires.target_width = i32::try_from(hires.width).unwrap_or(i32::MAX);
            raw.hires.target_height = i32::try_from(hires.height).unwrap_or(i32::MAX);
            raw.hires.steps = i32::try_from(hires.steps).unwrap_or(i32::MAX);
            raw.hires.denoising_strength = hires.denoising_strength;
        }

        // SAFETY: `raw` points into `prompt`, `negative`, `loras`, `lora_paths`, `hires_model_path` and the request's
        // images, all alive until the call returns; sd.cpp only reads them.
        let images = unsafe { sys::generate_image(self.ptr.as_ptr(), &raw) };
        if images.is_null() {
            return Err(SdError::Generation);
        }
        let count = raw.batch_count.max(0) as usize;
        // SAFETY: on success sd.cpp returns `batch_count` images, which we copy and then free with its own function.
        let out = unsafe {
            let slice = std::slice::from_raw_parts(images, count);
            let copied: Vec<RgbImage> = slice
                .iter()
                .filter_map(|img| RgbImage::copy_from_raw(img))
                .collect();
            sys::free_sd_images(images, raw.batch_count);
            copied
        };
        if out.is_empty() {
            return Err(SdError::Generation);
        }
        Ok(out)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from new_sd_ctx and is freed exactly once.
        unsafe { sys::free_sd_ctx(self.ptr.as_ptr()) };
    }
}
