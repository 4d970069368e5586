//! A textual-inversion embedding for the test model: `vectors` rows of CLIP-L's 768 hidden values, as sd.cpp reads
//! any embedding file (one tensor whose first dimension is the text encoder's hidden size). Stored as f32, as A1111's
//! embeddings are: sd.cpp runs CLIP in f32 when embeddings are given and copies an embedding's bytes as they are.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::gguf::{self, DType, TensorInfo};
use crate::model::Normal;

/// Writes an embedding of `vectors` tokens with weights drawn from `seed` (deterministic) at `path`, stored as
/// `dtype` (`F32` or `F16`).
pub fn write_test_embedding(
    path: &Path,
    vectors: u64,
    seed: u64,
    dtype: DType,
) -> std::io::Result<()> {
    assert!(matches!(dtype, DType::F32 | DType::F16), "f32 or f16");
    let tensors = [TensorInfo {
        name: "emb_params".into(),
        ne: vec![768, vectors],
        dtype,
    }];
    let mut rng = Normal::new(seed);
    let mut out = BufWriter::new(File::create(path)?);
    gguf::write(
        &mut out,
        &[("general.name", "diffugen-test-embedding")],
        &tensors,
        |_, w| {
            // About the size of a word's own token embedding in the test model.
            let bytes: Vec<u8> = (0..768 * vectors)
                .flat_map(|_| {
                    let value = rng.sample() * 0.05;
                    match dtype {
                        DType::F16 => half::f16::from_f32(value).to_le_bytes().to_vec(),
                        _ => value.to_le_bytes().to_vec(),
                    }
                })
                .collect();
            w.write_all(&bytes)
        },
    )?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}
