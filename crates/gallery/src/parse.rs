//! Reading an image's generation parameters from its PNG text chunks: DiffuGen's own JSON record (`diffugen`),
//! AUTOMATIC1111's `parameters` text (also written by Forge and sd.cpp's CLI), or ComfyUI's `prompt` graph.

use serde_json::Value;

/// What a PNG says about how it was made. Unknown fields stay `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// `diffugen`, `a1111`, `comfyui` or `unknown`.
    pub source: &'static str,
    pub prompt: String,
    pub negative_prompt: String,
    pub model: Option<String>,
    pub family: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: Option<u32>,
    pub cfg_scale: Option<f64>,
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    pub seed: Option<i64>,
    pub loras: Vec<(String, f64)>,
    pub init_image: Option<String>,
    pub strength: Option<f64>,
    pub generation_seconds: Option<f64>,
    pub job_id: Option<String>,
    pub created: Option<f64>,
    pub clip_skip: Option<i64>,
    /// DiffuGen's `upscale` record (JSON) for an image enlarged from another.
    pub upscale: Option<String>,
    /// Who asked DiffuGen for it (`app`, `api`, `openai`, `a1111-txt2img`, `cli`, `mcp`, ...).
    pub client: Option<String>,
    /// Its wait in the queue and for the GPU before the render.
    pub queue_seconds: Option<f64>,
}

