//! Decides what a model file is from its tensor names and shapes, following the rules sd.cpp itself applies
//! (`ModelLoader::get_sd_version`), so DiffuGen and the engine agree on a file's family before any weight is read.

use std::collections::HashMap;

use serde::Serialize;

use crate::header::Tensor;
use crate::Family;

/// What part a file plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in one file: diffusion model, text encoder(s) and usually a VAE.
    Checkpoint,
    /// Only the diffusion model (FLUX, Z-Image, ... ship it alone).
    DiffusionModel,
    Vae,
    TextEncoder,
    Lora,
    Taesd,
    ControlNet,
    /// An ESRGAN-style upscaler.
    Upscaler,
    Unknown,
}

/// A file's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, specta::Type)]
pub struct Identity {
    /// sd.cpp's family, or the kind of a component file (`t5xxl`, `clip_l`, a VAE's `sd`/`flux`), or `unknown`.
    pub family: Family,
    /// A finer variant where sd.cpp distinguishes one: `inpaint`, `pix2pix`, `512-ds`, `tiny_unet`, `fill`, ...
    pub variant: Option<String>,
    pub role: Role,
}

fn any(names: &[&str], needle: &str) -> bool {
    names.iter().any(|n| n.contains(needle))
}

fn ne0(shapes: &HashMap<&str, &[u64]>, names: &[&str]) -> Option<u64> {
    // ggml's ne[0] is the last PyTorch dimension.
    names
        .iter()
        .find_map(|n| shapes.get(n).and_then(|s| s.last().copied()))
}

fn ne2(shapes: &HashMap<&str, &[u64]>, name: &str) -> Option<u64> {
    shapes.get(name).and_then(|s| {
        if s.len() >= 3 {
            Some(s[s.len() - 3])
        } else {
            None
        }
    })
}

/// Identifies a model from its tensors.
pub fn identify(tensors: &[Tensor]) -> Identity {
    let raw: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    if raw.iter().any(|n| {
        n.contains("lora_up")
            || n.contains("lora_down")
            || n.contains("lora_A")
            || n.contains("lora_B")
    }) {
        return Identity {
            family: Family::Unknown,
            variant: None,
            role: Role::Lora,
        };
    }
    if any(&raw, "input_hint_block.") || any(&raw, "control_model.") {
        return Identity {
            family: Family::Unknown,
            variant: None,
            role: Role::ControlNet,
        };
    }
    if any(&raw, "RRDB_trunk.") || any(&raw, "conv_first.weight") || any(&raw, ".rdb1.") {
        // sd.cpp reads the factor from the upsampling convolutions (new names, or RealESRGAN's `model.N.`).
        let scale = if any(&raw, "conv_up2.") || any(&raw, "model.6.") {
            "x4"
        } else if any(&raw, "conv_up1.") || any(&raw, "model.3.") {
            "x2"
        } else {
            "x1"
        };
        return Identity {
            family: Family::Esrgan,
            variant: Some(scale.into()),
            role: Role::Upscaler,
        };
    }
    // A standalone diffusion model has no "model.diffusion_model." prefix; sd.cpp adds it when loading one.
    let standalone = !any(&raw, "model.diffusion_model.")
        && (any(&raw, "double_blocks.")
            || any(&raw, "single_blocks.")
            || any(&raw, "joint_blocks.")
            || any(&raw, "transformer_blocks.0.img_mod")
            || any(&raw, "cap_embedder.")
            || any(&raw, "input_blocks.0.0."));
    let prefixed: Vec<String> = if standalone {
        raw.iter()
            .map(|n| format!("model.diffusion_model.{n}"))
            .collect()
    } else {
        raw.iter().map(|n| n.to_string()).collect()
    };
    let names: Vec<&str> = prefixed.iter().map(String::as_str).collect();
    let shapes: HashMap<&str, &[u64]> = names
        .iter()
        .zip(tensors)
        .map(|(n, t)| (*n, t.shape.as_slice()))
        .collect();

    let has_diffusion = any(&names, "model.diffusion_model.") || any(&names, "unet.");
    let has_text = any(&names, "cond_stage_model.")
        || any(&names, "conditioner.embedders")
        || any(&names, "text_encoders.")
        || any(&names, "text_model.")
        || any(&names, "encoder.block.0.layer.0.SelfAttention")
        || any(&names, "model.layers.0.self_attn");
    let has_vae = any(&names, "first_stage_model.")
        || any(&names, "decoder.conv_in")
        || any(&names, "decoder.up");
    let role = match (has_diffusion, has_text, has_vae) {
        (true, true, _) => Role::Checkpoint,
        (true, false, _) => Role::DiffusionModel,
        (false, true, _) => Role::TextEncoder,
        (false, false, true) if any(&names, "decoder.layers.") => Role::Taesd,
        (false, false, true) => Role::Vae,
        _ if any(&names, "decoder.layers.") => Role::Taesd,
        _ => Role::Unknown,
    };
    let (family, variant) = if has_diffusion {
        diffusion_family(&names, &shapes)
    } else {
        (Family::Unknown, None)
    };
    let (family, variant) = if family == Family::Unknown && role == Role::TextEncoder {
        (text_encoder_kind(&names), None)
    } else if role == Role::Vae {
        // The latent channels tell which models a VAE decodes for: 4 (SD 1/2/XL), 16 (FLUX, SD3, Z-Image).
        let channels = ne2(&shapes, "decoder.conv_in.weight")
            .or_else(|| ne2(&shapes, "first_stage_model.decoder.conv_in.weight"));
        match channels {
            Some(4) => (Family::Sd, Some("4ch")),
            Some(16) => (Family::Flux, Some("16ch")),
            Some(32) => (Family::Flux2, Some("32ch")),
            _ => (Family::Unknown, None),
        }
    } else {
        (family, variant)
    };
    Identity {
        family,
        variant: variant.map(str::to_string),
        role,
    }
}

