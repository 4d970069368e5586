//! ControlNet preprocessors: what turns a picture into a control map. `canny` is sd.cpp's own edge detector (as its
//! CLI runs it); `none` takes a map made elsewhere (depth, pose, lineart) as it is.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::params::ImageInput;
use crate::raw::RawImage;

/// A ControlNet for a render, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// A ControlNet model's id in the models folders (its file name without the extension).
    pub model: String,
    /// The picture to take the control from (or a map made elsewhere, with module `none`).
    pub image: ImageInput,
    /// How the image becomes a control map [default: none].
    #[serde(default)]
    pub module: Option<ControlModule>,
    /// How strongly the map steers, 0..2 [default: 1].
    #[serde(default)]
    pub strength: Option<f32>,
    /// canny: low and high thresholds, 0..255 [default: 100 and 200].
    #[serde(default)]
    pub low_threshold: Option<f64>,
    #[serde(default)]
    pub high_threshold: Option<f64>,
    /// The shorter side the image is brought to before the preprocessor runs, 64..2048 [default: the render's].
    #[serde(default)]
    pub processor_res: Option<u32>,
}

/// A ControlNet resolved for the worker: the model file and the control map at the render's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlSpec {
    pub model: String,
    pub path: PathBuf,
    pub module: ControlModule,
    pub strength: f32,
    /// The control map, RGB, exactly the render's size.
    pub map: RawImage,
}

/// Resolves a control request for a render of `width` × `height` on a model of `family`; each problem goes to
/// `fail` (the field below `control.`).
pub(crate) fn resolve(
    request: &ControlRequest,
    family: Option<diffugen_models::Family>,
    (width, height): (u32, u32),
    library: &diffugen_models::Library,
    fail: &mut dyn FnMut(&str, String),
) -> Option<ControlSpec> {
    let mut ok = true;
    if let Some(family) = family {
        if family != diffugen_models::Family::Sd1 {
            fail(
                "model",
                format!(
                    "ControlNet works with SD 1.x models in this stable-diffusion.cpp; the model is {}",
                    family.as_str()
                ),
            );
            ok = false;
        }
    }
    let controlnets = library.controlnets();
    let path = controlnets
        .iter()
        .find(|e| e.id == request.model.trim())
        .map(|e| PathBuf::from(&e.path));
    if path.is_none() {
        let names: Vec<&str> = controlnets.iter().map(|e| e.id.as_str()).collect();
        fail(
            "model",
            format!(
                "unknown ControlNet model '{}'; available ControlNet models: {}",
                request.model,
                if names.is_empty() {
                    "none (put one in the models folder)".to_string()
                } else {
                    names.join(", ")
                }
            ),
        );
        ok = false;
    }
    let strength = request.strength.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&strength) {
        fail("strength", format!("must be 0 to 2, got {strength}"));
        ok = false;
    }
    let module = request.module.unwrap_or(ControlModule::None);
    let thresholds = match module {
        ControlModule::Canny => match canny_thresholds(
            request.low_threshold.unwrap_or(100.0),
            request.high_threshold.unwrap_or(200.0),
        ) {
            Ok(t) => t,
            Err(e) => {
                let field = if e.starts_with("threshold_b") {
                    "high_threshold"
                } else {
                    "low_threshold"
                };
                fail(
                    field,
                    e.replace("threshold_a", "low_threshold")
                        .replace("threshold_b", "high_threshold"),
                );
                ok = false;
                (0.0, 0.0)
            }
        },
        ControlModule::None => (0.0, 0.0),
    };
    if let Some(res) = request.processor_res {
        if !(64..=2048).contains(&res) {
            fail("processor_res", format!("must be 64 to 2048, got {res}"));
            ok = false;
        }
    }
    let bytes = match &request.image {
        ImageInput::Bytes(bytes) => Some(bytes.clone()),
        ImageInput::Path(path) => match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                fail("image", format!("cannot read {}: {e}", path.display()));
                None
            }
        },
    };
    let resolution = request.processor_res.or(Some(width.min(height)));
    let map = bytes.and_then(
        |bytes| match detect(module, &bytes, resolution, thresholds) {
            Ok(png) => image::load_from_memory(&png)
                .map(|m| crate::params::to_raw(&m, width, height, 3))
                .map_err(|e| fail("image", e.to_string()))
                .ok(),
            Err(e) => {
                fail("image", e);
                None
            }
        },
    );
    match (ok, path, map) {
        (true, Some(path), Some(map)) => Some(ControlSpec {
            model: request.model.trim().to_string(),
            path,
            module,
            strength,
            map,
        }),
        _ => None,
    }
}

/// A preprocessor, by A1111's sd-webui-controlnet name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum ControlModule {
    /// The image is already a control map.
    None,
    /// Edges (white on black) from sd.cpp's canny detector.
    Canny,
}

/// Every module with its A1111 name.
pub const CONTROL_MODULES: &[(ControlModule, &str)] = &[
    (ControlModule::None, "none"),
    (ControlModule::Canny, "canny"),
];

