//! The configuration, resolved in one place for every door: a command-line flag first, then an environment
//! variable, then the settings file (`<data dir>/settings.json`), then the built-in default. Each value remembers
//! where it came from, so `diffugen settings show --resolved` can say so and the app's Settings can show a value an
//! environment variable fixes as locked.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use diffugen_settings::{Settings, SettingsError};
use diffugen_vram::{AfterQueue, OllamaClient, Policy, VramConfig};
use serde::Serialize;
use serde_json::{Map, Value};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// A value's source and, for a flag or a variable, its name (`--port`, `DIFFUGEN_API_KEY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Origin {
    fn named(source: Source, name: &str) -> Origin {
        Origin {
            source,
            name: Some(name.to_string()),
        }
    }

    fn plain(source: Source) -> Origin {
        Origin { source, name: None }
    }
}

/// One key as `settings show --resolved --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub value: Value,
    #[serde(flatten)]
    pub origin: Origin,
}

/// The environment variables DiffuGen reads, by the key they set. `data_dir` is no settings key: the settings file
/// lives in the data folder.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("data_dir", "DIFFUGEN_DATA_DIR"),
    ("models_dir", "DIFFUGEN_MODELS_DIR"),
    ("extra_models_dirs", "DIFFUGEN_EXTRA_MODELS_DIRS"),
    ("api_key", "DIFFUGEN_API_KEY"),
    ("ollama_url", "OLLAMA_HOST"),
    ("vram_policy", "DIFFUGEN_VRAM_POLICY"),
    ("hf_token", "HF_TOKEN"),
];

/// Keys whose values are secrets: shown as `(set)`, never in full.
const SECRETS: &[&str] = &["api_key", "hf_token"];

/// The API's port when nothing sets one.
pub const DEFAULT_API_PORT: u16 = 5199;

/// The values a door read from its own command line, as text, each with the flag that gave it.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    given: Vec<(String, String, String)>,
}

impl Flags {
    pub fn new() -> Flags {
        Flags::default()
    }

    /// `key` (a settings key or `data_dir`) is `text`, from `flag`.
    pub fn set(mut self, key: &str, flag: &str, text: impl Into<String>) -> Flags {
        self.given.retain(|(k, _, _)| k != key);
        self.given.push((key.into(), text.into(), flag.into()));
        self
    }

    /// These values and `other`'s (`other` wins for a key both give).
    pub fn merge(self, other: Flags) -> Flags {
        other
            .given
            .into_iter()
            .fold(self, |flags, (key, text, flag)| {
                flags.set(&key, &flag, text)
            })
    }

    /// [`Flags::set`] when the flag was given.
    pub fn set_some<T: ToString>(self, key: &str, flag: &str, value: Option<T>) -> Flags {
        match value {
            Some(value) => self.set(key, flag, value.to_string()),
            None => self,
        }
    }
}

/// A value that cannot be used, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// `name` is the flag, the environment variable or `setting KEY`.
    #[error("invalid {name}: {message}")]
    Invalid { name: String, message: String },
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub extra_models_dirs: Vec<PathBuf>,
    /// The values in force: the settings file under the environment under the flags.
    pub settings: Settings,
    /// What the settings file itself says (what the app's Settings panel edits).
    pub in_file: Settings,
    origins: BTreeMap<String, Origin>,
    flags: Flags,
    environment: Vec<(String, String, String)>,
}

