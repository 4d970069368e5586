//! Reads the tensor table of a GGUF, safetensors or PyTorch zip checkpoint (see `torch`) — names, shapes, types — and
//! checks that the file is long enough to hold the data it declares. Never reads weights; never trusts a count or
//! length from the file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The file formats sd.cpp loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Safetensors,
    /// A PyTorch checkpoint (`.pth`, `.ckpt`, `.pt`) as `torch.save` writes it since PyTorch 1.6: a zip archive.
    Torch,
}

/// One tensor as declared in a header. `shape` is in PyTorch order (slowest-varying first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    /// ggml's type name: `f32`, `f16`, `bf16`, `q8_0`, `q4_k`, ...
    pub dtype: String,
}

impl Tensor {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A parsed header.
#[derive(Debug, Clone)]
pub struct Header {
    pub format: Format,
    pub tensors: Vec<Tensor>,
    pub file_size: u64,
}

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF, safetensors or PyTorch checkpoint file")]
    UnknownFormat,
    #[error("damaged header: {0}")]
    Damaged(String),
    #[error("the file is truncated: its header declares {expected} bytes of data, but the file has {actual} bytes")]
    Truncated { expected: u64, actual: u64 },
}

const MAX_TENSORS: u64 = 1_000_000;
const MAX_STRING: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;
const MAX_SAFETENSORS_HEADER: u64 = 256 << 20;

/// Reads the header of `path`.
pub fn read(path: &Path) -> Result<Header, HeaderError> {
    let file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 9];
    if file_size < 9 {
        return Err(HeaderError::UnknownFormat);
    }
    reader.read_exact(&mut magic)?;
    reader.seek(SeekFrom::Start(0))?;
    if &magic[..4] == b"GGUF" {
        read_gguf(&mut reader, file_size)
    } else if is_safetensors(&magic) {
        read_safetensors(&mut reader, file_size)
    } else if crate::torch::is_zip(&magic) {
        crate::torch::read(&mut reader, file_size)
    } else {
        Err(HeaderError::UnknownFormat)
    }
}

/// A safetensors file starts with the little-endian length of its JSON header, then the JSON object itself.
fn is_safetensors(magic: &[u8; 9]) -> bool {
    let len = u64::from_le_bytes(magic[..8].try_into().expect("8 bytes"));
    (2..=MAX_SAFETENSORS_HEADER).contains(&len) && magic[8] == b'{'
}

struct Gguf<'a, R> {
    reader: &'a mut R,
}

