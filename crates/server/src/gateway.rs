//! The Ollama gateway: DiffuGen listens on its own port (default 11435) and forwards `/api/*` and `/v1/*` to
//! Ollama, streaming responses through chunk by chunk. Requests that run a model (chat, generate, embeddings)
//! first take a turn on the GPU from the orchestrator: one that arrives while an image renders waits until the GPU
//! is handed back, then the engine frees its memory and the request goes through. Everything else (the model list,
//! `/api/ps`, pulls) passes straight through, so a client's UI never freezes during a render.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use diffugen_vram::Orchestrator;
use futures_util::{StreamExt, TryStreamExt};

use crate::ServerHandle;

#[derive(Clone)]
struct Gateway {
    orchestrator: Orchestrator,
    http: reqwest::Client,
    access: Access,
}

/// Who may use the gateway: with an API key set, only requests that present it (the API's forms: Bearer,
/// X-API-Key, Basic); and, as for the API, only requests that name this machine and come from no foreign web page.
#[derive(Clone, Default)]
pub struct Access {
    pub api_key: Option<std::sync::Arc<str>>,
    pub allowed_hosts: Vec<String>,
}

/// A browser origin Ollama itself accepts by default: pages served from this machine.
fn local_origin(origin: &str) -> bool {
    let rest = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.ends_with(".localhost")
}

/// Refuses a request the gateway must not forward, in Ollama's error shape.
fn refused(access: &Access, request: &Request) -> Option<Response> {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        if !crate::guard::host_allowed(host, &access.allowed_hosts) {
            return Some(ollama_error(
                StatusCode::FORBIDDEN,
                "this gateway answers only to names of this machine; start DiffuGen with --allowed-host NAME to \
                 accept another"
                    .into(),
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if !local_origin(origin) {
            return Some(ollama_error(
                StatusCode::FORBIDDEN,
                format!("requests from web pages at {origin} are refused by the gateway"),
            ));
        }
    }
    if let Some(expected) = &access.api_key {
        if !crate::auth::key_matches(headers, expected) {
            let mut response = ollama_error(
                StatusCode::UNAUTHORIZED,
                "DiffuGen's Ollama gateway needs the API key: send `Authorization: Bearer <key>`"
                    .into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"diffugen\""),
            );
            return Some(response);
        }
    }
    None
}

/// Paths whose requests load or run a model, and so need the GPU.
fn needs_gpu(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path,
            "/api/generate"
                | "/api/chat"
                | "/api/embed"
                | "/api/embeddings"
                | "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/embeddings"
                | "/v1/responses"
        )
}

/// Headers that belong to one connection, not to the request or response (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
    )
}

fn ollama_error(status: StatusCode, message: String) -> Response {
    // Ollama's own error shape, which its clients (Open WebUI included) display.
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The gateway's router (open to any local request; see [`router_with`]).
pub fn router(orchestrator: Orchestrator) -> Router {
    router_with(orchestrator, Access::default())
}

/// The gateway's router with its access rules.
pub fn router_with(orchestrator: Orchestrator, access: Access) -> Router {
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds");
    Router::new().fallback(forward).with_state(Gateway {
        orchestrator,
        http,
        access,
    })
}

async fn forward(State(gateway): State<Gateway>, request: Request) -> Response {
    if let Some(refusal) = refused(&gateway.access, &request) {
        return refusal;
    }
    let path = request.uri().path().to_string();
    let forwarded = path == "/" || path.starts_with("/api/") || path.starts_with("/v1/");
    if !forwarded {
        return ollama_error(
            StatusCode::NOT_FOUND,
            format!("the DiffuGen Ollama gateway forwards /api/* and /v1/* only, not {path}"),
        );
    }
    let lease = if needs_gpu(request.method(), &path) {
        match gateway.orchestrator.acquire_llm().await {
            Ok(lease) => Some(lease),
            Err(error) => {
                return ollama_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "DiffuGen is rendering an image and the GPU was not free in time: {error}"
                    ),
                )
            }
        }
    } else {
        None
    };
    let base = gateway.orchestrator.ollama().url();
    let target = format!(
        "{base}{}",
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(&path)
    );
    let (parts, body) = request.into_parts();
    let mut upstream = gateway.http.request(parts.method, &target);
    for (name, value) in parts.headers.iter() {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    let reply = match upstream.send().await {
        Ok(reply) => {
            gateway.orchestrator.ollama_answered();
            reply
        }
        Err(error) => {
            // The innermost cause says what happened ("Connection refused"); reqwest's own text does not.
            let mut cause: &dyn std::error::Error = &error;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            let error = cause.to_string();
            tracing::warn!(%target, %error, "the Ollama gateway cannot reach Ollama");
            return ollama_error(
                StatusCode::BAD_GATEWAY,
                format!("DiffuGen's Ollama gateway cannot reach Ollama at {base}: {error}"),
            );
        }
    };
    let mut response = Response::builder().status(reply.status().as_u16());
    for (name, value) in reply.headers() {
        if !hop_by_hop(name) && name != header::CONTENT_LENGTH {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    // The GPU turn lasts as long as the response streams; the stream owns it and drops it at the end.
    let body = reply
        .bytes_stream()
        .map(move |chunk| {
            let _turn = &lease;
            chunk
        })
        .map_err(std::io::Error::other);
    response
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| ollama_error(StatusCode::BAD_GATEWAY, e.to_string()))
}

/// Binds `addr` and runs the gateway in the background.
pub async fn serve(addr: SocketAddr, orchestrator: Orchestrator) -> std::io::Result<ServerHandle> {
    serve_with(addr, orchestrator, Access::default()).await
}

/// Starts the gateway on `addr` with its access rules.
pub async fn serve_with(
    addr: SocketAddr,
    orchestrator: Orchestrator,
    access: Access,
) -> std::io::Result<ServerHandle> {
    let handle = crate::listen::serve(
        addr,
        router_with(orchestrator, access),
        crate::Limits::gateway(),
    )
    .await?;
    tracing::info!(addr = %handle.addr, "Ollama gateway listening");
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_served_from_this_machine_may_call_the_gateway_and_others_may_not() {
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8080/",
            "http://app.localhost",
        ] {
            assert!(local_origin(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://localhost.evil.example",
        ] {
            assert!(!local_origin(bad), "{bad}");
        }
    }

    #[test]
    fn only_requests_that_run_a_model_wait_for_the_gpu() {
        assert!(needs_gpu(&Method::POST, "/api/chat"));
        assert!(needs_gpu(&Method::POST, "/v1/chat/completions"));
        assert!(!needs_gpu(&Method::GET, "/api/tags"));
        assert!(!needs_gpu(&Method::GET, "/api/ps"));
        assert!(!needs_gpu(&Method::POST, "/api/pull"));
        assert!(!needs_gpu(&Method::GET, "/v1/models"));
    }
}
