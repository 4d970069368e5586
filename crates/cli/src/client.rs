//! The CLI as a client of a running DiffuGen (`generate --server`, `vram --server`): finding and checking the
//! server, requests with the API key, JSON replies whose refusals carry the server's message, and server-sent events.

use std::time::Duration;

/// A DiffuGen server, when one answers.
pub struct Server {
    base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Server {
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// The server at `url`, or why it cannot be used.
    pub async fn connect(url: &str, key: Option<String>) -> Result<Server, String> {
        let base = url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let health = http
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "no DiffuGen server answers at {base} ({e}); start the app or `diffugen serve`, or drop --server"
                )
            })?;
        let body: serde_json::Value = health
            .json()
            .await
            .map_err(|_| format!("{base} is not a DiffuGen server (its /health is not JSON)"))?;
        if body.get("status").and_then(|s| s.as_str()) != Some("ok") {
            return Err(format!("{base} is not a DiffuGen server"));
        }
        Ok(Server { base, http, key })
    }

    pub async fn find(url: &str, key: Option<String>) -> Option<Server> {
        let base = url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .ok()?;
        let health = http
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = health.json().await.ok()?;
        // Only a DiffuGen server with orchestration says where its VRAM stands.
        body.get("vram").filter(|v| !v.is_null())?;
        Some(Server { base, http, key })
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> Result<T, String> {
        self.reply(self.request(method, path).timeout(timeout))
            .await
    }

    /// Sends a request made by [`Server::request`] and reads its JSON reply; a refusal carries the server's message.
    pub async fn reply<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, String> {
        let reply = request
            .send()
            .await
            .map_err(|e| format!("the DiffuGen server at {} did not answer: {e}", self.base))?;
        let status = reply.status();
        let body: serde_json::Value = reply
            .json()
            .await
            .map_err(|e| format!("the DiffuGen server sent an unreadable reply: {e}"))?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("unknown error");
            return Err(format!("the DiffuGen server answered {status}: {message}"));
        }
        serde_json::from_value(body).map_err(|e| format!("unexpected reply from the server: {e}"))
    }
}

/// Takes every complete server-sent event out of `buffer` and returns their `data` payloads.
pub fn sse_data(buffer: &mut String) -> Vec<String> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        events.push(
            block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect(),
        );
    }
    events
}
