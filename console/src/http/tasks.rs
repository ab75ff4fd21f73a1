//! Task endpoints: operators submit, list, show and cancel tasks and read their logs (admin
//! token); agents poll for work, start and finish it under its lease, and push its log (node
//! secret). The rules are in `service::tasks`, `service::work` and `service::logs`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tasknode_protocol::tasks::{
    FinishTask, LogAck, MAX_LOG_CHUNK_BYTES, PollRequest, PollResponse, StartTask, SubmitTask,
    TaskState, TaskView,
};
use tasknode_protocol::wire::Validate;
use tasknode_protocol::{FieldError, validate};

use super::error::ApiError;
use super::json::StrictJson;
use super::{Admin, AuthedNode};
use crate::app::AppState;
use crate::service::{self, Caller};
use crate::store::TaskFilter;

// ---- operators ----

pub async fn submit(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<SubmitTask>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let (view, created) = service::tasks::submit(&state, Caller::Admin, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Query parameters of `GET /tasks`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    project: Option<String>,
    group: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

/// Most tasks one list returns.
const MAX_LIST: u32 = 10_000;

impl Validate for TaskQuery {
    fn validate(&self) -> Result<(), FieldError> {
        if let Some(p) = &self.project {
            validate::name("project", p)?;
        }
        if let Some(g) = &self.group {
            validate::name("group", g)?;
        }
        if let Some(s) = &self.state
            && TaskState::parse(s).is_none()
        {
            return Err(FieldError::new(
                "state",
                format!(
                    "{} is not a task state; use queued, assigned, running, succeeded, failed, timed_out, cancelled or lost",
                    validate::show(s)
                ),
            ));
        }
        match self.limit {
            Some(n) if n == 0 || n > MAX_LIST => Err(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_LIST}, got {n}"),
            )),
            _ => Ok(()),
        }
    }
}

pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<TaskQuery>, QueryRejection>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let q = super::admin::query(q)?;
    let filter = TaskFilter {
        project: q.project,
        group: q.group,
        state: q.state.as_deref().and_then(TaskState::parse),
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(
        service::tasks::list(&state, Caller::Admin, filter).await?,
    ))
}

fn task_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|&id| id > 0).ok_or_else(|| {
        ApiError::invalid(
            "id",
            format!(
                "{} is not a task id (a positive number)",
                validate::show(raw)
            ),
        )
    })
}

pub async fn show(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let t = service::tasks::get(&state, Caller::Admin, task_id(&raw)?).await?;
    Ok(Json(service::tasks::view(&state, &t).await?))
}

pub async fn cancel(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = task_id(&raw)?;
    Ok(Json(
        service::tasks::cancel(&state, Caller::Admin, id).await?,
    ))
}

/// Query parameters of `GET /tasks/{id}/log`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    offset: u64,
    limit: Option<usize>,
}

pub async fn log(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(MAX_LOG_CHUNK_BYTES);
    if limit == 0 || limit > MAX_LOG_CHUNK_BYTES {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LOG_CHUNK_BYTES}"),
        ));
    }
    let t = service::tasks::get(&state, Caller::Admin, task_id(&raw)?).await?;
    let chunk = service::logs::read(&state, &t, q.offset, limit).await?;
    Ok((chunk.headers(), chunk.bytes).into_response())
}

// ---- agents ----

pub async fn poll(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<PollRequest>,
) -> Result<Json<PollResponse>, ApiError> {
    Ok(Json(service::work::poll(&state, &node_id, req).await?))
}

pub async fn start(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    Path((_, raw)): Path<(String, String)>,
    StrictJson(req): StrictJson<StartTask>,
) -> Result<StatusCode, ApiError> {
    let id = task_id(&raw)?;
    service::work::start(&state, &node_id, id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn finish(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    Path((_, raw)): Path<(String, String)>,
    StrictJson(req): StrictJson<FinishTask>,
) -> Result<StatusCode, ApiError> {
    let id = task_id(&raw)?;
    service::work::finish(&state, &node_id, id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query parameters of a log push.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushQuery {
    lease: i64,
    offset: u64,
}

pub async fn push_log(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    Path((_, raw)): Path<(String, String)>,
    q: Result<Query<PushQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LogAck>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let body = body.map_err(|e| super::json::body_rejection(&e, MAX_LOG_CHUNK_BYTES))?;
    let id = task_id(&raw)?;
    let ack = service::work::push_log(&state, &node_id, id, q.lease, q.offset, body).await?;
    Ok(Json(ack))
}
