//! Smaller copies of models over HTTP: `POST /api/v1/models/convert` plans one (what is converted, the copy's size,
//! the VRAM it saves) and starts it; its progress streams from `GET /api/v1/models/converts/{id}/events`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use diffugen_engine::convert::{ConvertEvent, ConvertRequest};
use diffugen_models::{Part, QuantType};
use futures_util::{stream, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::JsonBody;
use crate::{ApiError, AppState};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertBody {
    /// A model id from the folders.
    model: String,
    /// One part of a multi-file model (`t5xxl`, ...); the checkpoint or the diffusion model when left out.
    #[serde(default)]
    part: Option<Part>,
    /// The weight type of the copy.
    #[serde(rename = "type")]
    weight_type: QuantType,
    /// The copy's file name in the models folder.
    #[serde(default)]
    output: Option<String>,
}

/// `POST /api/v1/models/convert` → 202 `{id, preview}`; a model or name the server cannot use → 400 naming it.
pub async fn start(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ConvertBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    crate::model_id("model", &body.model)?;
    let library = state.library();
    let (model, part, weight_type, output) = (body.model, body.part, body.weight_type, body.output);
    let planned = tokio::task::spawn_blocking(move || {
        library
            .plan_conversion(&model, part, weight_type, output.as_deref())
            .map(|c| (c, library))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (conversion, library) = planned.map_err(|e| ApiError::invalid(e.field, e.message))?;
    let preview = conversion.preview.clone();
    let request = ConvertRequest {
        input: preview.input.clone().into(),
        output: preview.output.clone().into(),
        weight_type: preview.weight_type,
        expected_bytes: preview.expected_bytes,
    };
    diffugen_engine::convert::check(&request).map_err(|message| {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message).code("insufficient_resources")
    })?;
    let id = state
        .runtime
        .conversions()
        .start(request, move |_| library.finish_conversion(&conversion));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "preview": preview })),
    ))
}

fn sse(event: &ConvertEvent) -> Event {
    let name = serde_json::to_value(event)
        .ok()
        .and_then(|v| v.get("event").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "event".into());
    crate::native::sse_json(&name, event)
}

/// `GET /api/v1/models/converts/{id}/events`: `started`, `progress`…, then `done` (with the new model's id) or
/// `failed`; what already happened first.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (history, live) = state.runtime.conversions().subscribe(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no conversion with id '{id}'"),
        )
    })?;
    let finished = history.iter().any(ConvertEvent::is_final);
    let live = stream::unfold((live, finished, id), |(mut live, done, id)| async move {
        if done {
            return None;
        }
        loop {
            match live.recv().await {
                Ok(update) if update.id == id => {
                    let done = update.event.is_final();
                    return Some((update.event, (live, done, id)));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = stream::iter(history).chain(live).map(|e| Ok(sse(&e)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
