//! The MCP door (Model Context Protocol, with the official `rmcp` SDK): tools for agents over streamable HTTP at
//! `/mcp` (behind the API key like every route) and over stdio (`diffugen mcp`). Like the other doors it only
//! translates: a tool call becomes a request on the one queue (source `mcp`), its typed events become progress
//! notifications when the client sent a progress token, cancelling the request cancels the job, and the result
//! carries the PNGs and the parameters that made them.

use std::time::Duration;

use base64::Engine as _;
use diffugen_engine::params::ImageInput;
use diffugen_engine::upscale::{SourceImage, UpscaleRequest};
use diffugen_engine::{GenerateRequest, Output, Stage};
use futures_util::StreamExt;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, Peer, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fields::{encode, DropIfQueued, OutputFormat};
use crate::legacy::{choose_model, require_family, Kind};
use crate::native::enqueue_tuned;
use crate::{ApiError, AppState};

/// Where the queue shows a tool's jobs came from.
const SOURCE: &str = "mcp";

/// What `instructions` tells an agent when it connects.
const INSTRUCTIONS: &str = "DiffuGen renders images on this machine with stable-diffusion.cpp. Call list_models \
for the installed models and their defaults, generate_image to render (the result holds the PNG and the \
parameters used, with a gallery id), edit_image to change an image (base64 or a gallery id, with an optional \
mask), upscale_image to enlarge one, search_gallery to find earlier images. Jobs share one queue with the other \
clients: send a progress token to follow the steps, cancel the request to cancel the job.";

/// The tools, over one application state.
#[derive(Clone)]
pub struct Mcp {
    state: AppState,
    tool_router: ToolRouter<Mcp>,
}

/// How many MCP sessions may be open at once over HTTP. A session ends when its client deletes it or after five
/// idle minutes (rmcp's keep-alive); past this many, a client opening another is answered 503 until one ends, so a
/// flood of `initialize` requests cannot grow the server's memory without bound.
pub const MAX_SESSIONS: usize = 64;

/// `/mcp` over the streamable HTTP transport: sessions in memory and at most [`MAX_SESSIONS`] of them, the host and
/// origin checks left to the server's own guard (which knows `--allowed-host`), bodies as large as the API's.
pub fn routes<S: Clone + Send + Sync + 'static>(state: AppState) -> axum::Router<S> {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(crate::BODY_LIMIT)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    let sessions = std::sync::Arc::new(LocalSessionManager::default());
    let service = StreamableHttpService::new(
        move || Ok(Mcp::new(state.clone())),
        sessions.clone(),
        config,
    );
    axum::Router::new()
        .route_service("/mcp", service)
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let sessions = sessions.clone();
                async move { limit_sessions(&sessions, request, next).await }
            },
        ))
}

/// Refuses a request that opens a session (a POST without `Mcp-Session-Id`) while [`MAX_SESSIONS`] are open.
async fn limit_sessions(
    sessions: &LocalSessionManager,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let opens = request.method() == axum::http::Method::POST
        && !request.headers().contains_key("mcp-session-id");
    if !opens {
        return next.run(request).await;
    }
    let open = sessions.sessions.read().await.len();
    if open >= MAX_SESSIONS {
        let message = format!(
            "{open} MCP sessions are open, the most this server keeps: close one (DELETE /mcp with its \
             Mcp-Session-Id) or wait until an idle one ends (after 5 minutes)"
        );
        tracing::warn!("{message}");
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "60")],
            axum::Json(json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32000, "message": message},
            })),
        )
            .into_response();
    }
    next.run(request).await
}

/// Serves the tools over stdin/stdout until the client closes them.
pub async fn serve_stdio(state: AppState) -> Result<(), String> {
    let service = Mcp::new(state)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP over stdio did not start: {e}"))?;
    service
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| format!("MCP over stdio ended with an error: {e}"))
}

