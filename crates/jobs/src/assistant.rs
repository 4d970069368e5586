//! The prompt assistant: the LLM the user already runs in Ollama rewrites a short prompt into one the image
//! model's family reads well — comma-separated tags for SD 1.x/2.x/XL, plain sentences for FLUX, SD3 and the
//! other transformer families. The queue calls it in the LLM's turn on the GPU, before the job's diffusion turn.

use diffugen_models::Family;
use diffugen_vram::{OllamaClient, OllamaError};
use serde::{Deserialize, Serialize};

/// The longest rewrite kept, in characters (well past what CLIP and T5 read).
const MAX_PROMPT: usize = 1500;

/// Why a prompt could not be rewritten; the messages name the request fields.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AssistantError {
    #[error(
        "enhance_prompt: no assistant model: name one with enhance_model, set assistant_model in the settings, or \
         load an LLM in Ollama ({url})"
    )]
    NoModel { url: String },
    #[error("enhance_prompt: Ollama is not reachable at {url} ({detail}); start Ollama, or leave enhance_prompt off")]
    Unreachable { url: String, detail: String },
    #[error("enhance_model: Ollama has no model '{model}' (ollama pull {model})")]
    UnknownModel { model: String },
    #[error("enhance_prompt: {model} failed to rewrite the prompt: {detail}")]
    Failed { model: String, detail: String },
    #[error("enhance_prompt: {model} answered with no usable prompt")]
    Empty { model: String },
    #[error("enhance_prompt: the LLM could not have the GPU: {detail}")]
    Busy { detail: String },
}

impl AssistantError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            AssistantError::UnknownModel { .. } => "enhance_model",
            _ => "enhance_prompt",
        }
    }

    /// Whether the assistant is missing rather than the request wrong (no Ollama, a GPU that stayed busy).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AssistantError::Unreachable { .. } | AssistantError::Busy { .. }
        )
    }
}

/// The app's Enhance button and `POST /api/v1/prompt/enhance`: rewrites of a prompt to look at before rendering.
#[derive(Debug, Clone, Default, Deserialize, specta::Type)]
#[serde(deny_unknown_fields)]
pub struct EnhanceRequest {
    /// The prompt as written.
    pub prompt: String,
    /// The image model it is for (its family decides the style: tags or sentences).
    pub model: String,
    /// The Ollama model that rewrites it [default: the `assistant_model` setting, else the LLM in memory].
    #[serde(default)]
    pub enhance_model: Option<String>,
    /// How many different rewrites, 1..=4 [default: 1].
    #[serde(default)]
    pub count: Option<u32>,
}

/// The rewrites, and the LLM that wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
pub struct Suggestions {
    pub model: String,
    pub prompts: Vec<String>,
}

/// Why rewrites could not be made: a field of the request, or the assistant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnhanceError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Assistant(#[from] AssistantError),
}

/// Checks `request` and writes its rewrites in one LLM turn on the GPU (after a render that holds it ends).
pub async fn suggest(
    orchestrator: &diffugen_vram::Orchestrator,
    library: &diffugen_models::Library,
    setting: Option<&str>,
    request: &EnhanceRequest,
) -> Result<Suggestions, EnhanceError> {
    let invalid = |field, message: String| EnhanceError::Invalid { field, message };
    let prompt = request.prompt.trim();
    if prompt.is_empty() {
        return Err(invalid(
            "prompt",
            "write a few words of what to draw".into(),
        ));
    }
    if prompt.chars().count() > diffugen_engine::params::MAX_PROMPT_CHARS {
        return Err(invalid(
            "prompt",
            format!(
                "is longer than {} characters",
                diffugen_engine::params::MAX_PROMPT_CHARS
            ),
        ));
    }
    let count = request.count.unwrap_or(1);
    if !(1..=4).contains(&count) {
        return Err(invalid(
            "count",
            format!("must be from 1 to 4, got {count}"),
        ));
    }
    let family = library
        .resolve(request.model.trim())
        .map_err(|e| invalid("model", e.to_string()))?
        .family;
    let requested = request
        .enhance_model
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let _turn = orchestrator
        .acquire_llm()
        .await
        .map_err(|e| AssistantError::Busy {
            detail: e.to_string(),
        })?;
    let ollama = orchestrator.ollama();
    let model = choose_model(ollama, requested, setting).await?;
    let mut prompts = Vec::new();
    for take in 0..count {
        prompts.push(rewrite(ollama, &model, family, prompt, take).await?);
    }
    Ok(Suggestions { model, prompts })
}

