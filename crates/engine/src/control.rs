//! ControlNet preprocessors: what turns a picture into a control map. `canny` is sd.cpp's own edge detector (as its
//! CLI runs it); `none` takes a map made elsewhere (depth, pose, lineart) as it is.

use serde::{Deserialize, Serialize};

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

/// A1111's canny thresholds (`threshold_a` low, `threshold_b` high: 1..255 of the gradient) as sd.cpp's, which are
/// fractions of the strongest edge.
pub fn canny_thresholds(low: f64, high: f64) -> Result<(f32, f32), String> {
    for (name, value) in [("threshold_a", low), ("threshold_b", high)] {
        if !(1.0..=255.0).contains(&value) {
            return Err(format!("{name} must be 1 to 255, got {value}"));
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
        assert!(canny_thresholds(0.0, 100.0).is_err());
    }
}
