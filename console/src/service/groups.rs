//! Resource groups: create, list, find, rename and delete. A user reaches only the groups of
//! their project; another project's group is reported as missing.

use tasknode_protocol::wire::{CreateGroup, GroupView};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::store::{DeletedGroup, Group};

pub fn view(g: Group) -> GroupView {
    GroupView {
        name: g.name,
        project: g.project,
        network: g.network,
        servers: g.servers,
        created_at: rfc3339(g.created_ms),
    }
}

/// Creates a resource group (`req` already validated).
pub async fn create(
    state: &AppState,
    caller: Caller<'_>,
    req: CreateGroup,
) -> Result<GroupView, ServiceError> {
    caller.check_project(&req.project)?;
    let g = state
        .store
        .create_group(&req.project, &req.name, req.network, state.clock.now_ms())
        .await?;
    tracing::info!(group = %g.name, project = %g.project, network = %g.network, "resource group created");
    super::audit::record(
        state,
        caller,
        "group.create",
        format!("group {} ({})", g.name, g.network),
        Some(&g.project),
    )
    .await;
    Ok(view(g))
}

/// The groups of `project` (or of every project) that the caller may see.
pub async fn list(
    state: &AppState,
    caller: Caller<'_>,
    project: Option<&str>,
) -> Result<Vec<Group>, ServiceError> {
    let project = caller.project().or(project);
    Ok(state.store.list_groups(project).await?)
}

/// The projects the caller may create groups in: their own, or every one for the admin.
pub async fn projects(state: &AppState, caller: Caller<'_>) -> Result<Vec<String>, ServiceError> {
    Ok(match caller.project() {
        Some(p) => vec![p.to_owned()],
        None => state
            .store
            .list_projects()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    })
}

/// Group `group` of `project`, if the caller may see it.
pub async fn find(
    state: &AppState,
    caller: Caller<'_>,
    project: &str,
    group: &str,
) -> Result<Group, ServiceError> {
    caller.check_project(project)?;
    state
        .store
        .list_groups(Some(project))
        .await?
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| ServiceError::NotFound {
            field: None,
            message: format!("there is no resource group {group:?} in project {project:?}"),
        })
}

/// Renames a resource group (names already validated). Its agents' long polls wait under its
/// id, which stays, so tasks submitted under the new name wake them. A name that is taken is
/// blamed on `new_name`, the name asked for.
pub async fn rename(
    state: &AppState,
    caller: Caller<'_>,
    project: &str,
    group: &str,
    new_name: &str,
) -> Result<GroupView, ServiceError> {
    caller.check_project(project)?;
    let g = match state.store.rename_group(project, group, new_name).await {
        Ok(g) => g,
        Err(e) => {
            return Err(match ServiceError::from(e) {
                ServiceError::Conflict { message, .. } => ServiceError::Conflict {
                    field: Some("new_name".to_owned()),
                    message,
                },
                other => other,
            });
        }
    };
    if group != g.name {
        tracing::info!(group = %group, to = %g.name, project = %project, "resource group renamed");
        super::audit::record(
            state,
            caller,
            "group.rename",
            format!("group {group} to {}", g.name),
            Some(project),
        )
        .await;
    }
    Ok(view(g))
}

/// Deletes an empty resource group with its finished tasks (and their logs).
pub async fn delete(
    state: &AppState,
    caller: Caller<'_>,
    project: &str,
    group: &str,
) -> Result<DeletedGroup, ServiceError> {
    caller.check_project(project)?;
    let deleted = state.store.delete_group(project, group).await?;
    tracing::info!(group = %deleted.name, project = %deleted.project, tasks = deleted.tasks.len(), "resource group deleted");
    super::audit::record(
        state,
        caller,
        "group.delete",
        format!("group {}", deleted.name),
        Some(&deleted.project),
    )
    .await;
    // The rows are gone: a log that cannot be removed is told, and does not undo the delete.
    if let Err(e) = state.store.remove_logs(&deleted.tasks).await {
        tracing::warn!(error = %e, "the logs of a deleted group's tasks were not all removed; remove them by hand");
    }
    Ok(deleted)
}
