//! The Generate form as the UI holds it, and its translation to the engine's [`GenerateRequest`]. Numbers cross as
//! `f64`/`u32` (JavaScript has no 64-bit integers); images cross as data URLs of the files the user dropped.

use base64::Engine as _;
use diffugen_engine::params::{
    HiresRequest, HiresUpscaler, ImageInput, LoraRequest, PreviewRequest, MAX_SEED,
};
use diffugen_engine::GenerateRequest;
use diffugen_gallery::Entry;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// A LoRA and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct FormLora {
    pub name: String,
    pub weight: f64,
}

/// Everything the Generate panel sends. `null` means "the model's default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct GenerateForm {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: Option<u32>,
    pub cfg_scale: Option<f64>,
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    /// -1 or `null`: a random seed (the one used is reported with the image).
    pub seed: Option<f64>,
    pub count: Option<u32>,
    pub loras: Vec<FormLora>,
    /// img2img / inpainting source: a `data:image/...;base64,` URL.
    pub init_image: Option<String>,
    /// The mask for inpainting (white = repaint): a data URL.
    pub mask: Option<String>,
    /// How much of the init image to change, 0..1.
    pub strength: Option<f64>,
    /// How an init image of another shape is brought to the size [default: stretch].
    #[serde(default)]
    pub resize_mode: Option<diffugen_engine::params::ResizeMode>,
    /// The advanced section's memory and speed options (placement, VRAM budget, VAE tiling, flash attention,
    /// mmap, step cache); empty leaves them to the model card, the settings and the planner.
    #[serde(default)]
    pub memory: diffugen_models::MemoryOptions,
    /// A hires pass (text-to-image): the final size as this many times the first pass (1 to 4); `None`: none.
    #[serde(default)]
    pub hires_scale: Option<f64>,
    /// How the first pass is enlarged [default: latent].
    #[serde(default)]
    pub hires_upscaler: Option<HiresUpscaler>,
    /// The upscaling (ESRGAN) model's id when `hires_upscaler` is `model` (from `upscalers`).
    #[serde(default)]
    pub hires_model: Option<String>,
    /// The second pass's steps [default: the first pass's].
    #[serde(default)]
    pub hires_steps: Option<u32>,
    /// How much the second pass repaints, above 0 to 1 [default: 0.7].
    #[serde(default)]
    pub hires_denoise: Option<f64>,
    /// A ControlNet (SD 1.x models): its id from `controlnets`; `None`: none.
    #[serde(default)]
    pub control_model: Option<String>,
    /// The control picture as a `data:image/...;base64` URL.
    #[serde(default)]
    pub control_image: Option<String>,
    /// How the picture becomes a control map [default: none, a map made elsewhere].
    #[serde(default)]
    pub control_module: Option<diffugen_engine::control::ControlModule>,
    /// How strongly the map steers, 0 to 2 [default: 1].
    #[serde(default)]
    pub control_strength: Option<f64>,
    /// canny: low and high thresholds, 0 to 255 [default: 100 and 200].
    #[serde(default)]
    pub control_low: Option<f64>,
    #[serde(default)]
    pub control_high: Option<f64>,
}

/// The image in a `data:image/...;base64` URL; a bad one is an error naming `field`.
pub(crate) fn data_url_bytes(field: &str, url: &str) -> Result<Vec<u8>, AppError> {
    let payload = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .map(|(_, data)| data)
        .ok_or_else(|| {
            AppError::field(field, "expected an image as a data:image/...;base64 URL")
        })?;
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| AppError::field(field, format!("the image data is not valid base64 ({e})")))
}

fn data_url(field: &str, url: &str) -> Result<ImageInput, AppError> {
    data_url_bytes(field, url).map(ImageInput::Bytes)
}