/// The house style per family: what the rewrite should read like.
fn style(family: Family) -> &'static str {
    match family {
        Family::Sd1 | Family::Sd2 | Family::Sdxs | Family::Sdxl => {
            "Write the prompt as comma-separated tags and short phrases, the most important first: subject, \
             action, setting, composition, lighting, style, medium, quality tags (for example: masterpiece, best \
             quality, highly detailed). At most 60 words."
        }
        _ => {
            "Write the prompt as one or two plain, vivid sentences in natural language: the subject and what it \
             does, the setting, composition and camera, lighting, colours and style. No tag lists, no weights. \
             At most 80 words."
        }
    }
}

/// The system prompt for `family`.
pub fn system_prompt(family: Family) -> String {
    format!(
        "You rewrite prompts for a text-to-image model. Keep everything the user asked for, add the visual detail \
         that makes a strong image, and invent nothing that contradicts it. {} Keep any text in <angle brackets> \
         exactly as written. Answer with the prompt alone: no preamble, no quotes, no explanation.",
        style(family)
    )
}

/// The model to ask: the request's, else the setting's, else the first LLM Ollama has in memory (asking it costs
/// no load).
pub async fn choose_model(
    ollama: &OllamaClient,
    requested: Option<&str>,
    setting: Option<&str>,
) -> Result<String, AssistantError> {
    if let Some(model) = requested.or(setting) {
        return Ok(model.to_string());
    }
    match ollama.loaded().await {
        Ok(models) => {
            models
                .into_iter()
                .next()
                .map(|m| m.name)
                .ok_or_else(|| AssistantError::NoModel {
                    url: ollama.url().to_string(),
                })
        }
        Err(e) => Err(error(ollama, "", e)),
    }
}

fn error(ollama: &OllamaClient, model: &str, e: OllamaError) -> AssistantError {
    match e {
        OllamaError::Unreachable { detail, .. } => AssistantError::Unreachable {
            url: ollama.url().to_string(),
            detail,
        },
        OllamaError::UnknownModel { model } => AssistantError::UnknownModel { model },
        other => AssistantError::Failed {
            model: model.to_string(),
            detail: other.to_string(),
        },
    }
}

/// Asks `model` to rewrite `prompt` for `family`. `variation` (0 for the first) asks for a different take each
/// time, through the seed and the wording.
pub async fn rewrite(
    ollama: &OllamaClient,
    model: &str,
    family: Family,
    prompt: &str,
    variation: u32,
) -> Result<String, AssistantError> {
    let mut user = format!("Prompt: {}", prompt.trim());
    if variation > 0 {
        user.push_str(&format!(
            "\n\nThis is take {}: choose a different angle, setting detail or style than an obvious rewrite.",
            variation + 1
        ));
    }
    let options = serde_json::json!({ "temperature": 0.7, "seed": variation, "num_predict": 400 });
    let reply = ollama
        .chat(model, &system_prompt(family), &user, options)
        .await
        .map_err(|e| error(ollama, model, e))?;
    let cleaned = clean(&reply);
    if cleaned.is_empty() {
        return Err(AssistantError::Empty {
            model: model.to_string(),
        });
    }
    Ok(keep_tags(prompt, &cleaned))
}

/// A result scored at least this (out of 10) is kept; below it the job renders one more take.
pub const PASS_MARK: f64 = 6.0;

/// What a vision model made of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub model: String,
    /// 0..=10.
    pub score: f64,
    pub reason: String,
}

const CRITIC: &str = "You judge images made by a text-to-image model. Look at the image and score from 0 to 10 how \
well it shows what the prompt asks for: subject, count, attributes, setting and style; 10 is everything, 0 is \
nothing of it. Ignore taste. Answer with a JSON object only: {\"score\": <number>, \"reason\": \"<one short \
sentence>\"}.";

/// Asks the vision model `requested` (else `setting`) to score the PNG `image` against `prompt`.
pub async fn critique(
    ollama: &OllamaClient,
    requested: Option<&str>,
    setting: Option<&str>,
    prompt: &str,
    image: &[u8],
) -> Result<Verdict, String> {
    use base64::Engine as _;
    let model = requested.or(setting).ok_or_else(|| {
        "critique: no vision model: name one with critique_model or set the critique_model setting (for example \
         qwen2.5vl:7b or llava)"
            .to_string()
    })?;
    let png = base64::engine::general_purpose::STANDARD.encode(image);
    let options = serde_json::json!({ "temperature": 0, "num_predict": 200 });
    let reply = ollama
        .chat_about(
            model,
            CRITIC,
            &format!("Prompt: {prompt}"),
            &[png],
            true,
            options,
        )
        .await
        .map_err(|e| match error(ollama, model, e) {
            AssistantError::UnknownModel { model } => {
                format!("critique_model: Ollama has no model '{model}' (ollama pull {model})")
            }
            other => format!(
                "critique: {}",
                other.to_string().trim_start_matches("enhance_prompt: ")
            ),
        })?;
    let (score, reason) = verdict(&reply).ok_or_else(|| {
        format!(
            "critique: {model} answered without a score: {}",
            clean(&reply)
        )
    })?;
    Ok(Verdict {
        model: model.to_string(),
        score,
        reason,
    })
}

