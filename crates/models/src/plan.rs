//! The memory planner: where each part of a model runs (GPU, CPU, or kept in RAM and moved to the GPU only while it
//! works), whether the VAE decodes in tiles, and how much VRAM and RAM the job then needs at its peak — chosen from
//! the parts' real sizes (read from their headers), the image size and the memory at hand, so that the job fits with
//! a safety margin and runs as fast as it can.
//!
//! sd.cpp runs a job in three phases — text encoding, sampling, VAE decoding — and frees each phase's working
//! (compute) buffer when the phase ends, while weights placed on a device stay there for the whole job. So:
//! `vram peak = resident GPU weights + max over phases (weights moved in for that phase + its compute buffer)`,
//! and likewise for RAM. Working buffers are modelled per architecture from the image size (attention scores grow
//! with the square of the tokens unless flash attention is on; the VAE decoder's activations with the pixels,
//! unless it decodes in tiles); ARCHITECTURE.md gives the model and the figures it was checked against.

use crate::Family;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::header::{self, Tensor};
use crate::identify::{identify, Role};
use crate::Components;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// A part of a model, as the plan's `placement` names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, specta::Type,
)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Diffusion,
    Vae,
    ClipL,
    ClipG,
    T5xxl,
    Llm,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::Diffusion,
        Part::Vae,
        Part::ClipL,
        Part::ClipG,
        Part::T5xxl,
        Part::Llm,
    ];

    /// The name used in plans, options and messages.
    pub fn name(self) -> &'static str {
        match self {
            Part::Diffusion => "diffusion",
            Part::Vae => "vae",
            Part::ClipL => "clip_l",
            Part::ClipG => "clip_g",
            Part::T5xxl => "t5xxl",
            Part::Llm => "llm",
        }
    }

    /// The field of [`crate::Components`] that holds this part as a file of its own.
    pub fn component(self) -> &'static str {
        match self {
            Part::Diffusion => "diffusion_model",
            other => other.name(),
        }
    }

    /// The sd.cpp module that runs it: sd.cpp places all text encoders together (`te`).
    pub fn group(self) -> Group {
        match self {
            Part::Diffusion => Group::Diffusion,
            Part::Vae => Group::Vae,
            Part::ClipL | Part::ClipG | Part::T5xxl | Part::Llm => Group::TextEncoders,
        }
    }
}

/// The modules sd.cpp can place separately (`backend` / `params_backend` keys).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, specta::Type,
)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Diffusion,
    TextEncoders,
    Vae,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::TextEncoders, Group::Diffusion, Group::Vae];

    /// sd.cpp's module key.
    pub fn sd_key(self) -> &'static str {
        match self {
            Group::Diffusion => "diffusion",
            Group::TextEncoders => "te",
            Group::Vae => "vae",
        }
    }

    /// The field name in requests and settings.
    pub fn name(self) -> &'static str {
        match self {
            Group::Diffusion => "diffusion",
            Group::TextEncoders => "text_encoders",
            Group::Vae => "vae",
        }
    }
}

/// Where a part runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Weights resident in VRAM, computed on the GPU.
    Gpu,
    /// Weights in RAM, computed on the CPU.
    Cpu,
    /// Weights kept in RAM and moved to the GPU while the part works (for the diffusion model under a VRAM
    /// budget, in pieces), computed on the GPU.
    Offload,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Gpu => "gpu",
            Placement::Cpu => "cpu",
            Placement::Offload => "offload",
        }
    }
}

/// One part's weights as sd.cpp holds them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartWeights {
    pub part: Part,
    pub bytes: f64,
    pub parameters: f64,
}

/// What the planner needs of a model: its family and its parts' sizes (from headers alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub family: Family,
    pub parts: Vec<PartWeights>,
}

impl ModelShape {
    pub fn part(&self, part: Part) -> Option<&PartWeights> {
        self.parts.iter().find(|p| p.part == part)
    }

    fn group_bytes(&self, group: Group) -> f64 {
        self.parts
            .iter()
            .filter(|p| p.part.group() == group)
            .map(|p| p.bytes)
            .sum()
    }

    fn group_parameters(&self, group: Group) -> f64 {
        self.parts
            .iter()
            .filter(|p| p.part.group() == group)
            .map(|p| p.parameters)
            .sum()
    }

