//! The gallery over HTTP: list and search with filters and a keyset cursor, one entry, its image and thumbnail
//! (looked up by id, so no client-supplied path ever reaches the file system), favorite, boards, trash, remix.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query as QueryString, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use diffugen_gallery::{Entry, Gallery, GalleryError, Order, Page, Query};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{JsonBody, OptionalJsonBody};
use crate::{ApiError, AppState};

fn api_error(error: GalleryError) -> ApiError {
    match error {
        GalleryError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, error.to_string()),
        GalleryError::Invalid { field, message } => ApiError::invalid(field, message),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// Runs a gallery call off the async threads (SQLite and image decoding block).
pub(crate) async fn with_gallery<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&Gallery) -> Result<T, GalleryError> + Send + 'static,
) -> Result<T, ApiError> {
    let gallery: Arc<Gallery> = state
        .jobs()
        .gallery()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this server keeps no gallery"))?;
    tokio::task::spawn_blocking(move || call(&gallery))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(api_error)
}

fn parse_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid(
            "id",
            format!("id: '{raw}' is not a gallery entry id (a whole number)"),
        )
    })
}

fn parse<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    field: &'static str,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    match params
        .get(field)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(field, format!("{field}: '{v}' is not {allowed}"))),
    }
}

/// `GET /api/v1/gallery?query=&model=&family=&favorite=&board=&from=&to=&width=&height=&order=&cursor=&limit=&trashed=`
pub async fn list(
    State(state): State<AppState>,
    QueryString(params): QueryString<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let text = |k: &str| {
        params
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let order = match text("order").as_deref() {
        None | Some("newest") => Order::Newest,
        Some("oldest") => Order::Oldest,
        Some(other) => {
            return Err(ApiError::invalid(
                "order",
                format!("order: '{other}' is not newest or oldest"),
            ))
        }
    };
    let query = Query {
        text: text("query").or_else(|| text("q")),
        model: text("model"),
        family: text("family"),
        board: text("board"),
        favorite: parse(&params, "favorite", "true or false")?,
        from: parse(&params, "from", "a Unix time in seconds")?,
        to: parse(&params, "to", "a Unix time in seconds")?,
        width: parse(&params, "width", "a width in pixels")?,
        height: parse(&params, "height", "a height in pixels")?,
        order,
        cursor: text("cursor"),
        limit: parse(&params, "limit", "a number from 1 to 500")?,
        trashed: parse(&params, "trashed", "true or false")?.unwrap_or(false),
    };
    with_gallery(&state, move |g| g.list(&query))
        .await
        .map(Json)
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.get(id)).await.map(Json)
}

async fn file(
    path: std::path::PathBuf,
    content_type: &'static str,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "the image file is gone; `diffugen gallery reindex` tidies the gallery",
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    ))
}

/// `GET /api/v1/gallery/{id}/image`: the PNG.
pub async fn image(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let entry = with_gallery(&state, move |g| g.get(id)).await?;
    let path = std::path::PathBuf::from(entry.path);
    // A gallery can hold JPEG and WebP images other tools made, not only PNGs.
    let mime = diffugen_gallery::media_type(&path).unwrap_or("application/octet-stream");
    file(path, mime).await
}

/// `GET /api/v1/gallery/{id}/thumbnail`: about 256 px, JPEG, made when missing.
pub async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let path = with_gallery(&state, move |g| g.thumbnail(id)).await?;
    file(path, "image/jpeg").await
}

/// `GET /api/v1/gallery/{id}/remix`: the entry's parameters as a `POST /api/v1/jobs` body.
pub async fn remix(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.remix(id)).await.map(Json)
}

/// `{"strength": 0..1}` (optional; default 0.35).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefineBody {
    strength: Option<f64>,
}

