//! The settings file, `<data dir>/settings.json`: one flat JSON object that the desktop app (through
//! tauri-plugin-store) and the headless `diffugen` both read. Every key is optional; a command-line flag or an
//! environment variable wins over the file, the file over the built-in default. Keys DiffuGen does not know are
//! kept, so the app can store its own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The settings DiffuGen itself reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(default)]
pub struct Settings {
    /// DiffuGen's own models folder [default: <data dir>/models].
    pub models_dir: Option<String>,
    /// Other tools' model folders used in place.
    pub extra_models_dirs: Vec<String>,
    /// Where images are written [default: <data dir>/outputs].
    pub outputs_dir: Option<String>,
    /// Ollama's address [default: http://127.0.0.1:11434].
    pub ollama_url: Option<String>,
    /// always | auto | share | never [default: auto].
    pub vram_policy: Option<String>,
    /// restore | leave [default: restore].
    pub after_queue: Option<String>,
    /// Whether `serve` starts the Ollama gateway [default: true].
    pub gateway_enabled: Option<bool>,
    /// [default: 11435]
    pub gateway_port: Option<u16>,
    /// Whether the desktop app runs the local API [default: true].
    pub api_enabled: Option<bool>,
    /// [default: 127.0.0.1]
    pub api_host: Option<String>,
    /// [default: 5199]
    pub api_port: Option<u16>,
    pub api_key: Option<String>,
    /// CPU threads for sd.cpp [default: physical cores].
    pub threads: Option<u32>,
    /// Memory and speed options every job gets unless its request or model card says otherwise: `placement`,
    /// `vram_budget_gib`, `vae_tiling`, `vae_tile_size`, `vae_tile_overlap`, `flash_attn`, `mmap`, `cache`.
    pub memory: Option<diffugen_models::MemoryOptions>,
    /// How long an idle model stays loaded: `5m`, `30s`, `1h`, `0` (free it at once) or `-1` (keep it)
    /// [default: 5m].
    pub model_keep_alive: Option<String>,
    /// dark | light | system [default: dark].
    pub theme: Option<String>,
    /// A Hugging Face token for gated downloads.
    pub hf_token: Option<String>,
    /// The Ollama model the prompt assistant asks to rewrite prompts (`enhance_prompt`) [default: the LLM Ollama
    /// has in memory].
    pub assistant_model: Option<String>,
    /// The Ollama vision model that scores results for jobs that ask for a critique (`critique`), e.g.
    /// `qwen2.5vl:7b` or `llava` [no default: a text-only LLM cannot see the image].
    pub critique_model: Option<String>,
    /// The desktop app is the front of a cluster on this NATS server (`nats://host:4222`, `tls://...`; a user and
    /// password or a token in the URL): its jobs render on the cluster's workers, and on this computer as the worker
    /// `local` [default: none — everything renders here].
    pub cluster_url: Option<String>,
}

/// A settings problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: String, message: String },
}

/// The settings file of a data folder.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("settings.json")
}

fn read_object(file: &Path) -> Result<Map<String, Value>, SettingsError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => {
            return Err(SettingsError::File {
                path: file.display().to_string(),
                message: e.to_string(),
            })
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SettingsError::File {
            path: file.display().to_string(),
            message: "the settings file must hold one JSON object".into(),
        }),
        Err(e) => Err(SettingsError::File {
            path: file.display().to_string(),
            message: format!("not valid JSON ({e}); fix or delete it"),
        }),
    }
}

/// Reads the settings (defaults when there is no file); a wrong value names its key.
pub fn load(data_dir: &Path) -> Result<Settings, SettingsError> {
    let file = path(data_dir);
    let map = read_object(&file)?;
    let mut settings = Settings::default();
    let known = serde_json::to_value(&settings).unwrap_or(Value::Null);
    let mut merged = known.as_object().cloned().unwrap_or_default();
    for (key, value) in map {
        if merged.contains_key(&key) {
            // One key at a time, so an error can name it.
            let mut one = Map::new();
            one.insert(key.clone(), value.clone());
            serde_json::from_value::<Settings>(Value::Object(one)).map_err(|e| {
                SettingsError::Invalid {
                    key: key.clone(),
                    message: format!("{value} in {}: {e}", file.display()),
                }
            })?;
            merged.insert(key, value);
        }
    }
    settings = serde_json::from_value(Value::Object(merged)).map_err(|e| SettingsError::File {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    validate(&settings)?;
    Ok(settings)
}

fn one_of(key: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), SettingsError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(SettingsError::Invalid {
            key: key.into(),
            message: format!("'{v}' is not one of {}", allowed.join(", ")),
        }),
        _ => Ok(()),
    }
}

