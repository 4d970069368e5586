//! The planner as a table of cases built from header-only model descriptions.
use super::*;

fn part(part: Part, params: f64, dtype: &str) -> PartWeights {
    PartWeights {
        part,
        bytes: params * bytes_per_weight(dtype),
        parameters: params,
    }
}

/// FLUX.1-schnell Q4_0 + T5-XXL fp16 + CLIP-L + the 16-channel VAE, as their headers describe them.
pub(crate) fn flux_schnell() -> ModelShape {
    ModelShape {
        family: crate::Family::Flux,
        parts: vec![
            part(Part::Diffusion, 11.9e9, "q4_0"),
            part(Part::T5xxl, 4.76e9, "f16"),
            part(Part::ClipL, 123e6, "f16"),
            part(Part::Vae, 83.8e6, "f32"),
        ],
    }
}

pub(crate) fn sd15() -> ModelShape {
    ModelShape {
        family: crate::Family::Sd1,
        parts: vec![
            part(Part::Diffusion, 860e6, "f16"),
            part(Part::ClipL, 123e6, "f16"),
            part(Part::Vae, 83.7e6, "f16"),
        ],
    }
}

pub(crate) fn sdxl() -> ModelShape {
    ModelShape {
        family: crate::Family::Sdxl,
        parts: vec![
            part(Part::Diffusion, 2.567e9, "f16"),
            part(Part::ClipL, 123e6, "f16"),
            part(Part::ClipG, 695e6, "f16"),
            part(Part::Vae, 83.7e6, "f16"),
        ],
    }
}

fn card(total: f64, free: f64, ram: f64) -> Resources {
    Resources {
        vram_total: Some(total * GIB),
        vram_free: Some(free * GIB),
        ram_free: ram * GIB,
    }
}

fn job(side: u32, steps: u32, cfg: bool) -> Job {
    Job {
        width: side,
        height: side,
        steps,
        cfg,
    }
}

#[test]
fn flux_schnell_at_1024_fits_an_8_gib_card_with_the_t5_kept_off_the_gpu() {
    let plan = plan(
        &flux_schnell(),
        &job(1024, 4, false),
        &card(8.0, 7.6, 14.0),
        &Constraints::default(),
    );
    assert!(plan.fits, "{plan:#?}");
    assert!(plan.estimated_vram_peak_bytes <= 7.6 * GIB, "{plan:#?}");
    assert_ne!(plan.part(Part::T5xxl).unwrap(), Placement::Gpu, "{plan:#?}");
    assert!(plan.estimated_ram_peak_bytes <= 14.0 * GIB, "{plan:#?}");
}

#[test]
fn sd15_at_512_runs_wholly_on_an_8_gib_card_without_tiling() {
    let plan = plan(
        &sd15(),
        &job(512, 20, true),
        &card(8.0, 7.6, 14.0),
        &Constraints::default(),
    );
    assert!(plan.fits);
    assert!(
        plan.placement.values().all(|p| *p == Placement::Gpu),
        "{plan:#?}"
    );
    assert!(!plan.vae_tiling);
    assert!(!plan.flash_attn);
    assert_eq!(plan.max_vram_gib, None);
    assert!(
        plan.summary().contains(" GiB VRAM, ~"),
        "{}",
        plan.summary()
    );
}

#[test]
fn sdxl_at_1024_fits_under_3_8_gib_on_a_4_gib_card() {
    let plan = plan(
        &sdxl(),
        &job(1024, 20, true),
        &card(4.0, 3.8, 14.0),
        &Constraints::default(),
    );
    assert!(plan.fits, "{plan:#?}");
    assert!(plan.estimated_vram_peak_bytes <= 3.8 * GIB, "{plan:#?}");
    assert_ne!(
        plan.part(Part::Diffusion).unwrap(),
        Placement::Cpu,
        "{plan:#?}"
    );
}

