//! The model library over HTTP: cards for the picker, the download catalog, and downloads with live events.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use diffugen_downloads::{DownloadEvent, DownloadStage, PullState};
use futures_util::{stream, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::JsonBody;
use crate::{ApiError, AppState};

/// `GET /api/v1/models`: model cards (checkpoints, presets, assembled multi-file models) and every file found.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let library = state.library();
    // On a cluster front, the models only its workers hold come after this machine's.
    let (cards, files) = tokio::task::spawn_blocking(move || (library.all_cards(), library.scan()))
        .await
        .unwrap_or_default();
    Json(json!({ "cards": cards, "files": files }))
}

/// `GET /api/v1/models/catalog`.
pub async fn catalog() -> Json<Value> {
    Json(json!({ "models": diffugen_downloads::catalog() }))
}

/// What to download: a catalog model, or a URL with an optional checksum.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DownloadBody {
    model: Option<String>,
    url: Option<String>,
    sha256: Option<String>,
}

/// `POST /api/v1/models/downloads` `{"model": "<catalog id>"}` or `{"url": "...", "sha256": "..."}` → 202.
pub async fn start(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DownloadBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let (model, url, sha256) = (text(&body.model), text(&body.url), text(&body.sha256));
    let target = model.as_deref().or(url.as_deref()).ok_or_else(|| {
        ApiError::invalid(
            "model",
            "give `model` (a catalog id, see /api/v1/models/catalog) or `url`",
        )
    })?;
    let plan = diffugen_downloads::plan(
        target,
        state.library().models_dir(),
        sha256,
        state.runtime.config().hf_token(),
    )
    .map_err(|e| match e {
        diffugen_downloads::DownloadError::Invalid { field, message } => ApiError::invalid(
            if field == "model" && url.is_some() {
                "url"
            } else {
                field
            },
            message,
        ),
        other => ApiError::new(StatusCode::BAD_REQUEST, other.to_string()),
    })?;
    if let Some(url) = url.as_deref() {
        model_file_url(url)?;
        diffugen_downloads::check_reach(url, state.download_reach)
            .await
            .map_err(|message| ApiError::invalid("url", message))?;
    }
    let plan = plan.confined(state.download_reach, MAX_DOWNLOAD_BYTES);
    let name = plan.name.clone();
    let id = state.runtime.downloads().start(plan);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "name": name, "state": "waiting" })),
    ))
}

/// The largest file a client of the API can make DiffuGen download (the biggest single-file models are ~24 GB).
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 30;

/// Over HTTP a URL must name a model file: a preset or any other file could steer what the server opens.
fn model_file_url(url: &str) -> Result<(), ApiError> {
    let name = diffugen_downloads::download::file_name_from_url(url).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let is_model = lower
        .rsplit_once('.')
        .is_some_and(|(_, ext)| diffugen_models::MODEL_EXTENSIONS.contains(&ext));
    if is_model {
        return Ok(());
    }
    Err(ApiError::invalid(
        "url",
        format!(
            "'{name}' is not a model file: over the API only .{} files can be downloaded",
            diffugen_models::MODEL_EXTENSIONS.join(", .")
        ),
    ))
}

/// `GET /api/v1/models/downloads`.
pub async fn downloads(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "downloads": state.runtime.downloads().list() }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no download with id '{id}'"))
}

fn is_final(stage: &DownloadStage, file: u32, files: u32) -> bool {
    match stage {
        DownloadStage::Failed { .. } | DownloadStage::Cancelled => true,
        DownloadStage::Done { .. } => file == files,
        _ => false,
    }
}

fn sse(event: &DownloadEvent) -> Event {
    let name = serde_json::to_value(&event.stage)
        .ok()
        .and_then(|v| v.get("stage").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "event".into());
    crate::native::sse_json(&name, event)
}

/// `GET /api/v1/models/downloads/{id}/events`: what happened so far, then live, ending with the last file's
/// `done`, or `failed` / `cancelled`.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (history, pull_state, live) = state
        .runtime
        .downloads()
        .subscribe(&id)
        .ok_or_else(|| not_found(&id))?;
    let finished = !matches!(pull_state, PullState::Waiting | PullState::Running)
        || history.iter().any(|e| is_final(&e.stage, e.file, e.files));
    // Ends right after the final event (not at the next one, which never comes).
    let live = stream::unfold((live, finished), |(mut live, done)| async move {
        if done {
            return None;
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    let done = is_final(&event.stage, event.file, event.files);
                    return Some((event, (live, done)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = stream::iter(history).chain(live).map(|e| Ok(sse(&e)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `POST /api/v1/models/downloads/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.runtime.downloads().cancel(&id) {
        return Err(not_found(&id));
    }
    Ok(Json(json!({ "id": id, "cancelled": true })))
}
