//! Errors as the API answers them: a status code and an [`ErrorBody`] naming the field at fault.
//! The service layer's refusals ([`ServiceError`]) are answered as `app::status` says; beside
//! them are the refusals only HTTP has (a method, a body's size, time or type).

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tasknode_protocol::FieldError;
use tasknode_protocol::wire::{ErrorBody, ErrorDetail};

use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the console's rules refused or failed (`app::status` says how it is answered).
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("this endpoint does not take that method; see docs/api.md")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive in time (the connection is closed after the answer).
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        ApiError::Service(ServiceError::invalid(field, message))
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            ApiError::Service(e) => {
                let (status, code) = crate::app::status::of(e);
                (status, code, e.field())
            }
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            ApiError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout", None),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("content-type".to_owned()),
            ),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Service(ServiceError::Invalid(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                field,
                message: self.to_string(),
            },
        };
        let mut res = (status, Json(body)).into_response();
        if let ApiError::Service(ServiceError::Throttled(r)) = &self {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(r.retry_after_secs()));
        }
        res
    }
}
