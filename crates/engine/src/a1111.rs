//! AUTOMATIC1111's names for sd.cpp's samplers and schedulers, both ways: PNG `parameters` text is written in
//! A1111's words, and A1111 clients send them (`"sampler_name": "DPM++ 2M Karras"`).

/// (A1111 display name, sd.cpp name).
pub const SAMPLERS: &[(&str, &str)] = &[
    ("Euler", "euler"),
    ("Euler a", "euler_a"),
    ("Heun", "heun"),
    ("DPM2", "dpm2"),
    ("DPM++ 2S a", "dpm++2s_a"),
    ("DPM++ 2M", "dpm++2m"),
    ("DPM++ 2M v2", "dpm++2mv2"),
    ("iPNDM", "ipndm"),
    ("iPNDM v", "ipndm_v"),
    ("LCM", "lcm"),
    ("DDIM", "ddim_trailing"),
    ("TCD", "tcd"),
    ("Res Multistep", "res_multistep"),
    ("Res 2s", "res_2s"),
    ("ER SDE", "er_sde"),
];

/// (A1111 display name, sd.cpp name).
pub const SCHEDULERS: &[(&str, &str)] = &[
    ("Automatic", "discrete"),
    ("Karras", "karras"),
    ("Exponential", "exponential"),
    ("Align Your Steps", "ays"),
    ("GITS", "gits"),
    ("SGM Uniform", "sgm_uniform"),
    ("Simple", "simple"),
    ("KL Optimal", "kl_optimal"),
];

/// The A1111 name of an sd.cpp sampler (the sd.cpp name where A1111 has none).
pub fn sampler_display(sd_name: &str) -> &str {
    SAMPLERS
        .iter()
        .find(|(_, sd)| *sd == sd_name)
        .map_or(sd_name, |(a, _)| a)
}

/// The A1111 name of an sd.cpp scheduler.
pub fn scheduler_display(sd_name: &str) -> &str {
    SCHEDULERS
        .iter()
        .find(|(_, sd)| *sd == sd_name)
        .map_or(sd_name, |(a, _)| a)
}

/// Reads a sampler as A1111 clients send it — a display name, an old combined name such as `DPM++ 2M Karras`, or
/// an sd.cpp name — into (sd.cpp sampler, scheduler implied by the name). Unknown names pass through unchanged, so
/// validation reports them with the list of allowed ones.
pub fn parse_sampler(name: &str) -> (String, Option<String>) {
    let name = name.trim();
    let lower = name.to_ascii_lowercase();
    if let Some((_, sd)) = SAMPLERS
        .iter()
        .find(|(a, sd)| a.eq_ignore_ascii_case(name) || *sd == lower)
    {
        return (sd.to_string(), None);
    }
    for (display, scheduler) in SCHEDULERS {
        let suffix = format!(" {}", display.to_ascii_lowercase());
        if let Some(base) = lower.strip_suffix(&suffix) {
            if let Some((_, sd)) = SAMPLERS.iter().find(|(a, _)| a.eq_ignore_ascii_case(base)) {
                return (sd.to_string(), Some(scheduler.to_string()));
            }
        }
    }
    (name.to_string(), None)
}

/// Reads a scheduler as A1111 clients send it (display name, lower-case label or sd.cpp name).
pub fn parse_scheduler(name: &str) -> String {
    let name = name.trim();
    SCHEDULERS
        .iter()
        .find(|(a, sd)| {
            a.eq_ignore_ascii_case(name)
                || sd.eq_ignore_ascii_case(name)
                || a.replace(' ', "_").eq_ignore_ascii_case(name)
        })
        .map_or_else(|| name.to_string(), |(_, sd)| sd.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_sampler_names_map_to_sd_cpp_including_combined_scheduler_names() {
        assert_eq!(parse_sampler("Euler a"), ("euler_a".into(), None));
        assert_eq!(
            parse_sampler("DPM++ 2M Karras"),
            ("dpm++2m".into(), Some("karras".into()))
        );
        assert_eq!(parse_sampler("dpm++2m"), ("dpm++2m".into(), None));
        assert_eq!(parse_sampler("Warp 9"), ("Warp 9".into(), None));
        assert_eq!(parse_scheduler("Karras"), "karras");
        assert_eq!(parse_scheduler("sgm_uniform"), "sgm_uniform");
        assert_eq!(sampler_display("dpm++2s_a"), "DPM++ 2S a");
    }

    #[test]
    fn every_mapped_name_is_one_sd_cpp_knows() {
        assert!(SAMPLERS
            .iter()
            .all(|(_, sd)| diffugen_sd::SAMPLERS.contains(sd)));
        assert!(SCHEDULERS
            .iter()
            .all(|(_, sd)| diffugen_sd::SCHEDULERS.contains(sd)));
    }
}