impl ControlModule {
    /// A1111's name.
    pub fn name(self) -> &'static str {
        CONTROL_MODULES
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("none", |(_, n)| *n)
    }
}

impl std::str::FromStr for ControlModule {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CONTROL_MODULES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(m, _)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = CONTROL_MODULES.iter().map(|(_, n)| *n).collect();
                format!(
                    "'{name}' is not available; use one of {} (other preprocessors' maps can be made elsewhere and \
                     sent with `none`)",
                    names.join(", ")
                )
            })
    }
}

/// A1111's canny thresholds (`threshold_a` low, `threshold_b` high: 0..255 of the gradient) as sd.cpp's, which are
/// fractions of the strongest edge.
pub fn canny_thresholds(low: f64, high: f64) -> Result<(f32, f32), String> {
    for (name, value) in [("threshold_a", low), ("threshold_b", high)] {
        if !(0.0..=255.0).contains(&value) {
            return Err(format!("{name} must be 0 to 255, got {value}"));
        }
    }
    if low > high {
        return Err(format!(
            "threshold_a (low, {low}) must not be above threshold_b (high, {high})"
        ));
    }
    Ok(((low / 255.0) as f32, (high / 255.0) as f32))
}

/// Runs `module` on an image (PNG, JPEG or WebP bytes) whose shorter side is first brought to `resolution` (A1111's
/// `processor_res`; `None` keeps its size), and returns the control map as PNG bytes.
pub fn detect(
    module: ControlModule,
    image: &[u8],
    resolution: Option<u32>,
    thresholds: (f32, f32),
) -> Result<Vec<u8>, String> {
    let decoded = crate::params::decode_bounded(image)
        .map_err(|e| format!("not a usable PNG, JPEG or WebP image: {e}"))?;
    let (width, height) = match resolution {
        Some(res) => {
            let short = decoded.width().min(decoded.height()).max(1);
            let scale = f64::from(res) / f64::from(short);
            (
                ((f64::from(decoded.width()) * scale).round() as u32).max(1),
                ((f64::from(decoded.height()) * scale).round() as u32).max(1),
            )
        }
        None => (decoded.width(), decoded.height()),
    };
    let rgb = if (width, height) == (decoded.width(), decoded.height()) {
        decoded.to_rgb8()
    } else {
        decoded
            .resize_exact(width, height, image::imageops::FilterType::Lanczos3)
            .to_rgb8()
    };
    let pixels = diffugen_sd::RgbImage {
        width,
        height,
        channels: 3,
        data: rgb.into_raw(),
    };
    let map = match module {
        ControlModule::None => pixels,
        ControlModule::Canny => {
            diffugen_sd::canny(&pixels, thresholds.0, thresholds.1).map_err(|e| e.to_string())?
        }
    };
    crate::output::encode_png(&map, None).map_err(|e| e.to_string())
}

/// [`detect`] for a quick look: at the image's own size, or 512 px on the shorter side when it is larger.
pub fn preview(
    module: ControlModule,
    image: &[u8],
    thresholds: (f32, f32),
) -> Result<Vec<u8>, String> {
    let short = image::ImageReader::new(std::io::Cursor::new(image))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .map_or(512, |(w, h)| w.min(h).min(512));
    detect(module, image, Some(short.max(1)), thresholds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        // A white square on black: one clear edge all around.
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            let inside = (width / 4..3 * width / 4).contains(&x)
                && (height / 4..3 * height / 4).contains(&y);
            image::Rgb(if inside { [255; 3] } else { [0; 3] })
        });
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn canny_draws_the_edges_of_a_square_at_the_resolution_asked() {
        let (low, high) = canny_thresholds(100.0, 200.0).unwrap();
        let map = detect(ControlModule::Canny, &png(96, 64), Some(128), (low, high)).unwrap();
        let map = image::load_from_memory(&map).unwrap().to_luma8();
        assert_eq!(
            (map.width(), map.height()),
            (192, 128),
            "shorter side brought to 128"
        );
        let white = map.pixels().filter(|p| p.0[0] > 128).count();
        let total = (map.width() * map.height()) as usize;
        assert!(
            white > 100 && white < total / 4,
            "edges, not a filled image: {white} of {total}"
        );
        // The square's inside and the far corner stay black.
        assert_eq!(map.get_pixel(96, 64).0[0], 0);
        assert_eq!(map.get_pixel(2, 2).0[0], 0);
    }

    #[test]
    fn none_keeps_a_map_made_elsewhere_and_modules_are_named_as_a1111_does() {
        let map = detect(ControlModule::None, &png(40, 30), None, (0.1, 0.2)).unwrap();
        let map = image::load_from_memory(&map).unwrap();
        assert_eq!((map.width(), map.height()), (40, 30));
        assert_eq!("Canny".parse::<ControlModule>(), Ok(ControlModule::Canny));
        assert!("depth_midas"
            .parse::<ControlModule>()
            .unwrap_err()
            .contains("none"));
        assert!(canny_thresholds(200.0, 100.0).is_err());
        assert!(canny_thresholds(-5.0, 100.0).is_err());
        assert!(canny_thresholds(0.0, 256.0).is_err());
    }
}
