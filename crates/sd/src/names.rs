//! sd.cpp's own names for samplers and schedulers, the vocabulary users type (`euler_a`, `dpm++2m`, `karras`).

use diffusion_rs_sys as sys;

/// Every sampler name the vendored sd.cpp accepts, in its enum order.
pub const SAMPLERS: &[&str] = &[
    "euler",
    "euler_a",
    "heun",
    "dpm2",
    "dpm++2s_a",
    "dpm++2m",
    "dpm++2mv2",
    "ipndm",
    "ipndm_v",
    "lcm",
    "ddim_trailing",
    "tcd",
    "res_multistep",
    "res_2s",
    "er_sde",
    "euler_cfg_pp",
    "euler_a_cfg_pp",
    "euler_ge",
];

/// Every scheduler name the vendored sd.cpp accepts, in its enum order.
pub const SCHEDULERS: &[&str] = &[
    "discrete",
    "karras",
    "exponential",
    "ays",
    "gits",
    "sgm_uniform",
    "simple",
    "smoothstep",
    "kl_optimal",
    "lcm",
    "bong_tangent",
    "ltx2",
];

/// The sampler names as the linked sd.cpp reports them (used to check [`SAMPLERS`] against the library).
pub fn sampler_names() -> Vec<String> {
    (0..sys::sample_method_t::SAMPLE_METHOD_COUNT as u32)
        .map(|i| {
            // SAFETY: `i` is below SAMPLE_METHOD_COUNT, so it is a valid discriminant of the C enum.
            let method: sys::sample_method_t = unsafe { std::mem::transmute(i) };
            // SAFETY: returns a pointer into a static table.
            unsafe { crate::cstr_lossy(sys::sd_sample_method_name(method)) }
        })
        .collect()
}

/// The scheduler names as the linked sd.cpp reports them.
pub fn scheduler_names() -> Vec<String> {
    (0..sys::scheduler_t::SCHEDULER_COUNT as u32)
        .map(|i| {
            // SAFETY: `i` is below SCHEDULER_COUNT, so it is a valid discriminant of the C enum.
            let scheduler: sys::scheduler_t = unsafe { std::mem::transmute(i) };
            // SAFETY: returns a pointer into a static table.
            unsafe { crate::cstr_lossy(sys::sd_scheduler_name(scheduler)) }
        })
        .collect()
}

pub(crate) fn sampler_from_name(name: &str) -> Option<sys::sample_method_t> {
    let index = SAMPLERS.iter().position(|s| *s == name)? as u32;
    // SAFETY: SAMPLERS mirrors the C enum (checked by a test), so `index` is a valid discriminant.
    Some(unsafe { std::mem::transmute::<u32, sys::sample_method_t>(index) })
}

pub(crate) fn scheduler_from_name(name: &str) -> Option<sys::scheduler_t> {
    let index = SCHEDULERS.iter().position(|s| *s == name)? as u32;
    // SAFETY: SCHEDULERS mirrors the C enum (checked by a test), so `index` is a valid discriminant.
    Some(unsafe { std::mem::transmute::<u32, sys::scheduler_t>(index) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_sampler_and_scheduler_lists_match_the_linked_sd_cpp() {
        assert_eq!(sampler_names(), SAMPLERS);
        assert_eq!(scheduler_names(), SCHEDULERS);
    }
}
