//! Model cards: what the picker shows. A card is a model that can generate images — a checkpoint, a preset, or a
//! standalone diffusion model assembled with the VAE and text encoders found in the folders when each piece is
//! unambiguous — with its family defaults, display name, size and an estimated memory need. The original project's
//! ids (`sd15`, `sdxl`, `sd3`, `flux-schnell`, `flux-dev`) work as aliases.

use crate::Family;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::identify::Role;
use crate::library::{
    inspect, load_preset, preset_name, resolve_file, Library, ModelEntry, ModelError, ResolvedModel,
};
use crate::preset::{Components, FamilyDefaults};

/// One model as the picker shows it.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct ModelCard {
    /// What `model` selects it by.
    pub id: String,
    /// A readable name.
    pub name: String,
    pub family: Family,
    pub variant: Option<String>,
    /// `checkpoint`, `preset` or `assembled` (pieces found in the folders), or `cluster` (a model only a cluster's
    /// workers hold).
    pub source: String,
    /// (component, path) pairs: `model`, or `diffusion_model` + `vae` + `clip_l` + ...
    pub components: Vec<CardComponent>,
    pub quantization: Option<String>,
    pub parameters: f64,
    pub size_bytes: f64,
    pub default_width: u32,
    pub default_height: u32,
    pub default_steps: u32,
    pub default_cfg_scale: f64,
    pub default_sampler: String,
    /// Estimated peak VRAM at the default size with every part on the GPU (weights + working memory).
    pub estimated_bytes: f64,
    /// Other ids that select it (`sd15`, `flux-schnell`, ...).
    pub aliases: Vec<String>,
    /// Why it cannot be used, when it cannot (a missing or ambiguous piece, a damaged file).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct CardComponent {
    pub component: String,
    pub path: String,
}

/// A card's name from its id: words apart, a quantization type kept whole (`tiny-sdxs-q8_0` is "tiny sdxs q8_0",
/// `flux1-schnell-Q4_K_S` is "flux1 schnell Q4_K_S").
fn display_name(id: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for piece in id.split('-') {
        let parts: Vec<&str> = piece.split('_').collect();
        let mut i = 0;
        while i < parts.len() {
            let mut word = parts[i].to_string();
            if is_quant_head(parts[i]) {
                while i + 1 < parts.len() && is_quant_tail(parts[i + 1]) {
                    i += 1;
                    word.push('_');
                    word.push_str(parts[i]);
                }
            }
            if !word.is_empty() {
                words.push(word);
            }
            i += 1;
        }
    }
    words.join(" ")
}

/// `q8`, `Q4`, `iq3`: the start of a GGUF quantization type.
fn is_quant_head(part: &str) -> bool {
    let lower = part.to_ascii_lowercase();
    lower
        .strip_prefix("iq")
        .or_else(|| lower.strip_prefix('q'))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// What follows a quantization type's start: `0`, `1`, `K`, `M`, `S`, `L`, `XS`, `XXS`, `NL`.
fn is_quant_tail(part: &str) -> bool {
    matches!(
        part.to_ascii_lowercase().as_str(),
        "0" | "1" | "k" | "m" | "s" | "l" | "xs" | "xxs" | "nl"
    )
}

/// The pieces a standalone diffusion model of `family` needs besides itself: (component, role-family) pairs.
fn needs(family: Family) -> Option<&'static [(&'static str, Family)]> {
    match family {
        Family::Chroma => Some(&[("vae", Family::Flux), ("t5xxl", Family::T5xxl)]),
        Family::Flux => Some(&[
            ("vae", Family::Flux),
            ("clip_l", Family::ClipL),
            ("t5xxl", Family::T5xxl),
        ]),
        Family::Sd3 => Some(&[
            ("vae", Family::Flux),
            ("clip_l", Family::ClipL),
            ("clip_g", Family::ClipG),
            ("t5xxl", Family::T5xxl),
        ]),
        Family::ZImage => Some(&[("vae", Family::Flux), ("llm", Family::Llm)]),
        _ => None,
    }
}

