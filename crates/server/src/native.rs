//! DiffuGen's own job API, for the desktop UI and power users: submit the full typed parameters, follow a job's
//! typed events over SSE (replaying what already happened), cancel it, list the queue.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use diffugen_engine::params::ImageInput;
use diffugen_engine::{Destination, GenerateRequest, JobEvent, ParamErrors};
use diffugen_jobs::{JobInfo, QueueError};
use futures_util::{stream, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_stream::wrappers::BroadcastStream;

use crate::body::JsonBody;
use crate::{ApiError, AppState};

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let queue = state.jobs().queue();
    let vram = match state.jobs().orchestrator() {
        Some(orchestrator) => json!({
            "phase": orchestrator.phase(),
            "policy": orchestrator.config().policy,
            "stats": orchestrator.stats().await,
        }),
        None => Value::Null,
    };
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "running": queue.iter().filter(|j| j.state == diffugen_jobs::JobState::Running).count(),
        "queued": queue.iter().filter(|j| j.state == diffugen_jobs::JobState::Queued).count(),
        "vram": vram,
    }))
}

/// Turns validation errors into a 400 naming the first field; `rename` maps our field names to the client's.
pub fn param_error(errors: &ParamErrors, rename: impl Fn(&str) -> &str) -> ApiError {
    let first = errors.first();
    let describe = |field: &str, message: &str| {
        let client = rename(field);
        // A client field that stands for several of ours (size = width + height) names which one.
        if client == field {
            format!("{field}: {message}")
        } else {
            format!("{client}: {field} {message}")
        }
    };
    let message = errors
        .0
        .iter()
        .map(|e| describe(&e.field, &e.message))
        .collect::<Vec<_>>()
        .join("; ");
    let error = ApiError::invalid(rename(&first.field), message);
    if first.field == "model" {
        error.code("model_not_found")
    } else {
        error
    }
}

/// Validates a request and puts it on the queue.
pub fn enqueue(
    state: &AppState,
    request: GenerateRequest,
    source: &str,
    rename: impl Fn(&str) -> &str,
) -> Result<String, ApiError> {
    enqueue_tuned(state, request, source, rename, |_, _| Ok(()))
}

/// [`enqueue`], letting `tune` fill what the dialect derives from the model (OpenAI's `quality` → steps) or refuse
/// a model the route does not take (the original `/generate/flux`) once the request's model is resolved — once,
/// for the tuning and the validation alike.
pub fn enqueue_tuned(
    state: &AppState,
    mut request: GenerateRequest,
    source: &str,
    rename: impl Fn(&str) -> &str,
    tune: impl FnOnce(&mut GenerateRequest, &diffugen_models::ResolvedModel) -> Result<(), ApiError>,
) -> Result<String, ApiError> {
    let model = if request.model.is_empty() {
        None
    } else {
        Some(request.model.as_str())
    };
    request.model = state.model_for(model)?;
    let control_image = request.control.as_ref().map(|c| &c.image);
    for (field, image) in [
        ("init_image", request.init_image.as_ref()),
        ("mask", request.mask.as_ref()),
        ("control.image", control_image),
    ] {
        if let Some(ImageInput::Path(path)) = image {
            return Err(ApiError::invalid(
                rename(field),
                format!(
                    "{field}: a path on the server's disk ({}) is not accepted over HTTP; send the image itself \
                     as {{\"base64\": \"...\"}} (PNG, JPEG or WebP)",
                    path.display()
                ),
            ));
        }
    }
    // Validation decodes images and reads model headers: blocking work, kept off the threads that answer other
    // requests (`/health` among them) where the runtime allows it.
    let library = state.library();
    let validate = || -> Result<_, ApiError> {
        let model = library.resolve(request.model.trim());
        if let Ok(model) = &model {
            tune(&mut request, model)?;
        }
        Ok(diffugen_engine::params::validate_resolved(
            &request,
            Some(model),
            &library,
        ))
    };
    let checked = crate::blocking(validate);
    let spec = checked?.map_err(|e| param_error(&e, rename))?;
    Ok(state.jobs().submit(
        spec,
        Destination::Folder(state.runtime.outputs_dir().to_path_buf()),
        source,
    )?)
}

/// The header a first-party client sets so the queue shows where a job came from (`cli`); anything else is `api`.
pub const SOURCE_HEADER: &str = "x-diffugen-source";

/// Where a job-API request comes from, as the queue shows it: `cli` when the header says so, else `api`.
pub fn source_of(headers: &axum::http::HeaderMap) -> &'static str {
    match headers.get(SOURCE_HEADER).and_then(|v| v.to_str().ok()) {
        Some("cli") => "cli",
        _ => "api",
    }
}

pub async fn submit(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<GenerateRequest>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let id = enqueue(&state, request, source_of(&headers), |f| f)?;
    Ok((StatusCode::ACCEPTED, Json(state.jobs().get(&id)?)))
}

pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    Ok(Json(state.jobs().get(&id)?))
}

pub async fn queue(State(state): State<AppState>) -> Json<Vec<JobInfo>> {
    Json(state.jobs().queue())
}

