//! A real SD 1.x checkpoint and a ControlNet for it, for the ControlNet specifications: sd.cpp's ControlNet has the
//! full SD 1.x shape (320 channels, 13 control outputs) and adds its outputs to the UNet's, so it needs a full-size
//! SD 1.x UNet beside it — the small SDXS test model cannot take one. Both are built from the tensor lists sd.cpp
//! itself asks for (`data/sd15.manifest`, `data/sd15-controlnet.manifest`, derived by `examples/derive_sd1.rs`)
//! with deterministic random weights, as the SDXS model is: about 1.07 G + 0.36 G parameters as f16 (2.9 GB), built
//! once per machine and cached beside the other test models.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::gguf::TensorInfo;
use crate::model::{
    ensure_built, fnv1a, is_norm_scale, parse_manifest, test_model_cache_dir, write_scaled_gguf,
};

const MODEL_MANIFEST: &str = include_str!("../data/sd15.manifest");
const CONTROL_MANIFEST: &str = include_str!("../data/sd15-controlnet.manifest");
/// Bump when the weights change, so caches rebuild.
const GENERATOR_VERSION: u32 = 1;

fn cached(file: &str, manifest: &'static str, seed: u64, name: &'static str) -> PathBuf {
    let dir = test_model_cache_dir().join(format!(
        "sd15-v{GENERATOR_VERSION}-{:016x}",
        fnv1a(manifest.as_bytes())
    ));
    let path = dir.join(file);
    ensure_built(&path, |p| {
        let tensors = parse_manifest(manifest);
        write_scaled_gguf(p, name, &tensors, seed, scale)
    })
    .unwrap_or_else(|e| panic!("cannot build {}: {e}", path.display()));
    path
}

/// Weights that keep activations in range through a deep network: each matrix or kernel scaled by 1/sqrt(its
/// inputs) (so a layer neither grows nor shrinks what it reads), norm scales about 1, biases and 1-D tensors small.
fn scale(tensor: &TensorInfo) -> (f32, f32) {
    if is_norm_scale(&tensor.name) {
        return (0.02, 1.0);
    }
    if tensor.ne.len() < 2 {
        return (0.02, 0.0);
    }
    // ggml order: the last dimension is the outputs; the rest are what each output reads.
    let inputs: u64 = tensor.ne[..tensor.ne.len() - 1].iter().product();
    (0.5 / (inputs.max(1) as f32).sqrt(), 0.0)
}

/// The SD 1.x test checkpoint (UNet, CLIP-L, VAE), built on first use.
pub fn test_sd15() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        cached(
            "diffugen-test-sd15.gguf",
            MODEL_MANIFEST,
            0x5d15,
            "diffugen-test-sd15",
        )
    })
    .clone()
}

/// A ControlNet for [`test_sd15`], built on first use.
pub fn test_controlnet() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        cached(
            "diffugen-test-sd15-controlnet.gguf",
            CONTROL_MANIFEST,
            0xc0_27,
            "diffugen-test-sd15-controlnet",
        )
    })
    .clone()
}
