//! Test support for DiffuGen: a GGUF writer and the small real model the tests and benchmarks generate with.
//!
//! No model can be downloaded where the tests run, so this crate builds one: the SDXS (512-DS) architecture that
//! sd.cpp knows, with the tensor list it asks for (`data/sdxs-512-ds.manifest`) and deterministic random weights.

mod embedding;
mod esrgan;
pub mod gguf;
mod model;
pub mod nats;
mod sd15;
mod torch;

pub use embedding::write_test_embedding;
pub use esrgan::{
    build_test_upscaler, build_test_upscaler_pth, test_upscaler, test_upscaler_file,
    upscaler_tensors,
};
pub use model::{build_test_model, test_model, test_model_cache_dir, TEST_MODEL_FILE};
pub use sd15::{test_controlnet, test_sd15};
pub use torch::{write_torch_checkpoint, TorchTensor};