/// `generate_image` and its aliases.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateArgs {
    /// What to draw.
    pub prompt: String,
    /// What to keep out of the image.
    pub negative_prompt: Option<String>,
    /// A model id from list_models; left out, the server's default model.
    pub model: Option<String>,
    /// Pixels, a multiple of 64; left out, the model's default.
    pub width: Option<u32>,
    /// Pixels, a multiple of 64; left out, the model's default.
    pub height: Option<u32>,
    /// Sampling steps; left out, the model's default.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale; left out, the model's default.
    pub cfg_scale: Option<f32>,
    /// A sampler name (euler_a, euler, dpm++2m, ...); `sampling_method` is accepted too.
    #[serde(alias = "sampling_method")]
    pub sampler: Option<String>,
    /// A scheduler name (discrete, karras, ...).
    pub scheduler: Option<String>,
    /// The seed; -1 or left out picks one at random (the result reports it).
    pub seed: Option<i64>,
    /// How many images (each with the next seed).
    pub count: Option<u32>,
    /// Let the local LLM (Ollama) rewrite the prompt before rendering.
    pub enhance_prompt: Option<bool>,
    /// The Ollama model that rewrites it; left out, the assistant_model setting.
    pub enhance_model: Option<String>,
    /// Let a vision model (Ollama) score the result against the prompt; below 6/10 it renders once more and the
    /// better take is returned.
    pub critique: Option<bool>,
    /// The vision model that scores it; left out, the critique_model setting.
    pub critique_model: Option<String>,
    /// Accepted from the original DiffuGen's tools and refused when set: images go to DiffuGen's outputs folder
    /// and gallery, never to a folder a client names.
    pub output_dir: Option<String>,
}

/// `edit_image`: img2img, or inpainting with a mask.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditArgs {
    /// How the image should change (or what it should show).
    pub prompt: String,
    /// The image to edit, PNG/JPEG/WebP as base64 (a data: URL too). Give this or gallery_id.
    pub image: Option<String>,
    /// A gallery image to edit, by its id (from search_gallery or an earlier result). Give this or image.
    pub gallery_id: Option<u32>,
    /// Inpainting: white where the image is repainted, black where it is kept (base64, the image's size).
    pub mask: Option<String>,
    /// How much to repaint, 0..1 (default 0.75).
    pub strength: Option<f32>,
    pub negative_prompt: Option<String>,
    /// A model id from list_models; left out, the server's default model.
    pub model: Option<String>,
    /// Left out, the image's aspect ratio at the model's native size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: Option<u32>,
    pub cfg_scale: Option<f32>,
    #[serde(alias = "sampling_method")]
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    pub seed: Option<i64>,
    pub count: Option<u32>,
}

/// `upscale_image`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpscaleArgs {
    /// The image as base64 (a data: URL too). Give this or gallery_id.
    pub image: Option<String>,
    /// A gallery image by its id. Give this or image.
    pub gallery_id: Option<u32>,
    /// An ESRGAN model id from list_models' upscalers, or lanczos / nearest; left out, the first ESRGAN model.
    pub upscaler: Option<String>,
    /// How many times larger (default 2, or the model's own factor).
    pub scale: Option<f64>,
    /// A target width instead of scale.
    pub width: Option<u32>,
    /// A target height instead of scale.
    pub height: Option<u32>,
}

/// `search_gallery`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Words searched in prompts, negative prompts and tags (prefixes match); left out, the newest images.
    pub query: Option<String>,
    /// Only images of this model id.
    pub model: Option<String>,
    /// Only favorites (true) or only the others (false).
    pub favorite: Option<bool>,
    /// Only images on this board.
    pub board: Option<String>,
    /// How many entries, 1..=50 (default 8); each comes with a thumbnail.
    pub limit: Option<u32>,
    /// The next_cursor of a previous page.
    pub cursor: Option<String>,
}

/// `get_job` and `cancel_job`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    /// The job id a result or the queue reported.
    pub job_id: String,
}

/// `list_models` takes nothing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A failure the caller's model can read: the field at fault and what is allowed.
fn refused(error: ApiError) -> CallToolResult {
    let text = match &error.param {
        Some(param) if !error.message.starts_with(param.as_str()) => {
            format!("{param}: {}", error.message)
        }
        _ => error.message.clone(),
    };
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({
        "error": { "message": error.message, "param": error.param, "code": error.code }
    }));
    result
}