impl<R: Read> Gguf<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|_| HeaderError::Damaged("header ends early".into()))?;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String, HeaderError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(HeaderError::Damaged(format!("a string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|_| HeaderError::Damaged("header ends early".into()))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        let copied = std::io::copy(&mut self.reader.by_ref().take(n), &mut std::io::sink())?;
        if copied != n {
            return Err(HeaderError::Damaged("header ends early".into()));
        }
        Ok(())
    }
    fn skip_value(&mut self, kind: u32, depth: u32) -> Result<(), HeaderError> {
        match kind {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => self.string().map(drop),
            9 if depth == 0 => {
                let inner = self.u32()?;
                let count = self.u64()?;
                if count > MAX_STRING * 64 {
                    return Err(HeaderError::Damaged(format!("an array of {count} values")));
                }
                for _ in 0..count {
                    self.skip_value(inner, depth + 1)?;
                }
                Ok(())
            }
            other => Err(HeaderError::Damaged(format!(
                "unknown metadata type {other}"
            ))),
        }
    }
}

/// Bytes per block and elements per block for ggml types (`None`: a type this reader does not size).
fn ggml_type(id: u32) -> (&'static str, Option<(u64, u64)>) {
    match id {
        0 => ("f32", Some((4, 1))),
        1 => ("f16", Some((2, 1))),
        2 => ("q4_0", Some((18, 32))),
        3 => ("q4_1", Some((20, 32))),
        6 => ("q5_0", Some((22, 32))),
        7 => ("q5_1", Some((24, 32))),
        8 => ("q8_0", Some((34, 32))),
        9 => ("q8_1", Some((36, 32))),
        10 => ("q2_k", Some((84, 256))),
        11 => ("q3_k", Some((110, 256))),
        12 => ("q4_k", Some((144, 256))),
        13 => ("q5_k", Some((176, 256))),
        14 => ("q6_k", Some((210, 256))),
        15 => ("q8_k", Some((292, 256))),
        16 => ("iq2_xxs", Some((66, 256))),
        17 => ("iq2_xs", Some((74, 256))),
        18 => ("iq3_xxs", Some((98, 256))),
        19 => ("iq1_s", Some((50, 256))),
        20 => ("iq4_nl", Some((18, 32))),
        21 => ("iq3_s", Some((110, 256))),
        22 => ("iq2_s", Some((82, 256))),
        23 => ("iq4_xs", Some((136, 256))),
        24 => ("i8", Some((1, 1))),
        25 => ("i16", Some((2, 1))),
        26 => ("i32", Some((4, 1))),
        27 => ("i64", Some((8, 1))),
        28 => ("f64", Some((8, 1))),
        29 => ("iq1_m", Some((56, 256))),
        30 => ("bf16", Some((2, 1))),
        34 => ("tq1_0", Some((54, 256))),
        35 => ("tq2_0", Some((66, 256))),
        39 => ("mxfp4", Some((17, 32))),
        _ => ("unknown", None),
    }
}

fn read_gguf<R: Read + Seek>(reader: &mut R, file_size: u64) -> Result<Header, HeaderError> {
    let mut g = Gguf { reader };
    g.skip(4)?;
    let version = g.u32()?;
    if !(2..=3).contains(&version) {
        return Err(HeaderError::Damaged(format!(
            "unsupported GGUF version {version}"
        )));
    }
    let tensor_count = g.u64()?;
    let kv_count = g.u64()?;
    if tensor_count > MAX_TENSORS || kv_count > MAX_TENSORS {
        return Err(HeaderError::Damaged(format!(
            "{tensor_count} tensors and {kv_count} metadata entries"
        )));
    }
    let mut alignment = 32u64;
    for _ in 0..kv_count {
        let key = g.string()?;
        let kind = g.u32()?;
        if key == "general.alignment" && kind == 4 {
            alignment = u64::from(g.u32()?).max(1);
        } else {
            g.skip_value(kind, 0)?;
        }
    }
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut data_end = 0u64;
    for _ in 0..tensor_count {
        let name = g.string()?;
        let dims = g.u32()?;
        if dims > MAX_DIMS {
            return Err(HeaderError::Damaged(format!(
                "tensor '{name}' has {dims} dimensions"
            )));
        }
        let mut ne = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            ne.push(g.u64()?);
        }
        let (dtype, block) = ggml_type(g.u32()?);
        let offset = g.u64()?;
        let elements = ne.iter().try_fold(1u64, |a, b| a.checked_mul(*b));
        if let (Some((bytes, per_block)), Some(elements)) = (block, elements) {
            let size = elements.div_ceil(per_block).saturating_mul(bytes);
            data_end = data_end.max(offset.saturating_add(size));
        }
        ne.reverse();
        tensors.push(Tensor {
            name,
            shape: ne,
            dtype: dtype.to_string(),
        });
    }
    let header_end = g.reader.stream_position()?;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let expected = data_start.saturating_add(data_end);
    if expected > file_size {
        return Err(HeaderError::Truncated {
            expected,
            actual: file_size,
        });
    }
    Ok(Header {
        format: Format::Gguf,
        tensors,
        file_size,
    })
}

fn read_safetensors<R: Read>(reader: &mut R, file_size: u64) -> Result<Header, HeaderError> {
    let mut len = [0u8; 8];
    reader.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len + 8 > file_size {
        return Err(HeaderError::Truncated {
            expected: len + 8,
            actual: file_size,
        });
    }
    let mut json = vec![0u8; len as usize];
    reader.read_exact(&mut json)?;
    let value: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| HeaderError::Damaged(format!("safetensors header: {e}")))?;
    let map = value
        .as_object()
        .ok_or_else(|| HeaderError::Damaged("safetensors header is not an object".into()))?;
    let mut tensors = Vec::with_capacity(map.len());
    let mut data_end = 0u64;
    for (name, entry) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .unwrap_or("unknown")
            .to_ascii_lowercase();
        let shape: Vec<u64> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|dims| dims.iter().filter_map(|d| d.as_u64()).collect())
            .ok_or_else(|| HeaderError::Damaged(format!("tensor '{name}' has no shape")))?;
        if let Some(end) = entry
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(|e| e.as_u64())
        {
            data_end = data_end.max(end);
        }
        tensors.push(Tensor {
            name: name.clone(),
            shape,
            dtype,
        });
    }
    let expected = 8 + len + data_end;
    if expected > file_size {
        return Err(HeaderError::Truncated {
            expected,
            actual: file_size,
        });
    }
    Ok(Header {
        format: Format::Safetensors,
        tensors,
        file_size,
    })
}
