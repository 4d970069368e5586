//! `diffugen models fit`: asks the memory planner how a model would run at a size on this machine (or on a card
//! described by flags) — where each part goes, whether the VAE tiles, the VRAM and RAM peaks — and, when it does not
//! fit, what to do about it.

use std::process::ExitCode;

use clap::Args;
use diffugen_models::plan::{self, Resources};
use diffugen_vram::GpuProbe;

use diffugen_runtime::Config;

const GIB: f64 = (1u64 << 30) as f64;
/// The card planned for when this build can use a GPU but NVML reads none (and no figures are given).
const DEFAULT_VRAM_TOTAL_GIB: f64 = 8.0;
const DEFAULT_VRAM_FREE_GIB: f64 = 7.5;

#[derive(Args)]
pub struct FitArgs {
    /// A model id (see `diffugen models`)
    id: String,
    /// Image width [default: the model's]
    #[arg(long, short = 'W')]
    width: Option<u32>,
    /// Image height [default: the model's]
    #[arg(long, short = 'H')]
    height: Option<u32>,
    /// The GPU's total memory in GiB [default: NVML's reading; with no GPU and no figures, a CPU plan — or, in a
    /// GPU build, an 8 GiB card with 7.5 GiB free]
    #[arg(long, value_name = "GIB")]
    vram_total: Option<f64>,
    /// Free GPU memory in GiB [default: NVML's reading, or the total less 5 %]
    #[arg(long, value_name = "GIB")]
    vram_free: Option<f64>,
    /// Free system memory in GiB [default: the system's available memory]
    #[arg(long, value_name = "GIB")]
    ram_free: Option<f64>,
    /// Sampling steps [default: the model's]
    #[arg(long)]
    steps: Option<u32>,
}

fn gib_arg(flag: &str, value: Option<f64>) -> Result<Option<f64>, String> {
    match value {
        Some(v) if !v.is_finite() || v <= 0.0 || v > 4096.0 => Err(format!(
            "--{flag}: must be a number of GiB above 0 (e.g. 7.6), got {v}"
        )),
        other => Ok(other.map(|v| v * GIB)),
    }
}

/// The memory to plan with, and a note on where it came from.
fn resources(args: &FitArgs) -> Result<(Resources, String), String> {
    let total = gib_arg("vram-total", args.vram_total)?;
    let free = gib_arg("vram-free", args.vram_free)?;
    let ram = gib_arg("ram-free", args.ram_free)?.unwrap_or_else(diffugen_engine::memory::ram_free);
    if let (Some(t), Some(f)) = (total, free) {
        if f > t {
            return Err(format!(
                "--vram-free ({:.1} GiB) cannot be more than --vram-total ({:.1} GiB)",
                f / GIB,
                t / GIB
            ));
        }
    }
    let gpu = match (total, free) {
        (Some(t), f) => Some((t, f.unwrap_or(t * 0.95), "the figures given")),
        (None, Some(f)) => Some((f, f, "the figures given")),
        (None, None) => match diffugen_vram::Nvml::new().read() {
            Ok(gpus) if diffugen_engine::memory::GPU_BACKEND => gpus
                .first()
                .map(|g| (g.total_bytes, g.free_bytes, "NVML's reading of GPU 0")),
            _ if diffugen_engine::memory::GPU_BACKEND => Some((
                DEFAULT_VRAM_TOTAL_GIB * GIB,
                DEFAULT_VRAM_FREE_GIB * GIB,
                "no NVML reading: a default 8 GiB card with 7.5 GiB free",
            )),
            _ => None,
        },
    };
    let source = gpu.map_or_else(
        || "this build of DiffuGen runs on the CPU only".to_string(),
        |(_, _, s)| s.to_string(),
    );
    Ok((
        Resources {
            vram_total: gpu.map(|(t, _, _)| t),
            vram_free: gpu.map(|(_, f, _)| f),
            ram_free: ram,
        },
        source,
    ))
}

pub fn run(paths: &Config, args: &FitArgs, json: bool) -> Result<ExitCode, String> {
    let library = paths.library();
    let model = library.resolve(&args.id).map_err(|e| e.to_string())?;
    let d = &model.defaults;
    let (width, height) = (
        args.width.unwrap_or(d.width),
        args.height.unwrap_or(d.height),
    );
    for (flag, value) in [("width", width), ("height", height)] {
        if !(64..=4096).contains(&value) || value % d.size_multiple != 0 {
            return Err(format!(
                "--{flag}: must be a multiple of {} from 64 to 4096 for {} models, got {value}",
                d.size_multiple, model.family
            ));
        }
    }
    let (resources, source) = resources(args)?;
    let result = plan::plan_model(&model, (Some(width), Some(height)), args.steps, &resources)?;
    if json {
        let mut value = serde_json::to_value(&result).map_err(|e| e.to_string())?;
        value["model"] = model.id.clone().into();
        value["width"] = width.into();
        value["height"] = height.into();
        value["resources"] = serde_json::json!({
            "vram_total_bytes": resources.vram_total,
            "vram_free_bytes": resources.vram_free,
            "ram_free_bytes": resources.ram_free,
            "source": source,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} at {width}×{height}: {}",
            model.id,
            if result.fits { "fits" } else { "does not fit" }
        );
        println!("  memory: {source}");
        println!("  plan: {}", result.summary());
        for reason in &result.reasons {
            println!("  - {reason}");
        }
        for advice in &result.advice {
            println!("  advice: {advice}");
        }
    }
    Ok(if result.fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
