//! Serves generated images by file name from the outputs folder, and nothing else: no paths, no dot files.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use crate::{ApiError, AppState};

pub async fn image(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let safe = !file.is_empty()
        && !file.starts_with('.')
        && !file.contains(['/', '\\'])
        && !file.contains("..")
        && file.chars().all(|c| !c.is_control());
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no image named '{file}'"));
    if !safe {
        return Err(not_found());
    }
    let content_type =
        diffugen_gallery::media_type(std::path::Path::new(&file)).ok_or_else(not_found)?;
    // A link in the outputs folder is not followed out of it.
    let outputs = tokio::fs::canonicalize(state.runtime.outputs_dir())
        .await
        .map_err(|_| not_found())?;
    let path = tokio::fs::canonicalize(outputs.join(&file))
        .await
        .map_err(|_| not_found())?;
    if path.parent() != Some(outputs.as_path()) {
        return Err(not_found());
    }
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        bytes,
    ))
}
