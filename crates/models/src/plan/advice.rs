//! The plan in words: why each choice was made, and what to do when nothing fits (a smaller copy of the largest
//! text encoder or of the diffusion model, a smaller image, more free memory).

use super::*;

pub(super) fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / GIB)
}

pub(super) fn reasons(
    shape: &ModelShape,
    job: &Job,
    plan: &Plan,
    gpu: bool,
    c: &Constraints,
) -> Vec<String> {
    let mut out = Vec::new();
    if !gpu {
        out.push("no GPU to plan for: every part runs on the CPU".into());
    }
    for group in Group::ALL {
        let Some(place) = plan.group(group) else {
            continue;
        };
        let weights = shape.group_bytes(group);
        let chosen_by_user = c.placement.contains_key(&group);
        let why = match (place, chosen_by_user) {
            (_, true) => "as requested".to_string(),
            (Placement::Gpu, _) if gpu => "fits in VRAM".to_string(),
            (Placement::Cpu, _) if !gpu => continue,
            (Placement::Cpu, _) => format!(
                "its {} of weights would not fit beside the rest on the GPU",
                gib(weights)
            ),
            (Placement::Offload, _) => {
                match plan.max_vram_gib.filter(|_| group == Group::Diffusion) {
                    Some(b) => format!(
                    "its {} of weights stay in RAM and stream to the GPU under a {b:.1} GiB budget",
                    gib(weights)
                ),
                    None => format!(
                        "its {} of weights stay in RAM and move to the GPU only while it runs",
                        gib(weights)
                    ),
                }
            }
            (Placement::Gpu, _) => continue,
        };
        out.push(format!(
            "{} on the {}: {why}",
            group.name(),
            match place {
                Placement::Gpu | Placement::Offload => "GPU",
                Placement::Cpu => "CPU",
            }
        ));
    }
    if plan.vae_tiling {
        let a = model::arch(shape.family);
        out.push(format!(
            "VAE decodes in tiles: untiled it needs {} at {}×{}",
            gib(model::vae_compute(&a, job.width, job.height, false)),
            job.width,
            job.height
        ));
    }
    if plan.flash_attn && c.flash_attn.is_none() {
        let a = model::arch(shape.family);
        out.push(format!(
            "flash attention: the attention scores would need {} more",
            gib(model::diffusion_compute(&a, job.width, job.height, false)
                - model::diffusion_compute(&a, job.width, job.height, true))
        ));
    }
    out
}

fn requantized(shape: &ModelShape, part: Part, dtype: &str) -> Option<ModelShape> {
    let mut shape = shape.clone();
    let p = shape.parts.iter_mut().find(|p| p.part == part)?;
    let bytes = p.parameters * bytes_per_weight(dtype);
    if bytes >= p.bytes * 0.95 {
        return None;
    }
    p.bytes = bytes;
    Some(shape)
}

pub(super) fn advice(
    shape: &ModelShape,
    job: &Job,
    resources: &Resources,
    constraints: &Constraints,
    failed: &Plan,
) -> Vec<String> {
    let fits = |s: &ModelShape, j: &Job| choose(s, j, resources, constraints).fits;
    let mut out = Vec::new();
    out.push(format!(
        "it needs about {} of VRAM and {} of RAM at best, with {} and {} available",
        gib(failed.estimated_vram_peak_bytes),
        gib(failed.estimated_ram_peak_bytes),
        gib(failed.vram_available_bytes.unwrap_or(0.0)),
        gib(failed.ram_available_bytes)
    ));
    // A smaller copy of the largest text encoder, then of the diffusion model.
    let mut encoders: Vec<&PartWeights> = shape
        .parts
        .iter()
        .filter(|p| p.part.group() == Group::TextEncoders)
        .collect();
    encoders.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
    for (part, label) in encoders
        .first()
        .map(|p| (p.part, "text encoder"))
        .into_iter()
        .chain([(Part::Diffusion, "diffusion model")])
    {
        let found = ["q8_0", "q5_0", "q4_k", "q4_0", "q3_k"]
            .iter()
            .find_map(|t| {
                requantized(shape, part, t)
                    .filter(|s| fits(s, job))
                    .map(|s| (*t, s))
            });
        if let Some((dtype, smaller)) = found {
            let bytes = smaller.part(part).map_or(0.0, |p| p.bytes);
            out.push(format!(
                "make a smaller copy of the {} {label} ({} at {dtype}): diffugen models convert MODEL --part {} --type {dtype}",
                part.name(),
                gib(bytes),
                part.name()
            ));
            return finish_advice(out, shape, job, resources, constraints);
        }
    }
    finish_advice(out, shape, job, resources, constraints)
}

fn finish_advice(
    mut out: Vec<String>,
    shape: &ModelShape,
    job: &Job,
    resources: &Resources,
    constraints: &Constraints,
) -> Vec<String> {
    // A smaller image.
    let multiple = crate::size_multiple(shape.family);
    let mut side = job.width.max(job.height);
    while side > 256 {
        side = (side * 3 / 4) / multiple * multiple;
        let scale = |v: u32| {
            ((u64::from(v) * u64::from(side) / u64::from(job.width.max(job.height))) as u32
                / multiple
                * multiple)
                .max(multiple)
        };
        let smaller = Job {
            width: scale(job.width),
            height: scale(job.height),
            ..*job
        };
        if choose(shape, &smaller, resources, constraints).fits {
            out.push(format!(
                "render at {}×{} or smaller (then upscale)",
                smaller.width, smaller.height
            ));
            break;
        }
    }
    // Everything quantized small: does it fit at all?
    let mut small = shape.clone();
    for p in &mut small.parts {
        p.bytes = p.bytes.min(p.parameters * bytes_per_weight("q4_0"));
    }
    if !choose(&small, job, resources, constraints).fits {
        let weights = small.weights_bytes();
        out.push(format!(
            "even at q4_0 its weights take {}: this size needs more free memory (close other programs, or unload the LLM)",
            gib(weights)
        ));
    }
    if let (Some(total), Some(free)) = (resources.vram_total, resources.vram_free) {
        if total - free > 1.0 * GIB {
            out.push(format!(
                "{} of VRAM is in use by other programs (an LLM?): the `always` VRAM policy unloads Ollama's models first",
                gib(total - free)
            ));
        }
    }
    out
}