impl GenerateForm {
    /// The engine request, with a live preview every step. Errors name the form field.
    pub fn to_request(&self, threads: Option<u32>) -> Result<GenerateRequest, AppError> {
        let seed = match self.seed {
            None => None,
            Some(-1.0) => Some(-1),
            Some(s) if s.fract() != 0.0 || !(0.0..=MAX_SEED as f64).contains(&s) => {
                return Err(AppError::field(
                    "seed",
                    format!("{s} is not a whole number in 0..={MAX_SEED} (or -1 for random)"),
                ))
            }
            Some(s) => Some(s as i64),
        };
        Ok(GenerateRequest {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative_prompt: Some(self.negative_prompt.clone()).filter(|n| !n.trim().is_empty()),
            width: self.width,
            height: self.height,
            steps: self.steps,
            cfg_scale: self.cfg_scale.map(|c| c as f32),
            sampler: self.sampler.clone().filter(|s| !s.is_empty()),
            scheduler: self.scheduler.clone().filter(|s| !s.is_empty()),
            seed,
            count: self.count,
            clip_skip: None,
            // The app's Enhance button rewrites the prompt before it reaches the form (the user sees and edits
            // the rewrite), so the form's job renders the prompt as shown.
            enhance_prompt: None,
            enhance_model: None,
            critique: None,
            critique_model: None,
            memory: self.memory.clone(),
            control: match (&self.control_model, &self.control_image) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(AppError::field(
                        "control_model",
                        "choose a ControlNet model for the control image",
                    ))
                }
                (Some(_), None) => {
                    return Err(AppError::field(
                        "control_image",
                        "add a control image (or remove the ControlNet)",
                    ))
                }
                (Some(model), Some(image)) => Some(diffugen_engine::control::ControlRequest {
                    model: model.clone(),
                    image: data_url("control_image", image)?,
                    module: self.control_module,
                    strength: self.control_strength.map(|s| s as f32),
                    low_threshold: self.control_low,
                    high_threshold: self.control_high,
                    processor_res: None,
                }),
            },
            hires: self.hires_scale.map(|scale| HiresRequest {
                scale: Some(scale as f32),
                width: None,
                height: None,
                upscaler: self.hires_upscaler,
                model: self.hires_model.clone(),
                steps: self.hires_steps,
                denoising_strength: self.hires_denoise.map(|d| d as f32),
            }),
            loras: self
                .loras
                .iter()
                .map(|l| LoraRequest {
                    name: l.name.clone(),
                    weight: l.weight as f32,
                })
                .collect(),
            init_image: self
                .init_image
                .as_deref()
                .map(|u| data_url("init_image", u))
                .transpose()?,
            mask: self
                .mask
                .as_deref()
                .map(|u| data_url("mask", u))
                .transpose()?,
            strength: self.strength.map(|s| s as f32),
            resize_mode: self.init_image.as_ref().and(self.resize_mode),
            threads,
            preview: Some(PreviewRequest {
                mode: diffugen_engine::params::PreviewMode::Proj,
                interval: 1,
            }),
        })
    }

    /// A gallery image's parameters loaded back into the form ("remix"). The seed is kept so the same image
    /// comes back until the user changes something; LoRAs written into the prompt stay there only. `init` is the
    /// init image DiffuGen kept for an img2img result: it comes back with its strength, and an inpainting's with
    /// its mask.
    pub fn from_entry(
        entry: &Entry,
        init: Option<&std::path::Path>,
        extras: &diffugen_gallery::RemixExtras,
    ) -> GenerateForm {
        let init_image = init
            .and_then(|path| std::fs::read(path).ok())
            .map(|bytes| png_data_url(&bytes));
        let loras_in_prompt = entry.prompt.contains("<lora:");
        let hires = extras.hires.as_ref();
        // The form asks for a hires pass by scale over the first pass's size.
        let (width, height) = hires.map_or((entry.width, entry.height), |h| {
            (h.first_width, h.first_height)
        });
        let control = extras.control.as_ref();
        GenerateForm {
            model: entry.model.clone().unwrap_or_default(),
            prompt: entry.prompt.clone(),
            negative_prompt: entry.negative_prompt.clone(),
            width: Some(width),
            height: Some(height),
            steps: entry.steps,
            cfg_scale: entry.cfg_scale,
            sampler: entry.sampler.clone(),
            scheduler: entry.scheduler.clone(),
            seed: entry.seed.map(|s| s as f64),
            count: Some(1),
            loras: if loras_in_prompt {
                Vec::new()
            } else {
                entry
                    .loras
                    .iter()
                    .map(|l| FormLora {
                        name: l.name.clone(),
                        weight: l.weight,
                    })
                    .collect()
            },
            strength: init_image.as_ref().and(entry.strength),
            // The init image kept is already at the render's size: nothing to resize.
            resize_mode: None,
            // An inpainting's mask comes back with its init image (alone it would mean nothing).
            mask: init_image
                .as_ref()
                .and(extras.mask.as_ref())
                .map(|bytes| png_data_url(bytes)),
            init_image,
            memory: diffugen_models::MemoryOptions::default(),
            hires_scale: hires.map(|h| {
                (f64::from(h.width) / f64::from(h.first_width.max(1)) * 100.0).round() / 100.0
            }),
            hires_upscaler: hires.and_then(|h| h.upscaler.parse().ok()),
            hires_model: hires.and_then(|h| h.model.clone()),
            hires_steps: hires.map(|h| h.steps),
            hires_denoise: hires.map(|h| h.denoising_strength),
            control_model: control.map(|c| c.model.clone()),
            control_image: control.map(|c| png_data_url(&c.map)),
            // The map kept is the one the render used, already through its preprocessor.
            control_module: control.map(|_| diffugen_engine::control::ControlModule::None),
            control_strength: control.map(|c| c.strength),
            control_low: None,
            control_high: None,
        }
    }
}

