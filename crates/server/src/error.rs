//! One error type for every route, answered in the OpenAI error shape
//! (`{"error": {"message", "type", "param", "code"}}`, all four keys present), which OpenAI clients, Open WebUI and
//! our own UI all read.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An HTTP error with its status, message and the request field at fault.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 naming the field.
    /// A failed job in HTTP terms: a full disk is 507 Insufficient Storage, a GPU that could not be freed or a job
    /// cut off by a stop 503, a failed render 500.
    pub fn job_failed(error: &str, kind: diffugen_engine::FailureKind) -> ApiError {
        use diffugen_engine::FailureKind;
        let (status, code) = match kind {
            FailureKind::Storage => (StatusCode::INSUFFICIENT_STORAGE, "storage_failed"),
            FailureKind::Gpu => (StatusCode::SERVICE_UNAVAILABLE, "gpu_unavailable"),
            FailureKind::Interrupted => (StatusCode::SERVICE_UNAVAILABLE, "interrupted"),
            FailureKind::Render => (StatusCode::INTERNAL_SERVER_ERROR, "generation_failed"),
        };
        ApiError::new(status, format!("generation failed: {error}")).code(code)
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "message": self.message, "type": self.kind(), "param": self.param, "code": self.code }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<diffugen_jobs::QueueError> for ApiError {
    fn from(error: diffugen_jobs::QueueError) -> ApiError {
        match error {
            diffugen_jobs::QueueError::Full { .. } => ApiError {
                retry_after: Some(5),
                code: Some("queue_full"),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
            },
            diffugen_jobs::QueueError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, error.to_string())
            }
            diffugen_jobs::QueueError::Storage(_) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, error.to_string())
                    .code("storage_failed")
            }
            diffugen_jobs::QueueError::NotRequeueable { .. } => {
                ApiError::new(StatusCode::CONFLICT, error.to_string()).code("not_requeueable")
            }
        }
    }
}

/// The field an axum/serde rejection names: `...target type: width: invalid type...` → `width`;
/// `missing field `prompt`` → `prompt`; `...query string: limit: invalid digit...` → `limit`.
pub(crate) fn field_in_message(message: &str) -> Option<String> {
    let detail = message
        .split_once("target type: ")
        .or_else(|| message.split_once("query string: "))
        .or_else(|| message.split_once("Invalid URL: "))
        .map_or(message, |(_, rest)| rest);
    if let Some(rest) = detail.split_once("missing field `").map(|(_, r)| r) {
        return rest.split_once('`').map(|(field, _)| field.to_string());
    }
    let (path, _) = detail.split_once(": ")?;
    let is_path = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'));
    is_path.then(|| path.to_string())
}

/// An error in A1111's shape: `{error, detail, body, errors}`; invalid input is 422 as in A1111 (FastAPI).
pub struct A1111Error(pub ApiError);

impl From<ApiError> for A1111Error {
    fn from(error: ApiError) -> Self {
        A1111Error(error)
    }
}

impl IntoResponse for A1111Error {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = if error.status == StatusCode::BAD_REQUEST {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            error.status
        };
        let kind = match status {
            StatusCode::UNPROCESSABLE_ENTITY => "ValidationError",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::TOO_MANY_REQUESTS => "QueueFull",
            StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
            _ => "RuntimeError",
        };
        let detail = match &error.param {
            Some(param) if !error.message.starts_with(&format!("{param}:")) => {
                format!("{param}: {}", error.message)
            }
            _ => error.message.clone(),
        };
        let mut response = (
            status,
            Json(json!({ "error": kind, "detail": detail, "body": "", "errors": error.message })),
        )
            .into_response();
        if let Some(seconds) = error.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Errors in the original shape: `{success: false, error, param}`.
pub struct LegacyError(pub ApiError);

impl From<ApiError> for LegacyError {
    fn from(error: ApiError) -> Self {
        LegacyError(error)
    }
}

impl IntoResponse for LegacyError {
    fn into_response(self) -> Response {
        let error = self.0;
        (
            error.status,
            Json(json!({ "success": false, "error": error.message, "param": error.param })),
        )
            .into_response()
    }
}
