//! Errors as the API answers them: a status code and an [`ErrorBody`] naming the field at fault.
//! The service layer's refusals ([`ServiceError`]) map onto them one to one.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tasknode_protocol::FieldError;
use tasknode_protocol::wire::{ErrorBody, ErrorDetail};

use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body's `field` names the field; the message says what is wrong with it.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    #[error("{message}")]
    Unauthorized {
        field: &'static str,
        message: String,
    },
    /// The caller may not do this (never the admin, who alone uses the API).
    #[error("{message}")]
    Forbidden { message: String },
    #[error("{message}")]
    NotFound {
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// Well-formed, but refused for what it says (a release whose signature or binaries do
    /// not check out).
    #[error("{message}")]
    Unprocessable {
        field: &'static str,
        message: String,
    },
    #[error("this endpoint does not take that method; see docs/api.md")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive in time (the connection is closed after the answer).
    #[error("{0}")]
    TimedOut(String),
    /// Accepting this would pass a limit on what a client may keep on the console.
    #[error("{message}")]
    LimitReached {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Something the console relies on (an agent's log service) failed.
    #[error("{message}")]
    BadGateway { message: String },
    /// A password check refused before hashing (busy, or backing off after failures).
    #[error("{}", .0.message())]
    TooManyRequests(crate::throttle::Refused),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        ApiError::Invalid(FieldError::new(field, message))
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            ApiError::Invalid(e) => (
                StatusCode::BAD_REQUEST,
                "invalid_field",
                Some(e.field.clone()),
            ),
            ApiError::Unauthorized { field, .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                Some((*field).to_owned()),
            ),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound { field, .. } => (StatusCode::NOT_FOUND, "not_found", field.clone()),
            ApiError::Conflict { field, .. } => (StatusCode::CONFLICT, "conflict", field.clone()),
            ApiError::Unprocessable { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                Some((*field).to_owned()),
            ),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            ApiError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout", None),
            ApiError::LimitReached { field, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "limit_reached",
                Some((*field).to_owned()),
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("content-type".to_owned()),
            ),
            ApiError::BadGateway { .. } => (StatusCode::BAD_GATEWAY, "bad_gateway", None),
            ApiError::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(e) => ApiError::Invalid(e),
            ServiceError::Unauthorized { field, message } => {
                ApiError::Unauthorized { field, message }
            }
            ServiceError::Forbidden { message } => ApiError::Forbidden { message },
            ServiceError::NotFound { field, message } => ApiError::NotFound { field, message },
            ServiceError::Conflict { field, message } => ApiError::Conflict { field, message },
            ServiceError::Unprocessable { field, message } => {
                ApiError::Unprocessable { field, message }
            }
            ServiceError::LimitReached { field, message } => {
                ApiError::LimitReached { field, message }
            }
            ServiceError::Upstream { message } => ApiError::BadGateway { message },
            ServiceError::Throttled(r) => ApiError::TooManyRequests(r),
            ServiceError::Internal(message) => ApiError::Internal(message),
        }
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
        if let ApiError::TooManyRequests(r) = &self {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(r.retry_after_secs()));
        }
        res
    }
}