    /// All weights.
    pub fn weights_bytes(&self) -> f64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// Bytes per weight of a ggml type as sd.cpp holds it (8-bit floats are widened to f16 when loaded).
pub fn bytes_per_weight(dtype: &str) -> f64 {
    match dtype.to_ascii_lowercase().as_str() {
        "f64" | "i64" => 8.0,
        "f32" | "i32" => 4.0,
        "f16" | "bf16" | "i16" | "f8_e4m3" | "f8_e5m2" | "f8_e4m3fn" => 2.0,
        "i8" => 1.0,
        "q8_0" => 34.0 / 32.0,
        "q8_1" => 36.0 / 32.0,
        "q5_0" => 22.0 / 32.0,
        "q5_1" => 24.0 / 32.0,
        "q4_0" | "iq4_nl" => 18.0 / 32.0,
        "q4_1" => 20.0 / 32.0,
        "q2_k" => 84.0 / 256.0,
        "q3_k" => 110.0 / 256.0,
        "q4_k" => 144.0 / 256.0,
        "q5_k" => 176.0 / 256.0,
        "q6_k" => 210.0 / 256.0,
        "q8_k" => 292.0 / 256.0,
        "iq4_xs" => 136.0 / 256.0,
        _ => 2.0,
    }
}

fn tensor_bytes(t: &Tensor) -> f64 {
    t.elements() as f64 * bytes_per_weight(&t.dtype)
}

/// Which part a tensor of a single-file checkpoint belongs to (sd.cpp's prefixes).
fn checkpoint_part(name: &str) -> Option<Part> {
    if name.starts_with("model.diffusion_model.") || name.starts_with("unet.") {
        Some(Part::Diffusion)
    } else if name.starts_with("first_stage_model.") || name.starts_with("vae.") {
        Some(Part::Vae)
    } else if name.starts_with("conditioner.embedders.1.")
        || name.starts_with("cond_stage_model.1.")
        || name.starts_with("text_encoders.clip_g.")
    {
        Some(Part::ClipG)
    } else if name.starts_with("text_encoders.t5xxl.") {
        Some(Part::T5xxl)
    } else if name.starts_with("cond_stage_model.")
        || name.starts_with("conditioner.embedders.0.")
        || name.starts_with("text_encoders.clip_l.")
        || name.starts_with("te.")
    {
        Some(Part::ClipL)
    } else {
        None
    }
}

/// Adds a file's tensors to `parts`: a checkpoint split by prefix, any other file as the part it was given as.
fn add_file(parts: &mut BTreeMap<Part, PartWeights>, tensors: &[Tensor], as_part: Option<Part>) {
    for t in tensors {
        let part = match as_part {
            Some(part) => Some(part),
            None => checkpoint_part(&t.name),
        };
        let Some(part) = part else { continue };
        let entry = parts.entry(part).or_insert(PartWeights {
            part,
            bytes: 0.0,
            parameters: 0.0,
        });
        entry.bytes += tensor_bytes(t);
        entry.parameters += t.elements() as f64;
    }
}

/// The part a component file holds (a TAESD counts as the VAE it stands in for).
fn encoder_part(field: &str) -> Option<Part> {
    Part::ALL
        .into_iter()
        .find(|p| p.component() == field)
        .or((field == "taesd").then_some(Part::Vae))
}

/// Files' parts already read (see [`crate::stamp`]), by path and component field.
static FILE_PARTS: crate::stamp::FileCache<(std::path::PathBuf, String), Vec<PartWeights>> =
    crate::stamp::FileCache::new();

/// What one file of a model holds, by part: read from its header once, then remembered until the file changes
/// (every job plans, and a large checkpoint's header takes milliseconds to read).
fn file_parts(field: &str, path: &Path) -> Result<Vec<PartWeights>, String> {
    FILE_PARTS.get(path, (path.to_path_buf(), field.to_string()), || {
        let header = header::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let as_part = if field == "model" {
            // A checkpoint that is really one part (a UNet alone) counts as that part.
            match identify(&header.tensors).role {
                Role::Checkpoint => None,
                _ => Some(Part::Diffusion),
            }
        } else {
            encoder_part(field)
        };
        let mut parts = BTreeMap::new();
        add_file(&mut parts, &header.tensors, as_part);
        Ok(parts.into_values().collect())
    })
}

/// Reads the parts of a model from its files' headers (weights are never read).
pub fn shape_of(components: &Components, family: Family) -> Result<ModelShape, String> {
    let mut parts = BTreeMap::new();
    for (field, path) in components.files() {
        // A TAESD beside a full VAE only draws previews; sd.cpp decodes with the VAE.
        if field == "taesd" && (components.vae.is_some() || components.model.is_some()) {
            continue;
        }
        for weights in file_parts(field, path)? {
            let entry = parts.entry(weights.part).or_insert(PartWeights {
                part: weights.part,
                bytes: 0.0,
                parameters: 0.0,
            });
            entry.bytes += weights.bytes;
            entry.parameters += weights.parameters;
        }
    }
    // SDXS checkpoints carry no VAE: sd.cpp decodes with its built-in TAE (2.4 M parameters in f16).
    if family == Family::Sdxs && !parts.contains_key(&Part::Vae) {
        parts.insert(
            Part::Vae,
            PartWeights {
                part: Part::Vae,
                bytes: 4.67 * MIB,
                parameters: 4.67 * MIB / 2.0,
            },
        );
    }
    Ok(ModelShape {
        family,
        parts: parts.into_values().collect(),
    })
}

/// The compute buffers the planner expects for each phase — text encoders, one sampling step, the VAE decode — at
/// `job`'s size (for checking the model against what sd.cpp logs).
pub fn compute_buffers(shape: &ModelShape, job: &Job, flash: bool, tiled: bool) -> (f64, f64, f64) {
    let a = model::arch(shape.family);
    (
        model::text_compute(shape),
        model::diffusion_compute(&a, job.width, job.height, flash),
        model::vae_compute(&a, job.width, job.height, tiled),
    )
}

/// The memory the plan may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// The GPU's total and free memory; `None` when there is no GPU to plan for (or the build has no GPU backend).
    pub vram_total: Option<f64>,
    pub vram_free: Option<f64>,
    /// Free system memory.
    pub ram_free: f64,
}

