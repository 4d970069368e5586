//! A client for the parts of Ollama's API that decide who holds the GPU.
//!
//! Ollama answers an unload (`keep_alive: 0`) *before* the memory is free, so [`OllamaClient::unload_confirmed`]
//! keeps asking `/api/ps` until the model is gone. Every call has a timeout; transient failures (refused
//! connection, 5xx) are retried with exponential backoff and jitter, 4xx answers never are.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Why an Ollama call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OllamaError {
    #[error("Ollama is not reachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("Ollama has no model '{model}' (install it with `ollama pull {model}`)")]
    UnknownModel { model: String },
    #[error("Ollama answered {status}: {message}")]
    Http { status: u16, message: String },
    #[error("Ollama did not answer {what} within {seconds:.0} s")]
    Timeout { what: String, seconds: f64 },
    #[error("Ollama sent a reply DiffuGen cannot read ({0})")]
    BadReply(String),
}

impl OllamaError {
    /// Worth another try: the server may be starting, restarting or briefly overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            OllamaError::Unreachable { .. } | OllamaError::Timeout { .. } => true,
            OllamaError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// How long Ollama keeps a model loaded: a number of seconds (negative = forever) or a Go duration string.
///
/// Ollama rejects the *string* `"-1"` ("missing unit in duration"), so "forever" always travels as a number.
#[derive(Debug, Clone, PartialEq)]
pub enum KeepAlive {
    Seconds(i64),
    Duration(String),
}

impl KeepAlive {
    pub const FOREVER: KeepAlive = KeepAlive::Seconds(-1);

    /// Parses what a user writes: `5m`, `1h30m`, `300` (seconds), `-1` or `forever` (keep loaded), `0` (unload).
    pub fn parse(text: &str) -> Result<KeepAlive, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") {
            return Ok(KeepAlive::FOREVER);
        }
        if let Ok(seconds) = text.parse::<i64>() {
            return Ok(KeepAlive::Seconds(seconds));
        }
        if is_go_duration(text) {
            return Ok(KeepAlive::Duration(text.to_string()));
        }
        Err(format!(
            "'{text}' is not a keep-alive: use a number of seconds (negative = forever), a duration such as \
             5m, 1h or 1h30m, or 'forever'"
        ))
    }

    /// The reverse of [`KeepAlive::to_json`].
    pub fn from_json(value: &serde_json::Value) -> Option<KeepAlive> {
        match value {
            serde_json::Value::Number(n) => n.as_i64().map(KeepAlive::Seconds),
            serde_json::Value::String(s) => KeepAlive::parse(s).ok(),
            _ => None,
        }
    }

    /// As Ollama expects it: a number of seconds, or a duration string.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            KeepAlive::Seconds(s) => serde_json::Value::from(*s),
            KeepAlive::Duration(d) => serde_json::Value::from(d.as_str()),
        }
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Seconds(s) if *s < 0 => write!(f, "forever"),
            KeepAlive::Seconds(s) => write!(f, "{s}s"),
            KeepAlive::Duration(d) => write!(f, "{d}"),
        }
    }
}

/// Go's `time.ParseDuration` grammar: an optional sign, then one or more `<decimal><unit>` pairs.
fn is_go_duration(text: &str) -> bool {
    let mut rest = text.strip_prefix(['-', '+']).unwrap_or(text);
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 || rest[..digits].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// A model Ollama holds in memory (`/api/ps`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub size: u64,
    /// Bytes on the GPU; 0 means it runs entirely on the CPU.
    #[serde(default)]
    pub size_vram: u64,
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl LoadedModel {
    /// The keep-alive that restores this model with the expiry it had left: forever stays forever.
    pub fn remaining_keep_alive(&self) -> KeepAlive {
        let remaining = self
            .expires_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds());
        match remaining {
            // Ollama stores "forever" as now + the largest duration (centuries ahead).
            Some(s) if s > 365 * 24 * 3600 => KeepAlive::FOREVER,
            // At least a minute, so a restored model is not dropped the moment it is back.
            Some(s) => KeepAlive::Seconds(s.max(60)),
            None => KeepAlive::Duration("5m".into()),
        }
    }
}

