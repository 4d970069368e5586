//! The tensor table of a PyTorch checkpoint (`.pth`, `.ckpt`, `.pt` written by `torch.save` since PyTorch 1.6): a zip
//! archive whose `data.pkl` pickles the state dict, each tensor a call to `torch._utils._rebuild_tensor_v2` over a
//! storage kept in `data/<key>`. Only the pickle is read — by a small stack machine that knows the opcodes
//! `torch.save` writes and executes nothing (globals are names, calls are recorded, never made) — and each storage is
//! checked against its entry's size. Tensors of nested dicts (`params_ema`, `state_dict`) keep their own names, as
//! sd.cpp loads them.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

use crate::header::{Format, Header, HeaderError, Tensor};

/// A pickle larger than this is not a state dict's table.
const MAX_PICKLE: u64 = 256 << 20;
/// Entries in the archive's central directory.
const MAX_ENTRIES: u64 = 1_000_000;
/// Values the machine may make or copy in all (a pickle that copies a container again and again through its memo would
/// otherwise grow without bound).
const MAX_VALUES: usize = 20_000_000;

/// Whether the file starts as a zip archive does.
pub(crate) fn is_zip(magic: &[u8]) -> bool {
    magic.starts_with(b"PK\x03\x04")
}

/// One entry of the archive: where its data starts and how long it is.
struct Entry {
    local_header: u64,
    size: u64,
    stored: bool,
}

pub(crate) fn read<R: Read + Seek>(reader: &mut R, file_size: u64) -> Result<Header, HeaderError> {
    let entries = central_directory(reader, file_size)?;
    let (pickle_name, pickle) = entries
        .iter()
        .find(|(name, _)| name.ends_with("/data.pkl") || name.as_str() == "data.pkl")
        .ok_or_else(|| {
            HeaderError::Damaged("a zip archive without data.pkl: not a PyTorch checkpoint".into())
        })?;
    if !pickle.stored {
        return Err(HeaderError::Damaged(
            "data.pkl is compressed; torch.save stores it as is".into(),
        ));
    }
    if pickle.size > MAX_PICKLE {
        return Err(HeaderError::Damaged(format!(
            "a data.pkl of {} bytes",
            pickle.size
        )));
    }
    let start = data_start(reader, pickle.local_header)?;
    reader.seek(SeekFrom::Start(start))?;
    let mut bytes = vec![0u8; pickle.size as usize];
    reader
        .read_exact(&mut bytes)
        .map_err(|_| HeaderError::Truncated {
            expected: start + pickle.size,
            actual: file_size,
        })?;
    let archive = pickle_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();
    let found = state_dict(&bytes)?;
    if found.is_empty() {
        return Err(HeaderError::Damaged(
            "the checkpoint holds no tensors".into(),
        ));
    }
    let mut tensors = Vec::with_capacity(found.len());
    for (name, tensor) in found {
        let data = entries
            .get(&format!("{archive}data/{}", tensor.storage))
            .ok_or_else(|| {
                HeaderError::Damaged(format!("{name}: its storage {} is missing", tensor.storage))
            })?;
        let (dtype, width) = dtype(&tensor.storage_type).ok_or_else(|| {
            HeaderError::Damaged(format!(
                "{name}: unknown storage type {}",
                tensor.storage_type
            ))
        })?;
        let elements: u64 = tensor.shape.iter().product();
        let end = (tensor.offset + elements) * width;
        if elements > 0 && end > data.size {
            return Err(HeaderError::Damaged(format!(
                "{name}: {end} bytes of data declared, its storage holds {}",
                data.size
            )));
        }
        tensors.push(Tensor {
            name,
            shape: tensor.shape,
            dtype: dtype.into(),
        });
    }
    Ok(Header {
        format: Format::Torch,
        tensors,
        file_size,
    })
}

/// ggml's name and the byte width of a torch storage type.
fn dtype(storage_type: &str) -> Option<(&'static str, u64)> {
    Some(match storage_type {
        "FloatStorage" => ("f32", 4),
        "HalfStorage" => ("f16", 2),
        "BFloat16Storage" => ("bf16", 2),
        "DoubleStorage" => ("f64", 8),
        "LongStorage" => ("i64", 8),
        "IntStorage" => ("i32", 4),
        "ShortStorage" => ("i16", 2),
        "CharStorage" => ("i8", 1),
        "ByteStorage" => ("u8", 1),
        "BoolStorage" => ("bool", 1),
        _ => return None,
    })
}