/// A user's (or a model card's) choices the plan must respect; `None` leaves each to the planner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    pub placement: BTreeMap<Group, Placement>,
    /// A VRAM budget for the diffusion model's weights when offloaded (sd.cpp's `max_vram`, GiB).
    pub vram_budget_gib: Option<f64>,
    pub vae_tiling: Option<bool>,
    pub flash_attn: Option<bool>,
}

/// What the job will be: the image and how it is made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub width: u32,
    pub height: u32,
    /// Sampling steps of the longest pass.
    pub steps: u32,
    /// Whether a negative prompt is run at every step (CFG above 1).
    pub cfg: bool,
}

/// A plan: where each part runs and what the job needs at its peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct Plan {
    pub fits: bool,
    /// Each part of the model (`diffusion`, `vae`, `clip_l`, `clip_g`, `t5xxl`, `llm`) and where it runs.
    pub placement: BTreeMap<String, Placement>,
    pub vae_tiling: bool,
    pub flash_attn: bool,
    /// The VRAM budget handed to sd.cpp for the diffusion model's weights (`max_vram`), when it streams them.
    pub max_vram_gib: Option<f64>,
    pub estimated_vram_peak_bytes: f64,
    pub estimated_ram_peak_bytes: f64,
    /// A rough render time (seconds) under this plan, for comparing plans (not a promise).
    pub estimated_seconds: f64,
    /// The free memory the plan was made for (after the safety margin), for the meter and messages.
    pub vram_available_bytes: Option<f64>,
    pub ram_available_bytes: f64,
    /// Why each choice was made, in a user's words.
    pub reasons: Vec<String>,
    /// What to do when it does not fit.
    pub advice: Vec<String>,
}

impl Plan {
    /// Where a part runs.
    pub fn part(&self, part: Part) -> Option<Placement> {
        self.placement.get(part.name()).copied()
    }

    /// Where a module runs (all text encoders share one placement).
    pub fn group(&self, group: Group) -> Option<Placement> {
        Part::ALL
            .into_iter()
            .filter(|p| p.group() == group)
            .find_map(|p| self.part(p))
    }

