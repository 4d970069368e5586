//! A minimal GGUF v3 writer (ggml's docs/gguf.md): string metadata, f16/f32 tensors, 32-byte alignment.
//! Enough to build real models and hand-made headers for tests.

use std::io::{self, Write};

const ALIGNMENT: u64 = 32;

/// The element types the writer can emit (values are ggml_type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
}

impl DType {
    /// Bytes of data for `elements` elements.
    pub fn bytes_for(self, elements: u64) -> u64 {
        match self {
            DType::F32 => elements * 4,
            DType::F16 => elements * 2,
            // 32 elements per block: an f16 scale and 32 int8 values.
            DType::Q8_0 => elements.div_ceil(32) * 34,
            // 32 elements per block: an f16 scale and 16 bytes of 4-bit values.
            DType::Q4_0 => elements.div_ceil(32) * 18,
        }
    }
}

/// A tensor's name, dimensions in ggml order (`ne`, fastest-varying first) and element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ne: Vec<u64>,
    pub dtype: DType,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.ne.iter().product()
    }
    pub fn data_bytes(&self) -> u64 {
        self.dtype.bytes_for(self.elements())
    }
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn pad(out: &mut impl Write, written: u64) -> io::Result<u64> {
    let padding = (ALIGNMENT - written % ALIGNMENT) % ALIGNMENT;
    out.write_all(&vec![0u8; padding as usize])?;
    Ok(padding)
}

/// Writes a GGUF file whose data section is a hole: the header is real and the file has the full length the
/// header declares, but no weights take disk space (a sparse file). For planning tests with full-size models.
pub fn write_sparse(path: &std::path::Path, tensors: &[TensorInfo]) -> io::Result<()> {
    let header = header_bytes(&[], tensors);
    let align = |n: u64| n.div_ceil(ALIGNMENT) * ALIGNMENT;
    let total =
        align(header.len() as u64) + tensors.iter().map(|t| align(t.data_bytes())).sum::<u64>();
    let mut file = std::fs::File::create(path)?;
    file.write_all(&header)?;
    file.set_len(total)
}

/// The header of a GGUF file for these tensors, before the padding that aligns the data section.
pub fn header_bytes(metadata: &[(&str, &str)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        push_string(&mut header, key);
        header.extend_from_slice(&8u32.to_le_bytes()); // GGUF_TYPE_STRING
        push_string(&mut header, value);
    }
    let mut offset = 0u64;
    for tensor in tensors {
        push_string(&mut header, &tensor.name);
        header.extend_from_slice(&(tensor.ne.len() as u32).to_le_bytes());
        for dim in &tensor.ne {
            header.extend_from_slice(&dim.to_le_bytes());
        }
        header.extend_from_slice(&(tensor.dtype as u32).to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        offset += tensor.data_bytes().div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    header
}

/// Writes a GGUF file: the header for `tensors`, then each tensor's data from `data(index, &mut writer)`,
/// which must write exactly `tensors[index].data_bytes()` bytes.
pub fn write(
    out: &mut impl Write,
    metadata: &[(&str, &str)],
    tensors: &[TensorInfo],
    mut data: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let header = header_bytes(metadata, tensors);
    out.write_all(&header)?;
    pad(out, header.len() as u64)?;
    for (index, tensor) in tensors.iter().enumerate() {
        data(index, out)?;
        pad(out, tensor.data_bytes())?;
    }
    Ok(())
}
