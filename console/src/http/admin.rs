//! Admin endpoints (admin token): projects, users, resource groups and servers (with where
//! each stands in its group's rollout).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tasknode_protocol::wire::{
    AddServer, CreateGroup, CreateProject, CreateUser, CreatedUser, DeleteGroup, DeletedGroupView,
    GroupView, ProjectView, RenameGroup, ServerView, Validate,
};
use tasknode_protocol::{concurrency, validate};

use super::error::ApiError;
use super::json::StrictJson;
use super::{Admin, AppState};
use crate::auth;
use crate::clock::rfc3339;
use crate::status;
use crate::store::{Server, ServerFilter};

/// Query parameters of `GET /servers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerQuery {
    project: Option<String>,
    group: Option<String>,
}

/// Query parameters of `GET /users` and `GET /groups`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectQuery {
    pub(super) project: Option<String>,
}

/// `GET /projects` takes no parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

fn optional_name(field: &str, value: Option<&String>) -> Result<(), tasknode_protocol::FieldError> {
    value.map_or(Ok(()), |v| validate::name(field, v))
}

impl Validate for ServerQuery {
    fn validate(&self) -> Result<(), tasknode_protocol::FieldError> {
        optional_name("project", self.project.as_ref())?;
        optional_name("group", self.group.as_ref())
    }
}

impl Validate for ProjectQuery {
    fn validate(&self) -> Result<(), tasknode_protocol::FieldError> {
        optional_name("project", self.project.as_ref())
    }
}

impl Validate for NoQuery {
    fn validate(&self) -> Result<(), tasknode_protocol::FieldError> {
        Ok(())
    }
}

pub(super) fn query<Q: Validate>(q: Result<Query<Q>, QueryRejection>) -> Result<Q, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    q.validate()?;
    Ok(q)
}

pub async fn create_project(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    let p = state
        .store
        .create_project(&req.name, state.clock.now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ProjectView {
            name: p.name,
            created_at: rfc3339(p.created_ms),
        }),
    ))
}

pub async fn list_projects(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> Result<Json<Vec<ProjectView>>, ApiError> {
    query(q)?;
    let projects = state.store.list_projects().await?;
    Ok(Json(
        projects
            .into_iter()
            .map(|p| ProjectView {
                name: p.name,
                created_at: rfc3339(p.created_ms),
            })
            .collect(),
    ))
}

pub async fn create_user(
    _: Admin,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    StrictJson(req): StrictJson<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    // Refuse an unknown project before spending Argon2 time on a password for it.
    let projects = state.store.list_projects().await?;
    if !projects.iter().any(|p| p.name == req.project) {
        return Err(crate::store::StoreError::NotFound {
            kind: "project",
            name: req.project,
        }
        .into());
    }
    let password = auth::generate_password();
    let to_hash = password.clone();
    let hash = state
        .password_work(peer.ip(), move || auth::hash_password(&to_hash))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = state
        .store
        .create_user(&req.project, &req.name, &hash, state.clock.now_ms())
        .await?;
    tracing::info!(user = %user.name, project = %user.project, "user created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user_name: user.name,
            password,
            project: user.project,
        }),
    ))
}

pub async fn list_users(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Json<Vec<tasknode_protocol::wire::UserView>>, ApiError> {
    let q = query(q)?;
    let users = state.store.list_users(q.project.as_deref()).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| tasknode_protocol::wire::UserView {
                user_name: u.name,
                project: u.project,
                created_at: rfc3339(u.created_ms),
            })
            .collect(),
    ))
}

pub async fn create_group(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(create_group_core(&state, req).await?),
    ))
}

/// Creates a resource group (`req` already validated), as the API and the web console do.
pub(crate) async fn create_group_core(
    state: &AppState,
    req: CreateGroup,
) -> Result<GroupView, ApiError> {
    let g = state
        .store
        .create_group(&req.project, &req.name, req.network, state.clock.now_ms())
        .await?;
    tracing::info!(group = %g.name, project = %g.project, network = %g.network, "resource group created");
    Ok(group_view(g))
}

pub async fn rename_group(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<RenameGroup>,
) -> Result<Json<GroupView>, ApiError> {
    let renamed = rename_group_core(&state, &req.project, &req.name, &req.new_name).await;
    match renamed {
        Ok(g) => Ok(Json(g)),
        // The name taken is the one asked for: `new_name`.
        Err(ApiError::Conflict { message, .. }) => Err(ApiError::Conflict {
            field: Some("new_name".to_owned()),
            message,
        }),
        Err(e) => Err(e),
    }
}

