//! sd.cpp's log, progress and preview callbacks are process-global C function pointers; this module keeps one Rust
//! handler for each and installs trampolines that call it. A panic in a handler is caught at the boundary: unwinding
//! into C++ would abort the process.

use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};

use diffusion_rs_sys as sys;

use crate::RgbImage;

/// Severity of an sd.cpp log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// How sd.cpp renders preview frames during sampling (cheapest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewMode {
    /// A linear projection of the latent: nearly free.
    Proj,
    /// The tiny autoencoder (TAESD), when the model has one.
    Tae,
    /// The full VAE: accurate and expensive.
    Vae,
}

type LogHandler = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;
type ProgressHandler = Arc<dyn Fn(i32, i32, f32) + Send + Sync>;
type PreviewHandler = Arc<dyn Fn(i32, Vec<RgbImage>, bool) + Send + Sync>;

static LOG: RwLock<Option<LogHandler>> = RwLock::new(None);
static PROGRESS: RwLock<Option<ProgressHandler>> = RwLock::new(None);
static PREVIEW: RwLock<Option<PreviewHandler>> = RwLock::new(None);

/// Routes every sd.cpp log line (without its trailing newline) to `handler`.
pub fn set_log_handler(handler: impl Fn(LogLevel, &str) + Send + Sync + 'static) {
    *LOG.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    // SAFETY: the trampoline is a valid `extern "C"` function for the whole life of the process.
    unsafe { sys::sd_set_log_callback(Some(log_trampoline), std::ptr::null_mut()) };
}

/// Routes sd.cpp's progress callback `(step, steps, seconds)` to `handler`.
///
/// sd.cpp uses the same callback for tensor loading and for sampling steps; telling them apart is the caller's job.
pub fn set_progress_handler(handler: impl Fn(i32, i32, f32) + Send + Sync + 'static) {
    *PROGRESS.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    // SAFETY: as above.
    unsafe { sys::sd_set_progress_callback(Some(progress_trampoline), std::ptr::null_mut()) };
}

/// Asks sd.cpp for a preview frame every `interval` sampling steps, delivered as `(step, frames, is_noisy)`.
pub fn set_preview_handler(
    mode: PreviewMode,
    interval: u32,
    handler: impl Fn(i32, Vec<RgbImage>, bool) + Send + Sync + 'static,
) {
    *PREVIEW.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    let mode = match mode {
        PreviewMode::Proj => sys::preview_t::PREVIEW_PROJ,
        PreviewMode::Tae => sys::preview_t::PREVIEW_TAE,
        PreviewMode::Vae => sys::preview_t::PREVIEW_VAE,
    };
    let interval = c_int::try_from(interval.max(1)).unwrap_or(c_int::MAX);
    // SAFETY: as above; sd.cpp copies the scalar arguments.
    unsafe {
        sys::sd_set_preview_callback(
            Some(preview_trampoline),
            mode,
            interval,
            true,
            false,
            std::ptr::null_mut(),
        )
    };
}

/// Switches previews off and drops every handler (sd.cpp then prints progress and logs itself).
pub fn clear_callbacks() {
    // SAFETY: NULL callbacks are sd.cpp's documented "off" state.
    unsafe {
        sys::sd_set_preview_callback(
            None,
            sys::preview_t::PREVIEW_NONE,
            1,
            true,
            false,
            std::ptr::null_mut(),
        );
    }
    *PREVIEW.write().unwrap_or_else(|e| e.into_inner()) = None;
}

fn current<T: Clone>(slot: &RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(|e| e.into_inner()).clone()
}

unsafe extern "C" fn log_trampoline(
    level: sys::sd_log_level_t,
    text: *const c_char,
    _data: *mut c_void,
) {
    let Some(handler) = current(&LOG) else { return };
    // SAFETY: sd.cpp passes a NUL-terminated string valid during the call.
    let text = unsafe { crate::cstr_lossy(text) };
    let level = match level {
        sys::sd_log_level_t::SD_LOG_DEBUG => LogLevel::Debug,
        sys::sd_log_level_t::SD_LOG_INFO => LogLevel::Info,
        sys::sd_log_level_t::SD_LOG_WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        handler(level, text.trim_end_matches('\n'))
    }));
}

unsafe extern "C" fn progress_trampoline(step: c_int, steps: c_int, time: f32, _data: *mut c_void) {
    if let Some(handler) = current(&PROGRESS) {
        let _ = catch_unwind(AssertUnwindSafe(|| handler(step, steps, time)));
    }
}

unsafe extern "C" fn preview_trampoline(
    step: c_int,
    frame_count: c_int,
    frames: *mut sys::sd_image_t,
    is_noisy: bool,
    _data: *mut c_void,
) {
    let Some(handler) = current(&PREVIEW) else {
        return;
    };
    let count = usize::try_from(frame_count).unwrap_or(0);
    let images = if frames.is_null() || count == 0 {
        Vec::new()
    } else {
        // SAFETY: sd.cpp passes `frame_count` images that stay valid during the call; we copy them out.
        unsafe { std::slice::from_raw_parts(frames, count) }
            .iter()
            // SAFETY: each image's data holds width * height * channel bytes (or is NULL).
            .filter_map(|image| unsafe { RgbImage::copy_from_raw(image) })
            .collect()
    };
    let _ = catch_unwind(AssertUnwindSafe(|| handler(step, images, is_noisy)));
}
