//! A fake Ollama over real HTTP that keeps the semantics a VRAM orchestrator depends on (see
//! shared/notes/ollama.md), with a simulated GPU:
//!
//! - an unload (`keep_alive: 0`) is answered at once with `done_reason: "unload"`, but the model stays in `/api/ps`
//!   and holds its VRAM until `release_delay` later;
//! - unloading an installed model that is not loaded still answers "unload"; a model that is not installed is a 404
//!   `model 'M' not found`;
//! - `keep_alive` as a JSON number is seconds (negative = forever), as a string a Go duration; the string "-1" is
//!   rejected ("missing unit in duration");
//! - any request for a model that is not loaded loads it (taking `load_delay`), and a chat streams NDJSON chunks;
//! - it can be stopped and restarted on the same port (a restart forgets every loaded model).
//!
//! Everything it does lands on a timeline with timestamps, so tests can check what happened in which order.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use diffugen_vram::gpu::{GpuProbe, GpuReading};
use serde_json::{json, Value};

pub const GIB: u64 = 1 << 30;

/// Something the fake did, and when.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// An unload was asked for (and answered at once).
    UnloadRequested(String),
    /// The model left `/api/ps` and gave its VRAM back.
    Released(String),
    /// A model was loaded, with the raw `keep_alive` the request sent.
    Loaded {
        model: String,
        keep_alive: Value,
    },
    ChatStarted(String),
    ChatFinished(String),
    Rejected(String),
}

struct Loaded {
    size: u64,
    expires_at: String,
    releasing: bool,
}

struct FakeState {
    installed: BTreeMap<String, u64>,
    loaded: BTreeMap<String, Loaded>,
    timeline: Vec<(Instant, Happening)>,
    release_delay: Duration,
    load_delay: Duration,
    /// Memory the simulated GPU gives to processes other than Ollama (the desktop, say).
    other_vram: u64,
    total_vram: u64,
    /// Management calls (unload/load) in flight, and the most seen at once.
    in_flight: u32,
    max_in_flight: u32,
    /// Bumped on restart, so releases scheduled before it do not touch the new state.
    generation: u32,
    /// Non-streaming chats (the prompt assistant's): model, system prompt, user message.
    chats: Vec<(String, String, String)>,
    /// The scores the fake critic gives next, in order.
    scores: Vec<f64>,
    /// How long a non-streaming chat (the assistant's, the critic's) takes.
    chat_delay: Duration,
}

