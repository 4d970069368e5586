//! LoRAs as A1111 users write them in prompts: `<lora:name:weight>` (weight optional, default 1.0).

/// A LoRA named in a prompt or request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub weight: f32,
}

/// Splits `<lora:name:weight>` tags out of a prompt, returning the prompt without them and the tags in order.
/// A malformed tag (bad weight, empty name) is an error naming the tag.
pub fn extract(prompt: &str) -> Result<(String, Vec<LoraTag>), String> {
    let mut cleaned = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("<lora:") {
        cleaned.push_str(&rest[..start]);
        let after = &rest[start + "<lora:".len()..];
        let Some(end) = after.find('>') else {
            return Err(format!(
                "unclosed LoRA tag '{}': write <lora:name:weight>",
                &rest[start..]
            ));
        };
        let body = &after[..end];
        let (name, weight) = match body.rsplit_once(':') {
            Some((name, weight)) => {
                let parsed: f32 = weight.trim().parse().map_err(|_| {
                    format!("LoRA tag '<lora:{body}>' has weight '{weight}', which is not a number")
                })?;
                (name.trim(), parsed)
            }
            None => (body.trim(), 1.0),
        };
        if name.is_empty() {
            return Err(format!("LoRA tag '<lora:{body}>' has no name"));
        }
        tags.push(LoraTag {
            name: name.to_string(),
            weight,
        });
        rest = &after[end + 1..];
    }
    cleaned.push_str(rest);
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((cleaned, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_tags_are_removed_from_the_prompt_with_their_weights() {
        let (prompt, tags) = extract("a cat <lora:pixel-art:0.7> on a mat <lora:detail>").unwrap();
        assert_eq!(prompt, "a cat on a mat");
        assert_eq!(
            tags,
            vec![
                LoraTag {
                    name: "pixel-art".into(),
                    weight: 0.7
                },
                LoraTag {
                    name: "detail".into(),
                    weight: 1.0
                }
            ]
        );
    }

    #[test]
    fn a_lora_tag_with_a_bad_weight_is_an_error_naming_it() {
        let err = extract("x <lora:style:heavy>").unwrap_err();
        assert!(
            err.contains("<lora:style:heavy>") && err.contains("not a number"),
            "{err}"
        );
    }

    #[test]
    fn an_unclosed_lora_tag_is_an_error() {
        assert!(extract("x <lora:style:0.5")
            .unwrap_err()
            .contains("unclosed"));
    }
}
