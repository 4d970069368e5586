//! `diffugen mcp`: the MCP tools over stdin/stdout for desktop agents. By default the runtime runs in this process
//! (its own queue and engine, the shared gallery and settings); with `--server URL` the messages are relayed to a
//! running DiffuGen's `/mcp`, so the agent's jobs join that queue and show in the app.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use diffugen_runtime::{Config, Flags, Runtime};
use diffugen_server::{AppState, ServerConfig};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::client::{sse_data, Server};

#[derive(Args)]
pub struct McpArgs {
    /// Relay to a running DiffuGen — the desktop app or `diffugen serve` — instead of rendering in this process
    /// [URL default: http://127.0.0.1:5199]
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://127.0.0.1:5199")]
    server: Option<String>,
    /// The server's API key, if it requires one (with --server)
    #[arg(long, env = "DIFFUGEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The model for tool calls that name none [default: the first model found]
    #[arg(long, value_name = "ID")]
    default_model: Option<String>,
    /// Jobs allowed to wait
    #[arg(long, default_value_t = 32)]
    queue_depth: usize,
    #[command(flatten)]
    ollama: crate::vram::OllamaArgs,
    #[command(flatten)]
    vram: crate::vram::PolicyArgs,
}

impl McpArgs {
    pub fn flags(&self) -> Flags {
        self.ollama.flags().merge(self.vram.flags())
    }
}

pub fn run(config: &Config, args: &McpArgs) -> Result<ExitCode, String> {
    let tokio = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    if let Some(url) = &args.server {
        return tokio.block_on(relay(url, args.api_key.clone()));
    }
    let vram = args.vram.config(config)?;
    let options = crate::start_options(config, vram, args.queue_depth, false, 1)?;
    tokio.block_on(async {
        let runtime = Runtime::start(options).await.map_err(|e| e.to_string())?;
        let state = AppState::new(
            runtime.clone(),
            &ServerConfig {
                default_model: args.default_model.clone(),
                ..ServerConfig::default()
            },
        );
        let served = diffugen_server::mcp::serve_stdio(state).await;
        runtime.shutdown().await;
        served.map(|()| ExitCode::SUCCESS)
    })
}

/// What the relay learned from the server's answer to `initialize`.
#[derive(Default)]
struct Session {
    id: Option<String>,
    protocol: Option<String>,
}

/// Relays newline-delimited JSON-RPC from stdin to the server's streamable HTTP endpoint and every message it
/// answers (a JSON body or the events of an SSE stream: progress, then the result) to stdout. Each message is
/// posted on its own, so a cancel reaches the server while a render is still being answered.
async fn relay(url: &str, key: Option<String>) -> Result<ExitCode, String> {
    let server = Arc::new(Server::connect(url, key).await?);
    let endpoint = format!("{}/mcp", server.base());
    let session = Arc::new(Mutex::new(Session::default()));
    let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut posts = tokio::task::JoinSet::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("cannot read stdin: {e}"))?
    {
        if line.trim().is_empty() {
            continue;
        }
        let message: serde_json::Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(e) => {
                let error = serde_json::json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": format!("parse error: {e}")}});
                write(&stdout, &error.to_string()).await;
                continue;
            }
        };
        let is_initialize = message.get("method").and_then(|m| m.as_str()) == Some("initialize");
        let post = post(
            server.clone(),
            endpoint.clone(),
            session.clone(),
            stdout.clone(),
            message,
        );
        if is_initialize {
            // Everything after it needs the session it opens.
            post.await;
        } else {
            posts.spawn(post);
        }
    }
    // The client closed stdin: let answers in flight finish, then close the session.
    while posts.join_next().await.is_some() {}
    let id = session.lock().await.id.clone();
    if let Some(id) = id {
        let _ = server
            .request(reqwest::Method::DELETE, "/mcp")
            .header("mcp-session-id", id)
            .send()
            .await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn write(stdout: &Mutex<tokio::io::Stdout>, line: &str) {
    let mut out = stdout.lock().await;
    let _ = out.write_all(line.as_bytes()).await;
    let _ = out.write_all(b"\n").await;
    let _ = out.flush().await;
}

async fn post(
    server: Arc<Server>,
    endpoint: String,
    session: Arc<Mutex<Session>>,
    stdout: Arc<Mutex<tokio::io::Stdout>>,
    message: serde_json::Value,
) {
    let id = message.get("id").cloned();
    let fail = |text: String| {
        id.clone().map(|id| {
            serde_json::json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32603, "message": text}})
            .to_string()
        })
    };
    let mut request = server
        .request(reqwest::Method::POST, "/mcp")
        .header("accept", "application/json, text/event-stream")
        .json(&message);
    {
        let session = session.lock().await;
        if let Some(id) = &session.id {
            request = request.header("mcp-session-id", id);
        }
        if let Some(version) = &session.protocol {
            request = request.header("mcp-protocol-version", version);
        }
    }
    let reply = match request.send().await {
        Ok(reply) => reply,
        Err(e) => {
            if let Some(line) = fail(format!(
                "the DiffuGen server at {endpoint} did not answer: {e}"
            )) {
                write(&stdout, &line).await;
            }
            return;
        }
    };
    if let Some(id) = reply
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        session.lock().await.id = Some(id.to_string());
    }
    let status = reply.status();
    let sse = reply
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if !status.is_success() {
        let body = reply.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(body);
        if let Some(line) = fail(format!("the DiffuGen server answered {status}: {detail}")) {
            write(&stdout, &line).await;
        }
        return;
    }
    let forward = |text: String| {
        let session = session.clone();
        let stdout = stdout.clone();
        async move {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                return;
            };
            if let Some(version) = value
                .pointer("/result/protocolVersion")
                .and_then(|v| v.as_str())
            {
                session.lock().await.protocol = Some(version.to_string());
            }
            write(&stdout, &value.to_string()).await;
        }
    };
    if !sse {
        // 202 for a notification; a JSON body for a request answered at once.
        if let Ok(text) = reply.text().await {
            if !text.trim().is_empty() {
                forward(text).await;
            }
        }
        return;
    }
    let mut buffer = String::new();
    let mut body = reply.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        for data in sse_data(&mut buffer) {
            if !data.trim().is_empty() {
                forward(data).await;
            }
        }
    }
}
