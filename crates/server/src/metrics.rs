//! `GET /metrics`: the runtime's Prometheus metrics in the text format (OpenMetrics), behind the API key when one
//! is set like every route but `/health`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let vram = match state.jobs().orchestrator() {
        Some(orchestrator) => Some(orchestrator.snapshot().await),
        None => None,
    };
    let text = state.runtime.metrics().render(state.jobs(), vram.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            diffugen_runtime::metrics::CONTENT_TYPE,
        )],
        text,
    )
}