/// Puts a standalone diffusion model together with the pieces in the folders: each needed piece must be the only
/// one of its kind, or the card names the candidates and asks for a preset.
pub(crate) fn assemble(diffusion: &ModelEntry, all: &[ModelEntry]) -> Result<Components, String> {
    let Some(pieces) = needs(diffusion.family) else {
        return Err(format!(
            "a standalone {} diffusion model is not assembled automatically; describe it in a preset",
            diffusion.family
        ));
    };
    let mut components = Components {
        diffusion_model: Some(PathBuf::from(&diffusion.path)),
        ..Components::default()
    };
    for (field, kind) in pieces {
        let candidates: Vec<&ModelEntry> = all
            .iter()
            .filter(|e| e.error.is_none())
            .filter(|e| match *field {
                "vae" => e.role == Role::Vae && e.family == *kind,
                _ => e.role == Role::TextEncoder && e.family == *kind,
            })
            .collect();
        match candidates.as_slice() {
            [one] => components.set(field, PathBuf::from(&one.path)),
            [] => {
                return Err(format!(
                    "no {field} file found in the model folders (a {} diffusion model needs {}); add it, or \
                     describe the model in a preset",
                    diffusion.family,
                    pieces.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
                ))
            }
            many => {
                return Err(format!(
                    "{} {field} files fit ({}); write a preset naming the one to use",
                    many.len(),
                    many.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }
        }
    }
    Ok(components)
}

/// The original project's ids and what they pick.
fn alias_matches(alias: &str, card: &ModelCard) -> bool {
    let id = card.id.to_ascii_lowercase();
    match alias {
        "sd15" => card.family == Family::Sd1 && card.variant.is_none(),
        "sdxl" => card.family == Family::Sdxl && card.variant.is_none(),
        "sd3" => card.family == Family::Sd3,
        "flux-schnell" => card.family == Family::Flux && id.contains("schnell"),
        "flux-dev" => card.family == Family::Flux && id.contains("dev"),
        _ => false,
    }
}

pub const ALIASES: &[&str] = &["sd15", "sdxl", "sd3", "flux-schnell", "flux-dev"];

impl Library {
    /// Every usable-or-explainable model: checkpoints, presets, assembled multi-file models.
    pub fn cards(&self) -> Vec<ModelCard> {
        self.cards_of(&self.scan())
    }

    /// The cards of an already scanned listing.
    fn cards_of(&self, entries: &[ModelEntry]) -> Vec<ModelCard> {
        // Never through `resolve` (which falls back to cards): straight to the file or preset.
        let direct = |entry: &ModelEntry| -> Result<ResolvedModel, ModelError> {
            let path = Path::new(&entry.path);
            match preset_name(path) {
                Some(name) => load_preset(path, &name, Some(&self.dirs())),
                None => resolve_file(path),
            }
        };
        let used_by_presets: Vec<String> = entries
            .iter()
            .filter(|e| e.format.as_deref() == Some("preset"))
            .filter_map(|e| direct(e).ok())
            .flat_map(|m| {
                m.components
                    .files()
                    .into_iter()
                    .map(|(_, p)| p.display().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut cards = Vec::new();
        for entry in entries {
            let preset = entry.format.as_deref() == Some("preset");
            let (source, resolved) = match entry.role {
                _ if preset => ("preset", self.resolve(&entry.id).map_err(|e| e.to_string())),
                Role::Checkpoint => (
                    "checkpoint",
                    self.resolve(&entry.path).map_err(|e| e.to_string()),
                ),
                Role::DiffusionModel if !used_by_presets.contains(&entry.path) => (
                    "assembled",
                    assemble(entry, entries).map(|components| ResolvedModel {
                        id: entry.id.clone(),
                        family: entry.family,
                        defaults: FamilyDefaults::for_family(entry.family, &entry.id),
                        components,
                    }),
                ),
                _ => continue,
            };
            cards.push(card(entry, source, resolved));
        }
        // Aliases go to the first card that fits each.
        for alias in ALIASES {
            if cards.iter().any(|c| c.id == *alias) {
                continue;
            }
            if let Some(card) = cards
                .iter_mut()
                .find(|c| c.error.is_none() && alias_matches(alias, c))
            {
                card.aliases.push(alias.to_string());
            }
        }
        cards
    }

    /// Resolves an id that is not a file or preset: an assembled model or an alias.
    pub(crate) fn resolve_card(&self, spec: &str) -> Option<Result<ResolvedModel, ModelError>> {
        let entries = self.scan();
        let card = self.cards_of(&entries).into_iter().find(|c| {
            c.id == spec && c.source == "assembled" || c.aliases.iter().any(|a| a == spec)
        })?;
        if let Some(reason) = card.error {
            return Some(Err(ModelError::Damaged {
                path: PathBuf::from(&card.components.first()?.path),
                reason,
            }));
        }
        if card.source == "assembled" {
            let entry = entries
                .iter()
                .find(|e| e.id == card.id && e.role == Role::DiffusionModel)?;
            return Some(
                assemble(entry, &entries)
                    .map_err(|reason| ModelError::Damaged {
                        path: PathBuf::from(&entry.path),
                        reason,
                    })
                    .map(|components| ResolvedModel {
                        id: card.id.clone(),
                        family: card.family,
                        defaults: FamilyDefaults::for_family(card.family, &card.id),
                        components,
                    }),
            );
        }
        // A checkpoint or preset picked by an alias.
        let entry = entries.iter().find(|e| match card.source.as_str() {
            "preset" => e.format.as_deref() == Some("preset") && e.id == card.id,
            _ => card.components.first().is_some_and(|c| c.path == e.path),
        })?;
        let path = Path::new(&entry.path);
        Some(match preset_name(path) {
            Some(name) => load_preset(path, &name, Some(&self.dirs())),
            None => resolve_file(path),
        })
    }

    /// This machine's cards, then those of the models only other machines render (a cluster front's workers):
    /// what a model list shows.
    pub fn all_cards(&self) -> Vec<ModelCard> {
        let mut cards = self.cards();
        cards.extend(self.remote_cards());
        cards
    }

    /// Cards for the models only other machines render (a cluster front's workers), `source` `cluster`: no file
    /// here, so no size or estimate.
    pub fn remote_cards(&self) -> Vec<ModelCard> {
        self.remote_only()
            .into_iter()
            .map(|m| ModelCard {
                name: m.id.clone(),
                id: m.id,
                family: m.family,
                variant: None,
                source: "cluster".into(),
                components: Vec::new(),
                quantization: None,
                parameters: 0.0,
                size_bytes: 0.0,
                default_width: m.defaults.width,
                default_height: m.defaults.height,
                default_steps: m.defaults.steps,
                default_cfg_scale: f64::from(m.defaults.cfg_scale),
                default_sampler: m.defaults.sampler,
                estimated_bytes: 0.0,
                aliases: Vec::new(),
                error: None,
            })
            .collect()
    }

    /// Writes a card's components and defaults as a preset (`<models>/<id>.preset.json`) to edit and keep.
    pub fn save_preset(&self, model: &ResolvedModel) -> Result<PathBuf, String> {
        let path = self.models_dir().join(format!("{}.preset.json", model.id));
        let mut preset = serde_json::json!({ "name": model.id, "family": model.family });
        for (field, file) in model.components.files() {
            preset[field] = file.display().to_string().into();
        }
        preset["defaults"] = serde_json::to_value(&model.defaults).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(self.models_dir()).map_err(|e| e.to_string())?;
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&preset).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

fn card(entry: &ModelEntry, source: &str, resolved: Result<ResolvedModel, String>) -> ModelCard {
    let (components, defaults, error) = match &resolved {
        Ok(model) => (
            model
                .components
                .files()
                .into_iter()
                .map(|(c, p)| CardComponent {
                    component: c.to_string(),
                    path: p.display().to_string(),
                })
                .collect(),
            model.defaults.clone(),
            None,
        ),
        Err(e) => (
            vec![CardComponent {
                component: if entry.role == Role::DiffusionModel {
                    "diffusion_model"
                } else {
                    "model"
                }
                .into(),
                path: entry.path.clone(),
            }],
            FamilyDefaults::for_family(entry.family, &entry.id),
            Some(e.clone()),
        ),
    };
    let (mut size, mut parameters) = (0.0, 0.0);
    for c in &components {
        let part = inspect(Path::new(&c.path));
        size += part.size_bytes;
        parameters += part.parameters;
    }
    let estimated = resolved
        .as_ref()
        .map(|m| {
            crate::plan::full_gpu_need(
                &m.components,
                m.family,
                defaults.width,
                defaults.height,
                defaults.cfg_scale > 1.0,
            )
        })
        .unwrap_or(0.0);
    ModelCard {
        id: resolved
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_else(|_| entry.id.clone()),
        name: display_name(&entry.id),
        family: resolved.as_ref().map(|m| m.family).unwrap_or(entry.family),
        variant: entry.variant.clone(),
        source: source.into(),
        components,
        quantization: entry.quantization.clone(),
        parameters,
        size_bytes: size,
        default_width: defaults.width,
        default_height: defaults.height,
        default_steps: defaults.steps,
        default_cfg_scale: f64::from(defaults.cfg_scale),
        default_sampler: defaults.sampler.clone(),
        estimated_bytes: estimated,
        aliases: Vec::new(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn a_cards_name_parts_its_words_but_keeps_a_quantization_type_whole() {
        assert_eq!(display_name("tiny-sdxs-q8_0"), "tiny sdxs q8_0");
        assert_eq!(display_name("flux1-schnell-Q4_K_S"), "flux1 schnell Q4_K_S");
        assert_eq!(display_name("z_image_turbo_IQ4_XS"), "z image turbo IQ4_XS");
        assert_eq!(display_name("sd_turbo"), "sd turbo");
        assert_eq!(display_name("v1-5-pruned-emaonly"), "v1 5 pruned emaonly");
        // A "q" word that is no quantization stays a word.
        assert_eq!(display_name("my_q8_model"), "my q8 model");
        assert_eq!(display_name("qwen_image"), "qwen image");
    }
}
