//! A job validated on one machine, made runnable on another: every file a [`Work`] names (the model's components,
//! LoRAs, embeddings, the ControlNet, an ESRGAN upscaler) is looked up again by its name in this machine's models
//! folders. A render worker of a cluster does this before it runs a job the front accepted; the pixels the job
//! carries (init image, mask, control map) need nothing.

use std::path::PathBuf;

use diffugen_models::Library;

use crate::upscale::Upscaler;
use crate::{JobSpec, Work};

/// Rebinds `work`'s files to `library`'s. The error names what this machine lacks.
pub fn rebind(work: &mut Work, library: &Library) -> Result<(), String> {
    match work {
        Work::Generate(spec) => rebind_render(spec, library),
        Work::Upscale(spec) => match &mut spec.upscaler {
            Upscaler::Model { id, path } => {
                *path = upscaler(library, id)?;
                Ok(())
            }
            Upscaler::Lanczos | Upscaler::Nearest => Ok(()),
        },
    }
}

fn rebind_render(spec: &mut JobSpec, library: &Library) -> Result<(), String> {
    let model = library
        .resolve(&spec.model_id)
        .map_err(|e| format!("model: {e}"))?;
    if model.family != spec.family {
        return Err(format!(
            "model: '{}' is {} here but {} where the job was accepted",
            spec.model_id,
            model.family.as_str(),
            spec.family.as_str()
        ));
    }
    spec.components = model.components;
    for lora in &mut spec.loras {
        lora.path = library
            .resolve_lora(&lora.name)
            .map_err(|e| format!("loras: {e}"))?;
    }
    if !spec.embeddings.is_empty() {
        let here = library.embedding_files();
        for embedding in &mut spec.embeddings {
            embedding.path = here
                .iter()
                .find(|(name, _)| *name == embedding.name)
                .map(|(_, path)| path.clone())
                .ok_or_else(|| {
                    format!(
                        "embeddings: '{}' is not in this machine's embeddings folders",
                        embedding.name
                    )
                })?;
        }
    }
    if let Some(control) = &mut spec.control {
        control.path = library
            .controlnets()
            .into_iter()
            .find(|e| e.id == control.model)
            .map(|e| PathBuf::from(e.path))
            .ok_or_else(|| {
                format!(
                    "control.model: ControlNet model '{}' is not in this machine's models folders",
                    control.model
                )
            })?;
    }
    if let Some(model) = spec.hires.as_mut().and_then(|h| h.model.as_mut()) {
        model.path = upscaler(library, &model.id)?;
    }
    Ok(())
}

fn upscaler(library: &Library, id: &str) -> Result<PathBuf, String> {
    library
        .resolve_upscaler(id)
        .map_err(|e| format!("upscaler: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_this_machine_lacks_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let library = Library::new(dir.path());
        let mut work = Work::Upscale(Box::new(crate::upscale::UpscaleSpec {
            inputs: Vec::new(),
            upscaler: Upscaler::Model {
                id: "RealESRGAN_x4plus".into(),
                path: "/elsewhere/RealESRGAN_x4plus.pth".into(),
            },
            scale: Some(4.0),
            size: None,
            tile_size: 128,
            threads: None,
        }));
        let error = rebind(&mut work, &library).unwrap_err();
        assert!(error.starts_with("upscaler: "), "{error}");
        assert!(error.contains("RealESRGAN_x4plus"), "{error}");
    }
}
