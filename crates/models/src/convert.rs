//! What a smaller copy of a model would be before it is made: which file is converted (a checkpoint whole, or one
//! part of a multi-file model — the T5 of a FLUX set first of all), where the copy goes, how large it will be and
//! what the model then needs; and, once the copy exists, the card that uses it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::Part;
use crate::quant::{converted_size, QuantType};
use crate::{inspect, Library, ResolvedModel};

/// A conversion, planned: shown to the user before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct ConversionPreview {
    pub model_id: String,
    /// The part converted (`diffusion`, `vae`, `clip_l`, `clip_g`, `t5xxl`, `llm`), or `null` for a whole
    /// single-file checkpoint.
    pub part: Option<Part>,
    pub input: String,
    pub output: String,
    pub weight_type: QuantType,
    pub current_bytes: f64,
    pub expected_bytes: f64,
    /// The model's VRAM need at its default size with every part on the GPU, now and with the copy.
    pub vram_now_bytes: f64,
    pub vram_after_bytes: f64,
    /// The model id that uses the copy once it is made.
    pub new_model_id: String,
}

/// Why a copy cannot be planned, and the request field at fault: `model`, `part`, `type` or `output`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConversionError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> ConversionError {
    ConversionError {
        field,
        message: message.into(),
    }
}

/// A planned conversion and what to write when the copy exists.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub preview: ConversionPreview,
    model: ResolvedModel,
    /// Whether the model is an assembled set (it then needs a preset of its own to stay selectable).
    assembled: bool,
}

/// A file name for the copy: no folders, `.gguf` at the end.
fn output_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') || name.contains('\0')
    {
        return Err(format!(
            "'{name}' is not a file name for the copy (no folders; it goes into the models folder)"
        ));
    }
    Ok(if name.ends_with(".gguf") {
        name.to_string()
    } else {
        format!("{name}.gguf")
    })
}

impl Library {
    /// Plans a smaller copy of model `id` (or of one `part` of it) at `weight_type`, named `output` (a file name
    /// in the models folder; default `<file>-<type>.gguf`). Errors say what to change.
    pub fn plan_conversion(
        &self,
        id: &str,
        part: Option<Part>,
        weight_type: QuantType,
        output: Option<&str>,
    ) -> Result<Conversion, ConversionError> {
        let model = self
            .resolve(id)
            .map_err(|e| refuse("model", e.to_string()))?;
        let (part, input) = match (part, &model.components.model) {
            (None, Some(file)) => (None, file.clone()),
            (Some(p), Some(_)) => {
                return Err(refuse(
                    "part",
                    format!(
                        "{} is a single-file checkpoint: it is converted whole; leave out the part ({})",
                        model.id,
                        p.name()
                    ),
                ))
            }
            (part, None) => {
                let part = part.unwrap_or(Part::Diffusion);
                let file = model.components.get(part.component()).ok_or_else(|| {
                    let parts: Vec<&str> = Part::ALL
                        .into_iter()
                    .filter(|p| model.components.get(p.component()).is_some())
                    .map(Part::name)
                    .collect();
                    refuse(
                        "part",
                        format!(
                            "{} has no {} part; its parts: {}",
                            model.id,
                            part.name(),
                            parts.join(", ")
                        ),
                    )
                })?;
                (Some(part), file.to_path_buf())
            }
        };
        let entry = inspect(&input);
        if let Some(error) = &entry.error {
            return Err(refuse("model", format!("{}: {error}", input.display())));
        }
        if entry.quantization.as_deref() == Some(weight_type.name()) {
            return Err(refuse(
                "type",
                format!(
                    "{} is already {}; choose a smaller type",
                    input.display(),
                    weight_type
                ),
            ));
        }
        let name = match output {
            Some(name) => output_name(name).map_err(|m| refuse("output", m))?,
            None => format!(
                "{}-{}.gguf",
                input.file_stem().unwrap_or_default().to_string_lossy(),
                weight_type
            ),
        };
        let output = self.models_dir().join(name);
        if output.exists() {
            return Err(refuse(
                "output",
                format!(
                    "{} already exists; choose another file name for the copy",
                    output.display()
                ),
            ));
        }
        let expected = crate::header::read(&input)
            .map(|h| crate::quant::converted_bytes(&h.tensors, weight_type))
            .unwrap_or_else(|_| converted_size(entry.parameters, weight_type));
        let d = &model.defaults;
        let vram_now = crate::plan::full_gpu_need(
            &model.components,
            model.family,
            d.width,
            d.height,
            d.cfg_scale > 1.0,
        );
        // Weights sit in VRAM as stored: the copy saves what it saves on disk.
        let vram_after = (vram_now - (entry.size_bytes - expected)).max(0.0);
        let new_model_id = match part {
            None => Path::new(&output)
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            Some(p) => format!("{}-{}-{}", model.id, p.name(), weight_type),
        };
        let assembled = self
            .cards()
            .iter()
            .any(|c| c.source == "assembled" && (c.id == model.id));
        Ok(Conversion {
            preview: ConversionPreview {
                model_id: model.id.clone(),
                part,
                input: input.display().to_string(),
                output: output.display().to_string(),
                weight_type,
                current_bytes: entry.size_bytes,
                expected_bytes: expected,
                vram_now_bytes: vram_now,
                vram_after_bytes: vram_after,
                new_model_id,
            },
            model,
            assembled,
        })
    }

    /// After the copy of a part exists: a preset for the model with the copy (and, for an assembled set, one that
    /// keeps the original selectable by its id now that two files of that kind are in the folders). Returns the
    /// model id that uses the copy.
    pub fn finish_conversion(&self, conversion: &Conversion) -> Result<String, String> {
        let Some(part) = conversion.preview.part else {
            return Ok(conversion.preview.new_model_id.clone());
        };
        if conversion.assembled {
            self.save_preset(&conversion.model)?;
        }
        let mut smaller = conversion.model.clone();
        smaller.id = conversion.preview.new_model_id.clone();
        smaller
            .components
            .set(part.component(), PathBuf::from(&conversion.preview.output));
        self.save_preset(&smaller)?;
        Ok(smaller.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copys_name_stays_inside_the_models_folder() {
        assert_eq!(output_name("t5-small").unwrap(), "t5-small.gguf");
        assert_eq!(output_name("x.gguf").unwrap(), "x.gguf");
        for bad in ["../evil", "/etc/x", "a/b", ".hidden", ""] {
            assert!(output_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_copy_at_q8_0_is_about_half_of_f16_and_kept_tensors_keep_their_size() {
        let f16 = 4.76e9 * 2.0;
        let q8 = converted_size(4.76e9, QuantType::Q8_0);
        assert!((0.52..0.56).contains(&(q8 / f16)), "{}", q8 / f16);
        let tensor = |name: &str, shape: Vec<u64>| crate::header::Tensor {
            name: name.into(),
            shape,
            dtype: "f16".into(),
        };
        let tensors = [
            tensor("blocks.0.attn.weight", vec![64, 64]),
            tensor("blocks.0.attn.bias", vec![64]),
            tensor("token_embedding.weight", vec![10, 64]),
            tensor("conv.weight", vec![8, 4, 3, 3]),
        ];
        let kept = (64 + 640 + 8 * 4 * 9) as f64 * 2.0;
        let bytes = crate::quant::converted_bytes(&tensors, QuantType::Q8_0);
        assert_eq!(bytes, 4096.0 * 34.0 / 32.0 + kept);
    }
}
