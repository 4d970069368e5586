//! A job's memory and speed options on their way to sd.cpp: checked against the model and this build when the job
//! is validated, planned (placement, tiling, budget) with the memory at hand when it runs, and turned into sd.cpp's
//! context and generation parameters by the worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use diffugen_models::plan::{self, Constraints, Job, Resources};
use diffugen_models::{Components, Group, MemoryOptions, Part, Placement, Plan, StepCache, Tiling};
use serde::{Deserialize, Serialize};

/// Whether this build of sd.cpp has a GPU backend (CUDA or Vulkan).
pub const GPU_BACKEND: bool = cfg!(any(feature = "cuda", feature = "vulkan"));

/// The GPU's total memory in bytes as NVML read it at start-up (0: unknown), for checking VRAM budgets.
static VRAM_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Tells validation how much memory the GPU has (from NVML at start-up).
pub fn set_vram_total(bytes: Option<f64>) {
    VRAM_TOTAL.store(bytes.map_or(0, |b| b.max(0.0) as u64), Ordering::Relaxed);
}

fn vram_total() -> Option<f64> {
    match VRAM_TOTAL.load(Ordering::Relaxed) {
        0 => None,
        bytes => Some(bytes as f64),
    }
}

/// The memory options of a validated job, and its plan once made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySpec {
    /// What was asked for (the request over the model card over the settings).
    pub options: MemoryOptions,
    /// Placements fixed by the options, per sd.cpp module.
    pub placement: BTreeMap<Group, Placement>,
    pub cache: Option<StepCache>,
    /// The plan the job runs with, made just before it runs.
    pub plan: Option<Plan>,
}

/// The parts of a model made of several files, for checking placement keys; empty for a single-file checkpoint,
/// whose family says which encoders it holds.
fn parts_of(components: &Components) -> Vec<Part> {
    let encoders: Vec<Part> = Part::ALL
        .into_iter()
        .filter(|p| p.group() == Group::TextEncoders && components.get(p.component()).is_some())
        .collect();
    if encoders.is_empty() {
        return Vec::new();
    }
    [Part::Diffusion, Part::Vae]
        .into_iter()
        .chain(encoders)
        .collect()
}

impl MemorySpec {
    /// Checks `options` for a model of `family` made of `components` on this build; errors name the field below
    /// `memory.`.
    pub fn checked(
        options: MemoryOptions,
        family: diffugen_models::Family,
        components: &Components,
    ) -> Result<MemorySpec, Vec<(String, String)>> {
        let placement = diffugen_models::options::check(
            &options,
            family,
            &parts_of(components),
            GPU_BACKEND,
            vram_total().map(|b| b / (1u64 << 30) as f64),
        )?;
        let cache = options
            .cache
            .map(|c| c.for_family(family))
            .transpose()
            .map_err(|m| vec![("cache".to_string(), m)])?
            .flatten();
        Ok(MemorySpec {
            options,
            placement,
            cache,
            plan: None,
        })
    }

    /// Whether the VAE decodes in tiles: the plan's choice, else what was asked for.
    pub fn vae_tiling(&self) -> bool {
        match (&self.plan, self.options.vae_tiling) {
            (Some(plan), _) => plan.vae_tiling,
            (None, Some(Tiling::On)) => true,
            _ => false,
        }
    }

    /// Where a module runs: the plan's choice, else what was asked for (`None`: sd.cpp's default device).
    pub fn placement(&self, group: Group) -> Option<Placement> {
        self.plan
            .as_ref()
            .and_then(|p| p.group(group))
            .or_else(|| self.placement.get(&group).copied())
    }

    /// sd.cpp's `backend` (where each module computes) and `params_backend` (where its weights live), e.g.
    /// `te=cpu`. Empty strings leave sd.cpp's default (the best device). On a CPU-only build a planned `cpu` is
    /// sd.cpp's default already, so only an explicit choice is passed on.
    pub fn backends(&self) -> (String, String) {
        let mut compute = Vec::new();
        let mut params = Vec::new();
        for group in Group::ALL {
            let explicit = self.placement.contains_key(&group);
            if !GPU_BACKEND && !explicit {
                continue;
            }
            match self.placement(group) {
                Some(Placement::Cpu) => {
                    compute.push(format!("{}=cpu", group.sd_key()));
                    params.push(format!("{}=cpu", group.sd_key()));
                }
                Some(Placement::Offload) => params.push(format!("{}=cpu", group.sd_key())),
                Some(Placement::Gpu) | None => {}
            }
        }
        (compute.join(","), params.join(","))
    }