fn text_encoder_kind(names: &[&str]) -> Family {
    if any(names, "encoder.block.0.layer.0.SelfAttention") {
        Family::T5xxl
    } else if any(names, "model.layers.0.self_attn") {
        Family::Llm
    } else if any(names, "text_projection") && any(names, "layers.31.") {
        Family::ClipG
    } else {
        Family::ClipL
    }
}

fn diffusion_family(
    names: &[&str],
    shapes: &HashMap<&str, &[u64]>,
) -> (Family, Option<&'static str>) {
    if any(names, "model.diffusion_model.joint_blocks.") {
        return (Family::Sd3, None);
    }
    if any(
        names,
        "model.diffusion_model.transformer_blocks.0.img_mod.1.weight",
    ) {
        return (Family::QwenImage, None);
    }
    if any(names, "model.diffusion_model.cap_embedder.0.weight") {
        return (Family::ZImage, None);
    }
    if any(
        names,
        "model.diffusion_model.blocks.0.cross_attn.norm_k.weight",
    ) {
        return (Family::Wan, None);
    }
    if any(
        names,
        "model.diffusion_model.double_stream_modulation_img.lin.weight",
    ) {
        let variant = if any(names, "single_blocks.47.linear1.weight") {
            None
        } else {
            Some("klein")
        };
        return (Family::Flux2, variant);
    }
    if any(names, "model.diffusion_model.double_blocks.")
        || any(names, "model.diffusion_model.single_transformer_blocks.")
    {
        if any(names, "distilled_guidance_layer.") {
            return (Family::Chroma, None);
        }
        let variant = match ne0(shapes, &["model.diffusion_model.img_in.weight"]) {
            Some(384) => Some("fill"),
            Some(128) => Some("controls"),
            _ => None,
        };
        return (Family::Flux, variant);
    }

    let unet = any(names, "model.diffusion_model.input_blocks.") || any(names, "unet.down_blocks.");
    let multiple_encoders = any(names, "conditioner.embedders.1")
        || any(names, "cond_stage_model.1")
        || any(names, "te.1");
    let in_channels = ne2(shapes, "model.diffusion_model.input_blocks.0.0.weight")
        .or_else(|| ne2(shapes, "unet.conv_in.weight"));
    let inpaint = in_channels == Some(9);
    let pix2pix = in_channels == Some(8);
    let middle_block_1 = any(names, "model.diffusion_model.middle_block.1.")
        || any(names, "unet.mid_block.resnets.1.");
    if unet && multiple_encoders {
        let variant = if inpaint {
            Some("inpaint")
        } else if pix2pix {
            Some("pix2pix")
        } else if !middle_block_1 {
            Some("small")
        } else {
            None
        };
        return (Family::Sdxl, variant);
    }
    let token_width = ne0(
        shapes,
        &[
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "cond_stage_model.model.token_embedding.weight",
            "text_model.embeddings.token_embedding.weight",
            "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
        ],
    );
    let output_block_71 = any(names, "model.diffusion_model.output_blocks.7.1")
        || any(names, "unet.up_blocks.2.attentions.1");
    match token_width {
        Some(768) if inpaint => (Family::Sd1, Some("inpaint")),
        Some(768) if pix2pix => (Family::Sd1, Some("pix2pix")),
        Some(768) if !middle_block_1 && !output_block_71 => (Family::Sdxs, Some("512-ds")),
        Some(768) if !middle_block_1 => (Family::Sd1, Some("tiny_unet")),
        Some(768) => (Family::Sd1, None),
        Some(1024) if inpaint => (Family::Sd2, Some("inpaint")),
        Some(1024) if !middle_block_1 => (Family::Sdxs, Some("0.9")),
        Some(1024) => (Family::Sd2, None),
        // A UNet without its text encoder in the file: SD 1.x/2.x cannot be told apart from the UNet alone.
        _ if unet => (Family::Unknown, None),
        _ => (Family::Unknown, None),
    }
}

