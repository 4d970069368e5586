//! Memory and speed options of a job: where each part runs, a VRAM budget for streamed weights, VAE tiling, flash
//! attention, memory-mapped weights and a step cache. Each can come from a request, a model card (a preset's
//! `defaults.memory`) or the settings; the first that says something wins, and the planner decides the rest.

use crate::Family;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Group, Part, Placement};

/// Where a request wants a part: a fixed place, or the planner's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum PlacementChoice {
    Auto,
    Gpu,
    Cpu,
    Offload,
}

impl PlacementChoice {
    pub fn fixed(self) -> Option<Placement> {
        match self {
            PlacementChoice::Auto => None,
            PlacementChoice::Gpu => Some(Placement::Gpu),
            PlacementChoice::Cpu => Some(Placement::Cpu),
            PlacementChoice::Offload => Some(Placement::Offload),
        }
    }
}

impl std::str::FromStr for PlacementChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(PlacementChoice::Auto),
            "gpu" => Ok(PlacementChoice::Gpu),
            "cpu" => Ok(PlacementChoice::Cpu),
            "offload" => Ok(PlacementChoice::Offload),
            other => Err(format!(
                "'{other}' is not a placement; allowed: auto, gpu, cpu, offload"
            )),
        }
    }
}

/// VAE tiling: always, never, or when the planner finds the untiled decode does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Tiling {
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Tiling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Tiling::Auto),
            "on" | "true" => Ok(Tiling::On),
            "off" | "false" => Ok(Tiling::Off),
            other => Err(format!(
                "'{other}' is not a VAE tiling mode; allowed: auto, on, off"
            )),
        }
    }
}

/// A step cache preset: sd.cpp reuses a step's result when the model's output barely changes. `fast` and `faster`
/// map to the cache sd.cpp supports for the family (UCache for UNet models, EasyCache for DiTs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum CachePreset {
    #[default]
    Off,
    Fast,
    Faster,
}

impl std::str::FromStr for CachePreset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Ok(CachePreset::Off),
            "fast" => Ok(CachePreset::Fast),
            "faster" => Ok(CachePreset::Faster),
            other => Err(format!(
                "'{other}' is not a step cache preset; allowed: off, fast, faster"
            )),
        }
    }
}

impl CachePreset {
    pub fn name(self) -> &'static str {
        match self {
            CachePreset::Off => "off",
            CachePreset::Fast => "fast",
            CachePreset::Faster => "faster",
        }
    }
}

/// The cache sd.cpp runs for a preset on a family: its mode and reuse threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepCache {
    /// UNet models (SD 1.x/2.x, SDXL, SDXS).
    Ucache { threshold: f32 },
    /// DiT models (FLUX, SD3, Z-Image, Chroma, Qwen-Image, ...).
    Easycache { threshold: f32 },
}

impl CachePreset {
    /// The cache for `family`, or why the family has none.
    pub fn for_family(self, family: Family) -> Result<Option<StepCache>, String> {
        if self == CachePreset::Off {
            return Ok(None);
        }
        let fast = self == CachePreset::Fast;
        match family.is_unet() {
            // sd.cpp's defaults (1.0 and 0.2) for `fast`; twice as tolerant for `faster`.
            Some(true) => Ok(Some(StepCache::Ucache {
                threshold: if fast { 1.0 } else { 2.0 },
            })),
            Some(false) => Ok(Some(StepCache::Easycache {
                threshold: if fast { 0.2 } else { 0.4 },
            })),
            None => Err(format!(
                "sd.cpp has no step cache for {family} models; use off"
            )),
        }
    }
}

/// A job's memory and speed options; every field left out is the model card's, the settings' or the planner's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(deny_unknown_fields)]
pub struct MemoryOptions {
    /// Where each part runs: keys `diffusion`, `text_encoders` (or one encoder: `clip_l`, `clip_g`, `t5xxl`,
    /// `llm` — sd.cpp places all text encoders together), `vae`; values `auto`, `gpu`, `cpu`, `offload`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placement: BTreeMap<String, PlacementChoice>,
    /// GiB of VRAM the diffusion model's weights may use; the rest stay in RAM and stream in (sd.cpp's `max_vram`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_budget_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_tiling: Option<Tiling>,
    /// Tile side in image pixels (a multiple of 32, from 32 to 2048; sd.cpp's default is 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_tile_size: Option<u32>,
    /// Overlap between tiles as a fraction of a tile, 0 to 0.5 (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_tile_overlap: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attn: Option<bool>,
    /// Map weight files into memory instead of reading them (sd.cpp's `enable_mmap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmap: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePreset>,
}

