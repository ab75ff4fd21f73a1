//! Admin endpoints (admin token): projects, users, resource groups and servers (with where
//! each stands in its group's rollout). The rules are in `service::projects`,
//! `service::groups`, `service::servers` and `service::removal`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tasknode_protocol::validate;
use tasknode_protocol::wire::{
    AddServer, CreateGroup, CreateProject, CreateUser, CreatedUser, DeleteGroup, DeletedGroupView,
    GroupView, MoveServer, ProjectView, RemoveServer, RemovedServerView, RenameGroup, ServerView,
    UserView, Validate,
};

use super::Admin;
use super::error::ApiError;
use super::json::StrictJson;
use crate::app::{AppState, ClientAddr};
use crate::service::{self, Caller};
use crate::store::ServerFilter;

/// Query parameters of `GET /servers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerQuery {
    project: Option<String>,
    group: Option<String>,
}

/// Query parameters of `GET /users`, `GET /groups` and `GET /rollouts`.
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
    let view = service::projects::create_project(&state, &req.name).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list_projects(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> Result<Json<Vec<ProjectView>>, ApiError> {
    query(q)?;
    Ok(Json(service::projects::list_projects(&state).await?))
}

pub async fn create_user(
    _: Admin,
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    StrictJson(req): StrictJson<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let user = service::projects::create_user(&state, peer, &req.project, &req.name).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn list_users(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let q = query(q)?;
    let users = service::projects::list_users(&state, q.project.as_deref()).await?;
    Ok(Json(users))
}

pub async fn create_group(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let view = service::groups::create(&state, Caller::Admin, req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn rename_group(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<RenameGroup>,
) -> Result<Json<GroupView>, ApiError> {
    let view = service::groups::rename(
        &state,
        Caller::Admin,
        &req.project,
        &req.name,
        &req.new_name,
    )
    .await?;
    Ok(Json(view))
}

pub async fn delete_group(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<DeleteGroup>,
) -> Result<Json<DeletedGroupView>, ApiError> {
    let deleted = service::groups::delete(&state, Caller::Admin, &req.project, &req.name).await?;
    Ok(Json(DeletedGroupView {
        name: deleted.name,
        project: deleted.project,
        deleted_tasks: deleted.tasks,
    }))
}

pub async fn list_groups(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let q = query(q)?;
    let groups = service::groups::list(&state, Caller::Admin, q.project.as_deref()).await?;
    Ok(Json(
        groups.into_iter().map(service::groups::view).collect(),
    ))
}

pub async fn add_server(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<AddServer>,
) -> Result<(StatusCode, Json<ServerView>), ApiError> {
    let view = service::servers::add(&state, Caller::Admin, req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `POST /servers/remove`: 200 when removed, 202 while it drains.
pub async fn remove_server(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<RemoveServer>,
) -> Result<(StatusCode, Json<RemovedServerView>), ApiError> {
    let view =
        service::removal::remove(&state, Caller::Admin, &req.project, &req.name, req.mode).await?;
    let status = if view.state == "draining" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

pub async fn move_server(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<MoveServer>,
) -> Result<Json<ServerView>, ApiError> {
    Ok(Json(
        service::removal::move_to(&state, Caller::Admin, req).await?,
    ))
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
    Ok(Json(
        service::servers::views(&state, Caller::Admin, filter).await?,
    ))
}