    /// One line for the job's events and the CLI.
    pub fn summary(&self) -> String {
        let places: Vec<String> = Group::ALL
            .iter()
            .filter_map(|g| self.group(*g).map(|p| format!("{} {}", g.name(), p.name())))
            .collect();
        let mut text = places.join(", ");
        if self.vae_tiling {
            text.push_str(", VAE tiled");
        }
        if self.flash_attn {
            text.push_str(", flash attention");
        }
        if let Some(b) = self.max_vram_gib {
            text.push_str(&format!(", diffusion weights streamed under {b:.1} GiB"));
        }
        let ram = self.estimated_ram_peak_bytes / GIB;
        if self.estimated_vram_peak_bytes > 0.0 {
            let vram = self.estimated_vram_peak_bytes / GIB;
            format!("{text}; peak ~{vram:.1} GiB VRAM, ~{ram:.1} GiB RAM")
        } else {
            // All on the CPU: "~0.0 GiB VRAM" would only puzzle.
            format!("{text}; peak ~{ram:.1} GiB RAM")
        }
    }
}

pub mod model;

/// Throughput assumptions for choosing between plans (relative speed is what matters).
const GPU_FLOPS: f64 = 30e12;
const CPU_FLOPS: f64 = 0.4e12;
/// Host-to-GPU copies (PCIe 4.0 x16, in practice).
const TRANSFER_BYTES_PER_S: f64 = 12e9;
/// VRAM the CUDA/Vulkan runtime itself holds (contexts, cuBLAS workspaces), which NVML counts.
const GPU_RUNTIME_BYTES: f64 = 350.0 * MIB;
/// RAM the engine process holds besides weights and buffers.
const PROCESS_RAM_BYTES: f64 = 300.0 * MIB;

/// The safety margin kept free on the GPU: 4 % of the card, at least 256 MiB.
pub fn vram_margin(total: f64) -> f64 {
    (total * 0.04).max(256.0 * MIB)
}

/// The safety margin kept free in RAM: 5 %, at least 512 MiB.
pub fn ram_margin(free: f64) -> f64 {
    (free * 0.05).max(512.0 * MIB)
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    te: Placement,
    diffusion: Placement,
    vae: Placement,
    tiling: bool,
    flash: bool,
    /// Streamed diffusion weights: the VRAM budget for them.
    budget: Option<f64>,
}

struct Evaluation {
    vram: f64,
    ram: f64,
    seconds: f64,
}

