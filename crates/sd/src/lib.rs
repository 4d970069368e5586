//! The only place DiffuGen touches stable-diffusion.cpp's C API.
//!
//! sd.cpp keeps its log, progress and preview callbacks in process-global state and has no cancel call, so this
//! wrapper is meant to be driven by one engine worker process (see `diffugen-engine`), one generation at a time.
//! Everything unsafe lives in this crate; callers see owned Rust values and `Result`s.

mod callbacks;
mod context;
mod names;
mod tools;

pub use callbacks::{
    clear_callbacks, set_log_handler, set_preview_handler, set_progress_handler, LogLevel,
    PreviewMode,
};
pub use context::{
    Cache, Context, ContextParams, Hires, HiresUpscaler, ImageRequest, LoraWeight, RgbImage, Tiling,
};
pub use names::{sampler_names, scheduler_names, SAMPLERS, SCHEDULERS};
pub use tools::{canny, Upscaler};

/// What can go wrong when talking to sd.cpp.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// A string handed to sd.cpp contained a NUL byte.
    #[error("{field} contains a NUL byte, which sd.cpp cannot accept")]
    Nul { field: &'static str },
    /// `new_sd_ctx` refused the model (missing file, unknown architecture, damaged header, ...).
    #[error("stable-diffusion.cpp could not load the model")]
    ContextCreation,
    /// `generate_image` returned no images.
    #[error("stable-diffusion.cpp failed to generate the image")]
    Generation,
    /// An image handed in has a size or channel count sd.cpp cannot use.
    #[error("{field}: {message}")]
    BadImage {
        field: &'static str,
        message: String,
    },
    /// `convert` could not read the input or write the output.
    #[error("stable-diffusion.cpp could not convert the model")]
    Conversion,
    /// `new_upscaler_ctx` refused the upscaling model (missing file, not an ESRGAN model, damaged header, ...).
    #[error("stable-diffusion.cpp could not load the upscaling model")]
    UpscalerCreation,
    /// `upscale` returned no image.
    #[error("stable-diffusion.cpp failed to upscale the image")]
    Upscale,
    /// An unknown sampler or scheduler name.
    #[error("unknown {field} '{value}'")]
    UnknownName { field: &'static str, value: String },
}

/// sd.cpp's description of the compute backends compiled in (CPU features, CUDA, Vulkan, ...).
pub fn system_info() -> String {
    // SAFETY: returns a pointer to a static, NUL-terminated string owned by sd.cpp.
    unsafe { cstr_lossy(diffusion_rs_sys::sd_get_system_info()) }
}

/// The bindings crate the vendored sd.cpp comes from: its source carries no git metadata, so sd.cpp's own version
/// reads "unknown" in such builds and the crate's version names the code instead.
pub const BINDINGS: &str = "diffusion-rs-sys 0.1.20";

/// The stable-diffusion.cpp this build links: sd.cpp's own version and commit where it was built from a git
/// checkout, otherwise [`BINDINGS`].
pub fn version() -> String {
    // SAFETY: both return pointers to static, NUL-terminated strings owned by sd.cpp.
    let (version, commit) = unsafe {
        (
            cstr_lossy(diffusion_rs_sys::sd_version()),
            cstr_lossy(diffusion_rs_sys::sd_commit()),
        )
    };
    let known = |s: &str| !s.is_empty() && s != "unknown";
    match (known(&version), known(&commit)) {
        (true, true) => format!("{version} ({commit})"),
        (true, false) => version,
        (false, true) => commit,
        (false, false) => BINDINGS.to_string(),
    }
}

/// The number of physical cores sd.cpp would use by default.
pub fn physical_cores() -> i32 {
    // SAFETY: a pure query without arguments.
    unsafe { diffusion_rs_sys::sd_get_num_physical_cores() }
}

/// Copies a C string owned by sd.cpp into a Rust string (empty for NULL).
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn cstr_lossy(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
}

/// Writes a copy of the model file `input` with its weights converted to `weight_type` (ggml's name: `q8_0`,
/// `q4_k`, `f16`, ...) as GGUF at `output`. Loads the whole model into memory; progress arrives through the
/// progress callback as tensors load. Tensor names are kept, so text encoders and other single parts convert too.
pub fn convert(
    input: &std::path::Path,
    output: &std::path::Path,
    weight_type: &str,
) -> Result<(), SdError> {
    use diffusion_rs_sys::sd_type_t as T;
    let kind = match weight_type {
        "f16" => T::SD_TYPE_F16,
        "q8_0" => T::SD_TYPE_Q8_0,
        "q6_k" => T::SD_TYPE_Q6_K,
        "q5_k" => T::SD_TYPE_Q5_K,
        "q5_1" => T::SD_TYPE_Q5_1,
        "q5_0" => T::SD_TYPE_Q5_0,
        "q4_k" => T::SD_TYPE_Q4_K,
        "q4_1" => T::SD_TYPE_Q4_1,
        "q4_0" => T::SD_TYPE_Q4_0,
        "q3_k" => T::SD_TYPE_Q3_K,
        "q2_k" => T::SD_TYPE_Q2_K,
        other => {
            return Err(SdError::UnknownName {
                field: "type",
                value: other.to_string(),
            })
        }
    };
    let input = std::ffi::CString::new(input.to_string_lossy().as_bytes())
        .map_err(|_| SdError::Nul { field: "input" })?;
    let output = std::ffi::CString::new(output.to_string_lossy().as_bytes())
        .map_err(|_| SdError::Nul { field: "output" })?;
    // sd.cpp makes a std::string of the rules (NULL would throw): "" means no rules.
    let no_rules = c"";
    // SAFETY: every string outlives the call; a NULL vae path means "none".
    let ok = unsafe {
        diffusion_rs_sys::convert(
            input.as_ptr(),
            std::ptr::null(),
            output.as_ptr(),
            kind,
            no_rules.as_ptr(),
            false,
        )
    };
    if ok {
        Ok(())
    } else {
        Err(SdError::Conversion)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bindings_named_in_the_version_are_the_ones_cargo_locked() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"diffusion-rs-sys\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap();
        assert_eq!(super::BINDINGS, format!("diffusion-rs-sys {locked}"));
        assert!(!super::version().is_empty());
    }
}
