//! Upscaling: images enlarged by an ESRGAN model in sd.cpp (`new_upscaler_ctx` / `upscale`, tiled), or by Lanczos /
//! nearest neighbour without one. A job of its own kind ([`crate::Work::Upscale`]) through the same queue and
//! worker as a render, with progress by tile.
//!
//! A model enlarges by its own factor (2 or 4); for another factor it runs as many times as it takes to reach it and
//! the result is brought to the exact size with Lanczos, as AUTOMATIC1111 does.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::output::Record;
use crate::params::{FieldError, ParamErrors};
use crate::raw::RawImage;

/// The largest factor a client may ask for.
pub const MAX_SCALE: f64 = 8.0;
/// The longest side an upscaled image may have.
pub const MAX_SIDE: u32 = 8192;
/// The tile side an ESRGAN model processes at a time (sd.cpp's own default); larger images are split into tiles.
pub const DEFAULT_TILE: u32 = 128;
/// The most images one upscale job takes.
pub const MAX_IMAGES: usize = 16;
/// The most output pixels one upscale job makes in all (two 8192×8192 images): the worker holds every result in
/// memory until the job ends.
pub const MAX_JOB_PIXELS: u64 = 2 * 8192 * 8192;

/// What enlarges the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Upscaler {
    /// Lanczos resampling (sharp, no model).
    Lanczos,
    /// Nearest neighbour (pixel art; no model).
    Nearest,
    /// An ESRGAN model from the models folders, by id (its file name without the extension).
    Model { id: String, path: PathBuf },
}

impl Upscaler {
    /// The name a client uses and the record keeps: `Lanczos`, `Nearest`, or the model's id.
    pub fn name(&self) -> &str {
        match self {
            Upscaler::Lanczos => "Lanczos",
            Upscaler::Nearest => "Nearest",
            Upscaler::Model { id, .. } => id,
        }
    }

    /// Resolves a name (`lanczos`, `nearest`, any case; else an upscaling model's id in `library`).
    pub fn resolve(name: &str, library: &diffugen_models::Library) -> Result<Upscaler, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "lanczos" => Ok(Upscaler::Lanczos),
            "nearest" => Ok(Upscaler::Nearest),
            _ => library
                .resolve_upscaler(name.trim())
                .map(|path| Upscaler::Model {
                    id: path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| name.to_string()),
                    path,
                })
                .map_err(|e| format!("{e} (or `lanczos`, `nearest`)")),
        }
    }
}

/// Every upscaler name a client may use: `Lanczos`, `Nearest`, then the upscaling models in `library`.
pub fn upscaler_names(library: &diffugen_models::Library) -> Vec<String> {
    let mut names = vec!["Lanczos".to_string(), "Nearest".to_string()];
    names.extend(library.upscalers().into_iter().map(|e| e.id));
    names
}

/// How much to enlarge, as a client asks for it (the images come separately).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpscaleRequest {
    /// `lanczos`, `nearest`, or an upscaling model's id [default: lanczos].
    pub upscaler: Option<String>,
    /// The factor, above 1 and up to 8 [default: 2]. Not with `width`/`height`.
    pub scale: Option<f64>,
    /// The exact final size (both, each at least the image's own); not with `scale`.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The tile side a model processes at a time, 32–1024 [default: 128].
    pub tile_size: Option<u32>,
}

/// One image to enlarge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpscaleInput {
    pub image: RawImage,
    /// The image's own DiffuGen record, when it had one: the result keeps its prompt, seed and parameters.
    pub origin: Option<Record>,
    /// Where it came from, for the result's record: `gallery:<id>`, a file name, or nothing for pasted bytes.
    pub source: Option<String>,
}

/// An image as a client sends it: the file's bytes and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceImage {
    pub bytes: Vec<u8>,
    pub source: Option<String>,
}

