//! sd.cpp's image tools: the ESRGAN upscaler (a loaded upscaling model and one image enlarged by it) and the canny
//! edge detector.

use std::path::Path;
use std::ptr::NonNull;

use diffusion_rs_sys as sys;

use crate::context::c_string;
use crate::{RgbImage, SdError};

extern "C" {
    /// sd.cpp allocates an upscaled image's pixels with `malloc`.
    fn free(ptr: *mut std::ffi::c_void);
}

/// A loaded ESRGAN model (RRDBNet: RealESRGAN, ESRGAN, 4x-UltraSharp, ...). Its weights stay resident until dropped.
pub struct Upscaler {
    ptr: NonNull<sys::upscaler_ctx_t>,
}

// SAFETY: an upscaler_ctx_t is not tied to the thread that created it; `&mut self` on `upscale` keeps use exclusive.
unsafe impl Send for Upscaler {}

impl Upscaler {
    /// Loads the model at `path`. `tile_size` is the side of the square tiles the image is processed in (0: the
    /// whole image at once); each tile reports a progress step through the progress callback. `threads`: `None`
    /// lets sd.cpp use the physical core count.
    pub fn new(path: &Path, threads: Option<i32>, tile_size: u32) -> Result<Upscaler, SdError> {
        let path = c_string("upscaler", &path.to_string_lossy())?;
        let threads = threads.unwrap_or_else(crate::physical_cores);
        let tile = i32::try_from(tile_size).unwrap_or(i32::MAX);
        // SAFETY: the path outlives the call; empty backend strings mean "the best device".
        let ptr = unsafe {
            sys::new_upscaler_ctx(
                path.as_ptr(),
                false,
                threads,
                tile,
                c"".as_ptr(),
                c"".as_ptr(),
            )
        };
        NonNull::new(ptr)
            .map(|ptr| Upscaler { ptr })
            .ok_or(SdError::UpscalerCreation)
    }

    /// The factor this model enlarges by (1, 2 or 4, read from its weights).
    pub fn scale(&self) -> u32 {
        // SAFETY: a valid context.
        let factor = unsafe { sys::get_upscale_factor(self.ptr.as_ptr()) };
        u32::try_from(factor).unwrap_or(1).max(1)
    }

    /// Enlarges an RGB image by the model's own factor.
    pub fn upscale(&mut self, image: &RgbImage) -> Result<RgbImage, SdError> {
        image.check("image", 3)?;
        // SAFETY: sd.cpp reads the image during the call only; the result's pixels are malloc'ed for us and
        // freed here after copying.
        unsafe {
            let out = sys::upscale(self.ptr.as_ptr(), image.as_raw(), self.scale());
            let copied = RgbImage::copy_from_raw(&out);
            if !out.data.is_null() {
                free(out.data.cast());
            }
            copied.ok_or(SdError::Upscale)
        }
    }
}

impl Drop for Upscaler {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from new_upscaler_ctx and is freed exactly once.
        unsafe { sys::free_upscaler_ctx(self.ptr.as_ptr()) };
    }
}

/// sd.cpp's canny edge detector (`preprocess_canny`, as its CLI runs it for a ControlNet's control image): white
/// edges on black, same size. Thresholds are fractions of the strongest edge, 0..1; `low` <= `high`.
pub fn canny(image: &RgbImage, low: f32, high: f32) -> Result<RgbImage, SdError> {
    image.check("image", 3)?;
    let mut out = image.clone();
    let raw = diffusion_rs_sys::sd_image_t {
        width: out.width,
        height: out.height,
        channel: out.channels,
        data: out.data.as_mut_ptr(),
    };
    // SAFETY: sd.cpp writes the edge map into the image's own pixels (width * height * 3 bytes we own) during the
    // call and keeps nothing; weak and strong are sd-cli's values.
    let ok = unsafe { diffusion_rs_sys::preprocess_canny(raw, high, low, 0.8, 1.0, false) };
    if ok {
        Ok(out)
    } else {
        Err(SdError::BadImage {
            field: "image",
            message: "the edge detector refused the image".into(),
        })
    }
}