impl Config {
    /// Resolves `flags` over this process's environment, the settings file and the defaults.
    pub fn resolve(flags: Flags) -> Result<Config, ConfigError> {
        Config::resolve_with(flags, |name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// Resolves `flags` alone over the settings file and the defaults, whatever the environment says (tests, and
    /// embedders that configure everything themselves).
    pub fn isolated(flags: Flags) -> Result<Config, ConfigError> {
        Config::resolve_with(flags, |_| None)
    }

    /// [`Config::resolve`] reading variables through `env`.
    pub fn resolve_with(
        flags: Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let environment = ENVIRONMENT
            .iter()
            .filter_map(|(key, var)| env(var).map(|text| (key.to_string(), var.to_string(), text)))
            .collect();
        let mut config = Config {
            data_dir: PathBuf::new(),
            models_dir: PathBuf::new(),
            extra_models_dirs: Vec::new(),
            settings: Settings::default(),
            in_file: Settings::default(),
            origins: BTreeMap::new(),
            flags,
            environment,
        };
        let (data_dir, origin) = match config.given("data_dir") {
            Some((text, origin)) => (PathBuf::from(text), origin),
            None => (
                dirs::data_dir()
                    .map(|d| d.join("diffugen"))
                    .unwrap_or_else(|| PathBuf::from(".diffugen")),
                Origin::plain(Source::Default),
            ),
        };
        config.data_dir = data_dir;
        config.origins.insert("data_dir".into(), origin);
        config.reload()?;
        Ok(config)
    }

    /// The value the flags or the environment give `key`, with its origin (a flag wins).
    fn given(&self, key: &str) -> Option<(String, Origin)> {
        let flag = self
            .flags
            .given
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, text, flag)| (text.clone(), Origin::named(Source::Flag, flag)));
        flag.or_else(|| {
            self.environment
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, var, text)| (text.clone(), Origin::named(Source::Env, var)))
        })
    }

    /// Reads the settings file again (after the app or `diffugen settings` changed it); flags and environment
    /// still win over it.
    pub fn reload(&mut self) -> Result<(), ConfigError> {
        self.in_file = diffugen_settings::load(&self.data_dir)?;
        let mut values = self.file_values();
        self.origins.retain(|key, _| key == "data_dir");
        let keys: Vec<String> = values.keys().cloned().collect();
        for key in keys {
            if let Some((text, origin)) = self.given(&key) {
                let name = origin.name.clone().unwrap_or_default();
                let value = diffugen_settings::checked_value(&key, Some(&text)).map_err(|e| {
                    ConfigError::Invalid {
                        name: name.clone(),
                        message: match e {
                            SettingsError::Invalid { message, .. } => message,
                            other => other.to_string(),
                        },
                    }
                })?;
                values.insert(key.clone(), value.unwrap_or(Value::Null));
                self.origins.insert(key, origin);
            }
        }
        self.settings =
            serde_json::from_value(Value::Object(values)).map_err(|e| ConfigError::Invalid {
                name: "settings".into(),
                message: e.to_string(),
            })?;
        self.models_dir = self
            .settings
            .models_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.data_dir.join("models"));
        self.extra_models_dirs = self
            .settings
            .extra_models_dirs
            .iter()
            .map(PathBuf::from)
            .collect();
        Ok(())
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origin_among(key, &self.file_values())
    }

    /// The settings file's values as JSON, keyed by setting.
    fn file_values(&self) -> Map<String, Value> {
        match serde_json::to_value(&self.in_file) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// [`Config::origin`] against the file's values, read once by a caller that asks for many keys.
    fn origin_among(&self, key: &str, file: &Map<String, Value>) -> Origin {
        if let Some(origin) = self.origins.get(key) {
            return origin.clone();
        }
        let in_file = file
            .get(key)
            .is_some_and(|v| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)));
        Origin::plain(if in_file {
            Source::File
        } else {
            Source::Default
        })
    }

    /// The name to give when `key`'s value is wrong: its flag, its variable, or `setting KEY`.
    fn name_of(&self, key: &str) -> String {
        match self.origin(key) {
            Origin {
                name: Some(name), ..
            } => name,
            _ => format!("setting {key}"),
        }
    }

    /// Keys an environment variable fixes, with the variable (the app shows them locked).
    pub fn locked(&self) -> Vec<(String, String)> {
        self.origins
            .iter()
            .filter(|(_, o)| o.source == Source::Env)
            .filter_map(|(key, o)| o.name.clone().map(|name| (key.clone(), name)))
            .collect()
    }

    /// Every key with the value in force and where it came from; defaults are spelled out and secrets hidden.
    pub fn resolved(&self) -> BTreeMap<String, Resolved> {
        let file = self.file_values();
        let mut values = match serde_json::to_value(&self.settings) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        values.insert("data_dir".into(), path_value(&self.data_dir));
        values.insert("models_dir".into(), path_value(&self.models_dir));
        values.insert("outputs_dir".into(), path_value(&self.outputs_dir()));
        let defaults: [(&str, Value); 10] = [
            ("ollama_url", diffugen_vram::DEFAULT_OLLAMA_URL.into()),
            ("vram_policy", "auto".into()),
            ("after_queue", "restore".into()),
            ("gateway_enabled", true.into()),
            ("gateway_port", diffugen_vram::DEFAULT_GATEWAY_PORT.into()),
            ("api_enabled", true.into()),
            ("api_host", "127.0.0.1".into()),
            ("api_port", DEFAULT_API_PORT.into()),
            ("memory", Value::Object(Map::new())),
            ("model_keep_alive", "5m".into()),
        ];
        for (key, default) in defaults {
            if values.get(key).is_none_or(Value::is_null) {
                values.insert(key.into(), default);
            }
        }
        if values.get("theme").is_none_or(Value::is_null) {
            values.insert("theme".into(), "dark".into());
        }
        if values.get("threads").is_none_or(Value::is_null) {
            // What sd.cpp takes when a job names no number.
            values.insert("threads".into(), diffugen_sd::physical_cores().into());
        }
        values
            .into_iter()
            .map(|(key, mut value)| {
                if SECRETS.contains(&key.as_str()) && !value.is_null() {
                    value = "(set)".into();
                }
                let origin = self.origin_among(&key, &file);
                (key, Resolved { value, origin })
            })
            .collect()
    }

    pub fn outputs_dir(&self) -> PathBuf {
        self.settings
            .outputs_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.data_dir.join("outputs"))
    }

    /// The model library over every configured folder.
    pub fn library(&self) -> diffugen_models::Library {
        diffugen_models::Library::with_extra_dirs(&self.models_dir, self.extra_models_dirs.clone())
    }

    /// The gallery of the data folder, reading the configured outputs folder.
    pub fn gallery(&self) -> Result<diffugen_gallery::Gallery, crate::StartError> {
        diffugen_gallery::Gallery::open(&self.data_dir)
            .map(|g| g.with_outputs_dir(self.outputs_dir()))
            .map_err(|source| crate::StartError::Gallery {
                path: self.data_dir.clone(),
                source,
            })
    }

    /// Ollama's client (`OLLAMA_HOST`'s forms are accepted: host:port, http://host:port).
    pub fn ollama_client(&self) -> Result<OllamaClient, ConfigError> {
        match &self.settings.ollama_url {
            Some(url) => OllamaClient::new(url).map_err(|message| ConfigError::Invalid {
                name: self.name_of("ollama_url"),
                message,
            }),
            None => OllamaClient::new(diffugen_vram::DEFAULT_OLLAMA_URL).map_err(|message| {
                ConfigError::Invalid {
                    name: "the default Ollama URL".into(),
                    message,
                }
            }),
        }
    }

    /// The VRAM policy and what happens after the queue (default `auto` and `restore`); the rest of the VRAM
    /// configuration is the default.
    pub fn vram_config(&self) -> Result<VramConfig, ConfigError> {
        let policy = match &self.settings.vram_policy {
            Some(text) => text.parse().map_err(|message| ConfigError::Invalid {
                name: self.name_of("vram_policy"),
                message,
            })?,
            None => Policy::Auto,
        };
        let after_queue = match &self.settings.after_queue {
            Some(text) => text.parse().map_err(|message| ConfigError::Invalid {
                name: self.name_of("after_queue"),
                message,
            })?,
            None => AfterQueue::Restore,
        };
        Ok(VramConfig {
            policy,
            after_queue,
            ..VramConfig::default()
        })
    }

    /// The API's address: `api_host` (default 127.0.0.1) and `api_port` (default 5199).
    pub fn api_addr(&self) -> Result<SocketAddr, ConfigError> {
        let host: IpAddr = match &self.settings.api_host {
            Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
                name: self.name_of("api_host"),
                message: format!("'{text}' is not an IP address"),
            })?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        Ok(SocketAddr::new(
            host,
            self.settings.api_port.unwrap_or(DEFAULT_API_PORT),
        ))
    }

    /// Whether the local API runs (the app's switch; `serve` always runs it).
    /// The NATS server of the cluster the desktop app is the front of (`cluster_url`; an empty one is none).
    pub fn cluster_url(&self) -> Option<String> {
        self.settings
            .cluster_url
            .clone()
            .filter(|u| !u.trim().is_empty())
    }

    pub fn api_enabled(&self) -> bool {
        self.settings.api_enabled != Some(false)
    }

    /// The API key, when one is set (an empty one is none).
    pub fn api_key(&self) -> Option<String> {
        self.settings.api_key.clone().filter(|k| !k.is_empty())
    }

    /// Whether the Ollama gateway runs.
    pub fn gateway_enabled(&self) -> bool {
        self.settings.gateway_enabled != Some(false)
    }

    /// The Ollama gateway's address on `host` (loopback unless a door opens it on purpose).
    pub fn gateway_addr(&self, host: IpAddr) -> SocketAddr {
        SocketAddr::new(
            host,
            self.settings
                .gateway_port
                .unwrap_or(diffugen_vram::DEFAULT_GATEWAY_PORT),
        )
    }

    /// A Hugging Face token for gated downloads.
    pub fn hf_token(&self) -> Option<String> {
        self.settings.hf_token.clone().filter(|t| !t.is_empty())
    }

    /// What jobs get when they leave something out (threads, memory options, the idle model's keep-alive).
    pub fn job_defaults(&self) -> diffugen_jobs::JobDefaults {
        diffugen_jobs::JobDefaults::from_settings(&self.settings)
    }

    /// Where the settings file is.
    pub fn settings_file(&self) -> PathBuf {
        diffugen_settings::path(&self.data_dir)
    }
}

