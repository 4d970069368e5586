//! The hires fix: a second, larger pass over a text-to-image result, as A1111 has it and the vendored sd.cpp runs it
//! (`sd_hires_params_t`). What a client asks for, and the pass resolved for the worker.

use serde::{Deserialize, Serialize};

/// How the first pass is enlarged before the hires pass (A1111's "Hires upscaler").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum HiresUpscaler {
    /// In latent space (bilinear): A1111's "Latent", the usual choice.
    #[default]
    Latent,
    LatentNearest,
    LatentNearestExact,
    LatentAntialiased,
    LatentBicubic,
    LatentBicubicAntialiased,
    /// Decoded, enlarged as pixels with Lanczos, encoded again.
    Lanczos,
    /// Decoded, enlarged as pixels (nearest neighbour), encoded again.
    Nearest,
    /// Decoded, enlarged by an upscaling (ESRGAN) model from the models folders (`model`), encoded again: A1111's
    /// "R-ESRGAN 4x+" and the like.
    Model,
}

/// Every hires upscaler with its A1111 name.
pub const HIRES_UPSCALERS: &[(HiresUpscaler, &str)] = &[
    (HiresUpscaler::Latent, "Latent"),
    (HiresUpscaler::LatentNearest, "Latent (nearest)"),
    (HiresUpscaler::LatentNearestExact, "Latent (nearest-exact)"),
    (HiresUpscaler::LatentAntialiased, "Latent (antialiased)"),
    (HiresUpscaler::LatentBicubic, "Latent (bicubic)"),
    (
        HiresUpscaler::LatentBicubicAntialiased,
        "Latent (bicubic antialiased)",
    ),
    (HiresUpscaler::Lanczos, "Lanczos"),
    (HiresUpscaler::Nearest, "Nearest"),
];

impl HiresUpscaler {
    /// A1111's name for it (`Latent (nearest)`), as written into `parameters` (a model upscaler is written by the
    /// model's name instead).
    pub fn a1111_name(self) -> &'static str {
        if self == HiresUpscaler::Model {
            return "ESRGAN";
        }
        HIRES_UPSCALERS
            .iter()
            .find(|(u, _)| *u == self)
            .map_or("Latent", |(_, name)| name)
    }

    /// The wire name (`latent_nearest`).
    pub fn name(self) -> &'static str {
        match self {
            HiresUpscaler::Latent => "latent",
            HiresUpscaler::LatentNearest => "latent_nearest",
            HiresUpscaler::LatentNearestExact => "latent_nearest_exact",
            HiresUpscaler::LatentAntialiased => "latent_antialiased",
            HiresUpscaler::LatentBicubic => "latent_bicubic",
            HiresUpscaler::LatentBicubicAntialiased => "latent_bicubic_antialiased",
            HiresUpscaler::Lanczos => "lanczos",
            HiresUpscaler::Nearest => "nearest",
            HiresUpscaler::Model => "model",
        }
    }

    /// The upscaler A1111 names `name` (case-insensitive).
    pub fn from_a1111(name: &str) -> Option<HiresUpscaler> {
        HIRES_UPSCALERS
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(u, _)| *u)
    }
}

impl std::str::FromStr for HiresUpscaler {
    type Err = String;
    fn from_str(text: &str) -> Result<HiresUpscaler, String> {
        HIRES_UPSCALERS
            .iter()
            .map(|(u, _)| *u)
            .chain([HiresUpscaler::Model])
            .find(|u| u.name() == text.trim().to_ascii_lowercase())
            .or_else(|| HiresUpscaler::from_a1111(text))
            .ok_or_else(|| {
                let names: Vec<&str> = HIRES_UPSCALERS.iter().map(|(u, _)| u.name()).collect();
                format!(
                    "'{text}' is not a hires upscaler; use one of {}, or an upscaling model's id",
                    names.join(", ")
                )
            })
    }
}

/// A second, larger pass over a text-to-image result (A1111's "hires fix"): the final size as `scale` times the
/// first pass or as `width` and `height`; the rest defaults to a latent upscale, the first pass's steps and 0.7.
/// `model` names an upscaling (ESRGAN) model from the models folders, which enlarges the first pass (`upscaler`
/// then is `model` or left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HiresRequest {
    pub scale: Option<f32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub upscaler: Option<HiresUpscaler>,
    pub model: Option<String>,
    pub steps: Option<u32>,
    pub denoising_strength: Option<f32>,
}

/// The hires pass as the worker runs it, every value resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HiresSpec {
    pub upscaler: HiresUpscaler,
    /// The upscaling model of a `Model` upscaler: its id and file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<HiresModel>,
    /// The final size.
    pub width: u32,
    pub height: u32,
    /// The first pass's size times this (for the record; 1 decimal).
    pub scale: f32,
    pub steps: u32,
    pub denoising_strength: f32,
}

