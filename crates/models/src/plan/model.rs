//! Working memory of each phase and how fast each part computes: the figures the planner weighs.

use super::*;
use crate::Family;

/// Architecture figures the working-memory model uses.
pub(super) struct Arch {
    /// UNet (latent tokens at 1/8 of the pixels) or DiT (2×2 patches: 1/16).
    pub dit: bool,
    /// Attention heads at the largest attention level.
    pub heads: f64,
    /// Channels (UNet) or hidden size (DiT) of the activations kept per token.
    pub width: f64,
    /// UNet: attention runs at 1/4 of the latent tokens (SDXL has none at full latent resolution).
    pub attention_quarter: bool,
    /// Text tokens joined to the image tokens (DiTs).
    pub text_tokens: f64,
    /// VAE decoder bytes per output pixel without tiling; TAESD-style decoders need far less.
    pub vae_bytes_per_pixel: f64,
}

pub(super) fn arch(family: Family) -> Arch {
    let unet = |heads, width, quarter| Arch {
        dit: false,
        heads,
        width,
        attention_quarter: quarter,
        text_tokens: 0.0,
        vae_bytes_per_pixel: VAE_BYTES_PER_PIXEL,
    };
    let dit = |heads, width, text_tokens| Arch {
        dit: true,
        heads,
        width,
        attention_quarter: false,
        text_tokens,
        vae_bytes_per_pixel: VAE_BYTES_PER_PIXEL,
    };
    match family {
        Family::Sdxl => unet(10.0, 320.0, true),
        Family::Sd2 => unet(5.0, 320.0, false),
        Family::Sdxs => Arch {
            vae_bytes_per_pixel: TAE_BYTES_PER_PIXEL,
            ..unet(8.0, 320.0, false)
        },
        Family::Flux | Family::Chroma | Family::Flux2 => dit(24.0, 3072.0, 256.0),
        Family::Sd3 => dit(24.0, 1536.0, 333.0),
        Family::ZImage => dit(30.0, 3840.0, 512.0),
        Family::QwenImage => dit(24.0, 3072.0, 256.0),
        Family::Wan => dit(40.0, 5120.0, 512.0),
        _ => unet(8.0, 320.0, false),
    }
}

/// The full VAE decoder: about 6.5 KiB of activations per output pixel (1.6 GiB at 512×512), the figure sd.cpp
/// logs for SD 1.x's decoder; FLUX's 16-channel VAE has the same decoder widths.
pub const VAE_BYTES_PER_PIXEL: f64 = 6.5 * 1024.0;
/// A TAESD-style decoder (SDXS): 64 channels, no attention; sd.cpp logs 1,920 bytes per pixel for it.
pub const TAE_BYTES_PER_PIXEL: f64 = 1.9 * 1024.0;
/// sd.cpp's VAE tile: 32×32 latent pixels (256×256 image pixels) with half-tile overlap in memory.
pub const VAE_TILE_PIXELS: f64 = 256.0 * 256.0;
/// Activations kept per latent token, in units of the width (resnet and attention intermediates, skips).
const UNET_ACTIVATION_FACTOR: f64 = 24.0;
const DIT_ACTIVATION_FACTOR: f64 = 12.0;
/// With flash attention the scores are computed in blocks: what is left is small.
const FLASH_SCORE_FRACTION: f64 = 0.02;

/// Tokens the diffusion model attends over at `width`×`height`.
pub(super) fn tokens(a: &Arch, width: u32, height: u32) -> (f64, f64) {
    let latent = f64::from(width / 8) * f64::from(height / 8);
    if a.dit {
        let image = latent / 4.0;
        (image + a.text_tokens, image + a.text_tokens)
    } else {
        let attention = if a.attention_quarter {
            latent / 4.0
        } else {
            latent
        };
        (latent, attention)
    }
}

/// The diffusion model's compute buffer for one step.
pub(super) fn diffusion_compute(a: &Arch, width: u32, height: u32, flash: bool) -> f64 {
    let (tokens, attention) = tokens(a, width, height);
    let factor = if a.dit {
        DIT_ACTIVATION_FACTOR
    } else {
        UNET_ACTIVATION_FACTOR
    };
    let activations = tokens * a.width * 4.0 * factor;
    let scores = attention * attention * a.heads * 4.0;
    let scores = if flash {
        scores * FLASH_SCORE_FRACTION
    } else {
        scores
    };
    64.0 * MIB + activations + scores
}

/// The text encoders' compute buffer (they run one after another; the largest counts).
pub(super) fn text_compute(shape: &ModelShape) -> f64 {
    let per = |part: Part| match part {
        Part::ClipL => 24.0 * MIB,
        Part::ClipG => 48.0 * MIB,
        Part::T5xxl => 220.0 * MIB,
        Part::Llm => 420.0 * MIB,
        _ => 0.0,
    };
    shape.parts.iter().map(|p| per(p.part)).fold(0.0, f64::max)
}

/// The VAE decoder's compute buffer for one image.
pub(super) fn vae_compute(a: &Arch, width: u32, height: u32, tiled: bool) -> f64 {
    let pixels = f64::from(width) * f64::from(height);
    let latent = pixels / 64.0;
    if tiled {
        let tile = VAE_TILE_PIXELS.min(pixels);
        32.0 * MIB + tile * a.vae_bytes_per_pixel + (tile / 64.0).powi(2) * 4.0
    } else {
        // The mid-block attention over every latent pixel (full VAEs only).
        let attention = if a.vae_bytes_per_pixel >= VAE_BYTES_PER_PIXEL {
            latent * latent * 4.0
        } else {
            0.0
        };
        32.0 * MIB + pixels * a.vae_bytes_per_pixel + attention
    }
}

/// Floating-point work of one sampling step (2 × parameters × tokens per model evaluation).
pub(super) fn step_flops(shape: &ModelShape, a: &Arch, job: &Job) -> f64 {
    let (tokens, _) = tokens(a, job.width, job.height);
    let evaluations = if job.cfg { 2.0 } else { 1.0 };
    // A UNet's convolutions see each latent pixel about 9 times over fewer channels: its cost per token is of
    // the same order as a DiT's per patch.
    2.0 * shape.group_parameters(Group::Diffusion) * tokens * evaluations
}