fn validate(s: &Settings) -> Result<(), SettingsError> {
    one_of(
        "vram_policy",
        &s.vram_policy,
        &["always", "auto", "share", "never"],
    )?;
    one_of("after_queue", &s.after_queue, &["restore", "leave"])?;
    one_of("theme", &s.theme, &["dark", "light", "system"])?;
    if let Some(host) = &s.api_host {
        if host.parse::<std::net::IpAddr>().is_err() {
            return Err(SettingsError::Invalid {
                key: "api_host".into(),
                message: format!("'{host}' is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"),
            });
        }
    }
    if let Some(text) = &s.model_keep_alive {
        parse_keep_alive(text).map_err(|message| SettingsError::Invalid {
            key: "model_keep_alive".into(),
            message,
        })?;
    }
    if let Some(url) = s.cluster_url.as_deref().filter(|u| !u.trim().is_empty()) {
        check_cluster_url(url).map_err(|message| SettingsError::Invalid {
            key: "cluster_url".into(),
            message,
        })?;
    }
    if s.threads == Some(0) {
        return Err(SettingsError::Invalid {
            key: "threads".into(),
            message: "use at least 1 thread".into(),
        });
    }
    Ok(())
}

/// A NATS server's URL as DiffuGen takes it: `nats://` or `tls://`, a host, an optional port.
pub fn check_cluster_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .ok_or_else(|| {
            "must start with nats:// or tls:// (e.g. nats://192.168.1.20:4222)".to_string()
        })?;
    let host = rest.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(
            "needs a host and an optional port after the scheme, e.g. nats://nas.local:4222".into(),
        );
    }
    Ok(())
}

/// A keep-alive as the settings write it: a number with a unit (`30s`, `5m`, `1h`), `0` for "free at once", or
/// `-1` for "keep" (`None`).
pub fn parse_keep_alive(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    if text == "-1" || text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    if text == "0" {
        return Ok(Some(std::time::Duration::ZERO));
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let seconds = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if n >= 0.0 && seconds.is_finite() => {
            Ok(Some(std::time::Duration::from_secs_f64(n * seconds)))
        }
        _ => Err(format!(
            "'{text}' is not a keep-alive; write 30s, 5m, 1h, 0 (free at once) or -1 (keep)"
        )),
    }
}

impl Settings {
    /// The keep-alive of an idle model (default 5 minutes; `None` keeps it).
    pub fn keep_alive(&self) -> Option<std::time::Duration> {
        match &self.model_keep_alive {
            Some(text) => parse_keep_alive(text).unwrap_or(Some(DEFAULT_KEEP_ALIVE)),
            None => Some(DEFAULT_KEEP_ALIVE),
        }
    }
}

/// The default keep-alive of an idle model.
pub const DEFAULT_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(300);

