//! How much memory a generation needs: the weights as stored on disk (sd.cpp keeps them in their file's type) plus
//! sd.cpp's working buffers, which grow with the image's pixels. The VAE decode is the largest of those buffers
//! (sd.cpp decodes one image at a time, so the batch size does not multiply it). The figures are deliberately on
//! the generous side: the VRAM orchestrator's `auto` policy would rather unload an LLM it did not need to than let
//! sd.cpp spill to the CPU.

use crate::Components;

/// sd.cpp's fixed working memory (contexts, scheduler, small buffers).
const BASE_BYTES: f64 = 320.0 * 1024.0 * 1024.0;
/// Working memory per output pixel at the VAE decode (about 1.6 GiB at 512x512 without tiling).
const BYTES_PER_PIXEL: f64 = 6.5 * 1024.0;

/// An estimate of what one job holds at its peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryNeed {
    pub weights_bytes: f64,
    pub working_bytes: f64,
}

impl MemoryNeed {
    pub fn total_bytes(&self) -> f64 {
        self.weights_bytes + self.working_bytes
    }
}

/// The estimate for `components` at `width` x `height` (files that cannot be read count as empty).
pub fn estimate(components: &Components, width: u32, height: u32) -> MemoryNeed {
    let weights_bytes = components
        .files()
        .iter()
        .filter_map(|(_, path)| std::fs::metadata(path).ok())
        .fold(0.0, |sum, m| sum + m.len() as f64);
    MemoryNeed {
        weights_bytes,
        working_bytes: BASE_BYTES + f64::from(width) * f64::from(height) * BYTES_PER_PIXEL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_is_the_files_plus_buffers_that_grow_with_the_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, vec![0u8; 1000]).unwrap();
        let components = Components {
            model: Some(model),
            ..Components::default()
        };
        let small = estimate(&components, 512, 512);
        let large = estimate(&components, 1024, 1024);
        assert_eq!(small.weights_bytes, 1000.0);
        assert!(large.working_bytes > 3.0 * small.working_bytes);
        let gib = small.total_bytes() / f64::from(1u32 << 30);
        assert!((1.5..2.5).contains(&gib), "{gib} GiB at 512x512");
    }
}