/// A model installed in Ollama (`/api/tags`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct InstalledModel {
    pub name: String,
    #[serde(default)]
    pub size: u64,
}

#[derive(Deserialize)]
struct ModelList<T> {
    #[serde(default = "Vec::new")]
    models: Vec<T>,
}

/// Retry schedule for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all (1 = no retry).
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Retry {
    pub const NONE: Retry = Retry {
        attempts: 1,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The pause before try `attempt` (1-based, > 1): doubling, capped, with ±50 % jitter so clients that failed
    /// together do not retry together.
    fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .first_delay
            .saturating_mul(1 << (attempt - 2).min(16))
            .min(self.max_delay);
        base.mul_f64(0.5 + fastrand::f64())
    }
}

impl Retry {
    /// One retry: for a first look at a server that may simply not be running.
    pub const QUICK: Retry = Retry {
        attempts: 2,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(100),
    };
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// Talks to one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    http: reqwest::Client,
    retry: Retry,
    request_timeout: Duration,
    load_timeout: Duration,
}

/// Normalises what users put in `OLLAMA_HOST`: `127.0.0.1:11434`, `http://host:11434/`, `0.0.0.0` (Ollama's own
/// listen-everywhere value, which a client reaches on loopback).
pub fn normalize_url(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err("the Ollama URL is empty; use e.g. http://127.0.0.1:11434".into());
    }
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        format!("'{text}' is not an Ollama URL ({e}); use e.g. http://127.0.0.1:11434")
    })?;
    if url.scheme() != "http" {
        return Err(format!(
            "'{text}': only http:// Ollama URLs are supported (Ollama itself serves plain HTTP)"
        ));
    }
    let host = match url.host_str() {
        Some("0.0.0.0") | Some("[::]") => "127.0.0.1".to_string(),
        Some(h) => h.to_string(),
        None => return Err(format!("'{text}' names no host")),
    };
    let port = url.port().unwrap_or(11434);
    let path = url.path().trim_end_matches('/');
    Ok(format!("http://{host}:{port}{path}"))
}