/// The upscaling (ESRGAN) model a hires pass enlarges with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HiresModel {
    /// Its id in the models folders (written into `parameters` as the upscaler's name).
    pub id: String,
    /// Its file, for the worker; left out of an image's record (see [`HiresSpec::for_record`]).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub path: std::path::PathBuf,
}

fn path_is_empty(path: &std::path::Path) -> bool {
    path.as_os_str().is_empty()
}

impl HiresSpec {
    /// The pass as an image's record keeps it: the upscaling model by id, not by where it lies on this disk.
    pub fn for_record(&self) -> HiresSpec {
        let mut spec = self.clone();
        if let Some(model) = &mut spec.model {
            model.path = std::path::PathBuf::new();
        }
        spec
    }

    /// The upscaler's name as A1111 writes it in `parameters` (the model's id for a model upscaler).
    pub fn upscaler_name(&self) -> &str {
        match &self.model {
            Some(model) => &model.id,
            None => self.upscaler.a1111_name(),
        }
    }
}

/// Resolves a hires request against the first pass (`width` × `height`, `steps`, the model's size `multiple`): the
/// final size rounded to the multiple and never clamped, the defaults filled. Each problem goes to `report` (the
/// field below `hires.`); `None` when there was one.
pub(crate) fn resolve(
    hires: &HiresRequest,
    (width, height): (u32, u32),
    steps: u32,
    multiple: u32,
    has_init_image: bool,
    library: &diffugen_models::Library,
    report: &mut dyn FnMut(&str, String),
) -> Option<HiresSpec> {
    let mut failed = false;
    let mut fail = |field: &str, message: String| {
        report(field, message);
        failed = true;
    };
    if has_init_image {
        fail(
            "scale",
            "a hires pass is for text-to-image; for a larger image-to-image result ask for its size".into(),
        );
    }
    let scale = hires.scale.filter(|s| s.is_finite());
    // Rounded to the size multiple, never clamped: a size out of range is refused below, not changed.
    let side = |value: f64| (value / f64::from(multiple)).round() as u32 * multiple;
    let (w, h) = (f64::from(width), f64::from(height));
    let (target_w, target_h) = match (hires.width, hires.height, scale) {
        (Some(tw), Some(th), _) => (tw, th),
        (Some(tw), None, _) => (tw, side(f64::from(tw) * h / w)),
        (None, Some(th), _) => (side(f64::from(th) * w / h), th),
        (None, None, Some(scale)) if (1.0..=4.0).contains(&scale) => {
            (side(w * f64::from(scale)), side(h * f64::from(scale)))
        }
        (None, None, Some(scale)) => {
            fail("scale", format!("must be from 1 to 4, got {scale}"));
            (width, height)
        }
        (None, None, None) => {
            fail(
                "scale",
                "give the final size: scale (e.g. 2) or width and height".into(),
            );
            (width, height)
        }
    };
    for (field, value, first) in [("width", target_w, width), ("height", target_h, height)] {
        if !(64..=2048).contains(&value) || !value.is_multiple_of(multiple) || value < first {
            fail(
                field,
                format!(
                    "the hires size must be a multiple of {multiple} from the first pass's {first} to 2048, \
                     got {value}"
                ),
            );
        }
    }
    let upscaler = match (hires.upscaler, hires.model.as_deref().map(str::trim)) {
        (None | Some(HiresUpscaler::Model), Some(name)) if !name.is_empty() => HiresUpscaler::Model,
        (Some(HiresUpscaler::Model), _) => {
            fail(
                "model",
                "the model upscaler needs the upscaling model's id in hires.model (see the upscalers list)".into(),
            );
            HiresUpscaler::Model
        }
        (Some(other), Some(name)) if !name.is_empty() => {
            fail(
                "model",
                format!(
                    "an upscaling model enlarges the first pass in place of the '{}' upscaler; leave out one of them",
                    other.name()
                ),
            );
            other
        }
        (upscaler, _) => upscaler.unwrap_or_default(),
    };
    let model = match hires.model.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() && upscaler == HiresUpscaler::Model => {
            match library.resolve_upscaler(name) {
                Ok(path) => Some(HiresModel {
                    // The id as the folder spells it (the lookup ignores case).
                    id: path
                        .file_stem()
                        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned()),
                    path,
                }),
                Err(e) => {
                    fail("model", e.to_string());
                    None
                }
            }
        }
        _ => None,
    };
    let hires_steps = hires.steps.unwrap_or(steps);
    if !(1..=150).contains(&hires_steps) {
        fail("steps", format!("must be from 1 to 150, got {hires_steps}"));
    }
    let denoise = hires.denoising_strength.unwrap_or(0.7);
    if !(denoise > 0.0 && denoise <= 1.0) {
        fail(
            "denoising_strength",
            format!("must be above 0 and at most 1, got {denoise}"),
        );
    }
    (!failed).then(|| HiresSpec {
        upscaler,
        model,
        width: target_w,
        height: target_h,
        scale: (f64::from(target_w) / f64::from(width) * 10.0).round() as f32 / 10.0,
        steps: hires_steps,
        denoising_strength: denoise,
    })
}
