//! `StrictJson<T>`: the request body extractor for every POST. It insists on
//! `application/json`, a body within [`MAX_BODY_BYTES`], a document that matches `T` exactly
//! (unknown fields refused), and `T`'s own validation; each refusal names the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use tasknode_protocol::MAX_BODY_BYTES;
use tasknode_protocol::wire::Validate;

use super::error::ApiError;

pub struct StrictJson<T>(pub T);

impl<S, T> FromRequest<S> for StrictJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
            use serde_json::error::Category;
            let path = e.path().to_string();
            let inner = e.into_inner();
            // A document that is not JSON at all is the body's fault, wherever it broke off.
            let field = match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => "body".to_owned(),
                Category::Data if path != "." => path,
                Category::Data => "body".to_owned(),
            };
            ApiError::invalid(field, inner)
        })?;
        value.validate()?;
        Ok(StrictJson(value))
    }
}
