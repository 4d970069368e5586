//! Request bodies: one JSON extractor per dialect, each refusing a body in that dialect's error shape — 413 for a
//! body over the limit, 400 (A1111: 422) naming the field of the wrong type or the one missing, or `body` when the
//! JSON itself is malformed. Handlers take the parsed value and never see a rejection.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use crate::error::field_in_message;
use crate::ApiError;

/// A body axum could not read as JSON: too large (413), a field of the wrong type or missing (400 naming it), or
/// not JSON at all (400 naming `body`).
fn rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} MB",
                crate::BODY_LIMIT >> 20
            ),
        )
        .code("body_too_large");
    }
    let text = rejection.body_text();
    match field_in_message(&text) {
        Some(field) => ApiError::invalid(&field, text),
        None => ApiError::invalid("body", format!("the body is not valid JSON: {text}")),
    }
}

/// A request read from form fields (an edit's multipart text parts) into the same typed body a JSON request
/// becomes; a field of the wrong type is a 400 naming it.
pub(crate) fn from_fields<T: DeserializeOwned>(
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ApiError> {
    from_value(serde_json::Value::Object(fields))
}

/// A typed request out of JSON (every extractor's last step; also for a handler that keeps the JSON as it came, as
/// A1111 echoes it back): a field of the wrong type is a 400 naming it, and anything but an object is refused
/// naming `body`.
pub(crate) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        match e.path().to_string() {
            // At the top: a required field left out names itself.
            path if path == "." => match field_in_message(&inner) {
                Some(field) => ApiError::invalid(&field, format!("{field}: {inner}")),
                None => ApiError::invalid("body", inner),
            },
            path => ApiError::invalid(&path, format!("{path}: {inner}")),
        }
    })
}

/// Defines a JSON extractor whose rejection is the dialect's error type.
macro_rules! json_body {
    ($(#[$doc:meta])* $name:ident, $error:ty) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for $name<T> {
            type Rejection = $error;

            async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
                // JSON first, then the typed body out of an object: serde would read a struct out of an array
                // by position.
                match Json::<serde_json::Value>::from_request(request, state).await {
                    Ok(Json(value)) => from_value(value).map($name).map_err(Into::into),
                    Err(e) => Err(rejection(e).into()),
                }
            }
        }
    };
}

json_body!(
    /// OpenAI's routes and DiffuGen's own (`/api/v1/*`): errors in OpenAI's shape.
    JsonBody,
    ApiError
);
json_body!(
    /// AUTOMATIC1111's routes: errors in its shape, invalid input as 422.
    A1111Body,
    crate::error::A1111Error
);
json_body!(
    /// The original project's routes: `{success: false, error, param}`.
    LegacyBody,
    crate::error::LegacyError
);

/// A JSON body that may be left out (no bytes at all: `None`); a body that is there must be JSON.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|l| l == "0")
            || (request
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .is_none()
                && request
                    .headers()
                    .get(axum::http::header::TRANSFER_ENCODING)
                    .is_none()
                && request
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .is_none());
        if empty {
            return Ok(OptionalJsonBody(None));
        }
        JsonBody::<T>::from_request(request, state)
            .await
            .map(|JsonBody(value)| OptionalJsonBody(Some(value)))
    }
}
