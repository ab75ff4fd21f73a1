//! `GET /metrics`: the console's metrics in Prometheus' text format, for the admin token only
//! (they show every project). Prometheus sends the token with `authorization: credentials_file`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Admin;
use super::error::ApiError;
use crate::app::AppState;
use crate::service;

pub async fn metrics(_: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = service::metrics::scrape(&state).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, service::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
