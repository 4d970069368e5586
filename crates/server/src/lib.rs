//! DiffuGen's local HTTP API. Handlers are thin: they translate a client's request into a `GenerateRequest`,
//! let `diffugen-engine` validate it, and put it on the shared `JobManager` queue — the same path the CLI and the
//! desktop app use.
//!
//! Routes: `GET /health`; OpenAI Images (`POST /v1/images/generations`, `GET /v1/models`); generated files
//! (`GET /images/{file}`); the native job API (`/api/v1/jobs`, `/api/v1/jobs/{id}`, `.../events` as SSE with replay,
//! `.../cancel`, `/api/v1/queue`); AUTOMATIC1111's `/sdapi/v1/*`; the original project's `/generate*` routes.

mod a1111;
mod auth;
mod body;
mod controlnet;
mod convert;
pub mod doors;
mod error;
mod fields;
mod files;
mod gallery;
pub mod gateway;
pub(crate) mod guard;
mod legacy;
mod listen;
pub mod mcp;
mod metrics;
mod models;
pub mod native;
mod openai;
mod upscale;
mod vram;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use diffugen_jobs::JobManager;
use diffugen_models::Library;
use diffugen_runtime::Runtime;

pub use doors::{Doors, DoorsConfig};
pub use error::ApiError;
pub use listen::{Limits, ServerHandle};

/// The largest request body accepted (uploads for img2img included).
pub const BODY_LIMIT: usize = 50 << 20;

/// What the HTTP doors add to the runtime: who may call them, from where, and what a request that names no model
/// gets.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Required on every route but `/health` when set.
    pub api_key: Option<String>,
    /// Answers requests that name no model or an OpenAI model id (`dall-e-2`, `dall-e-3`, `gpt-image-1`).
    pub default_model: Option<String>,
    /// Browser origins allowed to call the API (CORS); empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Host names besides this machine's own that requests may name (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
    /// Whether `POST /api/v1/models/downloads` may fetch from this machine and the local network
    /// (`--allow-private-downloads`); by default public addresses only.
    pub private_downloads: bool,
}

/// Shared state of the handlers: the runtime, and what only the HTTP doors need.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub api_key: Option<Arc<str>>,
    pub default_model: Arc<RwLock<Option<String>>>,
    pub cors_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// Which hosts downloads started over HTTP may reach.
    pub download_reach: diffugen_downloads::Reach,
}

impl AppState {
    pub fn new(runtime: Runtime, config: &ServerConfig) -> AppState {
        AppState {
            runtime,
            api_key: config.api_key.as_deref().map(Arc::from),
            default_model: Arc::new(RwLock::new(config.default_model.clone())),
            cors_origins: config.cors_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            download_reach: if config.private_downloads {
                diffugen_downloads::Reach::Anywhere
            } else {
                diffugen_downloads::Reach::PublicOnly
            },
        }
    }

    /// The one job queue.
    pub fn jobs(&self) -> &JobManager {
        self.runtime.jobs()
    }

    /// The model folders requests are resolved against (shared with the app, which swaps them in Settings).
    pub fn library(&self) -> Library {
        self.runtime.library()
    }

    /// The model for a request: its own id, or the default for none / OpenAI's ids.
    pub fn model_for(&self, requested: Option<&str>) -> Result<String, ApiError> {
        let requested = requested.map(str::trim).filter(|m| !m.is_empty());
        let is_openai_id = |m: &str| {
            m.starts_with("dall-e") || m.starts_with("gpt-image") || m.starts_with("chatgpt-image")
        };
        match requested {
            Some(model) if !is_openai_id(model) => {
                model_id("model", model)?;
                Ok(model.to_string())
            }
            _ => {
                let configured = self
                    .default_model
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                configured
                    .or_else(|| self.library().ids().into_iter().next())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "model",
                            format!(
                                "no model is installed; put one in {}",
                                self.library().models_dir().display()
                            ),
                        )
                        .code("model_not_found")
                    })
            }
        }
    }
}