/// The score (clamped to 0..=10) and reason in a critic's reply: its JSON object, or the first number in its text.
fn verdict(reply: &str) -> Option<(f64, String)> {
    let text = clean(reply);
    let json = text
        .find('{')
        .zip(text.rfind('}'))
        .and_then(|(start, end)| {
            serde_json::from_str::<serde_json::Value>(&text[start..=end]).ok()
        });
    if let Some(value) = json {
        let score = value.get("score").and_then(|s| {
            s.as_f64()
                .or_else(|| s.as_str().and_then(|t| t.trim().parse().ok()))
        })?;
        let reason = value
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_string();
        return Some((score.clamp(0.0, 10.0), reason));
    }
    let number: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse::<f64>()
        .ok()
        .map(|s| (s.clamp(0.0, 10.0), text.clone()))
}

/// The prompt in a reply: without a reasoning model's `<think>` block, a "Prompt:" label, wrapping quotes or
/// line breaks, and cut at a sensible length.
pub fn clean(reply: &str) -> String {
    let mut text = reply.to_string();
    while let (Some(start), Some(end)) = (text.find("<think>"), text.find("</think>")) {
        if end < start {
            break;
        }
        text.replace_range(start..end + "</think>".len(), "");
    }
    let mut text = text.trim();
    for label in [
        "Prompt:",
        "prompt:",
        "PROMPT:",
        "Enhanced prompt:",
        "Rewritten prompt:",
    ] {
        if let Some(rest) = text.strip_prefix(label) {
            text = rest.trim();
        }
    }
    let text = text
        .trim_matches(|c| matches!(c, '"' | '\'' | '`' | '“' | '”'))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().nth(MAX_PROMPT) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text,
    }
}

/// The rewrite with the original's `<lora:...>` and other angle-bracket tags it dropped put back at the end, so a
/// rewrite never loses a LoRA the user asked for.
pub fn keep_tags(original: &str, rewrite: &str) -> String {
    let mut out = rewrite.to_string();
    let mut rest = original;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start..start + len + 1];
        if !out.contains(tag) {
            out.push_str(", ");
            out.push_str(tag);
        }
        rest = &rest[start + len + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reasoning_models_thoughts_labels_and_quotes_are_not_part_of_the_prompt() {
        assert_eq!(
            clean("<think>the user wants a cat</think>\n\nPrompt: \"a ginger cat on a windowsill,\n golden hour\""),
            "a ginger cat on a windowsill, golden hour"
        );
        assert_eq!(clean("  <think></think>  "), "");
    }

    #[test]
    fn loras_the_rewrite_dropped_come_back_at_the_end() {
        assert_eq!(
            keep_tags("a cat <lora:pixel:0.8>", "a ginger cat, pixel art"),
            "a ginger cat, pixel art, <lora:pixel:0.8>"
        );
        assert_eq!(
            keep_tags(
                "a cat <lora:pixel:0.8>",
                "a cat <lora:pixel:0.8>, pixel art"
            ),
            "a cat <lora:pixel:0.8>, pixel art"
        );
    }

    #[test]
    fn a_critics_score_is_read_from_its_json_or_its_first_number_and_kept_in_range() {
        assert_eq!(
            verdict("{\"score\": 7, \"reason\": \"the cat is there\"}"),
            Some((7.0, "the cat is there".to_string()))
        );
        assert_eq!(
            verdict("```json\n{\"score\": \"4.5\"}\n```").map(|v| v.0),
            Some(4.5)
        );
        assert_eq!(
            verdict("<think>hmm</think>Score: 12 out of 10").map(|v| v.0),
            Some(10.0)
        );
        assert_eq!(verdict("I cannot see an image."), None);
    }

    #[test]
    fn tag_families_get_tags_and_transformer_families_get_sentences() {
        assert!(system_prompt(Family::Sdxl).contains("comma-separated tags"));
        assert!(system_prompt(Family::Sd1).contains("comma-separated tags"));
        assert!(system_prompt(Family::Flux).contains("natural language"));
        assert!(system_prompt(Family::Sd3).contains("natural language"));
    }
}