/// A validated upscale job: nothing left to default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpscaleSpec {
    pub inputs: Vec<UpscaleInput>,
    pub upscaler: Upscaler,
    /// The factor asked for (`None`: an exact `size`).
    pub scale: Option<f64>,
    /// The exact final size asked for.
    pub size: Option<(u32, u32)>,
    pub tile_size: u32,
    /// CPU threads (`None`: sd.cpp's choice).
    #[serde(default)]
    pub threads: Option<u32>,
}

/// What the record of an upscaled image says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpscaleRecord {
    pub upscaler: String,
    /// The final width over the source's (2 decimals).
    pub scale: f64,
    pub source_width: u32,
    pub source_height: u32,
    /// `gallery:<id>` or a file name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl UpscaleSpec {
    /// The final size of `input`.
    pub fn output_size(&self, input: &RawImage) -> (u32, u32) {
        target_size(self.size, self.scale, (input.width, input.height))
    }

    /// How many times a model enlarging by `model_scale` runs on `input` to reach its final size.
    pub fn passes(&self, input: &RawImage, model_scale: u32) -> u32 {
        let (width, height) = self.output_size(input);
        let needed = (f64::from(width) / f64::from(input.width.max(1)))
            .max(f64::from(height) / f64::from(input.height.max(1)));
        let step = f64::from(model_scale.max(2));
        let mut passes = 1;
        let mut reached = step;
        while reached + 1e-9 < needed {
            passes += 1;
            reached *= step;
        }
        passes
    }

    /// A short description for the queue: `Upscale ×2 (Lanczos)`.
    pub fn label(&self) -> String {
        let factor = match (self.size, self.scale) {
            (Some((w, h)), _) => format!("to {w}×{h}"),
            (None, scale) => format!("×{}", trim(scale.unwrap_or(2.0))),
        };
        format!("Upscale {factor} ({})", self.upscaler.name())
    }

    /// The prompt the queue shows: the first image's own, else the label.
    pub fn prompt(&self) -> String {
        self.inputs
            .first()
            .and_then(|i| i.origin.as_ref())
            .map(|o| o.prompt.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| self.label())
    }

    /// The VRAM the job needs at its peak with a model on the GPU: its weights and one tile's activations (64
    /// features at the enlarged size, a dozen buffers alive at once). Lanczos and nearest need none.
    pub fn needed_vram(&self) -> f64 {
        match &self.upscaler {
            Upscaler::Model { path, .. } => {
                let weights = std::fs::metadata(path).map_or(70e6, |m| m.len() as f64);
                let tile = f64::from(self.tile_size) * 4.0;
                weights + tile * tile * 64.0 * 4.0 * 12.0 + 350.0 * 1024.0 * 1024.0
            }
            Upscaler::Lanczos | Upscaler::Nearest => 0.0,
        }
    }
}