/// `http://HOST` for links to this server's files, from the request's Host header — which the guard has already
/// matched against this machine's names — and only when it is a plain host[:port], so nothing a client sends can
/// reach a URL or markdown unescaped.
pub(crate) fn base_url(headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Refuses a model given as a path: over HTTP a client names a model by its id from the folders (`GET /v1/models`),
/// and the server opens no file a client points at on its disk.
/// Runs `work` that blocks (decoding images, reading model headers) off the threads that answer other requests
/// when the runtime has others to hand them to; on a single-threaded runtime (a test's) it runs in place.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

pub(crate) fn model_id(field: &str, model: &str) -> Result<(), ApiError> {
    if diffugen_models::is_path_spec(model) {
        return Err(ApiError::invalid(
            field,
            format!(
                "'{model}' is a path; over HTTP a model is named by its id from DiffuGen's model folders \
                 (GET /v1/models lists them), and the server opens no file by path"
            ),
        )
        .code("model_not_found"));
    }
    Ok(())
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/images/generations", post(openai::generations))
        .route("/v1/images/edits", post(openai::edits))
        .route("/images/{file}", get(files::image))
        .route("/api/v1/jobs", post(native::submit))
        .route("/api/v1/upscale", post(upscale::submit))
        .route("/api/v1/jobs/{id}", get(native::job))
        .route("/api/v1/jobs/{id}/events", get(native::events))
        .route("/api/v1/jobs/{id}/cancel", post(native::cancel))
        .route("/api/v1/jobs/{id}/requeue", post(native::requeue))
        .route("/api/v1/prompt/enhance", post(native::enhance))
        .route("/api/v1/queue", get(native::queue))
        .route("/api/v1/queue/state", get(native::get_queue_state))
        .route("/api/v1/queue/pause", post(native::pause))
        .route("/api/v1/queue/resume", post(native::resume))
        .route("/api/v1/queue/history", get(native::history))
        .route("/api/v1/cluster", get(native::cluster))
        .route("/api/v1/models", get(models::list))
        .route("/api/v1/models/catalog", get(models::catalog))
        .route(
            "/api/v1/models/downloads",
            get(models::downloads).post(models::start),
        )
        .route("/api/v1/models/downloads/{id}/events", get(models::events))
        .route("/api/v1/models/convert", post(convert::start))
        .route("/api/v1/models/converts/{id}/events", get(convert::events))
        .route("/api/v1/models/downloads/{id}/cancel", post(models::cancel))
        .route("/api/v1/gallery", get(gallery::list))
        .route("/api/v1/gallery/boards", get(gallery::boards))
        .route("/api/v1/gallery/reindex", post(gallery::reindex))
        .route(
            "/api/v1/gallery/{id}",
            get(gallery::get).delete(gallery::delete),
        )
        .route("/api/v1/gallery/{id}/image", get(gallery::image))
        .route("/api/v1/gallery/{id}/thumbnail", get(gallery::thumbnail))
        .route("/api/v1/gallery/{id}/remix", get(gallery::remix))
        .route("/api/v1/gallery/{id}/refine", post(gallery::refine))
        .route("/api/v1/gallery/{id}/favorite", post(gallery::favorite))
        .route("/api/v1/gallery/{id}/restore", post(gallery::restore))
        .route("/api/v1/gallery/{id}/boards", post(gallery::add_to_board))
        .route("/api/v1/gallery/{id}/tags", post(gallery::tags))
        .route(
            "/api/v1/gallery/{id}/boards/{board}",
            axum::routing::delete(gallery::remove_from_board),
        )
        .route("/metrics", get(metrics::scrape))
        .merge(mcp::routes(state.clone()))
        .route("/api/v1/vram", get(vram::snapshot))
        .route("/api/v1/vram/events", get(vram::events))
        .route("/api/v1/vram/llm", post(vram::to_llm))
        .route("/api/v1/vram/diffusion", post(vram::to_diffusion))
        .route("/sdapi/v1/txt2img", post(a1111::txt2img))
        .route("/sdapi/v1/img2img", post(a1111::img2img))
        .route("/sdapi/v1/sd-models", get(a1111::sd_models))
        .route(
            "/sdapi/v1/options",
            get(a1111::get_options).post(a1111::set_options),
        )
        .route("/sdapi/v1/samplers", get(a1111::samplers))
        .route("/sdapi/v1/schedulers", get(a1111::schedulers))
        .route("/sdapi/v1/upscalers", get(a1111::upscalers))
        .route(
            "/sdapi/v1/extra-single-image",
            post(upscale::extra_single_image),
        )
        .route(
            "/sdapi/v1/extra-batch-images",
            post(upscale::extra_batch_images),
        )
        .route(
            "/sdapi/v1/latent-upscale-modes",
            get(a1111::latent_upscale_modes),
        )
        .route("/sdapi/v1/loras", get(a1111::loras))
        .route("/sdapi/v1/embeddings", get(a1111::embeddings))
        .route("/controlnet/model_list", get(controlnet::model_list))
        .route("/controlnet/module_list", get(controlnet::module_list))
        .route("/controlnet/detect", post(controlnet::detect_maps))
        .route("/sdapi/v1/progress", get(a1111::progress))
        .route("/sdapi/v1/interrupt", post(a1111::interrupt))
        .merge(legacy::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let cors = cors(&state.cors_origins);
    let router = Router::new()
        .route("/health", get(native::health))
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .fallback(|uri: axum::http::Uri| async move {
            guard::in_dialect(
                uri.path(),
                ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such route"),
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// CORS for the configured origins only (`*` allows any); `None` when none are configured.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(Any));
    }
    let list: Vec<axum::http::HeaderValue> =
        origins.iter().filter_map(|o| o.parse().ok()).collect();
    Some(layer.allow_origin(AllowOrigin::list(list)))
}

/// The OpenAPI 3.0 description of every route (kept in step with the router by a test).
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// Binds `addr` and serves in the background.
pub async fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<ServerHandle> {
    serve_limited(addr, state, Limits::default()).await
}

/// [`serve`] under other connection limits.
pub async fn serve_limited(
    addr: SocketAddr,
    state: AppState,
    limits: Limits,
) -> std::io::Result<ServerHandle> {
    let handle = listen::serve(addr, router(state), limits).await?;
    tracing::info!(addr = %handle.addr, "DiffuGen API listening");
    Ok(handle)
}
