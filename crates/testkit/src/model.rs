//! Builds and caches the test model: SDXS (512-DS), about 441 M parameters stored as f16 (about 880 MB).
//!
//! Weights are normal(0, 1) * 0.05 from a fixed generator, with norm scales shifted by +1.0 so activations neither
//! vanish nor explode; the output then depends on the generation seed, which the seed tests need (all-zero weights
//! give the same black image for every seed).

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::gguf::{self, DType, TensorInfo};

const MANIFEST: &str = include_str!("../data/sdxs-512-ds.manifest");
/// Bump when the weights change, so caches rebuild.
const GENERATOR_VERSION: u32 = 1;
const WEIGHT_SEED: u64 = 0x5d_1ff_u64 << 20 | 0x42;

/// The file name of the cached test model.
pub const TEST_MODEL_FILE: &str = "diffugen-test-sdxs.gguf";

/// Where the test model is cached: `$DIFFUGEN_TEST_CACHE`, else `~/.cache/diffugen/test-models`.
pub fn test_model_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIFFUGEN_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/diffugen/test-models"),
        None => std::env::temp_dir().join("diffugen-test-models"),
    }
}

/// The path of the test model, building it on first use (once per machine; later calls return the cached file).
///
/// Safe to call from parallel tests and from several test processes at once.
pub fn test_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = test_model_cache_dir().join(format!(
            "v{GENERATOR_VERSION}-{:016x}",
            fnv1a(MANIFEST.as_bytes())
        ));
        let path = dir.join(TEST_MODEL_FILE);
        ensure_built(&path, build_test_model)
            .unwrap_or_else(|e| panic!("cannot build the test model at {}: {e}", path.display()));
        path
    })
    .clone()
}

/// Builds `path` with `build` unless it exists; a lock file beside it keeps parallel tests and processes from
/// building it twice. The file appears whole (written as `.part`, then renamed).
pub(crate) fn ensure_built(
    path: &Path,
    build: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().expect("a file path has a parent");
    fs::create_dir_all(dir)?;
    let lock = File::create(dir.join(".lock"))?;
    lock.lock()?;
    if !path.exists() {
        let started = std::time::Instant::now();
        let tmp = path.with_extension("gguf.part");
        build(&tmp)?;
        fs::rename(&tmp, path)?;
        tracing::info!(path = %path.display(), seconds = started.elapsed().as_secs_f64(), "built a test model");
    }
    lock.unlock()
}

/// The tensors of the test model, parsed from the manifest.
pub fn manifest() -> Vec<TensorInfo> {
    parse_manifest(MANIFEST)
}

/// A manifest's tensors (`name ne0,ne1,...` per line; `#` comments), stored as f16.
pub(crate) fn parse_manifest(text: &str) -> Vec<TensorInfo> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (name, dims) = line.split_once(' ').expect("manifest line: name dims");
            let ne = dims
                .split(',')
                .map(|d| d.parse().expect("manifest dimension"))
                .collect();
            TensorInfo {
                name: name.to_string(),
                ne,
                dtype: DType::F16,
            }
        })
        .collect()
}

pub(crate) fn is_norm_scale(name: &str) -> bool {
    name.ends_with(".weight")
        && (name.contains("norm")
            || name.contains("in_layers.0.")
            || name.contains("out_layers.0."))
}

/// Writes the test model to `path` (deterministic: the same bytes every time).
pub fn build_test_model(path: &Path) -> io::Result<()> {
    let tensors = manifest();
    write_random_gguf(path, "diffugen-test-sdxs", &tensors, WEIGHT_SEED, |name| {
        if is_norm_scale(name) {
            1.0
        } else {
            0.0
        }
    })
}

/// Writes an f16 GGUF of `tensors` with normal(0, 1) * 0.05 weights from the generator seeded with `seed`, each
/// tensor shifted by `shift(name)`; the same bytes every time.
pub(crate) fn write_random_gguf(
    path: &Path,
    general_name: &str,
    tensors: &[TensorInfo],
    seed: u64,
    shift: impl Fn(&str) -> f32,
) -> io::Result<()> {
    write_scaled_gguf(path, general_name, tensors, seed, |t| {
        (0.05, shift(&t.name))
    })
}

/// Writes an f16 GGUF of `tensors` with normal(0, 1) * std + shift weights, `(std, shift) = scale(tensor)`, from the
/// generator seeded with `seed`; the same bytes every time.
pub(crate) fn write_scaled_gguf(
    path: &Path,
    general_name: &str,
    tensors: &[TensorInfo],
    seed: u64,
    scale: impl Fn(&TensorInfo) -> (f32, f32),
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(8 << 20, File::create(path)?);
    let mut rng = Normal::new(seed);
    let mut bytes = Vec::with_capacity(2 << 20);
    gguf::write(
        &mut out,
        &[("general.name", general_name)],
        tensors,
        |index, w| {
            let tensor = &tensors[index];
            let (std, shift) = scale(tensor);
            let mut remaining = tensor.elements();
            while remaining > 0 {
                let chunk = remaining.min(1 << 20);
                bytes.clear();
                for _ in 0..chunk {
                    let value = rng.sample() * std + shift;
                    bytes.extend_from_slice(&half::f16::from_f32(value).to_le_bytes());
                }
                w.write_all(&bytes)?;
                remaining -= chunk;
            }
            Ok(())
        },
    )?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Standard normal samples from SplitMix64 and the Box-Muller transform: fast, portable and reproducible.
pub(crate) struct Normal {
    state: u64,
    spare: Option<f32>,
}

impl Normal {
    pub(crate) fn new(seed: u64) -> Self {
        Normal {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        // 53 random bits in (0, 1].
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub(crate) fn sample(&mut self) -> f32 {
        if let Some(value) = self.spare.take() {
            return value;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        self.spare = Some((radius * angle.sin()) as f32);
        (radius * angle.cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_describes_sdxs_with_about_441m_parameters() {
        let tensors = manifest();
        let params: u64 = tensors.iter().map(TensorInfo::elements).sum();
        assert!(tensors.len() > 600, "{} tensors", tensors.len());
        assert!(
            (430_000_000..450_000_000).contains(&params),
            "{params} parameters"
        );
        assert!(tensors
            .iter()
            .any(|t| t.name == "model.diffusion_model.input_blocks.0.0.weight"));
    }

    #[test]
    fn normal_samples_have_zero_mean_and_unit_variance() {
        let mut rng = Normal::new(7);
        let n = 200_000;
        let samples: Vec<f64> = (0..n).map(|_| f64::from(rng.sample())).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
