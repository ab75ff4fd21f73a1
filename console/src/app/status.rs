//! How the console answers what its rules refused, whichever front end asked: one HTTP status
//! and one machine-readable code per kind of [`ServiceError`], for the JSON API's error bodies
//! (`http/error.rs`) and the web console's pages (`web/`) alike.

use axum::http::StatusCode;

use crate::service::ServiceError;

/// The status and the error code `e` is answered with.
pub fn of(e: &ServiceError) -> (StatusCode, &'static str) {
    match e {
        ServiceError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
        ServiceError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ServiceError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        ServiceError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        ServiceError::Unprocessable { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
        ServiceError::LimitReached { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "limit_reached"),
        ServiceError::Removed { .. } => (StatusCode::GONE, "server_removed"),
        ServiceError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "bad_gateway"),
        ServiceError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
        ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}