#[test]
fn flux_at_2048_with_1_gib_of_vram_and_4_gib_of_ram_does_not_fit_and_says_what_to_do() {
    let plan = plan(
        &flux_schnell(),
        &job(2048, 4, false),
        &card(1.0, 1.0, 4.0),
        &Constraints::default(),
    );
    assert!(!plan.fits);
    assert!(plan.advice.len() >= 2, "{:#?}", plan.advice);
    let all = plan.advice.join("\n");
    assert!(all.contains("needs about"), "{all}");
    assert!(
        all.contains("more free memory") || all.contains("models convert"),
        "{all}"
    );
}

#[test]
fn a_t5_that_only_a_smaller_copy_makes_fit_gets_the_exact_convert_command() {
    // 8 GiB of RAM cannot hold the fp16 T5 beside everything else; a q8_0 copy can.
    let plan = plan(
        &flux_schnell(),
        &job(1024, 4, false),
        &card(8.0, 7.6, 8.0),
        &Constraints::default(),
    );
    assert!(!plan.fits, "{plan:#?}");
    assert!(
        plan.advice
            .iter()
            .any(|a| a.contains("diffugen models convert MODEL --part t5xxl --type q")),
        "{:#?}",
        plan.advice
    );
}

#[test]
fn without_a_gpu_everything_runs_on_the_cpu_and_the_vae_tiles_when_ram_is_short() {
    let none = Resources {
        vram_total: None,
        vram_free: None,
        ram_free: 14.0 * GIB,
    };
    let plan = plan(&sd15(), &job(512, 20, true), &none, &Constraints::default());
    assert!(plan.fits);
    assert!(plan.placement.values().all(|p| *p == Placement::Cpu));
    assert_eq!(plan.estimated_vram_peak_bytes, 0.0);
    assert!(!plan.vae_tiling);
    let summary = plan.summary();
    assert!(
        summary.contains("; peak ~") && summary.ends_with(" GiB RAM") && !summary.contains("VRAM"),
        "a plan on the CPU names its RAM peak only: {summary}"
    );
    let tight = Resources {
        ram_free: 4.0 * GIB,
        ..none
    };
    let plan = super::plan(
        &sd15(),
        &job(512, 20, true),
        &tight,
        &Constraints::default(),
    );
    assert!(plan.fits, "{plan:#?}");
    assert!(plan.vae_tiling);
}

#[test]
fn a_users_placement_is_kept_even_when_another_would_be_faster() {
    let constraints = Constraints {
        placement: [(Group::TextEncoders, Placement::Cpu)]
            .into_iter()
            .collect(),
        vae_tiling: Some(true),
        ..Constraints::default()
    };
    let plan = plan(
        &sd15(),
        &job(512, 20, true),
        &card(8.0, 7.6, 14.0),
        &constraints,
    );
    assert_eq!(plan.part(Part::ClipL).unwrap(), Placement::Cpu);
    assert_eq!(plan.part(Part::Diffusion).unwrap(), Placement::Gpu);
    assert!(plan.vae_tiling);
    assert!(plan.reasons.iter().any(|r| r.contains("as requested")));
}

#[test]
fn a_bigger_image_needs_more_memory_and_tiling_bounds_the_decoder() {
    let a = model::arch(crate::Family::Sd1);
    assert!(
        model::vae_compute(&a, 1024, 1024, false) > 3.5 * model::vae_compute(&a, 512, 512, false)
    );
    assert!(model::vae_compute(&a, 2048, 2048, true) < 0.6 * GIB);
    let flux = model::arch(crate::Family::Flux);
    assert!(
        model::diffusion_compute(&flux, 1024, 1024, true)
            < 0.5 * model::diffusion_compute(&flux, 1024, 1024, false)
    );
}

#[test]
fn quantized_sizes_follow_ggml_block_sizes() {
    assert_eq!(bytes_per_weight("q4_0"), 0.5625);
    assert_eq!(bytes_per_weight("q8_0"), 1.0625);
    assert_eq!(bytes_per_weight("Q4_K"), 0.5625);
    assert_eq!(bytes_per_weight("f8_e4m3"), 2.0);
}
