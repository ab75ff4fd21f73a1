//! What enrolled agents call besides tasks: proving who they are, health (their clock
//! reference), heartbeats, the view of their own server, and a clean shutdown.

use std::sync::Arc;

use tasknode_protocol::wire::{Health, HeartbeatRequest, HeartbeatResponse, NodeView};

use super::ServiceError;
use crate::app::AppState;
use crate::store::Server;

/// Checks node `node_id`'s secret against the liveness map, which looks a node enrolled
/// through another console up in the store (bounded: see [`crate::liveness`]).
pub async fn authenticate(
    state: &AppState,
    node_id: &str,
    secret: &str,
) -> Result<(), ServiceError> {
    let checked = state
        .live
        .authenticate_shared(state.store.as_ref(), node_id, secret, state.clock.now_ms())
        .await?;
    match checked {
        Ok(()) => Ok(()),
        // A removed server's own secret is told so (and nothing else); any other is refused
        // as unknown.
        Err(e) => Err(match state.live.removed_server(node_id, secret) {
            Some(server) => removed(&server),
            None => ServiceError::Unauthorized {
                field: "authorization",
                message: e.to_string(),
            },
        }),
    }
}

/// The answer to a removed server's agent: what happened and how to enroll again.
pub fn removed(server: &str) -> ServiceError {
    ServiceError::Removed {
        message: format!(
            "server {server} was removed from its resource group on the console; this agent's node credentials no longer work and it runs no tasks. To use this host again, add it to a group (`tasknode-console server add --project P --group G --name NAME`, or the web console) and run that group's install command on it with --reinstall"
        ),
    }
}

fn enrolled_again() -> ServiceError {
    ServiceError::Unauthorized {
        field: "authorization",
        message: "this node was enrolled again; the agent must use its new credentials".to_owned(),
    }
}

/// The server node `node_id` is enrolled as.
pub(super) async fn node_server(state: &AppState, node_id: &str) -> Result<Server, ServiceError> {
    match state.store.server_by_node(node_id).await? {
        Some(server) => Ok(server),
        // Authenticated by a console that had not yet heard of the removal.
        None => Err(match state.live.was_removed(node_id) {
            Some(server) => removed(&server),
            None => enrolled_again(),
        }),
    }
}

pub fn health(state: &AppState) -> Health {
    Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        console_time_ms: state.clock.now_ms(),
    }
}

/// How often agents are told to heartbeat, in seconds.
pub(super) fn interval_secs(state: &AppState) -> u64 {
    state.thresholds.interval.as_secs().max(1)
}

/// Takes a heartbeat into the liveness map (persisted in batches) and answers with what the
/// agent should do: the version its rollout wants it to run, and the key log tokens are
/// signed with.
pub fn heartbeat(
    state: &AppState,
    node_id: &str,
    peer: std::net::IpAddr,
    req: &HeartbeatRequest,
) -> Result<HeartbeatResponse, ServiceError> {
    let now = state.clock.now_ms();
    if !state.live.heartbeat(node_id, req, peer, now) {
        // Re-enrolled between the check and here.
        return Err(enrolled_again());
    }
    state.metrics.heartbeats.inc();
    let desired_version = state
        .live
        .server_of(node_id)
        .and_then(|id| state.rollouts.desired_version(id));
    Ok(HeartbeatResponse {
        console_time_ms: now,
        heartbeat_interval_secs: interval_secs(state),
        desired_version,
        commands: Vec::new(),
        log_key: Some(state.log_key_public.to_string()),
    })
}

/// How the console sees the calling node: install.sh waits on this for "available".
pub async fn view(state: &AppState, node_id: &str) -> Result<NodeView, ServiceError> {
    let server = node_server(state, node_id).await?;
    let live = state
        .live
        .get(node_id)
        .unwrap_or_else(|| server.liveness.clone());
    let view = super::servers::view(state, &server, &live, state.clock.now_ms());
    Ok(NodeView {
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
    })
}

/// Records that node `node_id`'s agent stopped cleanly (its server shows as stopped at once).
pub async fn shutdown(state: &AppState, node_id: &str, reason: &str) -> Result<(), ServiceError> {
    let store = Arc::clone(&state.store);
    if let Some(update) = state.live.shutdown(node_id, reason, state.clock.now_ms()) {
        store.record_liveness(vec![update]).await?;
        tracing::info!(node_id = %node_id, reason = %reason, "agent shut down cleanly");
    }
    Ok(())
}