/// The best description among a PNG's text chunks.
pub fn parse(chunks: &[(String, String)]) -> Parsed {
    let chunk = |key: &str| {
        chunks
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if let Some(parsed) = chunk("diffugen").and_then(parse_diffugen) {
        return parsed;
    }
    if let Some(parsed) = chunk("parameters").and_then(parse_a1111) {
        return parsed;
    }
    if let Some(parsed) = chunk("prompt").and_then(parse_comfyui) {
        return parsed;
    }
    Parsed {
        source: "unknown",
        ..Parsed::default()
    }
}

fn parse_diffugen(text: &str) -> Option<Parsed> {
    let v: Value = serde_json::from_str(text).ok()?;
    let upscale = v
        .get("upscale")
        .filter(|u| u.is_object())
        .map(Value::to_string);
    // An image upscaled from elsewhere has no generation parameters: its record keeps only the upscale.
    if upscale.is_some() && v.get("model").and_then(Value::as_str) == Some("") {
        return Some(Parsed {
            source: "diffugen",
            generation_seconds: v.get("generation_seconds").and_then(Value::as_f64),
            job_id: v.get("job_id").and_then(Value::as_str).map(String::from),
            created: v.get("created").and_then(Value::as_f64),
            upscale,
            ..Parsed::default()
        });
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    Some(Parsed {
        source: "diffugen",
        prompt: s("prompt").unwrap_or_default(),
        negative_prompt: s("negative_prompt").unwrap_or_default(),
        model: s("model"),
        family: s("family"),
        width: v.get("width").and_then(Value::as_u64).map(|w| w as u32),
        height: v.get("height").and_then(Value::as_u64).map(|h| h as u32),
        steps: v.get("steps").and_then(Value::as_u64).map(|s| s as u32),
        cfg_scale: v.get("cfg_scale").and_then(Value::as_f64),
        sampler: s("sampler"),
        scheduler: s("scheduler"),
        seed: v.get("seed").and_then(Value::as_i64),
        loras: v
            .get("loras")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|l| {
                        Some((
                            l.get("name")?.as_str()?.to_string(),
                            l.get("weight")?.as_f64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        init_image: s("init_image"),
        strength: v.get("strength").and_then(Value::as_f64),
        generation_seconds: v.get("generation_seconds").and_then(Value::as_f64),
        job_id: s("job_id"),
        created: v.get("created").and_then(Value::as_f64),
        clip_skip: v.get("clip_skip").and_then(Value::as_i64),
        upscale,
        client: s("client"),
        queue_seconds: v.get("queue_seconds").and_then(Value::as_f64),
    })
}

/// Splits A1111's settings line (`Steps: 20, Sampler: Euler a, Lora hashes: "a: 1, b: 2", ...`) into pairs,
/// keeping quoted values whole.
fn settings(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some(colon) = rest.find(": ") else { break };
        let key = rest[..colon].trim().to_string();
        rest = &rest[colon + 2..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_string();
            rest = quoted.get(end + 1..).unwrap_or("");
            rest = rest.trim_start_matches(',').trim_start();
        } else {
            let end = rest.find(", ").unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = rest.get(end + 2..).unwrap_or("");
        }
        pairs.push((key, value));
    }
    pairs
}

/// A1111's `parameters`: the prompt, an optional `Negative prompt:` (both may span lines), then one settings line
/// starting with `Steps:`.
pub fn parse_a1111(text: &str) -> Option<Parsed> {
    let lines: Vec<&str> = text.lines().collect();
    let settings_at = lines.iter().rposition(|l| l.starts_with("Steps: "))?;
    let head = lines[..settings_at].join("\n");
    let (prompt, negative) = match head.find("Negative prompt:") {
        Some(at) => (
            head[..at].trim().to_string(),
            head[at + "Negative prompt:".len()..].trim().to_string(),
        ),
        None => (head.trim().to_string(), String::new()),
    };
    let pairs = settings(lines[settings_at]);
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let (width, height) = get("Size")
        .and_then(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
        })
        .unzip();
    let loras = lora_tags(&prompt);
    Some(Parsed {
        source: "a1111",
        model: get("Model"),
        width,
        height,
        steps: get("Steps").and_then(|s| s.parse().ok()),
        cfg_scale: get("CFG scale").and_then(|s| s.parse().ok()),
        sampler: get("Sampler"),
        scheduler: get("Schedule type").or_else(|| get("Scheduler")),
        seed: get("Seed").and_then(|s| s.parse().ok()),
        strength: get("Denoising strength").and_then(|s| s.parse().ok()),
        clip_skip: get("Clip skip").and_then(|s| s.parse().ok()),
        loras,
        prompt,
        negative_prompt: negative,
        ..Parsed::default()
    })
}

/// `<lora:name:weight>` tags in a prompt.
fn lora_tags(prompt: &str) -> Vec<(String, f64)> {
    let mut loras = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("<lora:") {
        let after = &rest[start + 6..];
        let Some(end) = after.find('>') else { break };
        let mut parts = after[..end].splitn(2, ':');
        if let Some(name) = parts.next() {
            let weight = parts.next().and_then(|w| w.parse().ok()).unwrap_or(1.0);
            loras.push((name.to_string(), weight));
        }
        rest = &after[end..];
    }
    loras
}

/// ComfyUI's API graph (`prompt` chunk): the sampler node and what its inputs link to.
pub fn parse_comfyui(text: &str) -> Option<Parsed> {
    let graph: Value = serde_json::from_str(text).ok()?;
    let nodes = graph.as_object()?;
    let node = |link: &Value| -> Option<&Value> {
        let id = link.as_array()?.first()?;
        let key = id
            .as_str()
            .map(String::from)
            .or_else(|| id.as_u64().map(|n| n.to_string()))?;
        nodes.get(&key)
    };
    let sampler = nodes.values().find(|n| {
        n.get("class_type")
            .and_then(Value::as_str)
            .is_some_and(|c| c.starts_with("KSampler"))
    })?;
    let inputs = sampler.get("inputs")?;
    // Follow a conditioning link back to the text of its CLIPTextEncode (through any pass-through nodes).
    let text_of = |link: Option<&Value>| -> String {
        let mut current = link.and_then(node);
        for _ in 0..8 {
            let Some(n) = current else { break };
            let ins = n.get("inputs");
            if let Some(text) = ins.and_then(|i| i.get("text")).and_then(Value::as_str) {
                return text.to_string();
            }
            current = ins
                .and_then(|i| i.get("conditioning").or_else(|| i.get("conditioning_1")))
                .and_then(node);
        }
        String::new()
    };
    let latent = inputs.get("latent_image").and_then(node);
    let size = |k: &str| {
        latent
            .and_then(|l| l.get("inputs"))
            .and_then(|i| i.get(k))
            .and_then(Value::as_u64)
            .map(|v| v as u32)
    };
    let model = nodes.values().find_map(|n| {
        let ins = n.get("inputs")?;
        ins.get("ckpt_name")
            .or_else(|| ins.get("unet_name"))
            .and_then(Value::as_str)
            .map(String::from)
    });
    let loras = nodes
        .values()
        .filter(|n| n.get("class_type").and_then(Value::as_str) == Some("LoraLoader"))
        .filter_map(|n| {
            let ins = n.get("inputs")?;
            Some((
                ins.get("lora_name")?.as_str()?.to_string(),
                ins.get("strength_model")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0),
            ))
        })
        .collect();
    Some(Parsed {
        source: "comfyui",
        prompt: text_of(inputs.get("positive")),
        negative_prompt: text_of(inputs.get("negative")),
        model,
        width: size("width"),
        height: size("height"),
        steps: inputs
            .get("steps")
            .and_then(Value::as_u64)
            .map(|s| s as u32),
        cfg_scale: inputs.get("cfg").and_then(Value::as_f64),
        sampler: inputs
            .get("sampler_name")
            .and_then(Value::as_str)
            .map(String::from),
        scheduler: inputs
            .get("scheduler")
            .and_then(Value::as_str)
            .map(String::from),
        seed: inputs
            .get("seed")
            .or_else(|| inputs.get("noise_seed"))
            .and_then(Value::as_i64),
        strength: inputs
            .get("denoise")
            .and_then(Value::as_f64)
            .filter(|d| *d < 1.0),
        loras,
        ..Parsed::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_parameters_become_fields_quoted_values_and_multiline_prompts_included() {
        let text = "a castle on a hill, <lora:detail:0.6>\nmasterpiece\nNegative prompt: blurry, lowres\n\
                    Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, \
                    Size: 832x1216, Model hash: abc123, Model: juggernautXL_v9, \
                    Lora hashes: \"detail: 1a2b, other: 3c4d\", Version: v1.9.4";
        let p = parse_a1111(text).unwrap();
        assert_eq!(
            p.prompt,
            "a castle on a hill, <lora:detail:0.6>\nmasterpiece"
        );
        assert_eq!(p.negative_prompt, "blurry, lowres");
        assert_eq!(p.steps, Some(28));
        assert_eq!(p.sampler.as_deref(), Some("DPM++ 2M"));
        assert_eq!(p.scheduler.as_deref(), Some("Karras"));
        assert_eq!(p.cfg_scale, Some(6.5));
        assert_eq!(p.seed, Some(1234567890));
        assert_eq!((p.width, p.height), (Some(832), Some(1216)));
        assert_eq!(p.model.as_deref(), Some("juggernautXL_v9"));
        assert_eq!(p.loras, [("detail".to_string(), 0.6)]);
    }

    #[test]
    fn text_that_is_not_a1111_parameters_is_not_mistaken_for_them() {
        assert_eq!(parse_a1111("just a description"), None);
    }

    #[test]
    fn a_comfyui_graph_is_followed_from_the_sampler_to_its_texts_size_and_checkpoint() {
        let graph = r#"{
          "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8.0,
                "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
          "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
          "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
          "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": ["4", 1]}},
          "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "watermark", "clip": ["4", 1]}}
        }"#;
        let p = parse_comfyui(graph).unwrap();
        assert_eq!(p.source, "comfyui");
        assert_eq!(p.prompt, "a red fox in snow");
        assert_eq!(p.negative_prompt, "watermark");
        assert_eq!((p.width, p.height), (Some(512), Some(768)));
        assert_eq!(p.steps, Some(20));
        assert_eq!(p.seed, Some(42));
        assert_eq!(p.sampler.as_deref(), Some("euler"));
        assert_eq!(p.model.as_deref(), Some("v1-5-pruned-emaonly.safetensors"));
        assert_eq!(p.strength, None);
    }
}