fn le_u16(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}
fn le_u32(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The archive's entries by name, from its central directory (zip64 too: checkpoints pass 4 GB).
fn central_directory<R: Read + Seek>(
    reader: &mut R,
    file_size: u64,
) -> Result<HashMap<String, Entry>, HeaderError> {
    // The end-of-central-directory record sits in the last 64 KiB + 22 bytes.
    let tail_len = file_size.min(65_557);
    reader.seek(SeekFrom::Start(file_size - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    reader.read_exact(&mut tail)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| {
            HeaderError::Damaged(
                "the zip archive has no end record (the file is cut short?)".into(),
            )
        })?;
    let record = &tail[eocd..];
    let mut count = le_u16(&record[10..]);
    let mut dir_size = le_u32(&record[12..]);
    let mut dir_offset = le_u32(&record[16..]);
    // A zip64 locator just before it points at the zip64 end record with the full-width values.
    if eocd >= 20 && tail[eocd - 20..].starts_with(b"PK\x06\x07") {
        let at = le_u64(&tail[eocd - 20 + 8..]);
        reader.seek(SeekFrom::Start(at))?;
        let mut record = [0u8; 56];
        reader
            .read_exact(&mut record)
            .map_err(|_| HeaderError::Damaged("the zip64 end record is cut short".into()))?;
        if !record.starts_with(b"PK\x06\x06") {
            return Err(HeaderError::Damaged(
                "the zip64 end record is damaged".into(),
            ));
        }
        count = le_u64(&record[32..]);
        dir_size = le_u64(&record[40..]);
        dir_offset = le_u64(&record[48..]);
    }
    if count > MAX_ENTRIES || dir_size > MAX_PICKLE || dir_offset + dir_size > file_size {
        return Err(HeaderError::Damaged(format!(
            "a central directory of {count} entries, {dir_size} bytes at {dir_offset}"
        )));
    }
    reader.seek(SeekFrom::Start(dir_offset))?;
    let mut dir = vec![0u8; dir_size as usize];
    reader.read_exact(&mut dir)?;
    let mut entries = HashMap::new();
    let mut at = 0usize;
    for _ in 0..count {
        let header = dir
            .get(at..at + 46)
            .filter(|h| h.starts_with(b"PK\x01\x02"));
        let header = header
            .ok_or_else(|| HeaderError::Damaged("the central directory is damaged".into()))?;
        let method = le_u16(&header[10..]);
        let mut size = le_u32(&header[24..]);
        let name_len = le_u16(&header[28..]) as usize;
        let extra_len = le_u16(&header[30..]) as usize;
        let comment_len = le_u16(&header[32..]) as usize;
        let mut local_header = le_u32(&header[42..]);
        let uncompressed = le_u32(&header[24..]);
        let compressed = le_u32(&header[20..]);
        let rest = dir
            .get(at + 46..at + 46 + name_len + extra_len)
            .ok_or_else(|| HeaderError::Damaged("the central directory is cut short".into()))?;
        let name = String::from_utf8_lossy(&rest[..name_len]).into_owned();
        // Full-width values of a zip64 entry, in the order of the fields that overflowed.
        let mut extra = &rest[name_len..];
        while extra.len() >= 4 {
            let (id, len) = (le_u16(extra), le_u16(&extra[2..]) as usize);
            let body = extra.get(4..4 + len).unwrap_or_default();
            if id == 1 {
                let mut fields = body.chunks_exact(8).map(le_u64);
                if uncompressed == 0xFFFF_FFFF {
                    size = fields.next().unwrap_or(size);
                }
                if compressed == 0xFFFF_FFFF {
                    fields.next();
                }
                if local_header == 0xFFFF_FFFF {
                    local_header = fields.next().unwrap_or(local_header);
                }
            }
            extra = extra.get(4 + len..).unwrap_or_default();
        }
        entries.insert(
            name,
            Entry {
                local_header,
                size,
                stored: method == 0,
            },
        );
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

/// Where an entry's data starts: after its local header, whose name and extra field may differ from the central
/// directory's.
fn data_start<R: Read + Seek>(reader: &mut R, local_header: u64) -> Result<u64, HeaderError> {
    reader.seek(SeekFrom::Start(local_header))?;
    let mut header = [0u8; 30];
    reader
        .read_exact(&mut header)
        .map_err(|_| HeaderError::Damaged("a local zip header is cut short".into()))?;
    if !header.starts_with(b"PK\x03\x04") {
        return Err(HeaderError::Damaged("a local zip header is damaged".into()));
    }
    Ok(local_header + 30 + le_u16(&header[26..]) + le_u16(&header[28..]))
}

/// A tensor as the pickle declares it.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    storage: String,
    storage_type: String,
    offset: u64,
    shape: Vec<u64>,
}

/// A value on the machine's stack.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A global by `module.name`; never imported.
    Global(String),
    /// A persistent id: a storage in `data/<key>`.
    Storage {
        key: String,
        storage_type: String,
    },
    Tensor(Declared),
    /// Anything else a call or an object would have made.
    Opaque,
}

/// Runs the pickle and answers the tensors of the state dict it builds, in order.
fn state_dict(bytes: &[u8]) -> Result<Vec<(String, Declared)>, HeaderError> {
    let damaged = |what: &str| HeaderError::Damaged(format!("data.pkl: {what}"));
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut at = 0usize;
    // What has been made or copied so far.
    let mut made = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], HeaderError> {
        let slice = bytes
            .get(*at..*at + n)
            .ok_or_else(|| damaged("it ends early"))?;
        *at += n;
        Ok(slice)
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| damaged("its stack runs empty"));
    let since_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, HeaderError> {
        let mark = stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or_else(|| damaged("a missing mark"))?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        made += 1;
        if made > MAX_VALUES {
            return Err(damaged("too many values"));
        }
        let op = *take(&mut at, 1)?.first().expect("one byte");
        match op {
            0x80 => {
                take(&mut at, 1)?;
            }
            0x95 => {
                take(&mut at, 8)?;
            }
            b'.' => break,
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(i64::from(take(&mut at, 1)?[0]))),
            b'M' => stack.push(Value::Int(le_u16(take(&mut at, 2)?) as i64)),
            b'J' => {
                let b = take(&mut at, 4)?;
                stack.push(Value::Int(i64::from(i32::from_le_bytes([
                    b[0], b[1], b[2], b[3],
                ]))));
            }
            0x8a => {
                let n = usize::from(take(&mut at, 1)?[0]);
                let b = take(&mut at, n)?;
                if n > 8 {
                    stack.push(Value::Opaque);
                } else {
                    // Little-endian two's complement of n bytes.
                    let mut v: i64 = 0;
                    for (i, byte) in b.iter().enumerate() {
                        v |= i64::from(*byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    stack.push(Value::Int(v));
                }
            }
            b'G' => {
                let b = take(&mut at, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(
                    b.try_into().expect("8 bytes"),
                )));
            }
            b'X' | b'T' | b'B' => {
                let n = le_u32(take(&mut at, 4)?) as usize;
                let b = take(&mut at, n)?;
                stack.push(match op {
                    b'B' => Value::Bytes,
                    _ => Value::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            0x8c | b'U' | b'C' => {
                let n = usize::from(take(&mut at, 1)?[0]);
                let b = take(&mut at, n)?;
                stack.push(match op {
                    b'C' => Value::Bytes,
                    _ => Value::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            b'c' => {
                let line = |at: &mut usize| -> Result<String, HeaderError> {
                    let rest = bytes.get(*at..).unwrap_or_default();
                    let end = rest
                        .iter()
                        .position(|&c| c == b'\n')
                        .ok_or_else(|| damaged("an unterminated global"))?;
                    *at += end + 1;
                    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
                };
                let module = line(&mut at)?;
                let name = line(&mut at)?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Text(m), Value::Text(n)) => {
                        stack.push(Value::Global(format!("{m}.{n}")))
                    }
                    _ => return Err(damaged("a global that is not named")),
                }
            }
            // The memo keeps a copy (a container changed after it was stored is not seen again; torch.save stores
            // names, storages and fresh objects there). Every copy counts against MAX_VALUES.
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => u64::from(take(&mut at, 1)?[0]),
                    b'r' => le_u32(take(&mut at, 4)?),
                    _ => memo.len() as u64,
                };
                let value = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| damaged("its stack runs empty"))?;
                made += weight(&value);
                memo.insert(key, value);
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    u64::from(take(&mut at, 1)?[0])
                } else {
                    le_u32(take(&mut at, 4)?)
                };
                let value = memo
                    .get(&key)
                    .ok_or_else(|| damaged("a memo it never stored"))?;
                made += weight(value);
                if made > MAX_VALUES {
                    return Err(damaged("too many values"));
                }
                stack.push(value.clone());
            }
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            0x8f => stack.push(Value::Opaque),
            b't' => {
                let items = since_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = since_mark(&mut stack)?;
                stack.push(Value::List(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err(damaged("its stack runs empty"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'a' => {
                let item = pop(&mut stack)?;
                if let Some(Value::List(list)) = stack.last_mut() {
                    list.push(item);
                }
            }
            b'e' => {
                let items = since_mark(&mut stack)?;
                if let Some(Value::List(list)) = stack.last_mut() {
                    list.extend(items);
                }
            }
            b's' => {
                let value = pop(&mut stack)?;
                let key = pop(&mut stack)?;
                if let Some(Value::Dict(dict)) = stack.last_mut() {
                    dict.push((key, value));
                }
            }
            b'u' => {
                let items = since_mark(&mut stack)?;
                if items.len() % 2 != 0 {
                    return Err(damaged("SETITEMS with an odd count"));
                }
                if let Some(Value::Dict(dict)) = stack.last_mut() {
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        dict.push((k, v));
                    }
                }
            }
            0x90 => {
                since_mark(&mut stack)?;
            }
            0x91 => {
                since_mark(&mut stack)?;
                stack.push(Value::Opaque);
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(storage(pid));
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(call(&callable, args));
            }
            0x81 => {
                let _args = pop(&mut stack)?;
                let class = pop(&mut stack)?;
                stack.push(match class {
                    Value::Global(name) if name == "collections.OrderedDict" => {
                        Value::Dict(Vec::new())
                    }
                    _ => Value::Opaque,
                });
            }
            0x92 => {
                pop(&mut stack)?;
                pop(&mut stack)?;
                pop(&mut stack)?;
                stack.push(Value::Opaque);
            }
            b'b' => {
                // The state of an object (an OrderedDict's attributes, a module's): the object stays as it is.
                pop(&mut stack)?;
            }
            _ => {
                return Err(damaged(&format!(
                    "opcode 0x{op:02x}, which torch.save does not write"
                )))
            }
        }
    }
    let root = stack.pop().ok_or_else(|| damaged("it builds nothing"))?;
    let mut tensors = Vec::new();
    collect(&root, &mut tensors);
    Ok(tensors)
}

/// How many values `value` holds, itself included.
fn weight(value: &Value) -> usize {
    1 + match value {
        Value::Tuple(items) | Value::List(items) => items.iter().map(weight).sum(),
        Value::Dict(items) => items.iter().map(|(k, v)| weight(k) + weight(v)).sum(),
        _ => 0,
    }
}

/// `('storage', torch.FloatStorage, '0', 'cpu', numel)`.
fn storage(pid: Value) -> Value {
    match pid {
        Value::Tuple(items) if items.len() >= 3 && items[0] == Value::Text("storage".into()) => {
            let storage_type = match &items[1] {
                Value::Global(name) => name.rsplit('.').next().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            match &items[2] {
                Value::Text(key) => Value::Storage {
                    key: key.clone(),
                    storage_type,
                },
                _ => Value::Opaque,
            }
        }
        _ => Value::Opaque,
    }
}

/// A call, recorded: the tensor rebuilders make a tensor, an OrderedDict() an empty dict, anything else nothing.
fn call(callable: &Value, args: Value) -> Value {
    let Value::Global(name) = callable else {
        return Value::Opaque;
    };
    let Value::Tuple(args) = args else {
        return Value::Opaque;
    };
    match name.as_str() {
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let (
                Some(Value::Storage { key, storage_type }),
                Some(Value::Int(offset)),
                Some(Value::Tuple(size)),
            ) = (args.first(), args.get(1), args.get(2))
            else {
                return Value::Opaque;
            };
            let shape: Option<Vec<u64>> = size
                .iter()
                .map(|d| match d {
                    Value::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                })
                .collect();
            match (shape, u64::try_from(*offset)) {
                (Some(shape), Ok(offset)) => Value::Tensor(Declared {
                    storage: key.clone(),
                    storage_type: storage_type.clone(),
                    offset,
                    shape,
                }),
                _ => Value::Opaque,
            }
        }
        // A Parameter wraps its tensor.
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            args.into_iter().next().unwrap_or(Value::Opaque)
        }
        "collections.OrderedDict" => Value::Dict(Vec::new()),
        _ => Value::Opaque,
    }
}

/// The tensors of a dict and of the dicts in it, by their own keys.
fn collect(value: &Value, out: &mut Vec<(String, Declared)>) {
    if let Value::Dict(items) = value {
        for (key, item) in items {
            match (key, item) {
                (Value::Text(name), Value::Tensor(tensor)) => {
                    out.push((name.clone(), tensor.clone()))
                }
                (_, Value::Dict(_)) => collect(item, out),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `torch.save({"params_ema": OrderedDict(conv.weight=..., conv.bias=...)})` writes (protocol 2).
    fn pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0];
        let text = |p: &mut Vec<u8>, s: &str| {
            p.push(b'X');
            p.extend((s.len() as u32).to_le_bytes());
            p.extend(s.as_bytes());
        };
        text(&mut p, "params_ema");
        p.extend(b"ccollections\nOrderedDict\nq\x01)Rq\x02(");
        for (name, key, size) in [
            ("conv.weight", "0", vec![8u8, 3, 3, 3]),
            ("conv.bias", "1", vec![8]),
        ] {
            text(&mut p, name);
            // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            text(&mut p, "storage");
            p.extend(b"ctorch\nFloatStorage\n");
            text(&mut p, key);
            text(&mut p, "cpu");
            let numel = size.iter().map(|&d| u32::from(d)).product::<u32>() as u8;
            p.extend([b'K', numel, b't', b'Q', b'K', 0, b'(']);
            for d in &size {
                p.extend([b'K', *d]);
            }
            p.extend(b"t(t\x89ccollections\nOrderedDict\n)RtRr");
            p.extend(7u32.to_le_bytes());
        }
        p.extend(b"us.");
        p
    }

    #[test]
    fn a_torch_state_dict_pickle_gives_each_tensor_its_shape_and_storage_nested_dicts_flattened() {
        let tensors = state_dict(&pickle()).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["conv.weight", "conv.bias"]);
        assert_eq!(tensors[0].1.shape, [8, 3, 3, 3]);
        assert_eq!(
            (
                tensors[0].1.storage.as_str(),
                tensors[0].1.storage_type.as_str()
            ),
            ("0", "FloatStorage")
        );
        assert_eq!(tensors[1].1.shape, [8]);
    }

    #[test]
    fn a_pickle_with_a_code_opcode_or_cut_short_is_refused_not_run() {
        let mut cut = pickle();
        cut.truncate(cut.len() / 2);
        assert!(matches!(state_dict(&cut), Err(HeaderError::Damaged(_))));
        // INST ('i') imports and calls by name: torch.save never writes it.
        let inst = [
            0x80, 2, b'(', b'i', b'o', b's', b'\n', b's', b'y', b's', b't', b'e', b'm', b'\n', b'.',
        ];
        assert!(state_dict(&inst)
            .unwrap_err()
            .to_string()
            .contains("opcode 0x69"));
        // A list doubled again and again through the memo: refused long before it exhausts memory.
        let mut bomb = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..64 {
            bomb.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
        }
        bomb.push(b'.');
        assert!(state_dict(&bomb)
            .unwrap_err()
            .to_string()
            .contains("too many values"));
    }
}