impl OllamaClient {
    /// A client for `url` (see [`normalize_url`]).
    pub fn new(url: &str) -> Result<OllamaClient, String> {
        let base = normalize_url(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(OllamaClient {
            base,
            http,
            retry: Retry::default(),
            request_timeout: Duration::from_secs(10),
            load_timeout: Duration::from_secs(180),
        })
    }

    pub fn with_retry(mut self, retry: Retry) -> OllamaClient {
        self.retry = retry;
        self
    }

    /// The server's base URL, e.g. `http://127.0.0.1:11434`.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
        retry: Retry,
    ) -> Result<serde_json::Value, OllamaError> {
        let mut attempt = 1;
        loop {
            let result = self.call_once(method.clone(), path, body, timeout).await;
            match result {
                Err(e) if e.is_transient() && attempt < retry.attempts => {
                    attempt += 1;
                    let pause = retry.delay(attempt);
                    tracing::debug!(path, attempt, ?pause, error = %e, "Ollama call failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, OllamaError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(e, path, timeout))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport(e, path, timeout))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| text.trim().chars().take(300).collect());
            return Err(OllamaError::Http {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| OllamaError::BadReply(format!("{path}: {e}")))
    }

    fn transport(&self, error: reqwest::Error, path: &str, timeout: Duration) -> OllamaError {
        if error.is_timeout() {
            OllamaError::Timeout {
                what: path.to_string(),
                seconds: timeout.as_secs_f64(),
            }
        } else {
            let mut detail = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                detail = inner.to_string();
                source = inner.source();
            }
            OllamaError::Unreachable {
                url: self.base.clone(),
                detail,
            }
        }
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<String, OllamaError> {
        self.version_with(self.retry).await
    }

    /// `GET /api/version` with an explicit retry schedule (a quick probe uses none).
    pub async fn version_with(&self, retry: Retry) -> Result<String, OllamaError> {
        let reply = self
            .call(
                reqwest::Method::GET,
                "/api/version",
                None,
                self.request_timeout,
                retry,
            )
            .await?;
        Ok(reply
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    /// `GET /api/tags`: installed models.
    pub async fn installed(&self) -> Result<Vec<InstalledModel>, OllamaError> {
        let reply = self
            .call(
                reqwest::Method::GET,
                "/api/tags",
                None,
                self.request_timeout,
                self.retry,
            )
            .await?;
        serde_json::from_value::<ModelList<InstalledModel>>(reply)
            .map(|l| l.models)
            .map_err(|e| OllamaError::BadReply(format!("/api/tags: {e}")))
    }

    /// `GET /api/ps`: models in memory, with how much of each is on the GPU.
    pub async fn loaded(&self) -> Result<Vec<LoadedModel>, OllamaError> {
        self.loaded_with(self.retry).await
    }

    pub async fn loaded_with(&self, retry: Retry) -> Result<Vec<LoadedModel>, OllamaError> {
        let reply = self
            .call(
                reqwest::Method::GET,
                "/api/ps",
                None,
                self.request_timeout,
                retry,
            )
            .await?;
        serde_json::from_value::<ModelList<LoadedModel>>(reply)
            .map(|l| l.models)
            .map_err(|e| OllamaError::BadReply(format!("/api/ps: {e}")))
    }

    fn model_error(model: &str, error: OllamaError) -> OllamaError {
        match error {
            OllamaError::Http { status: 404, .. } => OllamaError::UnknownModel {
                model: model.to_string(),
            },
            other => other,
        }
    }

    /// Asks Ollama to unload `model` (`keep_alive: 0`). Ollama answers before the memory is free: confirm with
    /// [`OllamaClient::wait_until_unloaded`].
    pub async fn request_unload(&self, model: &str) -> Result<(), OllamaError> {
        let body = serde_json::json!({ "model": model, "keep_alive": 0 });
        let reply = self
            .call(
                reqwest::Method::POST,
                "/api/generate",
                Some(&body),
                self.request_timeout,
                self.retry,
            )
            .await
            .map_err(|e| Self::model_error(model, e))?;
        match reply.get("done_reason").and_then(|r| r.as_str()) {
            Some("unload") | None => Ok(()),
            Some(other) => Err(OllamaError::BadReply(format!(
                "unloading {model} answered done_reason '{other}'"
            ))),
        }
    }

    /// Polls `/api/ps` until `model` is no longer listed, or `timeout` passes. Returns whether it went.
    /// A restarting server (refused connections) is waited out inside the same timeout.
    pub async fn wait_until_unloaded(&self, model: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let poll = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.loaded_with(Retry::NONE).await {
                Ok(models) if !models.iter().any(|m| m.name == model || m.model == model) => {
                    return true
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(model, error = %e, "while confirming an unload"),
            }
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(poll.min(left)).await;
        }
    }

    /// `POST /api/chat` without streaming: `system` and `user` in, the assistant's answer out. `options` are
    /// Ollama's model options (temperature, seed, ...). The model loads first when it is not in memory, so this
    /// waits as long as a load may take.
    pub async fn chat(
        &self,
        model: &str,
        system: &str,
        user: &str,
        options: serde_json::Value,
    ) -> Result<String, OllamaError> {
        self.chat_about(model, system, user, &[], false, options)
            .await
    }

    /// [`OllamaClient::chat`] with images (base64) for a vision model to look at, and `json` to make the model
    /// answer with a JSON object (Ollama's `format: "json"`).
    pub async fn chat_about(
        &self,
        model: &str,
        system: &str,
        user: &str,
        images: &[String],
        json: bool,
        options: serde_json::Value,
    ) -> Result<String, OllamaError> {
        let mut message = serde_json::json!({ "role": "user", "content": user });
        if !images.is_empty() {
            message["images"] = serde_json::json!(images);
        }
        let mut body = serde_json::json!({
            "model": model,
            "messages": [{ "role": "system", "content": system }, message],
            "stream": false,
            "options": options,
        });
        if json {
            body["format"] = serde_json::json!("json");
        }
        let reply = self
            .call(
                reqwest::Method::POST,
                "/api/chat",
                Some(&body),
                self.load_timeout,
                Retry::NONE,
            )
            .await
            .map_err(|e| Self::model_error(model, e))?;
        reply
            .pointer("/message/content")
            .and_then(|c| c.as_str())
            .map(String::from)
            .ok_or_else(|| {
                OllamaError::BadReply("/api/chat: no message.content in the reply".into())
            })
    }

    /// Loads `model` without generating anything, kept for `keep_alive`.
    pub async fn load(&self, model: &str, keep_alive: &KeepAlive) -> Result<(), OllamaError> {
        let body = serde_json::json!({ "model": model, "keep_alive": keep_alive.to_json() });
        self.call(
            reqwest::Method::POST,
            "/api/generate",
            Some(&body),
            self.load_timeout,
            self.retry,
        )
        .await
        .map_err(|e| Self::model_error(model, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forever_travels_as_a_number_never_as_the_string_minus_one() {
        for text in ["-1", "forever", "Forever"] {
            let keep = KeepAlive::parse(text).unwrap();
            assert_eq!(keep.to_json(), serde_json::json!(-1), "{text}");
        }
    }

    #[test]
    fn keep_alive_accepts_go_durations_and_seconds() {
        assert_eq!(
            KeepAlive::parse("5m").unwrap().to_json(),
            serde_json::json!("5m")
        );
        assert_eq!(
            KeepAlive::parse("1h30m").unwrap().to_json(),
            serde_json::json!("1h30m")
        );
        assert_eq!(
            KeepAlive::parse("300").unwrap().to_json(),
            serde_json::json!(300)
        );
        assert_eq!(
            KeepAlive::parse("-1m").unwrap().to_json(),
            serde_json::json!("-1m")
        );
        assert_eq!(
            KeepAlive::parse("250ms").unwrap().to_json(),
            serde_json::json!("250ms")
        );
        for bad in ["", "5 minutes", "m", "5x", "1.2.3s"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ollama_host_values_become_base_urls() {
        assert_eq!(
            normalize_url("127.0.0.1:11434").unwrap(),
            "http://127.0.0.1:11434"
        );
        assert_eq!(
            normalize_url("http://gpu-box:8080/").unwrap(),
            "http://gpu-box:8080"
        );
        assert_eq!(normalize_url("0.0.0.0").unwrap(), "http://127.0.0.1:11434");
        assert_eq!(
            normalize_url("localhost").unwrap(),
            "http://localhost:11434"
        );
        assert!(normalize_url("https://x").unwrap_err().contains("http://"));
        assert!(normalize_url("").is_err());
    }

    #[test]
    fn a_restored_model_keeps_the_expiry_it_had_left() {
        let mut model = LoadedModel {
            name: "qwen".into(),
            model: "qwen".into(),
            size: 1,
            size_vram: 1,
            expires_at: Some("2318-01-01T00:00:00Z".into()),
        };
        assert_eq!(model.remaining_keep_alive(), KeepAlive::FOREVER);
        let in_ten_minutes = chrono::Utc::now() + chrono::Duration::seconds(600);
        model.expires_at = Some(in_ten_minutes.to_rfc3339());
        match model.remaining_keep_alive() {
            KeepAlive::Seconds(s) => assert!((590..=600).contains(&s), "{s}"),
            other => panic!("{other:?}"),
        }
        model.expires_at = None;
        assert_eq!(
            model.remaining_keep_alive(),
            KeepAlive::Duration("5m".into())
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let retry = Retry::default();
        for _ in 0..50 {
            let second = retry.delay(2);
            assert!(second >= Duration::from_millis(50) && second <= Duration::from_millis(150));
            let late = retry.delay(12);
            assert!(late <= Duration::from_secs(3), "{late:?}");
        }
    }
}
