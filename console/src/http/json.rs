//! `StrictJson<T>`: the request body extractor for every POST. It insists on
//! `application/json`, a body within the request type's `MAX_BODY`, a document that matches `T` exactly
//! (unknown fields refused), and `T`'s own validation; each refusal names the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use tasknode_protocol::wire::Validate;

use super::error::ApiError;

pub struct StrictJson<T>(pub T);

/// The field a deserialization error is about: the path where it happened (which names an
/// unknown field itself), the field a "missing field" message names, or the body as a whole
/// when the document is not JSON at all.
fn blame(path: &str, err: &serde_json::Error, message: &str) -> String {
    use serde_json::error::Category;
    if !matches!(err.classify(), Category::Data) {
        return "body".to_owned();
    }
    // The path of a missing field stops at its parent; an unknown field's path names it.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return if path == "." {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
    }
    if path == "." {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// Longest field name and message echoed back from a parser error.
const MAX_FIELD: usize = 64;
const MAX_MESSAGE: usize = 300;

/// Text fit to send back: control characters escaped and at most `max` characters, since
/// serde quotes the offending input (and unknown keys become the field).
fn bounded(message: &str, max: usize) -> String {
    let escaped: String = message
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut out: String = escaped.chars().take(max).collect();
    out.push_str("...");
    out
}

/// The error for a body that could not be read: too large, too slow (see
/// [`crate::server::BodyTimedOut`]), or broken off.
pub(super) fn body_rejection(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit }
    } else if crate::server::BodyTimedOut::is_cause_of(rejection) {
        ApiError::TimedOut(rejection.body_text())
    } else {
        ApiError::invalid("body", rejection.body_text())
    }
}

/// Refuses a body that is not sent as `application/json`.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".to_owned(),
        ))
    }
}

impl<S, T> FromRequest<S> for StrictJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(&rejection, T::MAX_BODY))?;
        // Every body is an object: serde would also map a JSON array onto a struct by position.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            let field = bounded(&blame(&path, &inner, &message), MAX_FIELD);
            ApiError::invalid(field, bounded(&message, MAX_MESSAGE))
        })?;
        value.validate()?;
        Ok(StrictJson(value))
    }
}
