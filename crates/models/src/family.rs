//! The model families stable-diffusion.cpp tells apart (`ModelLoader::get_sd_version`), plus the kinds of the
//! component files that come with them (text encoders, VAEs, upscalers). The wire names are sd.cpp's.

use serde::{Deserialize, Serialize};

/// What a model file is for sd.cpp: a diffusion family, or the kind of component a text encoder or VAE file is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    specta::Type,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Stable Diffusion 1.x.
    Sd1,
    /// Stable Diffusion 2.x.
    Sd2,
    /// SDXS, the one-step distilled SD 1/2.
    Sdxs,
    Sdxl,
    Sd3,
    Flux,
    Flux2,
    Chroma,
    QwenImage,
    ZImage,
    Wan,
    /// A VAE for 4-channel latents (SD 1/2/XL).
    Sd,
    /// CLIP ViT-L text encoder.
    ClipL,
    /// CLIP ViT-bigG text encoder.
    ClipG,
    /// T5-XXL text encoder.
    T5xxl,
    /// A language model used as text encoder (Z-Image, Qwen-Image).
    Llm,
    /// An ESRGAN-style upscaler.
    Esrgan,
    /// Nothing sd.cpp would recognise.
    #[default]
    Unknown,
}

/// Every family, in declaration order.
pub const FAMILIES: &[Family] = &[
    Family::Sd1,
    Family::Sd2,
    Family::Sdxs,
    Family::Sdxl,
    Family::Sd3,
    Family::Flux,
    Family::Flux2,
    Family::Chroma,
    Family::QwenImage,
    Family::ZImage,
    Family::Wan,
    Family::Sd,
    Family::ClipL,
    Family::ClipG,
    Family::T5xxl,
    Family::Llm,
    Family::Esrgan,
    Family::Unknown,
];

impl Family {
    /// The wire name (`sd1`, `qwen_image`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
            Family::Sdxs => "sdxs",
            Family::Sdxl => "sdxl",
            Family::Sd3 => "sd3",
            Family::Flux => "flux",
            Family::Flux2 => "flux2",
            Family::Chroma => "chroma",
            Family::QwenImage => "qwen_image",
            Family::ZImage => "z_image",
            Family::Wan => "wan",
            Family::Sd => "sd",
            Family::ClipL => "clip_l",
            Family::ClipG => "clip_g",
            Family::T5xxl => "t5xxl",
            Family::Llm => "llm",
            Family::Esrgan => "esrgan",
            Family::Unknown => "unknown",
        }
    }

    /// A UNet model (SD 1/2, SDXS, SDXL), as opposed to a DiT; `None` for what is no diffusion family.
    pub fn is_unet(self) -> Option<bool> {
        match self {
            Family::Sd1 | Family::Sd2 | Family::Sdxl | Family::Sdxs => Some(true),
            Family::Flux
            | Family::Flux2
            | Family::Chroma
            | Family::Sd3
            | Family::ZImage
            | Family::QwenImage
            | Family::Wan => Some(false),
            Family::Sd
            | Family::ClipL
            | Family::ClipG
            | Family::T5xxl
            | Family::Llm
            | Family::Esrgan
            | Family::Unknown => None,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(text: &str) -> Result<Family, String> {
        let text = text.trim().to_ascii_lowercase();
        FAMILIES
            .iter()
            .copied()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = FAMILIES.iter().map(|f| f.as_str()).collect();
                format!(
                    "'{text}' is not a model family; use one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_reads_back_from_its_wire_name_and_serde_agrees() {
        for family in FAMILIES {
            assert_eq!(family.as_str().parse::<Family>(), Ok(*family));
            assert_eq!(
                serde_json::to_value(family).unwrap(),
                serde_json::Value::from(family.as_str())
            );
        }
        assert!("sd15".parse::<Family>().unwrap_err().contains("qwen_image"));
    }
}
