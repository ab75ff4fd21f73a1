//! Endpoints agents call: health (also their clock reference), enroll, heartbeat, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use tasknode_protocol::Identity;
use tasknode_protocol::wire::{
    Credential, EnrollRequest, EnrollResponse, Health, HeartbeatRequest, HeartbeatResponse,
    NodeView, ShutdownRequest,
};

use super::error::ApiError;
use super::json::StrictJson;
use super::{AppState, AuthedNode};
use crate::auth;
use crate::clock::rfc3339;
use crate::store::{Enrollment, Liveness, SpendToken, StoreError};

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

/// Where a credential may enroll: any group of a user's project, or the one group of a token.
struct Scope {
    project: String,
    group: Option<String>,
    spend: Option<SpendToken>,
}

/// Checks the credential of an enrollment and says where it may enroll.
async fn scope(
    state: &AppState,
    peer: std::net::IpAddr,
    req: &EnrollRequest,
) -> Result<Scope, ApiError> {
    match req.credential()? {
        Credential::AccessKey {
            user_name,
            password,
        } => {
            // Argon2 is deliberately slow: keep it off the async workers, a few at a time,
            // and refuse at once (before even looking the user up) past the queue or after
            // repeated failures.
            let attempt = state.credentials.begin(user_name, peer).await?;
            let login = state.store.login(user_name).await?;
            let stored_hash = login.as_ref().map(|l| l.password_hash.clone());
            let password = password.to_owned();
            let ok = attempt
                .verify(move || auth::verify_password(&password, stored_hash.as_deref()))
                .await?;
            match login.filter(|_| ok) {
                Some(login) => Ok(Scope {
                    project: login.project,
                    group: None,
                    spend: None,
                }),
                None => Err(ApiError::Unauthorized {
                    field: "password",
                    message: "user name or password is wrong; use the access key printed by `tasknode-console user create`"
                        .to_owned(),
                }),
            }
        }
        Credential::Token(token) => {
            let sha = hex::encode(auth::digest(token));
            let now = state.clock.now_ms();
            let refused = |message: String| ApiError::Unauthorized {
                field: "enrollment_token",
                message,
            };
            let Some(t) = state.store.enrollment_token(&sha).await? else {
                return Err(refused(
                    "this enrollment token is not known to the console; ask for a new install command"
                        .to_owned(),
                ));
            };
            let renew = format!(
                "create a new one with `tasknode-console install-command --project {} --group {} --user {}`",
                t.project, t.group, t.user
            );
            if let Some((at, server)) = &t.used {
                return Err(refused(format!(
                    "this enrollment token was already used at {} by server {server}; {renew}",
                    rfc3339(*at)
                )));
            }
            if t.expires_ms <= now {
                return Err(refused(format!(
                    "this enrollment token expired at {}; {renew}",
                    rfc3339(t.expires_ms)
                )));
            }
            Ok(Scope {
                project: t.project,
                group: Some(t.group),
                spend: Some(SpendToken {
                    token_sha256: sha,
                    now_ms: now,
                }),
            })
        }
    }
}

pub async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    StrictJson(req): StrictJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let identity = req.identity.normalized("identity.value")?;
    let scope = scope(&state, peer.ip(), &req).await?;

    let value = identity.value().to_owned();
    let kind = identity.network().identity_kind();
    let project = &scope.project;
    let not_found = || ApiError::NotFound {
        field: Some("identity.value".to_owned()),
        message: match &scope.group {
            None => format!(
                "no server with {kind} {value} in any resource group of project {project}; add it first: \
                 tasknode-console server add --project {project} --group GROUP --name {value}"
            ),
            Some(group) => format!(
                "no server with {kind} {value} in resource group {group} of project {project}; add it first: \
                 tasknode-console server add --project {project} --group {group} --name {value}"
            ),
        },
    };
    // Only the credential's project is looked in; for a token, a server of another group is
    // reported exactly like a missing one.
    let server = state
        .store
        .server_by_name(project, &value)
        .await?
        .filter(|s| scope.group.as_ref().is_none_or(|g| g == &s.group))
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
    let by_token = scope.spend.is_some();
    // The previous heartbeat stays on record; what the previous agent reported (its clock,
    // its tasks, its shutdown) does not describe the new one.
    let live = Liveness {
        agent_version: Some(req.facts.agent_version.clone()),
        clock_offset_ms: None,
        running_tasks: 0,
        stopped: None,
        ..server
            .enrollment
            .as_ref()
            .and_then(|e| state.live.get(&e.node_id))
            .unwrap_or_else(|| server.liveness.clone())
    };
    // One decision: the store's transaction decides which secret is valid and numbers it, and
    // the liveness map takes it only if no newer enrollment got there first. Both run in a
    // task of their own, so a client that hangs up between them cannot leave the store and
    // the map apart.
    let decide = {
        let (store, map) = (Arc::clone(&state.store), Arc::clone(&state.live));
        let (server_id, enrollment, facts) = (server.id, enrollment.clone(), req.facts.clone());
        tokio::spawn(async move {
            let generation = store
                .enroll(server_id, &enrollment, &facts, scope.spend)
                .await?;
            map.enroll(server_id, generation, &enrollment.node_id, digest, live);
            Ok::<_, StoreError>(())
        })
    };
    decide
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            StoreError::TokenSpent => ApiError::Unauthorized {
                field: "enrollment_token",
                message: e.to_string(),
            },
            other => other.into(),
        })?;
    tracing::info!(
        server = %server.name,
        group = %server.group,
        node_id = %enrollment.node_id,
        identity = %match &identity { Identity::Hostname(_) => "hostname", Identity::Uuid(_) => "uuid" },
        by_token,
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

pub async fn heartbeat(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let now = state.clock.now_ms();
    if !state.live.heartbeat(&node_id, &req, peer.ip(), now) {
        // Re-enrolled between the check and here.
        return Err(ApiError::Unauthorized {
            field: "authorization",
            message: "this node was enrolled again; the agent must use its new credentials"
                .to_owned(),
        });
    }
    let desired_version = state
        .live
        .server_of(&node_id)
        .and_then(|id| state.rollouts.desired_version(id));
    Ok(Json(HeartbeatResponse {
        console_time_ms: now,
        heartbeat_interval_secs: interval_secs(&state),
        desired_version,
        commands: Vec::new(),
        log_key: Some(state.log_key_public.to_string()),
    }))
}

/// How the console sees the calling node: install.sh waits on this for "available".
pub async fn node(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
) -> Result<Json<NodeView>, ApiError> {
    let server =
        state
            .store
            .server_by_node(&node_id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized {
                field: "authorization",
                message: "this node was enrolled again; the agent must use its new credentials"
                    .to_owned(),
            })?;
    let live = state
        .live
        .get(&node_id)
        .unwrap_or_else(|| server.liveness.clone());
    let view = super::admin::server_view(&state, &server, &live, state.clock.now_ms());
    Ok(Json(NodeView {
        server_name: view.name,
        group: view.group,
        project: view.project,
        status: view.status,
        reason: view.reason,
        // What heartbeat answers carry, unless the agent runs it already.
        desired_version: state
            .rollouts
            .desired_version(server.id)
            .filter(|v| live.agent_version.as_deref() != Some(v.as_str())),
    }))
}

pub async fn shutdown(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<ShutdownRequest>,
) -> Result<StatusCode, ApiError> {
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
