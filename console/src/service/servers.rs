//! Servers: adding one to a group (by host name or UUID, as the group's network type says),
//! the check of a name as it is typed, and each server's status with where it stands in its
//! group's rollout.

use tasknode_protocol::concurrency;
use tasknode_protocol::wire::{AddServer, ServerView};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::status;
use crate::store::{Liveness, Server, ServerFilter, StoreError};

/// Adds a server to a group (`req` already validated).
pub async fn add(
    state: &AppState,
    caller: Caller<'_>,
    req: AddServer,
) -> Result<ServerView, ServiceError> {
    caller.check_project(&req.project)?;
    let network = state.store.group_network(&req.project, &req.group).await?;
    let name = network
        .parse_server_name("name", &req.name)
        .map_err(|mut e| {
            e.message = format!(
                "{}; group {} is a {network} group, so servers are added by {}",
                e.message,
                req.group,
                network.identity_kind()
            );
            ServiceError::Invalid(e)
        })?;
    let server = state
        .store
        .add_server(
            &req.project,
            &req.group,
            &name,
            req.max_concurrency,
            state.clock.now_ms(),
        )
        .await?;
    tracing::info!(server = %server.name, group = %server.group, "server added");
    super::audit::record(
        state,
        caller,
        "server.add",
        format!("server {} in group {}", server.name, server.group),
        Some(&server.project),
    )
    .await;
    let mut view = view(state, &server, &server.liveness, state.clock.now_ms());
    view.update = state
        .rollouts
        .tick()
        .await?
        .update_views()
        .remove(&server.id);
    Ok(view)
}

/// The servers `filter` selects (a user's within their project), with their status and where
/// each stands in its group's rollout.
pub async fn views(
    state: &AppState,
    caller: Caller<'_>,
    mut filter: ServerFilter,
) -> Result<Vec<ServerView>, ServiceError> {
    if let Some(own) = caller.project() {
        filter.project = Some(own.to_owned());
    }
    let mut updates = state.rollouts.tick().await?.update_views();
    let servers = state.store.list_servers(&filter).await?;
    let live = state.live.by_server();
    let now = state.clock.now_ms();
    Ok(servers
        .iter()
        .map(|s| ServerView {
            update: updates.remove(&s.id),
            ..view(state, s, live.get(&s.id).unwrap_or(&s.liveness), now)
        })
        .collect())
}

/// Server `s` with liveness `live` as people read it at `now_ms` (without its rollout).
pub fn view(state: &AppState, s: &Server, live: &Liveness, now_ms: i64) -> ServerView {
    let (status, mut reason) = status::derive(s, live, now_ms, &state.thresholds);
    if s.draining_ms.is_some() {
        reason = format!(
            "draining: takes no new tasks and is removed when the tasks it holds finish ({reason})"
        );
    }
    let computed = s
        .enrollment
        .as_ref()
        .map(|e| concurrency::max_concurrency(e.cpu_cores, e.memory_bytes));
    let (max_concurrency, source) = match (s.max_concurrency, computed) {
        (Some(n), _) => (Some(n), Some("configured")),
        (None, Some(n)) => (Some(n), Some("computed")),
        (None, None) => (None, None),
    };
    ServerView {
        name: s.name.clone(),
        group: s.group.clone(),
        project: s.project.clone(),
        network: s.network,
        status,
        reason,
        last_heartbeat: live.last_heartbeat_ms.map(rfc3339),
        version: live.agent_version.clone(),
        max_concurrency,
        max_concurrency_source: source.map(str::to_owned),
        clock_offset_ms: live.clock_offset_ms,
        running_tasks: live.running_tasks,
        cpu_cores: s.enrollment.as_ref().map(|e| e.cpu_cores),
        memory_bytes: s.enrollment.as_ref().map(|e| e.memory_bytes),
        enrolled_at: s.enrollment.as_ref().map(|e| rfc3339(e.enrolled_ms)),
        // Filled in where rollouts are looked at (`GET /servers`).
        update: None,
    }
}

/// Whether a typed server name could be added to a group, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCheck {
    pub ok: bool,
    pub message: String,
}

/// Checks a server name as it is typed: the rules of the group's network type, and whether
/// another group of the same project has it already (and which). Other projects are never
/// looked at: their servers neither block this one nor are told of.
pub async fn check_name(
    state: &AppState,
    caller: Caller<'_>,
    project: &str,
    group: &str,
    typed: &str,
) -> Result<NameCheck, ServiceError> {
    let g = super::groups::find(state, caller, project, group).await?;
    let name = match g.network.parse_server_name("name", typed.trim()) {
        Ok(name) => name,
        Err(e) => {
            return Ok(NameCheck {
                ok: false,
                message: format!(
                    "{}; group {} is a {} group, so servers are added by {}",
                    e.message,
                    g.name,
                    g.network,
                    g.network.identity_kind()
                ),
            });
        }
    };
    Ok(match state.store.server_by_name(&g.project, &name).await? {
        Some(s) if s.group == g.name => NameCheck {
            ok: false,
            message: format!("server {name} is already in this group"),
        },
        Some(s) => NameCheck {
            ok: false,
            message: StoreError::ServerTaken {
                name,
                group: s.group,
                project: s.project,
            }
            .to_string(),
        },
        None => NameCheck {
            ok: true,
            message: format!("{name} can be added"),
        },
    })
}