/// The fake server. Cheap to clone.
#[derive(Clone)]
pub struct FakeOllama {
    state: Arc<Mutex<FakeState>>,
    pub addr: SocketAddr,
    shutdown: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl FakeOllama {
    /// Starts on a free loopback port with `installed` models (name, GiB) and a simulated 8 GiB GPU.
    pub async fn start(installed: &[(&str, f64)]) -> FakeOllama {
        let state = FakeState {
            installed: installed
                .iter()
                .map(|(n, gib)| (n.to_string(), (gib * GIB as f64) as u64))
                .collect(),
            loaded: BTreeMap::new(),
            timeline: Vec::new(),
            release_delay: Duration::from_millis(300),
            load_delay: Duration::from_millis(100),
            other_vram: GIB / 4,
            total_vram: 8 * GIB,
            in_flight: 0,
            max_in_flight: 0,
            generation: 0,
            chats: Vec::new(),
            scores: Vec::new(),
            chat_delay: Duration::from_millis(100),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeOllama {
            state: Arc::new(Mutex::new(state)),
            addr,
            shutdown: Arc::new(Mutex::new(None)),
        };
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        *self.shutdown.lock().unwrap() = Some(tx);
        let app = Router::new()
            .route("/", get(|| async { "Ollama is running" }))
            .route(
                "/api/version",
                get(|| async { Json(json!({"version": "0.12.6"})) }),
            )
            .route("/api/tags", get(tags))
            .route("/api/ps", get(ps))
            .route("/api/generate", post(generate))
            .route("/api/chat", post(chat))
            .with_state(self.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    pub fn set_release_delay(&self, delay: Duration) {
        self.lock().release_delay = delay;
    }

    pub fn set_total_vram(&self, bytes: u64) {
        self.lock().total_vram = bytes;
    }

    /// Loads `model` as a client would have, with `keep_alive` seconds (negative = forever).
    pub fn preload(&self, model: &str, keep_alive_seconds: i64) {
        let mut state = self.lock();
        let size = state.installed[model];
        let expires_at = expiry(&json!(keep_alive_seconds)).unwrap();
        state.loaded.insert(
            model.to_string(),
            Loaded {
                size,
                expires_at,
                releasing: false,
            },
        );
    }

    /// Forgets an installed model (as `ollama rm` would).
    pub fn uninstall(&self, model: &str) {
        self.lock().installed.remove(model);
    }

    /// How long the assistant's and the critic's chats take from now on.
    pub fn set_chat_delay(&self, delay: Duration) {
        self.lock().chat_delay = delay;
    }

    /// The scores the fake critic gives to the next images it is shown (then 8 each).
    pub fn set_scores(&self, scores: &[f64]) {
        self.lock().scores = scores.to_vec();
    }

    /// The prompt assistant's chats so far: (model, system prompt, user message).
    pub fn chats(&self) -> Vec<(String, String, String)> {
        self.lock().chats.clone()
    }

    pub fn loaded(&self) -> Vec<String> {
        self.lock().loaded.keys().cloned().collect()
    }

    pub fn timeline(&self) -> Vec<(Instant, Happening)> {
        self.lock().timeline.clone()
    }

    /// When `what` first happened.
    pub fn when(&self, what: &Happening) -> Option<Instant> {
        self.lock()
            .timeline
            .iter()
            .find(|(_, h)| h == what)
            .map(|(t, _)| *t)
    }

    pub fn count(&self, matches: impl Fn(&Happening) -> bool) -> usize {
        self.lock()
            .timeline
            .iter()
            .filter(|(_, h)| matches(h))
            .count()
    }

    pub fn max_management_calls_at_once(&self) -> u32 {
        self.lock().max_in_flight
    }

    /// Stops answering (connections are refused) for `down_for`, then comes back on the same port with nothing
    /// loaded, as a restarted Ollama does.
    pub async fn restart(&self, down_for: Duration) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
        {
            let mut state = self.lock();
            state.loaded.clear();
            state.generation += 1;
        }
        tokio::time::sleep(down_for).await;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    fn record(state: &mut FakeState, what: Happening) {
        state.timeline.push((Instant::now(), what));
    }

    fn vram_used_by_ollama(state: &FakeState) -> u64 {
        state.loaded.values().map(|l| l.size).sum()
    }
}

/// The simulated GPU: what Ollama's loaded models hold plus a little for other programs.
impl GpuProbe for FakeOllama {
    fn read(&self) -> Result<Vec<GpuReading>, String> {
        let state = self.lock();
        let used = FakeOllama::vram_used_by_ollama(&state) + state.other_vram;
        Ok(vec![GpuReading {
            index: 0,
            name: "Simulated 8 GB GPU".into(),
            total_bytes: state.total_vram as f64,
            used_bytes: used as f64,
            free_bytes: state.total_vram.saturating_sub(used) as f64,
            processes: Vec::new(),
        }])
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `keep_alive` the way Ollama reads it: a number is seconds, a string a Go duration (so "-1" has no unit).
fn keep_alive_seconds(value: &Value) -> Result<Option<f64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) => {
            let (number, unit) = s.split_at(
                s.find(|c: char| c.is_ascii_alphabetic())
                    .ok_or_else(|| format!("time: missing unit in duration \"{s}\""))?,
            );
            let number: f64 = number
                .parse()
                .map_err(|_| format!("time: invalid duration \"{s}\""))?;
            let scale = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(format!("time: unknown unit \"{unit}\" in duration \"{s}\"")),
            };
            Ok(Some(number * scale))
        }
        _ => Err("keep_alive must be a number or a duration string".into()),
    }
}

fn expiry(keep_alive: &Value) -> Result<String, String> {
    let seconds = keep_alive_seconds(keep_alive)?.unwrap_or(300.0);
    let at = if seconds < 0.0 {
        chrono::Utc::now() + chrono::Duration::days(365 * 290)
    } else {
        chrono::Utc::now() + chrono::Duration::milliseconds((seconds * 1000.0) as i64)
    };
    Ok(at.to_rfc3339())
}

async fn tags(State(fake): State<FakeOllama>) -> Json<Value> {
    let state = fake.lock();
    let models: Vec<Value> = state
        .installed
        .iter()
        .map(
            |(name, size)| json!({"name": name, "model": name, "size": size, "digest": "sha256:0"}),
        )
        .collect();
    Json(json!({ "models": models }))
}

async fn ps(State(fake): State<FakeOllama>) -> Json<Value> {
    let state = fake.lock();
    let models: Vec<Value> = state
        .loaded
        .iter()
        .map(|(name, l)| {
            json!({"name": name, "model": name, "size": l.size, "digest": "sha256:0",
                   "details": {"family": "qwen2"}, "expires_at": l.expires_at,
                   "size_vram": l.size, "context_length": 4096})
        })
        .collect();
    Json(json!({ "models": models }))
}

/// Checks the model and keep-alive, unloads or loads; returns the model name when the request goes on to run it.
async fn manage(fake: &FakeOllama, body: &Value) -> Result<(String, bool), Response> {
    let Some(model) = body.get("model").and_then(|m| m.as_str()).map(String::from) else {
        return Err(error(StatusCode::BAD_REQUEST, "model is required"));
    };
    let keep_alive = body.get("keep_alive").cloned().unwrap_or(Value::Null);
    let seconds = match keep_alive_seconds(&keep_alive) {
        Ok(s) => s,
        Err(message) => {
            FakeOllama::record(&mut fake.lock(), Happening::Rejected(message.clone()));
            return Err(error(StatusCode::BAD_REQUEST, &message));
        }
    };
    let (release_delay, load_delay, generation) = {
        let mut state = fake.lock();
        if !state.installed.contains_key(&model) {
            return Err(error(
                StatusCode::NOT_FOUND,
                &format!("model '{model}' not found"),
            ));
        }
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        (state.release_delay, state.load_delay, state.generation)
    };
    let done = |fake: &FakeOllama| fake.lock().in_flight -= 1;
    if seconds == Some(0.0) {
        let mut state = fake.lock();
        FakeOllama::record(&mut state, Happening::UnloadRequested(model.clone()));
        if let Some(loaded) = state.loaded.get_mut(&model) {
            if !loaded.releasing {
                loaded.releasing = true;
                let fake2 = fake.clone();
                let name = model.clone();
                // The reply goes out now; the memory comes back later.
                tokio::spawn(async move {
                    tokio::time::sleep(release_delay).await;
                    let mut state = fake2.lock();
                    if state.generation == generation && state.loaded.remove(&name).is_some() {
                        FakeOllama::record(&mut state, Happening::Released(name));
                    }
                });
            }
        }
        drop(state);
        done(fake);
        return Ok((model, true));
    }
    let needs_load = {
        let state = fake.lock();
        !state.loaded.contains_key(&model) || state.loaded[&model].releasing
    };
    if needs_load {
        tokio::time::sleep(load_delay).await;
    }
    let mut state = fake.lock();
    let size = state.installed[&model];
    let keep = if keep_alive.is_null() {
        json!(300)
    } else {
        keep_alive.clone()
    };
    if needs_load {
        FakeOllama::record(
            &mut state,
            Happening::Loaded {
                model: model.clone(),
                keep_alive: keep_alive.clone(),
            },
        );
        state.loaded.insert(
            model.clone(),
            Loaded {
                size,
                expires_at: expiry(&keep).unwrap(),
                releasing: false,
            },
        );
    } else if !keep_alive.is_null() {
        // A request with keep_alive overwrites the expiry; one without leaves it alone.
        state.loaded.get_mut(&model).unwrap().expires_at = expiry(&keep).unwrap();
    }
    drop(state);
    done(fake);
    Ok((model, false))
}

fn reply(model: &str, done_reason: &str) -> Value {
    json!({"model": model, "created_at": chrono::Utc::now().to_rfc3339(), "response": "",
           "done": true, "done_reason": done_reason})
}

async fn generate(State(fake): State<FakeOllama>, Json(body): Json<Value>) -> Response {
    match manage(&fake, &body).await {
        Err(response) => response,
        Ok((model, true)) => Json(reply(&model, "unload")).into_response(),
        Ok((model, false)) if body.get("prompt").is_none() => {
            Json(reply(&model, "load")).into_response()
        }
        Ok((model, false)) => answer(&fake, model, "response").await,
    }
}

async fn chat(State(fake): State<FakeOllama>, Json(body): Json<Value>) -> Response {
    let empty = body
        .get("messages")
        .and_then(|m| m.as_array())
        .is_none_or(|m| m.is_empty());
    match manage(&fake, &body).await {
        Err(response) => response,
        Ok((model, true)) => Json(reply(&model, "unload")).into_response(),
        Ok((model, false)) if empty => Json(reply(&model, "load")).into_response(),
        Ok((model, false)) if body.get("stream") == Some(&Value::Bool(false)) => {
            rewrite(&fake, model, &body).await
        }
        Ok((model, false)) => answer(&fake, model, "message").await,
    }
}

/// A vision model's verdict: the next of the scores set with `set_scores` (then 8), as the JSON object that
/// `format: "json"` asks for. The image must be a PNG.
async fn critique(
    fake: &FakeOllama,
    model: String,
    system: String,
    user: String,
    body: &Value,
) -> Response {
    use base64::Engine as _;
    let image = body["messages"]
        .as_array()
        .and_then(|m| m.iter().find_map(|m| m["images"][0].as_str()))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_default();
    if !image.starts_with(b"\x89PNG") {
        return error(StatusCode::BAD_REQUEST, "images: not an image");
    }
    if body["format"] != "json" {
        return error(
            StatusCode::BAD_REQUEST,
            "the fake critic answers format: json only",
        );
    }
    let score = {
        let mut state = fake.lock();
        FakeOllama::record(&mut state, Happening::ChatStarted(model.clone()));
        state.chats.push((model.clone(), system, user));
        if state.scores.is_empty() {
            8.0
        } else {
            state.scores.remove(0)
        }
    };
    FakeOllama::record(&mut fake.lock(), Happening::ChatFinished(model.clone()));
    let verdict = json!({"score": score, "reason": format!("fake verdict {score}")});
    Json(
        json!({"model": model, "created_at": chrono::Utc::now().to_rfc3339(),
                "message": {"role": "assistant", "content": verdict.to_string()},
                "done": true, "done_reason": "stop"}),
    )
    .into_response()
}

/// A chat that does not stream (the prompt assistant): one reply, after 100 ms, that rewrites the last user
/// message as "enhanced: <its text without the 'Prompt:' label>"; the messages are kept for the tests.
async fn rewrite(fake: &FakeOllama, model: String, body: &Value) -> Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let text = |role: &str| {
        messages
            .iter()
            .rev()
            .find(|m| m["role"] == role)
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (system, user) = (text("system"), text("user"));
    let images = messages
        .iter()
        .filter_map(|m| m["images"].as_array())
        .map(Vec::len)
        .sum::<usize>();
    if images > 0 {
        return critique(fake, model, system, user, body).await;
    }
    {
        let mut state = fake.lock();
        FakeOllama::record(&mut state, Happening::ChatStarted(model.clone()));
        state.chats.push((model.clone(), system, user.clone()));
    }
    let delay = fake.lock().chat_delay;
    tokio::time::sleep(delay).await;
    let prompt = user
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("Prompt:")
        .trim()
        .to_string();
    FakeOllama::record(&mut fake.lock(), Happening::ChatFinished(model.clone()));
    Json(
        json!({"model": model, "created_at": chrono::Utc::now().to_rfc3339(),
                "message": {"role": "assistant", "content": format!("enhanced: {prompt}")},
                "done": true, "done_reason": "stop"}),
    )
    .into_response()
}

/// A streamed answer: NDJSON chunks 50 ms apart, as Ollama streams tokens.
async fn answer(fake: &FakeOllama, model: String, field: &'static str) -> Response {
    FakeOllama::record(&mut fake.lock(), Happening::ChatStarted(model.clone()));
    let words = ["Hello", " from", " the", " fake", " Ollama"];
    let fake = fake.clone();
    let stream = async_stream(words.len(), move |i| {
        let model = model.clone();
        let fake = fake.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let last = i + 1 == words.len();
            let content = if field == "message" {
                json!({"role": "assistant", "content": words[i]})
            } else {
                json!(words[i])
            };
            let mut chunk = json!({"model": model, "done": last});
            chunk[field] = content;
            if last {
                chunk["done_reason"] = json!("stop");
                FakeOllama::record(&mut fake.lock(), Happening::ChatFinished(model));
            }
            format!("{chunk}\n")
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

fn async_stream<F, Fut>(
    count: usize,
    mut item: F,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(0..count).then(move |i| {
        let fut = item(i);
        async move { Ok(fut.await) }
    })
}