fn evaluate(shape: &ModelShape, job: &Job, c: &Candidate, gpu: bool) -> Evaluation {
    let a = model::arch(shape.family);
    let te_w = shape.group_bytes(Group::TextEncoders);
    let dm_w = shape.group_bytes(Group::Diffusion);
    let vae_w = shape.group_bytes(Group::Vae);
    let te_c = model::text_compute(shape);
    let dm_c = model::diffusion_compute(&a, job.width, job.height, c.flash);
    let vae_c = model::vae_compute(&a, job.width, job.height, c.tiling);

    let on_gpu = |p: Placement| p != Placement::Cpu;
    let resident = |p: Placement, w: f64| if p == Placement::Gpu { w } else { 0.0 };
    let in_ram = |p: Placement, w: f64| if p == Placement::Gpu { 0.0 } else { w };
    let resident_vram = resident(c.te, te_w) + resident(c.diffusion, dm_w) + resident(c.vae, vae_w);
    // During a phase, an offloaded part's weights are on the GPU too (or its budget's worth of them).
    let phase_vram = |p: Placement, w: f64, compute: f64, budget: Option<f64>| match p {
        Placement::Gpu => compute,
        Placement::Offload => budget.map_or(w, |b| b.min(w)) + compute,
        Placement::Cpu => 0.0,
    };
    let phases_vram = [
        phase_vram(c.te, te_w, te_c, None),
        phase_vram(c.diffusion, dm_w, dm_c, c.budget),
        phase_vram(c.vae, vae_w, vae_c, None),
    ];
    let any_gpu = [c.te, c.diffusion, c.vae].into_iter().any(on_gpu);
    let vram = if gpu && any_gpu {
        GPU_RUNTIME_BYTES + resident_vram + phases_vram.into_iter().fold(0.0, f64::max)
    } else {
        0.0
    };
    let ram_weights = in_ram(c.te, te_w) + in_ram(c.diffusion, dm_w) + in_ram(c.vae, vae_w);
    let cpu_compute = |p: Placement, compute: f64| if p == Placement::Cpu { compute } else { 0.0 };
    let ram_phase = [
        cpu_compute(c.te, te_c),
        cpu_compute(c.diffusion, dm_c),
        cpu_compute(c.vae, vae_c),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let ram = PROCESS_RAM_BYTES + ram_weights + ram_phase;

    // Time: compute at the device's speed, plus the copies an offloaded part costs.
    let speed = |p: Placement| {
        if on_gpu(p) && gpu {
            GPU_FLOPS
        } else {
            CPU_FLOPS
        }
    };
    let text_tokens = if a.dit { a.text_tokens.max(77.0) } else { 77.0 };
    let te_flops = 2.0 * shape.group_parameters(Group::TextEncoders) * text_tokens;
    let step_flops = model::step_flops(shape, &a, job);
    let pixels = f64::from(job.width) * f64::from(job.height);
    let vae_flops = pixels
        * if a.vae_bytes_per_pixel >= model::VAE_BYTES_PER_PIXEL {
            4.8e6
        } else {
            0.6e6
        }
        * if c.tiling { 1.25 } else { 1.0 };
    let copy = |p: Placement, w: f64| {
        if p == Placement::Offload {
            w / TRANSFER_BYTES_PER_S
        } else {
            0.0
        }
    };
    let evaluations = if job.cfg { 2.0 } else { 1.0 };
    let diffusion_copies = match (c.diffusion, c.budget) {
        // Streaming moves what does not fit the budget once per model evaluation.
        (Placement::Offload, Some(b)) => {
            (dm_w - b).max(0.0) / TRANSFER_BYTES_PER_S * f64::from(job.steps) * evaluations
                + b.min(dm_w) / TRANSFER_BYTES_PER_S
        }
        _ => copy(c.diffusion, dm_w),
    };
    let seconds = te_flops / speed(c.te)
        + copy(c.te, te_w)
        + f64::from(job.steps) * step_flops / speed(c.diffusion)
        + diffusion_copies
        + vae_flops / speed(c.vae)
        + copy(c.vae, vae_w);
    Evaluation { vram, ram, seconds }
}

/// How `model` would run at a size (its default size and steps when left out) with `resources`, nothing fixed by
/// the user: the planner's answer, its advice naming the model.
pub fn plan_model(
    model: &crate::ResolvedModel,
    size: (Option<u32>, Option<u32>),
    steps: Option<u32>,
    resources: &Resources,
) -> Result<Plan, String> {
    let shape = shape_of(&model.components, model.family)?;
    let d = &model.defaults;
    let job = Job {
        width: size.0.unwrap_or(d.width),
        height: size.1.unwrap_or(d.height),
        steps: steps.unwrap_or(d.steps),
        cfg: d.cfg_scale > 1.0,
    };
    let mut result = plan(&shape, &job, resources, &Constraints::default());
    for advice in &mut result.advice {
        *advice = advice.replace(
            "models convert MODEL",
            &format!("models convert {}", model.id),
        );
    }
    Ok(result)
}

/// What a model needs with every part resident on the GPU, nothing tiled: the figure model cards show, and the
/// most a job of this model and size can need. Files that cannot be read count as empty.
pub fn full_gpu_need(
    components: &Components,
    family: Family,
    width: u32,
    height: u32,
    cfg: bool,
) -> f64 {
    let shape = shape_of(components, family).unwrap_or(ModelShape {
        family,
        parts: Vec::new(),
    });
    let job = Job {
        width,
        height,
        steps: 1,
        cfg,
    };
    let all_gpu = Candidate {
        te: Placement::Gpu,
        diffusion: Placement::Gpu,
        vae: Placement::Gpu,
        tiling: false,
        flash: false,
        budget: None,
    };
    evaluate(&shape, &job, &all_gpu, true).vram
}

/// Plans a job: the fastest arrangement that fits `resources` with a safety margin, within `constraints`; when
/// none fits, the closest one with advice on what to change.
pub fn plan(
    shape: &ModelShape,
    job: &Job,
    resources: &Resources,
    constraints: &Constraints,
) -> Plan {
    let mut result = choose(shape, job, resources, constraints);
    if !result.fits {
        result.advice = advice(shape, job, resources, constraints, &result);
    }
    result
}

fn choose(shape: &ModelShape, job: &Job, resources: &Resources, constraints: &Constraints) -> Plan {
    let gpu = resources.vram_total.is_some();
    let vram_total = resources.vram_total.unwrap_or(0.0);
    let vram_free = resources.vram_free.unwrap_or(vram_total).min(vram_total);
    let vram_available = (vram_free - vram_margin(vram_total)).max(0.0);
    let ram_available = (resources.ram_free - ram_margin(resources.ram_free)).max(0.0);
    let diffusion_weights = shape.group_bytes(Group::Diffusion);

    let options = |group: Group| -> Vec<Placement> {
        if let Some(p) = constraints.placement.get(&group) {
            return vec![*p];
        }
        if !gpu {
            return vec![Placement::Cpu];
        }
        vec![Placement::Gpu, Placement::Offload, Placement::Cpu]
    };
    let bools = |fixed: Option<bool>, allowed: bool| match fixed {
        Some(v) => vec![v],
        None if allowed => vec![false, true],
        None => vec![false],
    };

    let mut best: Option<(Candidate, Evaluation)> = None;
    let mut smallest: Option<(Candidate, Evaluation)> = None;
    for te in options(Group::TextEncoders) {
        for diffusion in options(Group::Diffusion) {
            for vae in options(Group::Vae) {
                for tiling in bools(constraints.vae_tiling, true) {
                    for flash in bools(constraints.flash_attn, true) {
                        let budgets: Vec<Option<f64>> =
                            match (diffusion, constraints.vram_budget_gib) {
                                (Placement::Offload, Some(b)) => vec![Some(b * GIB)],
                                (Placement::Offload, None) => vec![None, Some(0.0)],
                                _ => vec![None],
                            };
                        for budget in budgets {
                            let mut c = Candidate {
                                te,
                                diffusion,
                                vae,
                                tiling,
                                flash,
                                budget,
                            };
                            // A streaming budget: as much of the weights as the rest of the plan leaves room for.
                            if budget == Some(0.0) {
                                let without = evaluate(
                                    shape,
                                    job,
                                    &Candidate {
                                        budget: Some(0.0),
                                        ..c
                                    },
                                    gpu,
                                );
                                let room = vram_available - without.vram;
                                if room < 0.25 * GIB || room >= diffusion_weights {
                                    continue;
                                }
                                c.budget = Some((room / GIB * 10.0).floor() / 10.0 * GIB);
                            }
                            let e = evaluate(shape, job, &c, gpu);
                            let fits = e.vram <= vram_available && e.ram <= ram_available;
                            let need = e.vram.max(0.0) / vram_available.max(1.0)
                                + e.ram / ram_available.max(1.0);
                            if smallest.as_ref().is_none_or(|(_, s)| {
                                need < s.vram / vram_available.max(1.0)
                                    + s.ram / ram_available.max(1.0)
                            }) {
                                smallest = Some((c, evaluate(shape, job, &c, gpu)));
                            }
                            if fits && best.as_ref().is_none_or(|(_, b)| e.seconds < b.seconds) {
                                best = Some((c, e));
                            }
                        }
                    }
                }
            }
        }
    }
    let fits = best.is_some();
    let (chosen, e) = best
        .or(smallest)
        .expect("at least one candidate is evaluated");
    let mut placement = BTreeMap::new();
    for p in &shape.parts {
        let place = match p.part.group() {
            Group::TextEncoders => chosen.te,
            Group::Diffusion => chosen.diffusion,
            Group::Vae => chosen.vae,
        };
        placement.insert(p.part.name().to_string(), place);
    }
    let mut result = Plan {
        fits,
        placement,
        vae_tiling: chosen.tiling,
        flash_attn: chosen.flash,
        max_vram_gib: chosen
            .budget
            .filter(|_| chosen.diffusion == Placement::Offload)
            .map(|b| (b / GIB * 10.0).round() / 10.0),
        estimated_vram_peak_bytes: e.vram,
        estimated_ram_peak_bytes: e.ram,
        estimated_seconds: e.seconds,
        vram_available_bytes: gpu.then_some(vram_available),
        ram_available_bytes: ram_available,
        reasons: Vec::new(),
        advice: Vec::new(),
    };
    result.reasons = reasons(shape, job, &result, gpu, constraints);
    result
}

mod advice;
use advice::{advice, reasons};

#[cfg(test)]
mod tests;
