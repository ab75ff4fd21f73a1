//! Removing a server from its group and moving it to another group of its project: the one
//! place the JSON API, the CLI (through the API) and the web console do either. A removal is
//! refused while the server holds tasks unless the operator drains it (no new tasks; removed
//! when the ones it holds finish) or forces it (they are cancelled or queued again); the
//! agent of a removed server is answered 410 `server_removed` from then on.

use tasknode_protocol::wire::{MoveServer, RemoveMode, RemovedServerView, ServerView};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::store::{Removal, RemovedNode, Server, StoreError};

fn missing(project: &str, name: &str) -> ServiceError {
    ServiceError::NotFound {
        field: Some("name".to_owned()),
        message: format!("there is no server {name:?} in project {project:?}"),
    }
}

/// A server of another project, or none, is answered alike: the caller learns nothing of
/// servers outside their project.
fn server_error(project: &str, name: &str, e: StoreError) -> ServiceError {
    match e {
        StoreError::NotFound { kind: "server", .. } => missing(project, name),
        other => other.into(),
    }
}

/// Removes server `name` of `project` from its group as `mode` says.
pub async fn remove(
    state: &AppState,
    caller: Caller<'_>,
    project: &str,
    name: &str,
    mode: RemoveMode,
) -> Result<RemovedServerView, ServiceError> {
    caller.check_project(project)?;
    let now = state.clock.now_ms();
    let removal = state
        .store
        .remove_server(project, name, mode, now)
        .await
        .map_err(|e| server_error(project, name, e))?;
    // A drain asked again (the CLI asks until it is done) is recorded once, when it starts.
    let started_draining =
        matches!(&removal, Removal::Draining { server, .. } if server.draining_ms == Some(now));
    if let Removal::Draining { server, holding } = &removal {
        tracing::info!(server = %server.name, group = %server.group, ?holding, "server draining");
    }
    let view = settle(state, removal, mode);
    if view.state == "removed" || started_draining {
        let action = if started_draining {
            "server.drain"
        } else {
            "server.remove"
        };
        let object = format!("server {} in group {} ({mode})", view.name, view.group);
        super::audit::record(state, caller, action, object, Some(&view.project)).await;
    }
    Ok(view)
}

/// Removes the server node `node_id` is enrolled as, at its agent's request (install.sh
/// --uninstall): the node's own credentials were checked, and name no other server.
pub async fn leave(
    state: &AppState,
    node_id: &str,
    mode: RemoveMode,
) -> Result<RemovedServerView, ServiceError> {
    let server = super::nodes::node_server(state, node_id).await?;
    let removal = state
        .store
        .remove_server(&server.project, &server.name, mode, state.clock.now_ms())
        .await
        .map_err(|e| server_error(&server.project, &server.name, e))?;
    tracing::info!(server = %server.name, group = %server.group, %mode, "the server's agent asked to leave the console");
    let view = settle(state, removal, mode);
    super::audit::record_as(
        state,
        format!("node:{node_id}"),
        if view.state == "removed" {
            "server.leave"
        } else {
            "server.drain"
        },
        format!("server {} in group {} ({mode})", view.name, view.group),
        Some(&view.project),
    )
    .await;
    Ok(view)
}

/// Removes draining server `s` once it holds no task (its agent's polls and finishes call
/// this). Returns whether it is gone.
pub(super) async fn finish_drain(state: &AppState, s: &Server) -> Result<bool, ServiceError> {
    if s.draining_ms.is_none() {
        return Ok(false);
    }
    match state
        .store
        .remove_server(&s.project, &s.name, RemoveMode::Drain, state.clock.now_ms())
        .await
    {
        Ok(removal) => {
            let view = settle(state, removal, RemoveMode::Drain);
            Ok(view.state == "removed")
        }
        // Removed meanwhile (by another console, or with force).
        Err(StoreError::NotFound { kind: "server", .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Forgets a removed server's node (its credentials stop working on this console at once;
/// others hear of it at their next refresh) and says what happened.
fn settle(state: &AppState, removal: Removal, mode: RemoveMode) -> RemovedServerView {
    match removal {
        Removal::Removed {
            server,
            cancelled,
            requeued,
            stranded,
        } => {
            if let Some(e) = &server.enrollment {
                state.live.forget_removed(&[RemovedNode {
                    node_id: e.node_id.clone(),
                    secret_sha256: e.secret_sha256.clone(),
                    server_name: server.name.clone(),
                    project: server.project.clone(),
                    removed_ms: state.clock.now_ms(),
                }]);
            }
            tracing::info!(server = %server.name, group = %server.group, project = %server.project, %mode, ?cancelled, ?requeued, stranded, "server removed");
            let mut message = format!(
                "server {} was removed from group {} of project {}",
                server.name, server.group, server.project
            );
            if !cancelled.is_empty() {
                message += &format!("; running {} cancelled", tasks(&cancelled));
            }
            if !requeued.is_empty() {
                message += &format!("; {} queued again for the group", tasks(&requeued));
            }
            if stranded > 0 {
                message += &format!(
                    "; {stranded} task{} queued to group {} now wait{} for a server: add one to the group or cancel them",
                    if stranded == 1 { "" } else { "s" },
                    server.group,
                    if stranded == 1 { "s" } else { "" },
                );
            }
            if server.enrollment.is_some() {
                message += "; its agent is told at its next call and stops asking for work";
            }
            RemovedServerView {
                name: server.name,
                group: server.group,
                project: server.project,
                state: "removed".to_owned(),
                holding: Vec::new(),
                cancelled,
                requeued,
                stranded,
                message,
            }
        }
        Removal::Draining { server, holding } => {
            let message = format!(
                "server {} is draining: it takes no new tasks and is removed when {} finish{}; ask again with drain to see whether it is gone, or remove it with force",
                server.name,
                tasks(&holding),
                if holding.len() == 1 { "es" } else { "" },
            );
            RemovedServerView {
                name: server.name,
                group: server.group,
                project: server.project,
                state: "draining".to_owned(),
                holding,
                cancelled: Vec::new(),
                requeued: Vec::new(),
                stranded: 0,
                message,
            }
        }
    }
}

fn tasks(ids: &[i64]) -> String {
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() == 1 {
        format!("task {list}")
    } else {
        format!("tasks {list}")
    }
}

/// Moves a server to another group of its project (`req` already validated). It keeps its
/// id, enrollment and history; its new group's tasks go to it from its agent's next look.
pub async fn move_to(
    state: &AppState,
    caller: Caller<'_>,
    req: MoveServer,
) -> Result<ServerView, ServiceError> {
    caller.check_project(&req.project)?;
    let moved = state
        .store
        .move_server(&req.project, &req.name, &req.group)
        .await
        .map_err(|e| server_error(&req.project, &req.name, e))?;
    tracing::info!(server = %moved.name, group = %moved.group, project = %moved.project, "server moved");
    super::audit::record(
        state,
        caller,
        "server.move",
        format!("server {} to group {}", moved.name, moved.group),
        Some(&moved.project),
    )
    .await;
    // Its agent's poll, on whichever console, waits on its old group's wake-ups: the store's
    // `Moved` wake-up ends it, and the next waits on the new group's.
    let live = state
        .live
        .by_server()
        .remove(&moved.id)
        .unwrap_or_else(|| moved.liveness.clone());
    Ok(super::servers::view(
        state,
        &moved,
        &live,
        state.clock.now_ms(),
    ))
}
