//! Pixels as they cross the worker's pipe and sit in a `JobSpec`: below both the job parameters and the protocol,
//! so neither imports the other.

use serde::{Deserialize, Serialize};

/// Pixels crossing the pipe: 1 or 3 channels, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data_base64: String,
}

impl RawImage {
    pub fn encode(image: &diffugen_sd::RgbImage) -> RawImage {
        use base64::Engine as _;
        RawImage {
            width: image.width,
            height: image.height,
            channels: image.channels,
            data_base64: base64::engine::general_purpose::STANDARD.encode(&image.data),
        }
    }

    pub fn decode(&self) -> Result<diffugen_sd::RgbImage, String> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .map_err(|e| e.to_string())?;
        let expected = self.width as usize * self.height as usize * self.channels as usize;
        if data.len() != expected {
            return Err(format!(
                "image data has {} bytes, expected {expected}",
                data.len()
            ));
        }
        Ok(diffugen_sd::RgbImage {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data,
        })
    }
}