/// PNG bytes as the data URL the form holds its pictures in.
fn png_data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffugen_engine::control::ControlModule;
    use diffugen_gallery::{RemixControl, RemixExtras, RemixHires};

    fn entry(width: u32, height: u32) -> Entry {
        serde_json::from_value(serde_json::json!({
            "id": 1, "path": "/nowhere/1.png", "created": 0.0, "prompt": "a gate", "negative_prompt": "",
            "model": "sd15", "family": "sd1", "width": width, "height": height, "steps": 4, "cfg_scale": 7.0,
            "sampler": "euler", "scheduler": null, "seed": 42, "loras": [], "init_image": null, "strength": null,
            "generation_seconds": 1.0, "job_id": null, "favorite": false, "boards": [], "tags": [],
            "source": "diffugen", "trashed": null, "upscale": null,
        }))
        .unwrap()
    }

    #[test]
    fn a_remixed_hires_render_asks_for_its_first_pass_size_and_the_same_hires_pass() {
        let extras = RemixExtras {
            hires: Some(RemixHires {
                first_width: 512,
                first_height: 768,
                width: 768,
                height: 1152,
                upscaler: "model".into(),
                model: Some("4x-UltraSharp".into()),
                steps: 10,
                denoising_strength: 0.45,
            }),
            control: None,
            mask: None,
        };
        let form = GenerateForm::from_entry(&entry(768, 1152), None, &extras);
        assert_eq!((form.width, form.height), (Some(512), Some(768)));
        assert_eq!(form.hires_scale, Some(1.5));
        assert_eq!(form.hires_upscaler, Some(HiresUpscaler::Model));
        assert_eq!(form.hires_model.as_deref(), Some("4x-UltraSharp"));
        assert_eq!(
            (form.hires_steps, form.hires_denoise),
            (Some(10), Some(0.45))
        );
        assert_eq!(form.seed, Some(42.0));
        assert_eq!(form.control_model, None);
    }

    #[test]
    fn a_remixed_controlnet_render_carries_its_kept_map_with_no_preprocessor() {
        let map = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
        let extras = RemixExtras {
            hires: None,
            control: Some(RemixControl {
                model: "control_v11p_sd15_canny".into(),
                strength: 0.8,
                map: map.clone(),
            }),
            mask: None,
        };
        let form = GenerateForm::from_entry(&entry(512, 512), None, &extras);
        assert_eq!(
            form.control_model.as_deref(),
            Some("control_v11p_sd15_canny")
        );
        assert_eq!(
            form.control_image,
            Some(format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(&map)
            ))
        );
        assert_eq!(form.control_module, Some(ControlModule::None));
        assert_eq!(form.control_strength, Some(0.8));
        assert_eq!(
            (form.width, form.height, form.hires_scale),
            (Some(512), Some(512), None)
        );
    }

    #[test]
    fn a_remixed_inpainting_brings_back_its_mask_with_the_init_image_and_no_mask_without_one() {
        let mask = vec![0x89, b'P', b'N', b'G', 9, 9];
        let init =
            std::env::temp_dir().join(format!("diffugen-form-init-{}.png", std::process::id()));
        std::fs::write(&init, [0x89, b'P', b'N', b'G', 1]).unwrap();
        let extras = RemixExtras {
            hires: None,
            control: None,
            mask: Some(mask.clone()),
        };
        let mut inpainted = entry(64, 64);
        inpainted.strength = Some(0.6);
        let form = GenerateForm::from_entry(&inpainted, Some(&init), &extras);
        std::fs::remove_file(&init).unwrap();
        assert_eq!(form.mask, Some(png_data_url(&mask)));
        assert_eq!(form.strength, Some(0.6));
        assert!(form.init_image.is_some());
        // The init image is gone: a mask alone would mean nothing, so neither comes back.
        let form = GenerateForm::from_entry(&inpainted, None, &extras);
        assert_eq!((form.init_image, form.mask), (None, None));
    }
}