/// `POST /api/v1/gallery/{id}/refine`: img2img of the image itself at `strength`, with its own prompt, model,
/// parameters and seed → 202 with the job.
pub async fn refine(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RefineBody>,
) -> Result<(StatusCode, Json<diffugen_jobs::JobInfo>), ApiError> {
    let id = parse_id(&id)?;
    let strength = body
        .and_then(|b| b.strength)
        .unwrap_or(Gallery::REFINE_STRENGTH);
    let request = with_gallery(&state, move |g| g.refine(id, strength)).await?;
    let request: diffugen_engine::GenerateRequest = crate::body::from_value(request)?;
    let job = crate::native::enqueue(&state, request, "api", |f| f)?;
    Ok((StatusCode::ACCEPTED, Json(state.jobs().get(&job)?)))
}

/// `{"favorite": true|false}`; left out (or no body at all): true.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FavoriteBody {
    favorite: Option<bool>,
}

/// `{"board": "name"}`.
#[derive(Debug, Deserialize)]
pub struct BoardBody {
    board: String,
}

/// `{"tags": ["a", "b"]}`.
#[derive(Debug, Deserialize)]
pub struct TagsBody {
    tags: Vec<String>,
}

/// `POST /api/v1/gallery/{id}/favorite` `{"favorite": true|false}` (default true).
pub async fn favorite(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(payload): OptionalJsonBody<FavoriteBody>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    let favorite = payload.and_then(|p| p.favorite).unwrap_or(true);
    with_gallery(&state, move |g| g.set_favorite(id, favorite))
        .await
        .map(Json)
}

/// `POST /api/v1/gallery/{id}/boards` `{"board": "name"}`: file the image into a board (created if new).
pub async fn add_to_board(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(BoardBody { board }): JsonBody<BoardBody>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.add_to_board(id, &board))
        .await
        .map(Json)
}

/// `POST /api/v1/gallery/{id}/tags` `{"tags": ["a", "b"]}`: replace the image's tags.
pub async fn tags(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(TagsBody { tags }): JsonBody<TagsBody>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.set_tags(id, &tags))
        .await
        .map(Json)
}

/// `DELETE /api/v1/gallery/{id}/boards/{board}`.
pub async fn remove_from_board(
    State(state): State<AppState>,
    Path((id, board)): Path<(String, String)>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.remove_from_board(id, &board))
        .await
        .map(Json)
}

/// `GET /api/v1/gallery/boards`.
pub async fn boards(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let boards = with_gallery(&state, |g| g.boards()).await?;
    let boards: Vec<Value> = boards
        .into_iter()
        .map(|(name, count)| json!({ "name": name, "count": count }))
        .collect();
    Ok(Json(json!({ "boards": boards })))
}

/// `DELETE /api/v1/gallery/{id}`: to the trash (restorable).
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.delete(id)).await.map(Json)
}

/// `POST /api/v1/gallery/{id}/restore`.
pub async fn restore(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Entry>, ApiError> {
    let id = parse_id(&id)?;
    with_gallery(&state, move |g| g.restore(id)).await.map(Json)
}

/// `POST /api/v1/gallery/reindex`: rebuild from the outputs folder (other folders only from the CLI).
pub async fn reindex(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let report = with_gallery(&state, |g| g.reindex(None)).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

/// The original project's `GET /images`, from the gallery: newest first, up to 500.
pub async fn legacy_list(state: &AppState, base: &str) -> Option<Value> {
    let outputs = state.runtime.outputs_dir().canonicalize().ok();
    let page = with_gallery(state, |g| {
        g.list(&Query {
            limit: Some(500),
            ..Query::default()
        })
    })
    .await
    .ok()?;
    let images: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            let path = std::path::Path::new(&e.path);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let in_outputs = outputs.as_deref().is_some_and(|o| path.parent() == Some(o));
            let url = if in_outputs {
                format!("{base}/images/{name}")
            } else {
                format!("{base}/api/v1/gallery/{}/image", e.id)
            };
            json!({ "file": name, "url": url, "created": e.created as u64, "id": e.id,
                    "prompt": e.prompt, "model": e.model, "seed": e.seed })
        })
        .collect();
    Some(json!({ "images": images }))
}