/// The final size of an image of `source` size: the exact `size` asked, else `scale` [default: 2] times it.
fn target_size(size: Option<(u32, u32)>, scale: Option<f64>, source: (u32, u32)) -> (u32, u32) {
    size.unwrap_or_else(|| {
        let scale = scale.unwrap_or(2.0);
        (
            (f64::from(source.0) * scale).round() as u32,
            (f64::from(source.1) * scale).round() as u32,
        )
    })
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The factor a record states, from the final and the source widths.
pub fn effective_scale(width: u32, source_width: u32) -> f64 {
    (f64::from(width) / f64::from(source_width.max(1)) * 100.0).round() / 100.0
}

/// Validates an upscale request and its images into an [`UpscaleSpec`], reporting every invalid field (images as
/// `image` for one, `images[i]` for several).
pub fn validate(
    request: &UpscaleRequest,
    images: &[SourceImage],
    library: &diffugen_models::Library,
) -> Result<UpscaleSpec, ParamErrors> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    let upscaler = match request.upscaler.as_deref().map(str::trim) {
        None | Some("") => Some(Upscaler::Lanczos),
        Some(name) => match Upscaler::resolve(name, library) {
            Ok(upscaler) => Some(upscaler),
            Err(message) => {
                fail("upscaler", message);
                None
            }
        },
    };
    if let Some(scale) = request.scale {
        if !(scale > 1.0 && scale <= MAX_SCALE && scale.is_finite()) {
            fail(
                "scale",
                format!("must be above 1 and at most {MAX_SCALE}, got {scale}"),
            );
        }
    }
    let size = match (request.width, request.height, request.scale) {
        (None, None, _) => None,
        (Some(_), Some(_), Some(_)) => {
            fail(
                "scale",
                "give either a scale or a width and height, not both".into(),
            );
            None
        }
        (Some(w), Some(h), None) => Some((w, h)),
        (Some(_), None, _) => {
            fail("height", "is required with width".into());
            None
        }
        (None, Some(_), _) => {
            fail("width", "is required with height".into());
            None
        }
    };
    let tile_size = request.tile_size.unwrap_or(DEFAULT_TILE);
    if !(32..=1024).contains(&tile_size) {
        fail(
            "tile_size",
            format!("must be 32 to 1024 pixels, got {tile_size}"),
        );
    }
    if images.is_empty() {
        fail("image", "an image to upscale is required".into());
    }
    if images.len() > MAX_IMAGES {
        fail(
            "images",
            format!("at most {MAX_IMAGES} images per job, got {}", images.len()),
        );
    }
    let mut inputs = Vec::with_capacity(images.len());
    for (index, image) in images.iter().enumerate() {
        let field = if images.len() == 1 {
            "image".to_string()
        } else {
            format!("images[{index}]")
        };
        let decoded = match crate::params::decode_bounded(&image.bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                fail(&field, format!("not a usable PNG, JPEG or WebP image: {e}"));
                continue;
            }
        };
        let (width, height) = (decoded.width(), decoded.height());
        let (out_w, out_h) = target_size(size, request.scale, (width, height));
        if let Some((w, h)) = size {
            if w < width || h < height {
                fail(
                    if w < width { "width" } else { "height" },
                    format!("{w}x{h} is smaller than the {field}'s own {width}x{height}; upscaling only enlarges"),
                );
                continue;
            }
        }
        if out_w > MAX_SIDE || out_h > MAX_SIDE {
            fail(
                &field,
                format!(
                    "is {width}x{height}; upscaled it would be {out_w}x{out_h}, and sides of up to {MAX_SIDE} \
                     pixels are allowed: ask for a smaller scale"
                ),
            );
            continue;
        }
        let origin = diffugen_pngtext::read_bytes(&image.bytes)
            .ok()
            .and_then(|texts| {
                texts
                    .into_iter()
                    .find(|(key, _)| key == crate::output::RECORD_KEY)
            })
            .and_then(|(_, json)| serde_json::from_str::<Record>(&json).ok());
        inputs.push(UpscaleInput {
            image: crate::params::to_raw(&decoded, width, height, 3),
            origin,
            source: image.source.clone(),
        });
    }
    let total: u64 = inputs
        .iter()
        .map(|i| {
            let (w, h) = target_size(size, request.scale, (i.image.width, i.image.height));
            u64::from(w) * u64::from(h)
        })
        .sum();
    if total > MAX_JOB_PIXELS {
        errors.push(FieldError {
            field: if images.len() == 1 { "image" } else { "images" }.into(),
            message: format!(
                "the upscaled images would be {:.0} megapixels in all; one job makes at most {:.0} (two 8192x8192 \
                 images): send fewer images per job or a smaller scale",
                total as f64 / 1e6,
                MAX_JOB_PIXELS as f64 / 1e6
            ),
        });
    }
    if !errors.is_empty() {
        return Err(ParamErrors(errors));
    }
    Ok(UpscaleSpec {
        inputs,
        upscaler: upscaler.expect("no error means the upscaler resolved"),
        scale: if size.is_some() {
            None
        } else {
            Some(request.scale.unwrap_or(2.0))
        },
        size,
        tile_size,
        threads: None,
    })
}

