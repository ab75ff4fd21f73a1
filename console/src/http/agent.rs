//! Endpoints agents call: health (also their clock reference), enroll, heartbeat, shutdown.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use tasknode_protocol::Identity;
use tasknode_protocol::wire::{
    EnrollRequest, EnrollResponse, Health, HeartbeatRequest, HeartbeatResponse, ShutdownRequest,
};

use super::error::ApiError;
use super::json::StrictJson;
use super::{AppState, bearer};
use crate::auth;
use crate::store::{Enrollment, Liveness};

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        console_time_ms: state.clock.now_ms(),
    })
}

fn interval_secs(state: &AppState) -> u64 {
    state.thresholds.interval.as_secs().max(1)
}

pub async fn enroll(
    State(state): State<AppState>,
    StrictJson(req): StrictJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let identity = req.identity.normalized("identity.value")?;
    let login = state.store.login(&req.user_name).await?;

    // Argon2 is deliberately slow: keep it off the async workers, a few at a time.
    let stored_hash = login.as_ref().map(|l| l.password_hash.clone());
    let password = req.password.clone();
    let ok = state
        .password_work(move || auth::verify_password(&password, stored_hash.as_deref()))
        .await?;
    let Some(login) = login.filter(|_| ok) else {
        return Err(ApiError::Unauthorized {
            field: "password",
            message: "user name or password is wrong; use the access key printed by `tasknode-console user create`"
                .to_owned(),
        });
    };

    let value = identity.value().to_owned();
    let kind = identity.network().identity_kind();
    let not_found = || ApiError::NotFound {
        field: Some("identity.value".to_owned()),
        message: format!(
            "no server with {kind} {value} in any resource group of project {}; add it first: \
             tasknode-console server add --project {} --group GROUP --name {value}",
            login.project, login.project
        ),
    };
    // A server of another project is reported exactly like a missing one.
    let server = state
        .store
        .server_by_name(&value)
        .await?
        .filter(|s| s.project == login.project)
        .ok_or_else(not_found)?;
    if server.network != identity.network() {
        let flag = server.network.enable_uuid();
        return Err(ApiError::Conflict {
            field: Some("identity.kind".to_owned()),
            message: format!(
                "server {value} is in {} group {}, which identifies servers by {}; enroll with --enable-uuid {flag}",
                server.network,
                server.group,
                server.network.identity_kind(),
            ),
        });
    }

    let secret = auth::generate_secret();
    let digest = auth::digest(&secret);
    let now = state.clock.now_ms();
    let enrollment = Enrollment {
        node_id: uuid::Uuid::new_v4().to_string(),
        secret_sha256: hex::encode(digest),
        enrolled_ms: now,
        cpu_cores: req.facts.cpu_cores,
        memory_bytes: req.facts.memory_bytes,
    };
    state
        .store
        .enroll(server.id, &enrollment, &req.facts)
        .await?;
    // The previous heartbeat stays (so a re-enrolled server is judged from its last sign of
    // life); a recorded shutdown does not.
    let live = Liveness {
        agent_version: Some(req.facts.agent_version.clone()),
        stopped: None,
        ..server.liveness.clone()
    };
    state
        .live
        .enroll(server.id, &enrollment.node_id, digest, live);
    tracing::info!(
        server = %server.name,
        group = %server.group,
        node_id = %enrollment.node_id,
        identity = %match &identity { Identity::Hostname(_) => "hostname", Identity::Uuid(_) => "uuid" },
        "enrolled"
    );
    Ok(Json(EnrollResponse {
        node_id: enrollment.node_id,
        node_secret: secret,
        server_name: server.name,
        group: server.group,
        project: server.project,
        network: server.network,
        heartbeat_interval_secs: interval_secs(&state),
        console_time_ms: state.clock.now_ms(),
    }))
}

fn authenticate(state: &AppState, node_id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let secret = bearer(headers, "node secret")?;
    state
        .live
        .authenticate(node_id, secret)
        .map_err(|e| ApiError::Unauthorized {
            field: "authorization",
            message: e.to_string(),
        })
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
    StrictJson(req): StrictJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    authenticate(&state, &node_id, &headers)?;
    let now = state.clock.now_ms();
    if !state.live.heartbeat(&node_id, &req, now) {
        // Re-enrolled between the check and here.
        return Err(ApiError::Unauthorized {
            field: "authorization",
            message: "this node was enrolled again; the agent must use its new credentials"
                .to_owned(),
        });
    }
    Ok(Json(HeartbeatResponse {
        console_time_ms: now,
        heartbeat_interval_secs: interval_secs(&state),
        desired_version: None,
        commands: Vec::new(),
    }))
}

pub async fn shutdown(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
    StrictJson(req): StrictJson<ShutdownRequest>,
) -> Result<StatusCode, ApiError> {
    authenticate(&state, &node_id, &headers)?;
    let store = Arc::clone(&state.store);
    if let Some(update) = state
        .live
        .shutdown(&node_id, &req.reason, state.clock.now_ms())
    {
        store.record_liveness(vec![update]).await?;
        tracing::info!(node_id = %node_id, reason = %req.reason, "agent shut down cleanly");
    }
    Ok(StatusCode::NO_CONTENT)
}