fn path_value(path: &std::path::Path) -> Value {
    Value::from(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_flag_wins_over_the_environment_which_wins_over_the_file_which_wins_over_the_default() {
        let dir = data_dir();
        diffugen_settings::set(dir.path(), "api_port", Some("6001")).unwrap();
        diffugen_settings::set(dir.path(), "vram_policy", Some("share")).unwrap();
        diffugen_settings::set(dir.path(), "api_host", Some("127.0.0.2")).unwrap();
        let flags = Flags::new()
            .set("data_dir", "--data-dir", dir.path().display().to_string())
            .set("api_port", "--port", "7000");
        let env = |name: &str| match name {
            "DIFFUGEN_VRAM_POLICY" => Some("never".to_string()),
            "DIFFUGEN_API_KEY" => Some("secret".to_string()),
            "DIFFUGEN_API_PORT" => Some("1".to_string()),
            _ => None,
        };
        let config = Config::resolve_with(flags, env).unwrap();
        let resolved = config.resolved();
        let show = |key: &str| {
            let r = &resolved[key];
            (r.value.clone(), r.origin.source)
        };
        assert_eq!(show("api_port"), (Value::from(7000), Source::Flag));
        assert_eq!(show("vram_policy"), (Value::from("never"), Source::Env));
        assert_eq!(show("api_host"), (Value::from("127.0.0.2"), Source::File));
        assert_eq!(
            show("after_queue"),
            (Value::from("restore"), Source::Default)
        );
        assert_eq!(show("api_key"), (Value::from("(set)"), Source::Env));
        // A default is spelled out as the value in force: sd.cpp's thread count is the physical cores.
        assert!(resolved["threads"].value.as_u64().is_some_and(|n| n >= 1));
        assert_eq!(resolved["threads"].origin.source, Source::Default);
        assert_eq!(
            resolved["vram_policy"].origin.name.as_deref(),
            Some("DIFFUGEN_VRAM_POLICY")
        );
        assert_eq!(
            config.api_addr().unwrap(),
            "127.0.0.2:7000".parse().unwrap()
        );
        assert_eq!(config.vram_config().unwrap().policy, Policy::Never);
        // The file is untouched: Settings edits what it says, and shows what the environment fixes as locked.
        assert_eq!(config.in_file.vram_policy.as_deref(), Some("share"));
        assert_eq!(
            config.locked(),
            vec![
                ("api_key".to_string(), "DIFFUGEN_API_KEY".to_string()),
                (
                    "vram_policy".to_string(),
                    "DIFFUGEN_VRAM_POLICY".to_string()
                )
            ]
        );
    }

    #[test]
    fn a_bad_value_names_the_flag_or_variable_that_gave_it() {
        let dir = data_dir();
        let flags = Flags::new().set("data_dir", "--data-dir", dir.path().display().to_string());
        let env = |name: &str| (name == "DIFFUGEN_VRAM_POLICY").then(|| "sometimes".to_string());
        let error = Config::resolve_with(flags.clone(), env)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid DIFFUGEN_VRAM_POLICY: 'sometimes'"),
            "{error}"
        );
        let error = Config::isolated(flags.set("api_port", "--port", "port"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("invalid --port:"), "{error}");
    }

    #[test]
    fn folders_follow_the_data_folder_unless_set_and_a_reload_keeps_what_flags_fixed() {
        let dir = data_dir();
        let flags = Flags::new()
            .set("data_dir", "--data-dir", dir.path().display().to_string())
            .set("models_dir", "--models-dir", "/opt/models");
        let mut config = Config::isolated(flags).unwrap();
        assert_eq!(config.models_dir, PathBuf::from("/opt/models"));
        assert_eq!(config.outputs_dir(), dir.path().join("outputs"));
        diffugen_settings::set(dir.path(), "models_dir", Some("/elsewhere")).unwrap();
        diffugen_settings::set(dir.path(), "outputs_dir", Some("/pictures")).unwrap();
        config.reload().unwrap();
        assert_eq!(config.models_dir, PathBuf::from("/opt/models"));
        assert_eq!(config.outputs_dir(), PathBuf::from("/pictures"));
        assert_eq!(config.origin("outputs_dir").source, Source::File);
        assert_eq!(config.origin("data_dir").source, Source::Flag);
    }

    #[test]
    fn a_numeric_api_key_from_the_environment_stays_a_key() {
        let dir = data_dir();
        let flags = Flags::new().set("data_dir", "--data-dir", dir.path().display().to_string());
        let env = |name: &str| (name == "DIFFUGEN_API_KEY").then(|| "12345".to_string());
        let config = Config::resolve_with(flags, env).unwrap();
        assert_eq!(config.api_key().as_deref(), Some("12345"));
    }
}