fn answer(result: Result<CallToolResult, ApiError>) -> CallToolResult {
    result.unwrap_or_else(refused)
}

/// What one answer carries inline, in bytes before base64: with base64 and JSON around it, under the 1 MiB a message
/// may be for common clients (the official Python SDK's default limit for one server-sent event).
const INLINE_BUDGET: usize = 700 * 1024;

/// An image as a result carries it.
struct Inline {
    bytes: Vec<u8>,
    mime: &'static str,
    /// A JPEG (maybe smaller) in place of the PNG, to fit the message.
    shrunk: bool,
}

/// The images of a result as they fit in one message, each in its share of [`INLINE_BUDGET`]: the PNG when it fits,
/// else a JPEG at falling quality, else a JPEG at half the size (and half again). The flag says an image was shrunk;
/// the gallery keeps every PNG.
fn inline_images(paths: &[String]) -> Result<Vec<Inline>, ApiError> {
    let share = INLINE_BUDGET / paths.len().max(1);
    paths
        .iter()
        .map(|path| {
            let png = encode(path, OutputFormat::Png, None)?;
            if png.len() <= share {
                return Ok(Inline {
                    bytes: png,
                    mime: "image/png",
                    shrunk: false,
                });
            }
            let image = image::load_from_memory(&png)
                .map_err(|e| {
                    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                })?
                .to_rgb8();
            let mut image = image::DynamicImage::ImageRgb8(image);
            loop {
                for quality in [90u8, 75, 60] {
                    let mut out = std::io::Cursor::new(Vec::new());
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                        .encode_image(&image)
                        .map_err(|e| {
                            ApiError::new(
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                e.to_string(),
                            )
                        })?;
                    let jpeg = out.into_inner();
                    if jpeg.len() <= share || image.width() <= 64 {
                        return Ok(Inline {
                            bytes: jpeg,
                            mime: "image/jpeg",
                            shrunk: true,
                        });
                    }
                }
                image = image.resize(
                    (image.width() / 2).max(1),
                    (image.height() / 2).max(1),
                    image::imageops::FilterType::Triangle,
                );
            }
        })
        .collect()
}

/// `edit_image`'s names for our fields: the picture to change is its `image`.
fn edit_field(field: &str) -> &str {
    if field == "init_image" {
        "image"
    } else {
        field
    }
}

/// One of `image` (base64) or `gallery_id`, as the bytes to work on.
async fn source_image(
    state: &AppState,
    image: Option<&str>,
    gallery_id: Option<u32>,
) -> Result<SourceImage, ApiError> {
    match (image, gallery_id) {
        (Some(text), None) => Ok(SourceImage {
            bytes: crate::upscale::decode("image", text)?,
            source: None,
        }),
        (None, Some(id)) => crate::upscale::gallery_image(state, id).await,
        _ => Err(ApiError::invalid(
            "image",
            "image: give exactly one of `image` (base64) or `gallery_id`",
        )),
    }
}