/// Renames a resource group (names already validated), as the API and the web console do:
/// the long polls of its agents, registered under the old name, are woken by tasks submitted
/// under the new one.
pub(crate) async fn rename_group_core(
    state: &AppState,
    project: &str,
    group: &str,
    new_name: &str,
) -> Result<GroupView, ApiError> {
    let g = state.store.rename_group(project, group, new_name).await?;
    if group != g.name {
        state.dispatch.rename(project, group, &g.name);
        tracing::info!(group = %group, to = %g.name, project = %project, "resource group renamed");
    }
    Ok(group_view(g))
}

pub async fn delete_group(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<DeleteGroup>,
) -> Result<Json<DeletedGroupView>, ApiError> {
    let deleted = delete_group_core(&state, &req.project, &req.name).await?;
    Ok(Json(DeletedGroupView {
        name: deleted.name,
        project: deleted.project,
        deleted_tasks: deleted.tasks,
    }))
}

/// Deletes an empty resource group with its finished tasks (and their logs), as the API and
/// the web console do.
pub(crate) async fn delete_group_core(
    state: &AppState,
    project: &str,
    group: &str,
) -> Result<crate::store::DeletedGroup, ApiError> {
    let deleted = state.store.delete_group(project, group).await?;
    tracing::info!(group = %deleted.name, project = %deleted.project, tasks = deleted.tasks.len(), "resource group deleted");
    // The rows are gone: a log that cannot be removed is told, and does not undo the delete.
    let logs = Arc::clone(&state.task_logs);
    let ids = deleted.tasks.clone();
    let removed = tokio::task::spawn_blocking(move || {
        for id in ids {
            if let Err(e) = logs.remove(id) {
                tracing::warn!(task = id, error = %e, "a deleted task's log was not removed; remove it by hand");
            }
        }
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "removing the logs of a deleted group's tasks failed");
    }
    Ok(deleted)
}

fn group_view(g: crate::store::Group) -> GroupView {
    GroupView {
        name: g.name,
        project: g.project,
        network: g.network,
        servers: g.servers,
        created_at: rfc3339(g.created_ms),
    }
}

pub async fn list_groups(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let q = query(q)?;
    let groups = state.store.list_groups(q.project.as_deref()).await?;
    Ok(Json(groups.into_iter().map(group_view).collect()))
}

pub async fn add_server(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<AddServer>,
) -> Result<(StatusCode, Json<ServerView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(add_server_core(&state, req).await?),
    ))
}

/// Adds a server to a group (`req` already validated), as the API and the web console do.
pub(crate) async fn add_server_core(
    state: &AppState,
    req: AddServer,
) -> Result<ServerView, ApiError> {
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
            ApiError::Invalid(e)
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
    let mut view = server_view(state, &server, &server.liveness, state.clock.now_ms());
    view.update = state
        .rollouts
        .tick()
        .await?
        .update_views()
        .remove(&server.id);
    Ok(view)
}

pub async fn list_servers(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ServerQuery>, QueryRejection>,
) -> Result<Json<Vec<ServerView>>, ApiError> {
    let q = query(q)?;
    let filter = ServerFilter {
        project: q.project,
        group: q.group,
    };
    Ok(Json(server_views(&state, filter).await?))
}

/// The servers `filter` selects, with their status and where each stands in its group's
/// rollout, as the API lists them and the web console shows them.
pub(crate) async fn server_views(
    state: &AppState,
    filter: ServerFilter,
) -> Result<Vec<ServerView>, ApiError> {
    let mut updates = state.rollouts.tick().await?.update_views();
    let servers = state.store.list_servers(&filter).await?;
    let live = state.live.by_server();
    let now = state.clock.now_ms();
    Ok(servers
        .iter()
        .map(|s| ServerView {
            update: updates.remove(&s.id),
            ..server_view(state, s, live.get(&s.id).unwrap_or(&s.liveness), now)
        })
        .collect())
}

pub(super) fn server_view(
    state: &AppState,
    s: &Server,
    live: &crate::store::Liveness,
    now_ms: i64,
) -> ServerView {
    let (status, reason) = status::derive(s, live, now_ms, &state.thresholds);
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
