//! Endpoints agents call: health (also their clock reference), enroll, heartbeat, the node
//! view, shutdown. The rules are in `service::enroll` and `service::nodes`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tasknode_protocol::wire::{
    EnrollRequest, EnrollResponse, Health, HeartbeatRequest, HeartbeatResponse, LeaveRequest,
    NodeView, RemovedServerView, ShutdownRequest,
};

use super::AuthedNode;
use super::error::ApiError;
use super::json::StrictJson;
use crate::app::{AppState, ClientAddr};
use crate::service;

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(service::nodes::health(&state))
}

pub async fn enroll(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    StrictJson(req): StrictJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    Ok(Json(service::enroll::enroll(&state, peer, req).await?))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    Ok(Json(service::nodes::heartbeat(
        &state, &node_id, peer, &req,
    )?))
}

/// How the console sees the calling node: install.sh waits on this for "available".
pub async fn node(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
) -> Result<Json<NodeView>, ApiError> {
    Ok(Json(service::nodes::view(&state, &node_id).await?))
}

/// `POST /nodes/{node_id}/leave`: 200 when removed, 202 while it drains.
pub async fn leave(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<LeaveRequest>,
) -> Result<(StatusCode, Json<RemovedServerView>), ApiError> {
    let view = service::removal::leave(&state, &node_id, req.mode).await?;
    let status = if view.state == "draining" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

pub async fn shutdown(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<ShutdownRequest>,
) -> Result<StatusCode, ApiError> {
    service::nodes::shutdown(&state, &node_id, &req.reason).await?;
    Ok(StatusCode::NO_CONTENT)
}
