//! The model library: which model files exist under the models folder, what each one is (read from its header,
//! never its weights), how a `--model` argument or an API `model` id becomes the component paths the engine loads,
//! and where LoRAs named in a prompt live.

pub mod cards;
pub mod convert;
mod family;
pub mod header;
pub mod identify;
mod library;
pub mod options;
pub mod plan;
mod preset;
pub mod quant;
mod stamp;
mod torch;
pub mod watch;

pub use cards::{CardComponent, ModelCard};
pub use family::{Family, FAMILIES};
pub use identify::{identify, quantization, Identity, Role};
pub use library::{
    inspect, is_path_spec, Embedding, Library, ModelEntry, ModelError, ResolvedModel,
};
pub use options::{CachePreset, MemoryOptions, PlacementChoice, StepCache, Tiling};
pub use plan::{Group, Part, Placement, Plan};
pub use preset::{size_multiple, Components, FamilyDefaults, Preset};
pub use quant::QuantType;
pub use watch::FolderWatcher;

/// File extensions sd.cpp can load weights from.
pub const MODEL_EXTENSIONS: &[&str] = &["gguf", "safetensors", "sft", "ckpt", "pt", "pth", "bin"];