    /// The VRAM budget for streamed diffusion weights (GiB), when the diffusion model is offloaded under one.
    pub fn max_vram_gib(&self) -> Option<f64> {
        if self.placement(Group::Diffusion) != Some(Placement::Offload) {
            return None;
        }
        self.plan
            .as_ref()
            .and_then(|p| p.max_vram_gib)
            .filter(|_| GPU_BACKEND)
            .or(self.options.vram_budget_gib)
    }

    /// Flash attention in the diffusion model: asked for, or chosen by the plan to fit (on a GPU build, or when
    /// the plan is for the CPU).
    pub fn diffusion_flash_attn(&self) -> bool {
        let planned = self
            .plan
            .as_ref()
            .is_some_and(|p| p.flash_attn && (GPU_BACKEND || p.vram_available_bytes.is_none()));
        self.options.flash_attn.unwrap_or(false) || planned
    }

    /// The planner's constraints: what the options fixed.
    fn constraints(&self) -> Constraints {
        Constraints {
            placement: self.placement.clone(),
            vram_budget_gib: self.options.vram_budget_gib,
            vae_tiling: match self.options.vae_tiling {
                Some(Tiling::On) => Some(true),
                Some(Tiling::Off) => Some(false),
                Some(Tiling::Auto) | None => None,
            },
            flash_attn: self.options.flash_attn,
        }
    }
}

/// Fills what a job's options left out from `defaults` (the settings); when the result does not fit the model,
/// the job keeps its own options and the warning says why.
pub fn apply_defaults(spec: &mut crate::JobSpec, defaults: &MemoryOptions) -> Vec<String> {
    if defaults.is_empty() {
        return Vec::new();
    }
    let merged = spec.memory.options.or(defaults);
    if merged == spec.memory.options {
        return Vec::new();
    }
    match MemorySpec::checked(merged, spec.family, &spec.components) {
        Ok(checked) => {
            spec.memory = checked;
            Vec::new()
        }
        Err(errors) => {
            let why: Vec<String> = errors
                .iter()
                .map(|(field, message)| format!("memory.{field}: {message}"))
                .collect();
            vec![format!(
                "the settings' memory defaults do not apply to this model ({}); it runs without them",
                why.join("; ")
            )]
        }
    }
}

/// Free system memory (MemAvailable), in bytes.
pub fn ram_free() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(8.0 * (1u64 << 30) as f64, |kib| kib * 1024.0)
}

/// The memory a job can plan with: the GPU's (total, free for diffusion) when there is a reading, and the RAM.
/// A CPU-only build on a machine with a GPU plans as if the GPU were used, so the VRAM orchestrator still makes
/// room the way it would for a GPU build (GPU-only choices such as flash attention or a VRAM budget then stay
/// out of sd.cpp's parameters).
pub fn resources(gpu: Option<(f64, f64)>) -> Resources {
    Resources {
        vram_total: gpu.map(|(total, _)| total),
        vram_free: gpu.map(|(_, free)| free),
        ram_free: ram_free(),
    }
}

/// Plans `spec` for `resources` and keeps the plan in it for the worker.
pub fn plan_job(spec: &mut crate::JobSpec, resources: &Resources) -> Result<Plan, String> {
    let mut shape = plan::shape_of(&spec.components, spec.family)?;
    // A ControlNet's weights sit beside the diffusion model's and go where it goes.
    if let Some(control) = &spec.control {
        let entry = diffugen_models::inspect(&control.path);
        if let Some(diffusion) = shape
            .parts
            .iter_mut()
            .find(|p| p.part == diffugen_models::Part::Diffusion)
        {
            diffusion.bytes += entry.size_bytes;
            diffusion.parameters += entry.parameters;
        }
    }
    // The hires pass is the larger one: it sets the peak.
    let (width, height) = spec.output_size();
    let job = Job {
        width,
        height,
        steps: spec.total_steps(),
        cfg: spec.cfg_scale > 1.0,
    };
    let plan = plan::plan(&shape, &job, resources, &spec.memory.constraints());
    spec.memory.plan = Some(plan.clone());
    Ok(plan)
}