/// Resizes to exactly `width` × `height` with Lanczos or nearest neighbour.
pub fn resample(
    image: &diffugen_sd::RgbImage,
    width: u32,
    height: u32,
    nearest: bool,
) -> Result<diffugen_sd::RgbImage, String> {
    let buffer = image::RgbImage::from_raw(image.width, image.height, image.data.clone())
        .ok_or("the image's pixels do not match its size")?;
    let filter = if nearest {
        image::imageops::FilterType::Nearest
    } else {
        image::imageops::FilterType::Lanczos3
    };
    let resized = image::imageops::resize(&buffer, width, height, filter);
    Ok(diffugen_sd::RgbImage {
        width,
        height,
        channels: 3,
        data: resized.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scale: Option<f64>, size: Option<(u32, u32)>) -> UpscaleSpec {
        UpscaleSpec {
            inputs: Vec::new(),
            upscaler: Upscaler::Lanczos,
            scale,
            size,
            tile_size: DEFAULT_TILE,
            threads: None,
        }
    }

    fn raw(width: u32, height: u32) -> RawImage {
        RawImage {
            width,
            height,
            channels: 3,
            data_base64: String::new(),
        }
    }

    #[test]
    fn a_x4_model_runs_once_for_x2_to_x4_and_twice_up_to_x8() {
        let image = raw(64, 48);
        assert_eq!(spec(Some(2.0), None).passes(&image, 4), 1);
        assert_eq!(spec(Some(4.0), None).passes(&image, 4), 1);
        assert_eq!(spec(Some(6.0), None).passes(&image, 4), 2);
        assert_eq!(spec(Some(4.0), None).passes(&image, 2), 2);
        assert_eq!(spec(None, Some((200, 100))).passes(&image, 2), 2);
    }

    #[test]
    fn the_final_size_is_the_scale_times_the_image_or_the_exact_size_asked() {
        assert_eq!(spec(Some(2.5), None).output_size(&raw(64, 48)), (160, 120));
        assert_eq!(
            spec(None, Some((300, 200))).output_size(&raw(64, 48)),
            (300, 200)
        );
        assert_eq!(spec(Some(2.0), None).label(), "Upscale ×2 (Lanczos)");
    }

    fn png(width: u32, height: u32) -> SourceImage {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(width, height)
            .write_to(&mut bytes, image::ImageFormat::Png)
            .unwrap();
        SourceImage {
            bytes: bytes.into_inner(),
            source: None,
        }
    }

    #[test]
    fn a_job_that_would_make_more_than_two_8192_images_worth_of_pixels_is_refused_naming_images() {
        let library = diffugen_models::Library::new(std::env::temp_dir().join("no-models-here"));
        let request = UpscaleRequest {
            scale: Some(8.0),
            ..UpscaleRequest::default()
        };
        // Three 1024x1024 images at x8: 3 x 67 MP.
        let three = vec![png(1024, 1024), png(1024, 1024), png(1024, 1024)];
        let errors = validate(&request, &three, &library).unwrap_err();
        assert_eq!(errors.first().field, "images");
        assert!(
            errors.first().message.contains("201 megapixels"),
            "{errors}"
        );
        // Two of them are allowed.
        assert!(validate(&request, &three[..2], &library).is_ok());
    }

    #[test]
    fn lanczos_and_nearest_resample_to_the_exact_size() {
        let image = diffugen_sd::RgbImage {
            width: 3,
            height: 2,
            channels: 3,
            data: (0..18).map(|v| v * 10).collect(),
        };
        let out = resample(&image, 7, 5, false).unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (7, 5, 105));
        let nearest = resample(&image, 6, 4, true).unwrap();
        assert_eq!(&nearest.data[..3], &image.data[..3]);
    }
}