impl MemoryOptions {
    /// These options, with each field left out taken from `fallback`.
    pub fn or(&self, fallback: &MemoryOptions) -> MemoryOptions {
        let mut placement = fallback.placement.clone();
        placement.extend(self.placement.clone());
        MemoryOptions {
            placement,
            vram_budget_gib: self.vram_budget_gib.or(fallback.vram_budget_gib),
            vae_tiling: self.vae_tiling.or(fallback.vae_tiling),
            vae_tile_size: self.vae_tile_size.or(fallback.vae_tile_size),
            vae_tile_overlap: self.vae_tile_overlap.or(fallback.vae_tile_overlap),
            flash_attn: self.flash_attn.or(fallback.flash_attn),
            mmap: self.mmap.or(fallback.mmap),
            cache: self.cache.or(fallback.cache),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == MemoryOptions::default()
    }
}

/// One invalid option: the field (below `memory.`) and what is allowed.
pub type OptionError = (String, String);

/// The parts a model of `family` has, for checking placement keys.
fn family_parts(family: Family, parts: &[Part]) -> Vec<Part> {
    if !parts.is_empty() {
        return parts.to_vec();
    }
    let encoders: &[Part] = match family {
        Family::Sdxl => &[Part::ClipL, Part::ClipG],
        Family::Sd3 => &[Part::ClipL, Part::ClipG, Part::T5xxl],
        Family::Flux => &[Part::ClipL, Part::T5xxl],
        Family::Chroma => &[Part::T5xxl],
        Family::ZImage | Family::QwenImage | Family::Flux2 => &[Part::Llm],
        _ => &[Part::ClipL],
    };
    let mut all = vec![Part::Diffusion, Part::Vae];
    all.extend_from_slice(encoders);
    all
}

/// Checks options against the model (`family`, its `parts` when known) and the build, and turns the placement
/// keys into sd.cpp's groups. `gpu_backend`: whether this build of sd.cpp can use a GPU at all.
pub fn check(
    options: &MemoryOptions,
    family: Family,
    parts: &[Part],
    gpu_backend: bool,
    vram_total_gib: Option<f64>,
) -> Result<BTreeMap<Group, Placement>, Vec<OptionError>> {
    let mut errors = Vec::new();
    let mut groups: BTreeMap<Group, (String, PlacementChoice)> = BTreeMap::new();
    let present = family_parts(family, parts);
    for (key, choice) in &options.placement {
        let field = format!("placement.{key}");
        let group = match key.as_str() {
            "diffusion" => Group::Diffusion,
            "vae" => Group::Vae,
            "text_encoders" | "te" => Group::TextEncoders,
            "clip_l" | "clip_g" | "t5xxl" | "llm" => {
                let part = match key.as_str() {
                    "clip_l" => Part::ClipL,
                    "clip_g" => Part::ClipG,
                    "t5xxl" => Part::T5xxl,
                    _ => Part::Llm,
                };
                if !present.contains(&part) {
                    let names: Vec<&str> = present.iter().map(|p| p.name()).collect();
                    errors.push((
                        field,
                        format!(
                            "this {family} model has no {key}; its parts: {}",
                            names.join(", ")
                        ),
                    ));
                    continue;
                }
                Group::TextEncoders
            }
            other => {
                errors.push((
                    field,
                    format!(
                        "'{other}' is not a part; allowed: diffusion, text_encoders, vae, clip_l, clip_g, t5xxl, llm"
                    ),
                ));
                continue;
            }
        };
        if let Some((earlier, was)) = groups.get(&group) {
            if was != choice {
                errors.push((
                    field,
                    format!(
                        "sd.cpp places all text encoders together: it cannot differ from {earlier}"
                    ),
                ));
            }
            continue;
        }
        if !gpu_backend && matches!(choice, PlacementChoice::Gpu | PlacementChoice::Offload) {
            errors.push((
                field.clone(),
                "this DiffuGen build has no GPU backend (CPU only); use cpu or auto".into(),
            ));
        }
        groups.insert(group, (format!("placement.{key}"), *choice));
    }
    if let Some(budget) = options.vram_budget_gib {
        if !gpu_backend {
            errors.push((
                "vram_budget_gib".into(),
                "this DiffuGen build has no GPU backend (CPU only): there is no VRAM to budget"
                    .into(),
            ));
        } else if !budget.is_finite() || budget <= 0.0 {
            errors.push((
                "vram_budget_gib".into(),
                format!("must be a number of GiB above 0, got {budget}"),
            ));
        } else if let Some(total) = vram_total_gib.filter(|t| budget > *t) {
            errors.push((
                "vram_budget_gib".into(),
                format!("{budget} GiB is more than the GPU has ({total:.1} GiB)"),
            ));
        }
        if groups
            .get(&Group::Diffusion)
            .is_some_and(|(_, c)| matches!(c, PlacementChoice::Gpu | PlacementChoice::Cpu))
        {
            errors.push((
                "vram_budget_gib".into(),
                "streams the diffusion model's weights: it needs placement.diffusion offload or auto".into(),
            ));
        }
    }
    if let Some(size) = options.vae_tile_size {
        if !(32..=2048).contains(&size) || size % 32 != 0 {
            errors.push((
                "vae_tile_size".into(),
                format!("must be a multiple of 32 from 32 to 2048 pixels, got {size}"),
            ));
        }
    }
    if let Some(overlap) = options.vae_tile_overlap {
        if !overlap.is_finite() || !(0.0..=0.5).contains(&overlap) {
            errors.push((
                "vae_tile_overlap".into(),
                format!("must be a fraction from 0 to 0.5, got {overlap}"),
            ));
        }
    }
    if options.vae_tiling == Some(Tiling::Off)
        && (options.vae_tile_size.is_some() || options.vae_tile_overlap.is_some())
    {
        errors.push((
            "vae_tiling".into(),
            "is off, but a tile size or overlap was given: use on or auto".into(),
        ));
    }
    if let Some(cache) = options.cache {
        if let Err(message) = cache.for_family(family) {
            errors.push(("cache".into(), message));
        }
    }
    if errors.is_empty() {
        Ok(groups
            .into_iter()
            .filter_map(|(g, (_, c))| c.fixed().map(|p| (g, p)))
            .collect())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(placement: &[(&str, PlacementChoice)]) -> MemoryOptions {
        MemoryOptions {
            placement: placement.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..MemoryOptions::default()
        }
    }

    #[test]
    fn a_part_the_family_lacks_is_named_with_the_parts_it_has() {
        let errors = check(
            &with(&[("t5xxl", PlacementChoice::Cpu)]),
            Family::Sd1,
            &[],
            true,
            None,
        )
        .unwrap_err();
        assert_eq!(errors[0].0, "placement.t5xxl");
        assert!(errors[0].1.contains("has no t5xxl"), "{}", errors[0].1);
        assert!(errors[0].1.contains("clip_l"), "{}", errors[0].1);
    }

    #[test]
    fn text_encoders_placed_apart_are_refused_because_sd_cpp_places_them_together() {
        let errors = check(
            &with(&[
                ("t5xxl", PlacementChoice::Cpu),
                ("clip_l", PlacementChoice::Gpu),
            ]),
            Family::Flux,
            &[],
            true,
            None,
        )
        .unwrap_err();
        assert!(errors[0].1.contains("together"), "{errors:?}");
        let groups = check(
            &with(&[
                ("t5xxl", PlacementChoice::Cpu),
                ("vae", PlacementChoice::Auto),
            ]),
            Family::Flux,
            &[],
            true,
            None,
        )
        .unwrap();
        assert_eq!(groups.get(&Group::TextEncoders), Some(&Placement::Cpu));
        assert_eq!(groups.get(&Group::Vae), None);
    }

    #[test]
    fn a_budget_above_the_card_or_on_a_cpu_build_is_refused() {
        let budget = MemoryOptions {
            vram_budget_gib: Some(12.0),
            ..MemoryOptions::default()
        };
        let errors = check(&budget, Family::Sdxl, &[], true, Some(8.0)).unwrap_err();
        assert_eq!(errors[0].0, "vram_budget_gib");
        assert!(errors[0].1.contains("more than the GPU has"));
        let errors = check(&budget, Family::Sdxl, &[], false, None).unwrap_err();
        assert!(errors[0].1.contains("no GPU backend"));
        let gpu_on_cpu = check(
            &with(&[("vae", PlacementChoice::Gpu)]),
            Family::Sd1,
            &[],
            false,
            None,
        );
        assert_eq!(gpu_on_cpu.unwrap_err()[0].0, "placement.vae");
    }

    #[test]
    fn cache_presets_map_to_the_cache_each_family_supports() {
        assert_eq!(
            CachePreset::Fast.for_family(Family::Sd1),
            Ok(Some(StepCache::Ucache { threshold: 1.0 }))
        );
        assert_eq!(
            CachePreset::Faster.for_family(Family::Flux),
            Ok(Some(StepCache::Easycache { threshold: 0.4 }))
        );
        assert_eq!(CachePreset::Off.for_family(Family::Unknown), Ok(None));
        assert!(CachePreset::Fast.for_family(Family::Unknown).is_err());
        assert!("turbo"
            .parse::<CachePreset>()
            .unwrap_err()
            .contains("off, fast, faster"));
    }

    #[test]
    fn request_options_win_over_the_card_and_the_card_over_the_settings() {
        let request = MemoryOptions {
            cache: Some(CachePreset::Fast),
            ..with(&[("vae", PlacementChoice::Cpu)])
        };
        let card = MemoryOptions {
            cache: Some(CachePreset::Faster),
            flash_attn: Some(true),
            ..with(&[
                ("vae", PlacementChoice::Gpu),
                ("diffusion", PlacementChoice::Gpu),
            ])
        };
        let merged = request.or(&card);
        assert_eq!(merged.cache, Some(CachePreset::Fast));
        assert_eq!(merged.flash_attn, Some(true));
        assert_eq!(merged.placement["vae"], PlacementChoice::Cpu);
        assert_eq!(merged.placement["diffusion"], PlacementChoice::Gpu);
    }
}
