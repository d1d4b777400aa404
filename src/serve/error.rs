//! Errors answered as `{"error": "…"}` with Triton's status codes.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sinter_host::HostError;

#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
    /// Invalid argument (and everything Triton does not classify otherwise): 400.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::PAYLOAD_TOO_LARGE, msg.into())
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::UNAUTHORIZED, msg.into())
    }
    pub fn status(&self) -> StatusCode {
        self.0
    }
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body exceeds the server's size limit".to_string()
        } else {
            e.body_text()
        };
        ApiError(status, msg)
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        ApiError::from(&e)
    }
}

impl From<&HostError> for ApiError {
    fn from(e: &HostError) -> Self {
        let status = if e.is_invalid_input() {
            StatusCode::BAD_REQUEST
        } else if matches!(e, HostError::DeviceHung { .. }) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError(status, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
