//! The VRAM orchestrator over HTTP: the snapshot the meter shows, the live events, and the buttons that hand the
//! GPU to the LLM or to diffusion.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use diffugen_vram::{Orchestrator, SwitchError, SwitchReport, VramEvent, VramSnapshot};
use futures_util::{stream, Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use crate::{ApiError, AppState};

fn orchestrator(state: &AppState) -> Result<Orchestrator, ApiError> {
    state.jobs().orchestrator().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "VRAM orchestration is not enabled on this server",
        )
    })
}

/// `GET /api/v1/vram`: GPU(s), resident LLMs, engine, phase, policy and statistics.
pub async fn snapshot(State(state): State<AppState>) -> Result<Json<VramSnapshot>, ApiError> {
    Ok(Json(orchestrator(&state)?.snapshot().await))
}

fn switch_error(error: SwitchError) -> ApiError {
    let (status, code) = match error {
        SwitchError::WaitTimedOut { .. } => (StatusCode::CONFLICT, "render_running"),
        // Nothing to hand the GPU to or take it from: a state of this machine, not a failure of the server.
        SwitchError::Ollama(diffugen_vram::OllamaError::Unreachable { .. }) => {
            (StatusCode::CONFLICT, "ollama_not_running")
        }
        SwitchError::NotConfirmed(_) => (StatusCode::GATEWAY_TIMEOUT, "not_confirmed"),
        SwitchError::Ollama(_) => (StatusCode::BAD_GATEWAY, "ollama_failed"),
    };
    let message = match &error {
        SwitchError::Ollama(diffugen_vram::OllamaError::Unreachable { .. }) => format!(
            "{error}. Ollama is not running (start it with `ollama serve`) or listens elsewhere (--ollama-url)"
        ),
        _ => error.to_string(),
    };
    ApiError::new(status, message).code(code)
}

/// `POST /api/v1/vram/llm`: free the engine's memory and restore the LLMs DiffuGen unloaded.
pub async fn to_llm(State(state): State<AppState>) -> Result<Json<SwitchReport>, ApiError> {
    orchestrator(&state)?
        .switch_to_llm()
        .await
        .map(Json)
        .map_err(switch_error)
}

/// `POST /api/v1/vram/diffusion`: unload every resident LLM and confirm the memory is free.
pub async fn to_diffusion(State(state): State<AppState>) -> Result<Json<SwitchReport>, ApiError> {
    orchestrator(&state)?
        .switch_to_diffusion()
        .await
        .map(Json)
        .map_err(switch_error)
}

fn sse(event: &VramEvent) -> Event {
    let name = match event {
        VramEvent::Phase { .. } => "phase",
        VramEvent::Switch { .. } => "switch",
        VramEvent::Warning { .. } => "warning",
        VramEvent::Snapshot { .. } => "snapshot",
    };
    crate::native::sse_json(name, event)
}

/// `GET /api/v1/vram/events`: a snapshot at once, then phase changes, switches, warnings and a snapshot about
/// every second.
pub async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let orchestrator = orchestrator(&state)?;
    let live = BroadcastStream::new(orchestrator.subscribe()).filter_map(|e| async { e.ok() });
    let first = VramEvent::Snapshot {
        snapshot: Box::new(orchestrator.snapshot().await),
    };
    let events = stream::once(async { first })
        .chain(live)
        .map(|e| Ok(sse(&e)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
