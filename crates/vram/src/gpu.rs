//! Reading the GPU: NVML (through nvml-wrapper) where an NVIDIA driver is present, and one clear "no NVIDIA GPU
//! detected" state where it is not. The library is loaded once; a missing driver is reported once, not on every
//! sample.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// One GPU's memory at a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct GpuReading {
    pub index: u32,
    pub name: String,
    pub total_bytes: f64,
    pub used_bytes: f64,
    pub free_bytes: f64,
    pub processes: Vec<GpuProcess>,
}

/// Who a process on the GPU belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// DiffuGen itself or its engine worker.
    Diffugen,
    /// Ollama's server or one of its model runners.
    Ollama,
    Other,
}

/// A process holding GPU memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct GpuProcess {
    pub pid: u32,
    /// The program's name, when the OS tells it.
    pub name: String,
    /// `null` where the driver does not report per-process use.
    pub used_bytes: Option<f64>,
    pub owner: Owner,
}

/// Where a render lane's engine worker renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaneDevice {
    /// Whatever the build renders on (the first GPU of a GPU build, the CPU otherwise), taking every job's turn
    /// with Ollama: the one lane of a default setup.
    Default,
    /// GPU `index` in NVML's numbering, the only card its worker sees; its jobs take a turn with Ollama only when
    /// an LLM lives on that card (or its memory cannot be told apart).
    Gpu { index: u32 },
    /// The CPU only (an extra lane of a build without a GPU backend): never a turn with Ollama.
    Cpu,
}

impl LaneDevice {
    /// The card whose memory the lane's jobs are planned for (`Default` plans for the first card).
    pub fn card(self) -> Option<u32> {
        match self {
            LaneDevice::Default => Some(0),
            LaneDevice::Gpu { index } => Some(index),
            LaneDevice::Cpu => None,
        }
    }

    /// The lanes of a queue: `lanes` of them; with several lanes and `cards` (the GPUs DiffuGen may use, in NVML's
    /// numbering), lane `i` renders on `cards[i]`; else one `Default` lane followed by CPU lanes.
    pub fn for_lanes(lanes: u32, cards: Option<&[u32]>) -> Vec<LaneDevice> {
        (0..lanes.max(1) as usize)
            .map(|lane| match (cards.filter(|_| lanes > 1), lane) {
                (Some(cards), lane) => cards
                    .get(lane)
                    .map_or(LaneDevice::Cpu, |&index| LaneDevice::Gpu { index }),
                (None, 0) => LaneDevice::Default,
                (None, _) => LaneDevice::Cpu,
            })
            .collect()
    }

    /// The environment that confines a worker to its card: CUDA's numbering made NVML's (PCI bus order, as
    /// `nvidia-smi` counts), then only that card visible to CUDA and to Vulkan.
    pub fn worker_env(self) -> Vec<(String, String)> {
        let LaneDevice::Gpu { index } = self else {
            return Vec::new();
        };
        vec![
            ("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()),
            ("CUDA_VISIBLE_DEVICES".into(), index.to_string()),
            ("GGML_VK_VISIBLE_DEVICES".into(), index.to_string()),
        ]
    }
}

/// Something that can read the GPUs: NVML on a real machine, a simulation in tests.
pub trait GpuProbe: Send + Sync {
    /// Every GPU, or why none can be read (the message is shown to users as is).
    fn read(&self) -> Result<Vec<GpuReading>, String>;
}

/// No GPU reading at all (what a machine without NVIDIA looks like).
pub struct NoGpu(pub String);

impl GpuProbe for NoGpu {
    fn read(&self) -> Result<Vec<GpuReading>, String> {
        Err(self.0.clone())
    }
}

/// The NVIDIA Management Library, opened on first use.
#[derive(Default)]
pub struct Nvml {
    nvml: OnceLock<Result<nvml_wrapper::Nvml, String>>,
}

impl Nvml {
    pub fn new() -> Nvml {
        Nvml::default()
    }

    fn open(&self) -> &Result<nvml_wrapper::Nvml, String> {
        self.nvml.get_or_init(|| {
            use nvml_wrapper::error::NvmlError;
            let opened = nvml_wrapper::Nvml::init().map_err(|e| match e {
                NvmlError::LibloadingError(_) => {
                    "no NVIDIA GPU detected (the NVIDIA driver's libnvidia-ml.so.1 is not installed)".to_string()
                }
                NvmlError::DriverNotLoaded => {
                    "no NVIDIA GPU detected (the NVIDIA driver is not loaded)".to_string()
                }
                NvmlError::NoPermission => {
                    "the NVIDIA GPU cannot be read: permission denied by the driver".to_string()
                }
                other => format!("no NVIDIA GPU detected ({other})"),
            });
            match &opened {
                Ok(_) => tracing::info!("NVML opened"),
                Err(message) => tracing::info!("{message}; the VRAM meter uses Ollama's own figures"),
            }
            opened
        })
    }
}

impl GpuProbe for Nvml {
    fn read(&self) -> Result<Vec<GpuReading>, String> {
        let nvml = self.open().as_ref().map_err(Clone::clone)?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count GPUs: {e}"))?;
        if count == 0 {
            return Err("no NVIDIA GPU detected (the driver reports none)".into());
        }
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML cannot open GPU {index}: {e}"))?;
            let memory = device
                .memory_info()
                .map_err(|e| format!("NVML cannot read GPU {index}'s memory: {e}"))?;
            // Drivers without per-process accounting are not an error: the totals still hold.
            let mut processes = Vec::new();
            let compute = device.running_compute_processes().unwrap_or_default();
            let graphics = device.running_graphics_processes().unwrap_or_default();
            for process in compute.into_iter().chain(graphics) {
                if processes.iter().any(|p: &GpuProcess| p.pid == process.pid) {
                    continue;
                }
                let used_bytes = match process.used_gpu_memory {
                    nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b as f64),
                    nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                };
                processes.push(GpuProcess {
                    pid: process.pid,
                    name: process_name(process.pid),
                    used_bytes,
                    owner: Owner::Other,
                });
            }
            gpus.push(GpuReading {
                index,
                name: device.name().unwrap_or_else(|_| format!("GPU {index}")),
                total_bytes: memory.total as f64,
                used_bytes: memory.used as f64,
                free_bytes: memory.free as f64,
                processes,
            });
        }
        Ok(gpus)
    }
}

/// The program name of `pid` (Linux `/proc/<pid>/comm`), or empty.
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `process` is Ollama's: its server is `ollama`, its runners `ollama runner` or, in older versions,
/// `ollama_llama_server`.
pub fn is_ollama(process: &GpuProcess) -> bool {
    process.name.starts_with("ollama")
}

/// Sorts a GPU process into DiffuGen / Ollama / other: DiffuGen by its own pids, Ollama by program name (the
/// server is `ollama`; its runners are `ollama runner` or, in older versions, `ollama_llama_server`).
pub fn classify(process: &mut GpuProcess, diffugen_pids: &[u32]) {
    process.owner = if diffugen_pids.contains(&process.pid) {
        Owner::Diffugen
    } else if is_ollama(process) {
        Owner::Ollama
    } else {
        Owner::Other
    };
}
