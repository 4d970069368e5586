//! Multi-file models (FLUX: diffusion model + `ae` VAE + `clip_l` + `t5xxl`) are described by a small JSON preset
//! beside the files, and every family has the defaults users expect when they leave a parameter out.

use crate::Family;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::MemoryOptions;

/// The files that make up one model, as the engine hands them to sd.cpp.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Components {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusion_model: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_l: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_g: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t5xxl: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taesd: Option<PathBuf>,
}

impl Components {
    /// Every (field name, path) pair that is set.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("model", &self.model),
            ("diffusion_model", &self.diffusion_model),
            ("vae", &self.vae),
            ("clip_l", &self.clip_l),
            ("clip_g", &self.clip_g),
            ("t5xxl", &self.t5xxl),
            ("llm", &self.llm),
            ("taesd", &self.taesd),
        ]
        .into_iter()
        .filter_map(|(name, path)| path.as_deref().map(|p| (name, p)))
        .collect()
    }

    /// The file of one component by its field name (`diffusion_model`, `vae`, `t5xxl`, ...).
    pub fn get(&self, field: &str) -> Option<&Path> {
        self.files()
            .into_iter()
            .find_map(|(name, path)| (name == field).then_some(path))
    }

    /// Sets one component by its field name; an unknown name changes nothing.
    pub fn set(&mut self, field: &str, path: PathBuf) {
        let slot = match field {
            "model" => &mut self.model,
            "diffusion_model" => &mut self.diffusion_model,
            "vae" => &mut self.vae,
            "clip_l" => &mut self.clip_l,
            "clip_g" => &mut self.clip_g,
            "t5xxl" => &mut self.t5xxl,
            "llm" => &mut self.llm,
            "taesd" => &mut self.taesd,
            _ => return,
        };
        *slot = Some(path);
    }

    /// Resolves relative paths against `base`.
    pub fn relative_to(mut self, base: &Path) -> Components {
        for path in [
            &mut self.model,
            &mut self.diffusion_model,
            &mut self.vae,
            &mut self.clip_l,
            &mut self.clip_g,
            &mut self.t5xxl,
            &mut self.llm,
            &mut self.taesd,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self
    }
}

/// Parameters a model family works best with; every field can be overridden per job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyDefaults {
    pub steps: u32,
    pub cfg_scale: f32,
    pub sampler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    pub width: u32,
    pub height: u32,
    /// Distilled guidance for FLUX-style models.
    #[serde(default = "default_guidance")]
    pub guidance: f32,
    /// Width and height must be multiples of this: sd.cpp silently rounds other sizes up to it (its VAE scale
    /// factor times the diffusion model's down factor: 64 for UNet families, 8 or 16 for DiTs).
    #[serde(default = "default_size_multiple")]
    pub size_multiple: u32,
    /// Memory and speed options this model runs with unless a request says otherwise (a preset's
    /// `defaults.memory`).
    #[serde(default, skip_serializing_if = "MemoryOptions::is_empty")]
    pub memory: MemoryOptions,
}

fn default_size_multiple() -> u32 {
    8
}

/// The size multiple sd.cpp enforces for a family.
pub fn size_multiple(family: Family) -> u32 {
    match family {
        Family::Sd1 | Family::Sd2 | Family::Sdxl | Family::Sdxs | Family::Unknown => 64,
        Family::Wan | Family::Flux2 => 16,
        _ => 8,
    }
}

fn default_guidance() -> f32 {
    3.5
}

impl FamilyDefaults {
    /// The defaults for a family (and, for FLUX, a variant hint from the model's name).
    pub fn for_family(family: Family, name_hint: &str) -> FamilyDefaults {
        let hint = name_hint.to_ascii_lowercase();
        let (steps, cfg_scale, size) = match family {
            Family::Flux | Family::Chroma if hint.contains("schnell") => (4, 1.0, 1024),
            Family::Flux | Family::Flux2 | Family::Chroma => (20, 1.0, 1024),
            Family::ZImage => (8, 1.0, 1024),
            Family::QwenImage => (20, 2.5, 1024),
            Family::Sd3 => (28, 4.5, 1024),
            Family::Sdxl if hint.contains("turbo") => (1, 1.0, 512),
            Family::Sdxl => (20, 7.0, 1024),
            Family::Sdxs => (1, 1.0, 512),
            Family::Sd2 => (20, 7.0, 768),
            _ if hint.contains("turbo") => (1, 1.0, 512),
            _ => (20, 7.0, 512),
        };
        FamilyDefaults {
            steps,
            cfg_scale,
            sampler: "euler".into(),
            scheduler: None,
            width: size,
            height: size,
            guidance: default_guidance(),
            size_multiple: size_multiple(family),
            memory: MemoryOptions::default(),
        }
    }
}

/// A preset file (`<models>/<name>.preset.json` or `<models>/presets/<name>.json`): a named multi-file model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    /// The model id users select it by (defaults to the file name).
    #[serde(default)]
    pub name: String,
    /// sd.cpp family; read from the diffusion model's header when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    /// Component paths, relative to the preset file's folder or absolute.
    #[serde(flatten)]
    pub components: Components,
    /// Overrides of the family defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<serde_json::Value>,
}