/// The JSON value one key takes from text (as `diffugen settings set KEY VALUE` gives it), checked like [`load`]
/// checks the file: `None` (no text) removes the key. The desktop app writes the result with its settings store.
pub fn checked_value(key: &str, text: Option<&str>) -> Result<Option<Value>, SettingsError> {
    let known = serde_json::to_value(Settings::default()).unwrap_or(Value::Null);
    let Some(default) = known.get(key) else {
        let keys: Vec<&String> = known
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        return Err(SettingsError::Invalid {
            key: key.into(),
            message: format!(
                "unknown key; the keys are {}",
                keys.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let value = match text {
        None => Value::Null,
        Some(text) => match (key, default) {
            ("memory", _) => serde_json::from_str::<Value>(text).map_err(|e| SettingsError::Invalid {
                key: key.into(),
                message: format!(
                    "'{text}' is not a JSON object of memory options ({e}), e.g. {{\"vae_tiling\": \"on\"}}"
                ),
            })?,
            ("extra_models_dirs", _) => Value::from(
                text.split(':')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ),
            _ => serde_json::from_str::<Value>(text)
                .ok()
                .filter(|v| v.is_number() || v.is_boolean())
                .unwrap_or_else(|| Value::from(text)),
        },
    };
    if value.is_null() {
        return Ok(None);
    }
    let parse = |value: &Value| {
        let mut one = Map::new();
        one.insert(key.into(), value.clone());
        serde_json::from_value::<Settings>(Value::Object(one))
    };
    let (value, candidate) = match parse(&value) {
        Ok(candidate) => (value, candidate),
        // Text that reads as a number or a boolean is still text for a key that holds text (`api_key 12345`).
        Err(e) => match text.map(Value::from).filter(|_| !value.is_string()) {
            Some(as_text) => match parse(&as_text) {
                Ok(candidate) => (as_text, candidate),
                Err(_) => return Err(invalid(key, text, e)),
            },
            None => return Err(invalid(key, text, e)),
        },
    };
    validate(&candidate)?;
    Ok(Some(value))
}

fn invalid(key: &str, text: Option<&str>, error: serde_json::Error) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        message: format!("'{}': {error}", text.unwrap_or("")),
    }
}

/// Sets one key from text (as `diffugen settings set KEY VALUE` gives it), keeping every other key in the file.
pub fn set(data_dir: &Path, key: &str, text: Option<&str>) -> Result<Settings, SettingsError> {
    let value = checked_value(key, text)?;
    let file = path(data_dir);
    let mut map = read_object(&file)?;
    match value {
        None => map.remove(key),
        Some(value) => map.insert(key.into(), value),
    };
    std::fs::create_dir_all(data_dir).map_err(|e| SettingsError::File {
        path: data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let temporary = file.with_extension(format!("json.tmp-{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(&Value::Object(map)).unwrap_or_default();
    std::fs::write(&temporary, bytes)
        .and_then(|_| std::fs::rename(&temporary, &file))
        .map_err(|e| SettingsError::File {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
    load(data_dir)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_cluster_url_needs_the_nats_or_tls_scheme_and_a_host() {
        for good in [
            "nats://127.0.0.1:4222",
            "tls://nas.local",
            "nats://user:pa@ss@nas.local:4222",
        ] {
            assert_eq!(check_cluster_url(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("http://nas.local:4222", "must start with nats:// or tls://"),
            ("nas.local:4222", "must start with nats:// or tls://"),
            ("nats://", "needs a host"),
            ("nats://nas.local:4222/path", "needs a host"),
        ] {
            let error = check_cluster_url(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    use super::*;

    #[test]
    fn keep_alives_read_like_ollamas_and_bad_ones_name_the_key() {
        assert_eq!(
            parse_keep_alive("5m"),
            Ok(Some(std::time::Duration::from_secs(300)))
        );
        assert_eq!(
            parse_keep_alive("30s"),
            Ok(Some(std::time::Duration::from_secs(30)))
        );
        assert_eq!(parse_keep_alive("0"), Ok(Some(std::time::Duration::ZERO)));
        assert_eq!(parse_keep_alive("-1"), Ok(None));
        assert!(parse_keep_alive("5 minutes").is_err());
        let err = checked_value("model_keep_alive", Some("soon"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model_keep_alive") && err.contains("5m"),
            "{err}"
        );
        let memory =
            checked_value("memory", Some(r#"{"cache": "fast", "vae_tiling": "on"}"#)).unwrap();
        assert_eq!(memory.unwrap()["cache"], "fast");
        let err = checked_value("memory", Some(r#"{"cache": "turbo"}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory") && err.contains("turbo"), "{err}");
    }

    #[test]
    fn no_file_means_every_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Settings::default());
    }

    #[test]
    fn values_are_typed_validated_and_other_keys_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            path(dir.path()),
            r#"{"window": {"w": 800}, "api_port": 6000}"#,
        )
        .unwrap();
        let settings = set(dir.path(), "vram_policy", Some("never")).unwrap();
        assert_eq!(settings.vram_policy.as_deref(), Some("never"));
        assert_eq!(settings.api_port, Some(6000));
        let raw: Value =
            serde_json::from_str(&std::fs::read_to_string(path(dir.path())).unwrap()).unwrap();
        assert_eq!(raw["window"]["w"], 800, "the app's own keys survive");

        let error = set(dir.path(), "vram_policy", Some("sometimes"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("vram_policy") && error.contains("always, auto, share, never"),
            "{error}"
        );
        let error = set(dir.path(), "api_port", Some("99999"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("api_port"), "{error}");
        let error = set(dir.path(), "colour", Some("red"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key") && error.contains("ollama_url"),
            "{error}"
        );
        assert_eq!(
            load(dir.path()).unwrap().vram_policy.as_deref(),
            Some("never"),
            "a refused value is not written"
        );

        let settings = set(dir.path(), "extra_models_dirs", Some("/a:/b")).unwrap();
        assert_eq!(settings.extra_models_dirs, ["/a", "/b"]);
        let settings = set(dir.path(), "api_port", None).unwrap();
        assert_eq!(settings.api_port, None);
    }

    #[test]
    fn a_broken_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{ not json").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("settings.json") && error.contains("not valid JSON"),
            "{error}"
        );
        std::fs::write(path(dir.path()), r#"{"api_port": "high"}"#).unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("api_port"), "{error}");
    }
}