#[tool_router]
impl Mcp {
    pub fn new(state: AppState) -> Mcp {
        Mcp {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        name = "generate_image",
        description = "Render images from a text prompt on this machine's GPU (stable-diffusion.cpp). Returns the \
                       PNGs and the parameters used (seed, steps, model) with their gallery ids."
    )]
    async fn generate_image(
        &self,
        Parameters(args): Parameters<GenerateArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> CallToolResult {
        answer(self.generate(args, Kind::Any, meta, peer, ct).await)
    }

    #[tool(
        name = "generate_stable_diffusion_image",
        description = "The original DiffuGen tool: generate_image with a Stable Diffusion model (SD 1.x, SD 2, \
                       SDXL, SD3); left out, the first one installed."
    )]
    async fn generate_stable_diffusion_image(
        &self,
        Parameters(args): Parameters<GenerateArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> CallToolResult {
        answer(self.generate(args, Kind::Stable, meta, peer, ct).await)
    }

    #[tool(
        name = "generate_flux_image",
        description = "The original DiffuGen tool: generate_image with a FLUX model (FLUX, FLUX.2, Chroma); left \
                       out, the first one installed."
    )]
    async fn generate_flux_image(
        &self,
        Parameters(args): Parameters<GenerateArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> CallToolResult {
        answer(self.generate(args, Kind::Flux, meta, peer, ct).await)
    }

    #[tool(
        name = "edit_image",
        description = "Change an image with a prompt (img2img), or repaint only where a mask is white \
                       (inpainting). The image comes as base64 or as a gallery id."
    )]
    async fn edit_image(
        &self,
        Parameters(args): Parameters<EditArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> CallToolResult {
        answer(self.edit(args, meta, peer, ct).await)
    }

    #[tool(
        name = "upscale_image",
        description = "Enlarge an image (base64 or a gallery id) with an ESRGAN model or Lanczos; the result is \
                       recorded in the gallery."
    )]
    async fn upscale_image(
        &self,
        Parameters(args): Parameters<UpscaleArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> CallToolResult {
        answer(self.upscale(args, meta, peer, ct).await)
    }

    #[tool(
        name = "list_models",
        description = "The image models installed (ids for `model`, family, default size, steps and sampler) and \
                       the upscalers."
    )]
    async fn list_models(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        let library = self.state.library();
        let (cards, upscalers) =
            tokio::task::spawn_blocking(move || (library.cards(), library.upscalers()))
                .await
                .unwrap_or_default();
        let models: Vec<Value> = cards
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "name": c.name, "family": c.family, "variant": c.variant,
                    "quantization": c.quantization, "default_width": c.default_width,
                    "default_height": c.default_height, "default_steps": c.default_steps,
                    "default_cfg_scale": c.default_cfg_scale, "default_sampler": c.default_sampler,
                    "size_bytes": c.size_bytes, "estimated_vram_bytes": c.estimated_bytes,
                })
            })
            .collect();
        let upscalers: Vec<Value> = upscalers.iter().map(|u| json!({ "id": u.id })).collect();
        let mut text = if cards.is_empty() {
            "No image model is installed.".to_string()
        } else {
            format!("{} image model(s):", cards.len())
        };
        for c in &cards {
            text.push_str(&format!(
                "\n- {} ({}, {}x{}, {} steps)",
                c.id, c.family, c.default_width, c.default_height, c.default_steps
            ));
        }
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(json!({ "models": models, "upscalers": upscalers }));
        result
    }

    #[tool(
        name = "search_gallery",
        description = "Find earlier images by words in their prompts or tags, model, board or favorite; returns \
                       entries with ids, prompts, parameters and thumbnails (JPEG)."
    )]
    async fn search_gallery(&self, Parameters(args): Parameters<SearchArgs>) -> CallToolResult {
        answer(self.search(args).await)
    }

    #[tool(
        name = "get_job",
        description = "A job's state (queued, running, done, failed, cancelled), position, latest progress and \
                       outputs."
    )]
    async fn get_job(&self, Parameters(args): Parameters<JobArgs>) -> CallToolResult {
        answer(
            self.state
                .jobs()
                .get(&args.job_id)
                .map_err(ApiError::from)
                .map(|job| {
                    let mut value = serde_json::to_value(&job).unwrap_or(Value::Null);
                    // A live preview frame is large and says nothing to an agent.
                    if let Some(event) = value.get_mut("last_event").and_then(Value::as_object_mut)
                    {
                        event.remove("png_base64");
                    }
                    let text = format!(
                        "job {} is {}",
                        job.id,
                        value["state"].as_str().unwrap_or("?")
                    );
                    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                    result.structured_content = Some(value);
                    result
                }),
        )
    }

    #[tool(
        name = "cancel_job",
        description = "Cancel a waiting or running job by its id."
    )]
    async fn cancel_job(&self, Parameters(args): Parameters<JobArgs>) -> CallToolResult {
        answer(
            self.state
                .jobs()
                .cancel(&args.job_id, "cancelled by an MCP client")
                .map_err(ApiError::from)
                .map(|cancelled| {
                    let text = if cancelled {
                        format!("job {} cancelled", args.job_id)
                    } else {
                        format!("job {} had already ended", args.job_id)
                    };
                    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                    result.structured_content =
                        Some(json!({ "job_id": args.job_id, "cancelled": cancelled }));
                    result
                }),
        )
    }
}

