//! Errors as the API answers them: a status code and an [`ErrorBody`] naming the field at fault.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tasknode_protocol::FieldError;
use tasknode_protocol::wire::{ErrorBody, ErrorDetail};

use crate::store::StoreError;

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

    /// The HTTP status the API answers this error with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<String> {
        self.parts().2
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

impl From<crate::throttle::Refused> for ApiError {
    fn from(r: crate::throttle::Refused) -> Self {
        ApiError::TooManyRequests(r)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists { kind, .. } => ApiError::Conflict {
                field: Some(
                    if kind == "project" || kind == "user" || kind == "resource group" {
                        "name".to_owned()
                    } else {
                        kind.to_owned()
                    },
                ),
                message: e.to_string(),
            },
            StoreError::NotFound { kind, .. } => ApiError::NotFound {
                field: Some(match kind {
                    "resource group" => "group".to_owned(),
                    other => other.to_owned(),
                }),
                message: e.to_string(),
            },
            StoreError::UserNotInProject { .. } => ApiError::NotFound {
                field: Some("user_name".to_owned()),
                message: e.to_string(),
            },
            StoreError::EnrolledElsewhere => ApiError::Conflict {
                field: Some("identity.value".to_owned()),
                message: e.to_string(),
            },
            StoreError::TokenSpent => ApiError::Unauthorized {
                field: "enrollment_token",
                message: e.to_string(),
            },
            StoreError::Conflict { field, .. } => ApiError::Conflict {
                field: Some(field.to_owned()),
                message: e.to_string(),
            },
            StoreError::NotPublished { .. } => ApiError::NotFound {
                field: Some("version".to_owned()),
                message: e.to_string(),
            },
            StoreError::ServerTaken { .. } => ApiError::Conflict {
                field: Some("name".to_owned()),
                message: e.to_string(),
            },
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::Internal(other.to_string())
            }
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
