//! A tiny real ESRGAN upscaler for tests: sd.cpp's RRDBNet (`src/model/upscaler/esrgan.hpp`) with one RRDB block
//! instead of 23, the 64 features and 32 growth channels sd.cpp assumes, and deterministic random weights. sd.cpp
//! reads the block count and the factor from the tensor names (`body.N.`, `conv_up1`, `conv_up2`), so this file
//! loads like a real RealESRGAN model and upscales by 2 or 4. About 0.9 M parameters (1.8 MB as f16).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::gguf::{DType, TensorInfo};
use crate::model::{ensure_built, fnv1a, test_model_cache_dir, write_random_gguf};

const FEATURES: u64 = 64;
const GROWTH: u64 = 32;
const BLOCKS: u32 = 1;
/// Bump when the weights change, so caches rebuild.
const GENERATOR_VERSION: u32 = 1;
const WEIGHT_SEED: u64 = 0xe5_9a11;

fn conv(out: &mut Vec<TensorInfo>, name: &str, inputs: u64, outputs: u64) {
    // ggml's order: kernel width, kernel height, input channels, output channels.
    out.push(TensorInfo {
        name: format!("{name}.weight"),
        ne: vec![3, 3, inputs, outputs],
        dtype: DType::F16,
    });
    out.push(TensorInfo {
        name: format!("{name}.bias"),
        ne: vec![outputs],
        dtype: DType::F16,
    });
}

/// The tensors of an RRDBNet with `BLOCKS` blocks that enlarges by `scale` (2 or 4).
pub fn upscaler_tensors(scale: u32) -> Vec<TensorInfo> {
    assert!(
        scale == 2 || scale == 4,
        "sd.cpp's ESRGAN enlarges by 2 or 4"
    );
    let mut t = Vec::new();
    conv(&mut t, "conv_first", 3, FEATURES);
    for block in 0..BLOCKS {
        for rdb in 1..=3 {
            for k in 1..=5u64 {
                let inputs = FEATURES + (k - 1) * GROWTH;
                let outputs = if k == 5 { FEATURES } else { GROWTH };
                conv(
                    &mut t,
                    &format!("body.{block}.rdb{rdb}.conv{k}"),
                    inputs,
                    outputs,
                );
            }
        }
    }
    conv(&mut t, "conv_body", FEATURES, FEATURES);
    conv(&mut t, "conv_up1", FEATURES, FEATURES);
    if scale == 4 {
        conv(&mut t, "conv_up2", FEATURES, FEATURES);
    }
    conv(&mut t, "conv_hr", FEATURES, FEATURES);
    conv(&mut t, "conv_last", FEATURES, 3);
    t
}

/// The file name of the cached test upscaler that enlarges by `scale`.
pub fn test_upscaler_file(scale: u32) -> String {
    format!("diffugen-test-esrgan-x{scale}.gguf")
}

/// Writes the test upscaler for `scale` to `path` (deterministic).
pub fn build_test_upscaler(path: &Path, scale: u32) -> std::io::Result<()> {
    let tensors = upscaler_tensors(scale);
    let name = format!("diffugen-test-esrgan-x{scale}");
    // Biases a little above zero lift the output off the clamp at 0, so the upscaled image is not black.
    write_random_gguf(path, &name, &tensors, WEIGHT_SEED + u64::from(scale), |n| {
        if n.ends_with(".bias") {
            0.01
        } else {
            0.0
        }
    })
}

/// Writes the test upscaler for `scale` as a PyTorch checkpoint (`.pth`, its state dict under `params_ema` as
/// RealESRGAN's releases have it) with the very weights of [`build_test_upscaler`]'s GGUF: both files upscale to the
/// same pixels.
pub fn build_test_upscaler_pth(path: &Path, scale: u32) -> std::io::Result<()> {
    let mut rng = crate::model::Normal::new(WEIGHT_SEED + u64::from(scale));
    let tensors: Vec<crate::torch::TorchTensor> = upscaler_tensors(scale)
        .into_iter()
        .map(|t| {
            let shift = if t.name.ends_with(".bias") { 0.01 } else { 0.0 };
            let mut f16_bytes = Vec::with_capacity(t.data_bytes() as usize);
            for _ in 0..t.elements() {
                let value = rng.sample() * 0.05 + shift;
                f16_bytes.extend_from_slice(&half::f16::from_f32(value).to_le_bytes());
            }
            crate::torch::TorchTensor {
                name: t.name,
                // PyTorch's order is ggml's reversed.
                shape: t.ne.iter().rev().copied().collect(),
                f16_bytes,
            }
        })
        .collect();
    crate::torch::write_torch_checkpoint(path, &tensors, Some("params_ema"))
}

/// The path of the test upscaler for `scale` (2 or 4), built on first use and cached beside the test model.
pub fn test_upscaler(scale: u32) -> PathBuf {
    static PATHS: OnceLock<std::sync::Mutex<Vec<(u32, PathBuf)>>> = OnceLock::new();
    let paths = PATHS.get_or_init(Default::default);
    let mut paths = paths.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = paths.iter().find(|(s, _)| *s == scale) {
        return path.clone();
    }
    let shape: String = upscaler_tensors(scale)
        .iter()
        .map(|t| format!("{} {:?}\n", t.name, t.ne))
        .collect();
    let dir = test_model_cache_dir().join(format!(
        "esrgan-v{GENERATOR_VERSION}-{:016x}",
        fnv1a(shape.as_bytes())
    ));
    let path = dir.join(test_upscaler_file(scale));
    ensure_built(&path, |p| build_test_upscaler(p, scale))
        .unwrap_or_else(|e| panic!("cannot build the test upscaler at {}: {e}", path.display()));
    paths.push((scale, path.clone()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x4_upscaler_has_both_upsampling_convolutions_and_the_x2_only_one() {
        let names =
            |s| -> Vec<String> { upscaler_tensors(s).into_iter().map(|t| t.name).collect() };
        assert!(names(4).contains(&"conv_up2.weight".to_string()));
        assert!(!names(2).contains(&"conv_up2.weight".to_string()));
        assert!(names(2).contains(&"conv_up1.weight".to_string()));
        let params: u64 = upscaler_tensors(4).iter().map(TensorInfo::elements).sum();
        assert!(
            (800_000..1_000_000).contains(&params),
            "{params} parameters"
        );
    }

    #[test]
    fn sd_cpp_loads_the_test_upscalers_and_enlarges_by_their_factor() {
        for scale in [2, 4] {
            let mut upscaler = diffugen_sd::Upscaler::new(&test_upscaler(scale), Some(2), 0)
                .expect("sd.cpp loads the test upscaler");
            assert_eq!(upscaler.scale(), scale);
            let image = diffugen_sd::RgbImage {
                width: 24,
                height: 16,
                channels: 3,
                data: (0..24 * 16 * 3).map(|i| (i * 7 % 256) as u8).collect(),
            };
            let out = upscaler.upscale(&image).expect("upscaled");
            assert_eq!(
                (out.width, out.height, out.channels),
                (24 * scale, 16 * scale, 3)
            );
            let distinct: std::collections::HashSet<u8> = out.data.iter().copied().collect();
            assert!(
                distinct.len() > 8,
                "the upscaled image is not flat: {distinct:?}"
            );
        }
    }
}
