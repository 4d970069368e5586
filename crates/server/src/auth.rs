//! The API key: `Authorization: Bearer KEY`, `X-API-Key: KEY`, or HTTP Basic with the key as password. Compared in
//! constant time and never logged. Without a configured key every request passes (an empty `Bearer ` too, which is
//! what Open WebUI sends when its key field is blank).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// The key a request presents, in any of the accepted forms.
pub(crate) fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_string());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, value) = auth.split_once(' ').unwrap_or((auth, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return Some(
            text.split_once(':')
                .map_or(text.clone(), |(_, password)| password.to_string()),
        );
    }
    None
}

/// Whether a request presents `expected` (compared in constant time).
pub(crate) fn key_matches(headers: &HeaderMap, expected: &str) -> bool {
    presented(headers).is_some_and(|key| bool::from(key.as_bytes().ct_eq(expected.as_bytes())))
}

pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.api_key {
        if !key_matches(request.headers(), expected) {
            let error = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send `Authorization: Bearer <key>`, `X-API-Key: <key>` or Basic auth",
            )
            .code("invalid_api_key");
            let mut response = crate::guard::in_dialect(request.uri().path(), error);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"diffugen\""),
            );
            return response;
        }
    }
    next.run(request).await
}