/// `GET /api/v1/queue/history`: finished, failed and cancelled jobs, the newest first (kept across restarts).
pub async fn history(State(state): State<AppState>) -> Json<Vec<JobInfo>> {
    Json(state.jobs().history())
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let was_active = state.jobs().cancel(&id, "cancelled by an API client")?;
    Ok(Json(json!({ "id": id, "cancelled": was_active })))
}

/// `{"position": N}` (optional): where among the waiting jobs a requeued job goes; left out, last.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct RequeueBody {
    position: Option<u32>,
}

/// `POST /api/v1/jobs/{id}/requeue`: a cancelled or failed job back in line as a new job (undo a cancel, run a
/// failed job again) → 202 with the new job.
pub async fn requeue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::body::OptionalJsonBody(body): crate::body::OptionalJsonBody<RequeueBody>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let position = body.and_then(|b| b.position);
    let new = state.jobs().requeue(&id, position)?;
    Ok((StatusCode::ACCEPTED, Json(state.jobs().get(&new)?)))
}

/// Whether the queue takes new jobs.
fn queue_state(state: &AppState) -> Json<Value> {
    let jobs = state.jobs();
    Json(json!({ "paused": jobs.is_paused(), "lanes": jobs.lanes() }))
}

/// `GET /api/v1/queue/state`: `{"paused": bool, "lanes": [{lane, model, job}]}`.
pub async fn get_queue_state(State(state): State<AppState>) -> Json<Value> {
    queue_state(&state)
}

/// `GET /api/v1/cluster`: the cluster this server is the front of — its NATS server, the workers that announced
/// themselves (name, models, lanes, GPUs, the jobs they render) and the jobs waiting in the stream. 404 when this
/// server is not a cluster front; 503 when the NATS server does not answer.
pub async fn cluster(
    State(state): State<AppState>,
) -> Result<Json<diffugen_cluster::ClusterStatus>, ApiError> {
    match state.runtime.cluster_status().await {
        Some(Ok(status)) => Ok(Json(status)),
        Some(Err(e)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .code("cluster_unavailable")),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this DiffuGen is not a cluster front (start it with `diffugen serve --cluster nats://HOST:PORT`)",
        )
        .code("not_a_cluster_front")),
    }
}

/// `POST /api/v1/queue/pause`: the running job finishes, the waiting ones wait until `resume`.
pub async fn pause(State(state): State<AppState>) -> Json<Value> {
    state.jobs().pause();
    queue_state(&state)
}

/// `POST /api/v1/queue/resume`.
pub async fn resume(State(state): State<AppState>) -> Json<Value> {
    state.jobs().resume();
    queue_state(&state)
}

fn sse_event(event: &JobEvent) -> Event {
    sse_json(event.stage.name(), event)
}

/// A named SSE event with a JSON body (every typed event stream of the API).
pub(crate) fn sse_json(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default())
}

/// Every event of a job — first the ones that already happened, then live ones — ending with the final event.
pub fn job_events(
    state: &AppState,
    id: &str,
) -> Result<impl Stream<Item = JobEvent> + Send + 'static, QueueError> {
    let subscription = state.jobs().subscribe(id)?;
    let history: std::collections::VecDeque<JobEvent> = subscription.history.into();
    let live = BroadcastStream::new(subscription.live)
        .filter_map(|item| async move { item.ok() })
        .boxed();
    Ok(stream::unfold(
        (history, live, false),
        |(mut history, mut live, finished)| async move {
            if finished {
                return None;
            }
            let event = match history.pop_front() {
                Some(event) => event,
                None => live.next().await?,
            };
            let finished = event.stage.is_final();
            Some((event, (history, live, finished)))
        },
    ))
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = job_events(&state, &id)?.map(|event| Ok(sse_event(&event)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `POST /api/v1/prompt/enhance`: rewrites of a prompt by the prompt assistant (the local LLM in Ollama), in its turn
/// on the GPU, to look at before rendering.
pub async fn enhance(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<diffugen_jobs::assistant::EnhanceRequest>,
) -> Result<Json<diffugen_jobs::assistant::Suggestions>, ApiError> {
    use diffugen_jobs::assistant::{AssistantError, EnhanceError};
    state
        .runtime
        .enhance_prompt(&request)
        .await
        .map(Json)
        .map_err(|e| match e {
            EnhanceError::Invalid { field, message } => {
                ApiError::invalid(field, format!("{field}: {message}"))
            }
            EnhanceError::Assistant(error) => {
                let (status, code) = match &error {
                    _ if error.is_unavailable() => {
                        (StatusCode::SERVICE_UNAVAILABLE, "assistant_unavailable")
                    }
                    AssistantError::NoModel { .. } | AssistantError::UnknownModel { .. } => {
                        (StatusCode::BAD_REQUEST, "assistant_model_not_found")
                    }
                    _ => (StatusCode::BAD_GATEWAY, "assistant_failed"),
                };
                ApiError {
                    param: Some(error.field().to_string()),
                    ..ApiError::new(status, error.to_string())
                }
                .code(code)
            }
        })
}
