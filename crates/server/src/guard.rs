//! The server sits next to the user's browser, so a web page the user visits must not be able to drive it. Two
//! checks run before every route:
//! - **Host** (DNS rebinding): a page on `attacker.example` that re-resolves its name to 127.0.0.1 still sends
//!   `Host: attacker.example`. Only hosts that name this machine pass: IP literals (rebinding needs a name),
//!   `localhost` and `*.localhost`, this machine's host name, `host.docker.internal` (how a container such as Open
//!   WebUI reaches the host) and other LAN-only names (`*.local`, `*.internal`), and the names given with
//!   `--allowed-host`.
//! - **Origin** (CSRF): a cross-site form post (multipart, no CORS preflight) carries the page's `Origin`. A request
//!   with an `Origin` passes only from the server's own origin or one allowed with `--cors-origin`.
//!
//! Both answer 403 in the error shape of the route's dialect (OpenAI, A1111 or the original project's).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// The machine's host name (what a browser on the LAN may use to reach it).
fn hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0)?;
    ok.then(|| String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase())
}

/// The host part of a `Host` header value (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`), lower-cased.
fn host_name(value: &str) -> String {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if value.matches(':').count() == 1 {
        value.split(':').next().unwrap_or("")
    } else {
        value
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a `Host` header value names this server.
pub fn host_allowed(value: &str, allowed: &[String]) -> bool {
    let host = host_name(value);
    host.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
        || host == "host.docker.internal"
        // LAN-only names (mDNS, private zones) cannot be a public attacker's page.
        || host.ends_with(".local")
        || host.ends_with(".internal")
        || hostname().is_some_and(|name| name == host)
        || allowed.iter().any(|a| host_name(a) == host)
}

/// Whether a request's `Origin` may call the API: the server's own origin, or one allowed for CORS.
pub fn origin_allowed(origin: &str, host: Option<&str>, cors_origins: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    let same = host.is_some_and(|host| {
        let host = host.trim().to_ascii_lowercase();
        origin.eq_ignore_ascii_case(&format!("http://{host}"))
            || origin.eq_ignore_ascii_case(&format!("https://{host}"))
    });
    same || cors_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// An error in the error shape the route's clients read.
pub fn in_dialect(path: &str, error: ApiError) -> Response {
    if path.starts_with("/sdapi/") {
        crate::error::A1111Error::from(error).into_response()
    } else if path.starts_with("/generate")
        || path == "/models"
        || path == "/images"
        || path == "/v1/images/generations/stream"
    {
        crate::error::LegacyError::from(error).into_response()
    } else {
        error.into_response()
    }
}

/// The Host and Origin checks, before every route.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let path = request.uri().path().to_string();
    if let Some(host) = host {
        if !host_allowed(host, &state.allowed_hosts) {
            tracing::warn!(
                host,
                path,
                "refused a request for another host name (DNS rebinding?)"
            );
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "this server answers only to names of this machine (localhost, its IP addresses, its host \
                 name); start it with --allowed-host NAME to accept another",
            )
            .code("host_not_allowed");
            return in_dialect(&path, error);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !origin_allowed(origin, host, &state.cors_origins) {
            tracing::warn!(
                origin,
                path,
                "refused a request from a web page of another origin"
            );
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "requests from web pages of other origins are refused; allow this one with --cors-origin ORIGIN",
            )
            .code("origin_not_allowed");
            return in_dialect(&path, error);
        }
    }
    let response = next.run(request).await;
    dialect_rejection(&path, response).await
}

/// What axum answers by itself — a path or query it cannot parse (plain text), a method the route does not take
/// (405, empty), a body over the limit (413, plain text) — rewritten in the route's error shape, naming the field
/// where the message does.
async fn dialect_rejection(path: &str, response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            format!("{path} does not take this method; the Allow header lists those it does"),
        )
        .code("method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            format!(
                "the request body is larger than {} MB",
                crate::BODY_LIMIT >> 20
            ),
        )
        .code("body_too_large"),
        _ => match crate::error::field_in_message(&text) {
            Some(field) => ApiError::invalid(&field, text),
            None => ApiError::new(status, text),
        },
    };
    // axum adds the Allow header of a 405 on the way out.
    in_dialect(path, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_this_machine_pass_and_other_names_do_not() {
        let allowed = vec!["diffugen.lan".to_string()];
        for ok in [
            "127.0.0.1:5199",
            "localhost:5199",
            "LOCALHOST",
            "[::1]:5199",
            "192.168.1.20:5199",
            "app.localhost",
            "host.docker.internal:5199",
            "diffugen.lan:5199",
            "desktop.local:5199",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5199",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn only_the_servers_own_origin_and_configured_ones_pass() {
        let host = Some("127.0.0.1:5199");
        assert!(origin_allowed("http://127.0.0.1:5199", host, &[]));
        assert!(!origin_allowed("http://evil.example", host, &[]));
        assert!(!origin_allowed("null", host, &[]));
        let cors = vec!["http://localhost:3000".to_string()];
        assert!(origin_allowed("http://localhost:3000/", host, &cors));
        assert!(origin_allowed("http://anything", host, &["*".to_string()]));
    }
}