/// The weight type of the matrices (`f16`, `q8_0`, `q4_k`, ...), `None` when there are none: the quantized type
/// that holds the most weights when it holds at least a fifth of them (sd.cpp's quantized copies keep some layers,
/// convolutions among them, in f16, which may still be the larger part), else the dominant type.
pub fn quantization(tensors: &[Tensor]) -> Option<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for t in tensors.iter().filter(|t| t.shape.len() >= 2) {
        *counts.entry(t.dtype.as_str()).or_default() += t.elements();
    }
    let total: u64 = counts.values().sum();
    let quantized = counts
        .iter()
        .filter(|(d, _)| !matches!(**d, "f32" | "f16" | "bf16" | "f64"))
        .max_by_key(|(_, n)| **n)
        .filter(|(_, n)| **n * 5 >= total)
        .map(|(d, _)| d.to_string());
    quantized.or_else(|| {
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d.to_string())
    })
}

#[cfg(test)]
mod quantization_tests {
    use super::*;

    fn tensor(dtype: &str, rows: u64) -> Tensor {
        Tensor {
            name: format!("{dtype}.{rows}"),
            shape: vec![rows, 64],
            dtype: dtype.into(),
        }
    }

    #[test]
    fn a_quantized_copy_that_keeps_its_convolutions_in_f16_reads_as_its_quantized_type() {
        // As sd.cpp's q8_0 copy of the test model: more f16 weights than q8_0 ones, yet a q8_0 copy.
        let copy = [tensor("f16", 60), tensor("q8_0", 40), tensor("f32", 1)];
        assert_eq!(quantization(&copy).as_deref(), Some("q8_0"));
        // A few quantized matrices in an f16 model do not make it a quantized one.
        let mostly_f16 = [tensor("f16", 95), tensor("q4_k", 5)];
        assert_eq!(quantization(&mostly_f16).as_deref(), Some("f16"));
        assert_eq!(quantization(&[tensor("bf16", 10)]).as_deref(), Some("bf16"));
        assert_eq!(quantization(&[]), None);
    }
}