impl Mcp {
    async fn generate(
        &self,
        args: GenerateArgs,
        kind: Kind,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ApiError> {
        if args.output_dir.is_some() {
            return Err(ApiError::invalid(
                "output_dir",
                "output_dir: not supported; images are written to DiffuGen's outputs folder and gallery (the \
                 result gives each image's gallery id)",
            ));
        }
        if args.prompt.trim().is_empty() {
            return Err(ApiError::invalid("prompt", "prompt: must not be empty"));
        }
        let model = match kind {
            Kind::Any => args.model.unwrap_or_default(),
            kind => choose_model(&self.state, kind, args.model)?,
        };
        let request = GenerateRequest {
            model,
            prompt: args.prompt,
            negative_prompt: args.negative_prompt,
            width: args.width,
            height: args.height,
            steps: args.steps,
            cfg_scale: args.cfg_scale,
            sampler: args.sampler,
            scheduler: args.scheduler,
            seed: args.seed,
            count: args.count,
            enhance_prompt: args.enhance_prompt,
            enhance_model: args.enhance_model,
            critique: args.critique,
            critique_model: args.critique_model,
            ..GenerateRequest::default()
        };
        let door = match kind {
            Kind::Stable => "generate_stable_diffusion_image",
            _ => "generate_flux_image",
        };
        let id = enqueue_tuned(
            &self.state,
            request,
            SOURCE,
            |f| f,
            |request, model| match kind {
                Kind::Any => Ok(()),
                kind => require_family(kind, door, request, model),
            },
        )?;
        self.follow(id, meta, peer, ct).await
    }

    async fn edit(
        &self,
        args: EditArgs,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ApiError> {
        if args.prompt.trim().is_empty() {
            return Err(ApiError::invalid("prompt", "prompt: must not be empty"));
        }
        let image = source_image(&self.state, args.image.as_deref(), args.gallery_id).await?;
        let mask = match &args.mask {
            Some(text) => Some(ImageInput::Bytes(crate::upscale::decode("mask", text)?)),
            None => None,
        };
        let request = GenerateRequest {
            model: args.model.unwrap_or_default(),
            prompt: args.prompt,
            negative_prompt: args.negative_prompt,
            width: args.width,
            height: args.height,
            steps: args.steps,
            cfg_scale: args.cfg_scale,
            sampler: args.sampler,
            scheduler: args.scheduler,
            seed: args.seed,
            count: args.count,
            init_image: Some(ImageInput::Bytes(image.bytes)),
            mask,
            strength: args.strength,
            ..GenerateRequest::default()
        };
        let id = enqueue_tuned(&self.state, request, SOURCE, edit_field, |_, _| Ok(()))?;
        self.follow(id, meta, peer, ct).await
    }

    async fn upscale(
        &self,
        args: UpscaleArgs,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ApiError> {
        let image = source_image(&self.state, args.image.as_deref(), args.gallery_id).await?;
        let request = UpscaleRequest {
            upscaler: args.upscaler,
            scale: args.scale,
            width: args.width,
            height: args.height,
            tile_size: None,
        };
        let id = crate::upscale::enqueue_upscale(&self.state, &request, &[image], SOURCE, |f| f)?;
        self.follow(id, meta, peer, ct).await
    }

    async fn search(&self, args: SearchArgs) -> Result<CallToolResult, ApiError> {
        let limit = args.limit.unwrap_or(8);
        if !(1..=50).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("limit: {limit} is not from 1 to 50"),
            ));
        }
        let query = diffugen_gallery::Query {
            text: args.query.filter(|q| !q.trim().is_empty()),
            model: args.model,
            board: args.board,
            favorite: args.favorite,
            cursor: args.cursor,
            limit: Some(limit),
            ..diffugen_gallery::Query::default()
        };
        let (page, thumbnails) = crate::gallery::with_gallery(&self.state, move |gallery| {
            let page = gallery.list(&query)?;
            let thumbnails: Vec<Option<Vec<u8>>> = page
                .entries
                .iter()
                .map(|e| {
                    gallery
                        .thumbnail(e.id)
                        .ok()
                        .and_then(|path| std::fs::read(path).ok())
                })
                .collect();
            Ok((page, thumbnails))
        })
        .await?;
        let mut content = vec![ContentBlock::text(if page.entries.is_empty() {
            "No image matched.".to_string()
        } else {
            format!("{} image(s), the newest first:", page.entries.len())
        })];
        let mut entries = Vec::new();
        for (entry, thumbnail) in page.entries.iter().zip(thumbnails) {
            content.push(ContentBlock::text(format!(
                "#{} {}x{} {} seed {}: {}",
                entry.id,
                entry.width,
                entry.height,
                entry.model.as_deref().unwrap_or("?"),
                entry.seed.map_or("?".to_string(), |s| s.to_string()),
                entry.prompt
            )));
            if let Some(bytes) = thumbnail {
                content.push(ContentBlock::image(
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                    "image/jpeg",
                ));
            }
            entries.push(json!({
                "id": entry.id, "prompt": entry.prompt, "negative_prompt": entry.negative_prompt,
                "model": entry.model, "family": entry.family, "width": entry.width, "height": entry.height,
                "steps": entry.steps, "cfg_scale": entry.cfg_scale, "sampler": entry.sampler,
                "scheduler": entry.scheduler, "seed": entry.seed, "created": entry.created,
                "favorite": entry.favorite, "boards": entry.boards, "tags": entry.tags,
            }));
        }
        let mut result = CallToolResult::success(content);
        result.structured_content =
            Some(json!({ "entries": entries, "next_cursor": page.next_cursor }));
        Ok(result)
    }

