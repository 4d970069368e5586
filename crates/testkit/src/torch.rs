//! Writes a PyTorch checkpoint the way `torch.save` does since PyTorch 1.6 — a zip archive of stored entries:
//! `archive/data.pkl` (the state dict, pickle protocol 2, each tensor `torch._utils._rebuild_tensor_v2` over a
//! persistent storage), `archive/data/<key>` (each tensor's bytes), `archive/version` — so the tests have a `.pth`
//! that sd.cpp itself loads, to check DiffuGen's reader against.

use std::io;
use std::path::Path;

/// One tensor: its name, its shape in PyTorch order, and its data as f16 little-endian bytes.
pub struct TorchTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub f16_bytes: Vec<u8>,
}

/// Writes `tensors` as a checkpoint whose state dict sits under `wrapper` (as RealESRGAN's `params_ema`), or at the
/// top when `wrapper` is `None`.
pub fn write_torch_checkpoint(
    path: &Path,
    tensors: &[TorchTensor],
    wrapper: Option<&str>,
) -> io::Result<()> {
    let mut zip = ZipWriter::default();
    zip.add("archive/data.pkl", &pickle(tensors, wrapper));
    for (key, tensor) in tensors.iter().enumerate() {
        zip.add(&format!("archive/data/{key}"), &tensor.f16_bytes);
    }
    zip.add("archive/version", b"3\n");
    std::fs::write(path, zip.finish())
}

fn text(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn int(p: &mut Vec<u8>, n: u64) {
    p.push(b'J');
    p.extend((n as i32).to_le_bytes());
}

fn pickle(tensors: &[TorchTensor], wrapper: Option<&str>) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    if let Some(wrapper) = wrapper {
        p.push(b'}');
        text(&mut p, wrapper);
    }
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (key, tensor) in tensors.iter().enumerate() {
        text(&mut p, &tensor.name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut p, "storage");
        p.extend(b"ctorch\nHalfStorage\n");
        text(&mut p, &key.to_string());
        text(&mut p, "cpu");
        int(&mut p, tensor.shape.iter().product());
        p.extend(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        for d in &tensor.shape {
            int(&mut p, *d);
        }
        p.extend(b"t(");
        // Contiguous strides, in elements.
        let mut strides: Vec<u64> = tensor
            .shape
            .iter()
            .rev()
            .scan(1u64, |acc, d| {
                let stride = *acc;
                *acc *= d;
                Some(stride)
            })
            .collect();
        strides.reverse();
        for s in strides {
            int(&mut p, s);
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.push(b'u');
    if wrapper.is_some() {
        p.push(b's');
    }
    p.push(b'.');
    p
}

#[derive(Default)]
struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    count: u16,
}

impl ZipWriter {
    fn add(&mut self, name: &str, data: &[u8]) {
        let offset = self.out.len() as u32;
        let crc = crc32(data);
        let common = |w: &mut Vec<u8>| {
            w.extend(0u16.to_le_bytes()); // flags
            w.extend(0u16.to_le_bytes()); // stored
            w.extend(0u32.to_le_bytes()); // time and date
            w.extend(crc.to_le_bytes());
            w.extend((data.len() as u32).to_le_bytes());
            w.extend((data.len() as u32).to_le_bytes());
            w.extend((name.len() as u16).to_le_bytes());
            w.extend(0u16.to_le_bytes()); // extra
        };
        self.out.extend(b"PK\x03\x04");
        self.out.extend(20u16.to_le_bytes());
        common(&mut self.out);
        self.out.extend(name.as_bytes());
        self.out.extend(data);
        self.central.extend(b"PK\x01\x02");
        self.central.extend(20u16.to_le_bytes()); // made by
        self.central.extend(20u16.to_le_bytes()); // needed
        common(&mut self.central);
        self.central.extend(0u16.to_le_bytes()); // comment
        self.central.extend(0u16.to_le_bytes()); // disk
        self.central.extend(0u16.to_le_bytes()); // internal attributes
        self.central.extend(0u32.to_le_bytes()); // external attributes
        self.central.extend(offset.to_le_bytes());
        self.central.extend(name.as_bytes());
        self.count += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        let dir_offset = self.out.len() as u32;
        let dir_size = self.central.len() as u32;
        self.out.extend(&self.central);
        self.out.extend(b"PK\x05\x06");
        self.out.extend([0u8; 4]); // disks
        self.out.extend(self.count.to_le_bytes());
        self.out.extend(self.count.to_le_bytes());
        self.out.extend(dir_size.to_le_bytes());
        self.out.extend(dir_offset.to_le_bytes());
        self.out.extend(0u16.to_le_bytes());
        self.out
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_zip_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
