//! `GET /healthz`, the load balancer's check (docs/haproxy.cfg): 200 `ok` when this
//! console can serve, 503 otherwise. Unauthenticated and plain text; the reason stays in the
//! console's log.

use axum::extract::State;
use axum::http::StatusCode;

use crate::app::AppState;
use crate::service;

pub async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if service::health::ready(&state).await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n")
    }
}