    /// Follows a queued job to its end: progress notifications when the client asked for them, the job cancelled
    /// when the request is, and the result with the images and their parameters.
    async fn follow(
        &self,
        id: String,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ApiError> {
        let jobs = self.state.jobs().clone();
        // A client that goes away leaves no job waiting for nobody.
        let _guard = DropIfQueued {
            jobs: jobs.clone(),
            id: id.clone(),
        };
        let token = meta.get_progress_token();
        let mut events = Box::pin(crate::native::job_events(&self.state, &id)?);
        let mut cancelled = false;
        let mut sent: Option<(f64, &'static str)> = None;
        let last = loop {
            tokio::select! {
                _ = ct.cancelled(), if !cancelled => {
                    cancelled = true;
                    let _ = jobs.cancel(&id, "cancelled by the MCP client");
                }
                event = events.next() => {
                    let Some(event) = event else { break None };
                    if event.stage.is_final() {
                        break Some(event.stage);
                    }
                    let (Some(token), Some(message)) = (&token, event.stage.describe()) else {
                        continue;
                    };
                    // Progress must rise with every notification: a new phase or a measured percent moves it.
                    let percent = event.percent.unwrap_or(0.0).clamp(0.0, 100.0);
                    let phase = event.stage.name();
                    let progress = match sent {
                        None => percent,
                        Some((before, _)) if percent > before => percent,
                        Some((before, name)) if name != phase || matches!(event.stage, Stage::Sampling { .. }) => {
                            before + 0.001
                        }
                        Some(_) => continue,
                    };
                    sent = Some((progress, phase));
                    let _ = peer
                        .notify_progress(
                            ProgressNotificationParam::new(token.clone(), progress)
                                .with_total(100.0)
                                .with_message(format!("{id}: {message}")),
                        )
                        .await;
                }
            }
        };
        match last {
            Some(Stage::Done { outputs }) => self.result(&id, &outputs).await,
            Some(Stage::Failed { error, kind }) => Err(ApiError::job_failed(&error, kind)),
            Some(Stage::Cancelled { reason }) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("job {id} was cancelled: {reason}"),
            )),
            _ => Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("job {id} ended without a result"),
            )),
        }
    }

    /// The PNGs, a line for people, and the structured record: job id, seeds, gallery ids and the parameters as
    /// the gallery recorded them.
    async fn result(&self, id: &str, outputs: &[Output]) -> Result<CallToolResult, ApiError> {
        let paths: Vec<String> = outputs.iter().map(|o| o.path.clone()).collect();
        let inline = tokio::task::spawn_blocking(move || inline_images(&paths))
            .await
            .map_err(|e| {
                ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })??;
        let mut content = Vec::new();
        for image in &inline {
            content.push(ContentBlock::image(
                base64::engine::general_purpose::STANDARD.encode(&image.bytes),
                image.mime,
            ));
        }
        let recorded = match outputs.first().and_then(|o| o.gallery_id) {
            Some(gallery_id) => {
                crate::gallery::with_gallery(&self.state, move |g| g.get(gallery_id))
                    .await
                    .ok()
            }
            None => None,
        };
        let parameters = recorded.as_ref().map(|e| {
            json!({
                "prompt": e.prompt, "negative_prompt": e.negative_prompt, "model": e.model, "family": e.family,
                "width": e.width, "height": e.height, "steps": e.steps, "cfg_scale": e.cfg_scale,
                "sampler": e.sampler, "scheduler": e.scheduler, "seed": e.seed, "loras": e.loras,
                "strength": e.strength, "generation_seconds": e.generation_seconds,
            })
        });
        let images: Vec<Value> = outputs
            .iter()
            .map(|o| {
                let file = std::path::Path::new(&o.path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned());
                json!({ "seed": o.seed, "width": o.width, "height": o.height, "gallery_id": o.gallery_id, "file": file })
            })
            .collect();
        let seeds: Vec<i64> = outputs.iter().map(|o| o.seed).collect();
        let model = self
            .state
            .jobs()
            .get(id)
            .map(|j| j.model)
            .unwrap_or_default();
        let line = outputs
            .iter()
            .map(|o| match o.gallery_id {
                Some(g) => format!("{}x{} seed {} (gallery #{g})", o.width, o.height, o.seed),
                None => format!("{}x{} seed {}", o.width, o.height, o.seed),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = format!("Job {id}: {} image(s) with {model}: {line}", outputs.len());
        let shrunk: Vec<String> = outputs
            .iter()
            .zip(&inline)
            .filter(|(_, image)| image.shrunk)
            .map(|(o, _)| {
                o.gallery_id
                    .map_or_else(|| "?".to_string(), |g| format!("#{g}"))
            })
            .collect();
        if !shrunk.is_empty() {
            text.push_str(&format!(
                ". Too large for one message as PNG, so shown as JPEG; the full PNGs are in the gallery ({})",
                shrunk.join(", ")
            ));
        }
        content.push(ContentBlock::text(text));
        let mut result = CallToolResult::success(content);
        result.structured_content = Some(json!({
            "job_id": id, "model": model, "seeds": seeds, "images": images, "parameters": parameters,
        }));
        Ok(result)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("diffugen", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_png(dir: &std::path::Path, name: &str, size: u32) -> String {
        let mut state = 0x2545_f491_u32;
        let image = image::RgbImage::from_fn(size, size, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        });
        let path = dir.join(name);
        image.save(&path).unwrap();
        path.display().to_string()
    }

    #[test]
    fn small_results_travel_as_png_and_large_ones_are_shrunk_to_fit_one_message() {
        let dir = tempfile::tempdir().unwrap();
        let small = noise_png(dir.path(), "small.png", 64);
        let shown = inline_images(std::slice::from_ref(&small)).unwrap();
        assert_eq!(shown[0].mime, "image/png");
        assert!(!shown[0].shrunk);
        assert_eq!(shown[0].bytes, std::fs::read(&small).unwrap());

        // Four 1024x1024 noise images: about 12 MB of PNG.
        let large: Vec<String> = (0..4)
            .map(|i| noise_png(dir.path(), &format!("large{i}.png"), 1024))
            .collect();
        let shown = inline_images(&large).unwrap();
        assert_eq!(shown.len(), 4, "every image is shown");
        let total: usize = shown.iter().map(|i| i.bytes.len()).sum();
        assert!(total <= INLINE_BUDGET, "{total}");
        for shown in &shown {
            assert_eq!(shown.mime, "image/jpeg");
            assert!(shown.shrunk);
            assert!(image::load_from_memory(&shown.bytes).is_ok());
        }
    }
}
