//! Task endpoints: operators submit, list, show and cancel tasks and read their logs (admin
//! token); agents poll for work, start and finish it under its lease, and push its log (node
//! secret).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tasknode_protocol::tasks::{
    DEFAULT_TIMEOUT_SECS, FinishTask, LogAck, MAX_LOG_CHUNK_BYTES, PollRequest, PollResponse,
    StartTask, SubmitTask, TaskState, TaskView, log_headers,
};
use tasknode_protocol::wire::Validate;
use tasknode_protocol::{FieldError, MAX_CLOCK_OFFSET_MS, concurrency, validate};

use super::error::ApiError;
use super::json::StrictJson;
use super::{Admin, AppState, AuthedNode};
use crate::clock::{human_duration, rfc3339};
use crate::store::{Fenced, Server, StoreError, Task, TaskFilter};
use crate::tasks::LogError;

// ---- operators ----

pub async fn submit(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<SubmitTask>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    Ok((StatusCode::CREATED, Json(submit_task(&state, req).await?)))
}

/// Queues a task (`req` already validated), as the API and the web console submit it.
pub(crate) async fn submit_task(state: &AppState, req: SubmitTask) -> Result<TaskView, ApiError> {
    let timeout = req.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    // Checks the group exists (NotFound names it) and that something could ever run the task.
    state.store.group_network(&req.project, &req.group).await?;
    let servers = state
        .store
        .list_servers(&crate::store::ServerFilter {
            project: Some(req.project.clone()),
            group: Some(req.group.clone()),
        })
        .await?;
    if servers.is_empty() {
        return Err(ApiError::Conflict {
            field: Some("group".to_owned()),
            message: format!(
                "group {} has no servers, so nothing would run this task; add one first: tasknode-console server add --project {} --group {} --name HOSTNAME_OR_UUID",
                req.group, req.project, req.group
            ),
        });
    }
    let t = state
        .store
        .submit_task(
            &req.project,
            &req.group,
            &req.script,
            timeout,
            state.clock.now_ms(),
        )
        .await?;
    tracing::info!(task = t.id, group = %t.group, project = %t.project, "task submitted");
    state.dispatch.wake(&t.project, &t.group);
    task_view(state, &t)
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
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    q.validate()?;
    let filter = TaskFilter {
        project: q.project,
        group: q.group,
        state: q.state.as_deref().and_then(TaskState::parse),
        limit: q.limit.unwrap_or(100),
    };
    let tasks = state.store.list_tasks(&filter).await?;
    let views = tasks
        .iter()
        .map(|t| task_view(&state, t))
        .collect::<Result<_, _>>()?;
    Ok(Json(views))
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

pub(crate) async fn task_or_404(state: &AppState, id: i64) -> Result<Task, ApiError> {
    state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            field: Some("id".to_owned()),
            message: format!("there is no task {id}; `tasknode-console task list` shows the tasks"),
        })
}

pub async fn show(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let t = task_or_404(&state, task_id(&raw)?).await?;
    Ok(Json(task_view(&state, &t)?))
}

pub async fn cancel(
    _: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(cancel_task(&state, task_id(&raw)?).await?))
}

/// Asks for task `id` to be cancelled, as the API and the web console do.
pub(crate) async fn cancel_task(state: &AppState, id: i64) -> Result<TaskView, ApiError> {
    let t = state
        .store
        .cancel_task(id, state.clock.now_ms())
        .await
        .map_err(|e| match e {
            StoreError::TaskIs { .. } => ApiError::Conflict {
                field: Some("id".to_owned()),
                message: e.to_string(),
            },
            StoreError::NotFound { .. } => ApiError::NotFound {
                field: Some("id".to_owned()),
                message: format!(
                    "there is no task {id}; `tasknode-console task list` shows the tasks"
                ),
            },
            other => other.into(),
        })?;
    tracing::info!(task = id, state = %t.state, "task cancel requested");
    state.dispatch.wake(&t.project, &t.group);
    task_view(state, &t)
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
    let t = task_or_404(&state, task_id(&raw)?).await?;
    Ok(read_log(&state, &t, q.offset, limit).await?.into_response())
}

/// A piece of a task's log, with where the task and its log stand.
pub(crate) struct LogChunk {
    pub bytes: Vec<u8>,
    /// The log's size so far.
    pub size: u64,
    pub state: TaskState,
    /// The task is over and its whole log is here.
    pub complete: bool,
}

impl IntoResponse for LogChunk {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            log_headers::STATE,
            HeaderValue::from_static(self.state.as_str()),
        );
        headers.insert(log_headers::SIZE, HeaderValue::from(self.size));
        headers.insert(
            log_headers::COMPLETE,
            HeaderValue::from_static(if self.complete { "true" } else { "false" }),
        );
        (headers, self.bytes).into_response()
    }
}

/// Reads up to `limit` bytes of task `t`'s log from `offset`: from the console's own copy, or
/// from the log service of the classic server that ran it.
pub(crate) async fn read_log(
    state: &AppState,
    t: &Task,
    offset: u64,
    limit: usize,
) -> Result<LogChunk, ApiError> {
    let (bytes, size) = match classic_server(state, t).await? {
        Some((server, node_id)) => {
            read_from_agent(state, &server, &node_id, t.id, offset, limit).await?
        }
        None => {
            let logs = Arc::clone(&state.task_logs);
            let id = t.id;
            tokio::task::spawn_blocking(move || logs.read(id, offset, limit))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(log_error)?
        }
    };
    let complete = t.state.is_final() && t.log_bytes.is_none_or(|want| size >= want);
    Ok(LogChunk {
        bytes,
        size,
        state: t.state,
        complete,
    })
}

/// The server (name and node id) of a task that ran on a classic server, whose log the
/// console reads from that server's log service.
async fn classic_server(state: &AppState, t: &Task) -> Result<Option<(String, String)>, ApiError> {
    let Some(name) = &t.server else {
        return Ok(None);
    };
    let Some(server) = state.store.server_by_name(&t.project, name).await? else {
        return Ok(None);
    };
    if server.network != tasknode_protocol::NetworkType::Classic {
        return Ok(None);
    }
    Ok(server.enrollment.map(|e| (server.name, e.node_id)))
}

/// Longest the console waits for one read from a log service, its answer's body included.
const AGENT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error answer from a log service the console reads.
const AGENT_ERROR_BYTES: usize = 4096;

/// The client for agents' log services: bounded in time, following no redirect (a log
/// service is untrusted and must not send the console elsewhere) and using no proxy.
fn agent_http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(AGENT_READ_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap_or_default()
    })
}

/// Reads the body of `res`, refusing one of more than `max` bytes.
async fn read_capped(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadCapped> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(ReadCapped::Failed)? {
        if out.len() + chunk.len() > max {
            return Err(ReadCapped::TooLong);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

enum ReadCapped {
    Failed(reqwest::Error),
    TooLong,
}

/// Reads `limit` bytes from `offset` of task `id`'s log from the log service of `server`, with a
/// token signed for that node and file; returns them and the log's size there.
async fn read_from_agent(
    state: &AppState,
    server: &str,
    node_id: &str,
    id: i64,
    offset: u64,
    limit: usize,
) -> Result<(Vec<u8>, u64), ApiError> {
    let unreachable = |detail: String| ApiError::BadGateway {
        message: format!(
            "server {server} keeps this log and serves it on its log service (classic network), which {detail}; check that the agent runs ({}) and that its log port (8000 by default) is open to the console",
            tasknode_protocol::layout::control_command("status")
        ),
    };
    let Some(addr) = state.live.log_addr(node_id) else {
        return Err(unreachable(
            "has not reported itself since the console started".to_owned(),
        ));
    };
    let path = format!("tasks/{id}.log");
    let token = tasknode_protocol::logtoken::sign(
        &state.log_key,
        &tasknode_protocol::logtoken::Grant {
            node: node_id.to_owned(),
            path: path.clone(),
            exp_ms: state.clock.now_ms() + tasknode_protocol::logtoken::TOKEN_LIFE_MS,
        },
    );
    let url = format!("http://{addr}/logs/{path}");
    let last = offset.saturating_add(limit as u64 - 1);
    let res = agent_http()
        .get(&url)
        .bearer_auth(token)
        .header(reqwest::header::RANGE, format!("bytes={offset}-{last}"))
        .send()
        .await
        .map_err(|e| unreachable(format!("did not answer at {addr}: {e}")))?;
    let status = res.status();
    let size = res
        .headers()
        .get("x-tasknode-log-size")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match status.as_u16() {
        200 | 206 => {
            let bytes = read_capped(res, limit).await.map_err(|e| match e {
                ReadCapped::Failed(e) => unreachable(format!("broke off at {addr}: {e}")),
                ReadCapped::TooLong => unreachable(format!(
                    "sent more than the {limit} bytes asked for at {addr}"
                )),
            })?;
            let size = size.unwrap_or(offset + bytes.len() as u64);
            Ok((bytes, size))
        }
        416 => Ok((Vec::new(), size.unwrap_or(offset))),
        // Not written yet (the task has not started), or past its retention there.
        404 => Ok((Vec::new(), 0)),
        _ => {
            let text = read_capped(res, AGENT_ERROR_BYTES)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Err(unreachable(format!(
                "refused at {addr} (HTTP {status}: {})",
                validate::show(text.trim())
            )))
        }
    }
}

fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::Gap { .. } => ApiError::Conflict {
            field: Some("offset".to_owned()),
            message: e.to_string(),
        },
        LogError::TaskFull { .. } | LogError::ServerFull { .. } => ApiError::LimitReached {
            field: "offset",
            message: e.to_string(),
        },
        LogError::Io { .. } => {
            tracing::error!(error = %e, "task log");
            ApiError::Internal(e.to_string())
        }
    }
}

/// What a person reads about a task: its state and why, in words.
pub(crate) fn task_view(state: &AppState, t: &Task) -> Result<TaskView, ApiError> {
    // Logs pushed by VPC servers are here; classic servers keep theirs and report the size.
    let log_bytes = match state.task_logs.size(t.id).map_err(log_error)? {
        0 => t.log_bytes.unwrap_or(0),
        held => held,
    };
    let server = t.server.as_deref().unwrap_or("?");
    let duration_ms = match (t.started_ms, t.finished_ms) {
        (Some(s), Some(f)) if t.state.is_final() => Some(f.saturating_sub(s).max(0)),
        _ => None,
    };
    let took = duration_ms
        .map(|d| format!(" after {}", human_duration(d)))
        .unwrap_or_default();
    let reason = match (&t.reason, t.state) {
        (Some(r), _) => r.clone(),
        (None, TaskState::Queued) => format!(
            "waiting for a free slot on an available server of group {}",
            t.group
        ),
        (None, TaskState::Assigned) => format!("handed to server {server}; starting"),
        (None, TaskState::Running) if t.cancel_requested => {
            format!("cancel requested; server {server} is killing it")
        }
        (None, TaskState::Running) => format!(
            "running on server {server} since {}",
            t.started_ms.map(rfc3339).unwrap_or_default()
        ),
        (None, TaskState::Succeeded) => format!("exited 0{took} on server {server}"),
        (None, TaskState::Failed) => match (t.exit_code, t.signal) {
            (Some(c), _) => format!("exited with code {c}{took} on server {server}"),
            (_, Some(s)) => format!("killed by signal {s}{took} on server {server}"),
            _ => format!("failed on server {server}"),
        },
        (None, TaskState::TimedOut) => format!(
            "ran past its timeout of {} s; server {server} killed its processes",
            t.timeout_secs
        ),
        (None, TaskState::Cancelled) => {
            format!("cancelled{took}; server {server} killed its processes")
        }
        (None, TaskState::Lost) => format!("lost with server {server}"),
    };
    Ok(TaskView {
        id: t.id,
        project: t.project.clone(),
        group: t.group.clone(),
        state: t.state,
        reason,
        server: t.server.clone(),
        timeout_secs: t.timeout_secs,
        submitted_at: rfc3339(t.submitted_ms),
        started_at: t.started_ms.map(rfc3339),
        finished_at: t.finished_ms.map(rfc3339),
        started_ms: t.started_ms,
        finished_ms: t.finished_ms,
        exit_code: t.exit_code,
        signal: t.signal,
        duration_ms,
        log_bytes,
        cancel_requested: t.cancel_requested,
    })
}

// ---- agents ----

pub(super) async fn node_server(state: &AppState, node_id: &str) -> Result<Server, ApiError> {
    state
        .store
        .server_by_node(node_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized {
            field: "authorization",
            message: "this node was enrolled again; the agent must use its new credentials"
                .to_owned(),
        })
}

/// Tasks a server may run at once: configured, else computed from what its agent reported.
fn max_concurrency(s: &Server) -> u32 {
    s.max_concurrency
        .or_else(|| {
            s.enrollment
                .as_ref()
                .map(|e| concurrency::max_concurrency(e.cpu_cores, e.memory_bytes))
        })
        .unwrap_or(1)
}

pub async fn poll(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<PollRequest>,
) -> Result<Json<PollResponse>, ApiError> {
    let server = node_server(&state, &node_id).await?;
    let wake = state.dispatch.group(&server.project, &server.group);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_secs);
    let max = max_concurrency(&server);
    let this_poll = state.dispatch.begin_poll(&node_id);
    loop {
        // Registered before looking, so a submit in between still wakes this poll.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // A newer poll of this node means this one's agent is gone: it neither squares what
        // it held nor takes work, and answers at once.
        if !state.dispatch.is_newest(&node_id, this_poll) {
            return Ok(Json(PollResponse {
                assign: Vec::new(),
                cancel: Vec::new(),
            }));
        }

        let now = state.clock.now_ms();
        let rec = state
            .store
            .reconcile(server.id, req.held.clone(), now)
            .await?;
        if !rec.requeued.is_empty() || !rec.lost.is_empty() {
            tracing::warn!(server = %server.name, requeued = ?rec.requeued, lost = ?rec.lost, "agent does not hold tasks assigned to it");
        }
        if !rec.requeued.is_empty() {
            state.dispatch.wake(&server.project, &server.group);
        }
        // The clock is judged from the last heartbeat: a skewed agent gets no work.
        let skewed = state
            .live
            .get(&node_id)
            .and_then(|l| l.clock_offset_ms)
            .is_some_and(|o| o.abs() > MAX_CLOCK_OFFSET_MS);
        let assign = if req.accepting && !skewed && !state.dispatch.is_closing() {
            state.store.assign(server.id, max, now).await?
        } else {
            Vec::new()
        };
        for a in &assign {
            tracing::info!(task = a.id, lease = a.lease, server = %server.name, "task assigned");
        }
        // Superseded while assigning: the newer poll may already have looked and found
        // nothing. Woken, it looks again, queues the work again (its agent does not hold it)
        // and takes it.
        if !assign.is_empty() && !state.dispatch.is_newest(&node_id, this_poll) {
            state.dispatch.wake(&server.project, &server.group);
        }
        if !assign.is_empty()
            || !rec.cancel.is_empty()
            || tokio::time::Instant::now() >= deadline
            || state.dispatch.is_closing()
        {
            return Ok(Json(PollResponse {
                assign,
                cancel: rec.cancel,
            }));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.dispatch.closed() => {}
        }
    }
}

fn fenced(answer: Fenced) -> Result<StatusCode, ApiError> {
    match answer {
        Fenced::Accepted => Ok(StatusCode::NO_CONTENT),
        Fenced::Refused(message) => Err(ApiError::Conflict {
            field: Some("lease".to_owned()),
            message,
        }),
    }
}

pub async fn start(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    Path((_, raw)): Path<(String, String)>,
    StrictJson(req): StrictJson<StartTask>,
) -> Result<StatusCode, ApiError> {
    let id = task_id(&raw)?;
    let now = state.clock.now_ms();
    req.check_times(now)?;
    let server = node_server(&state, &node_id).await?;
    let answer = state
        .store
        .start_task(server.id, id, req.lease, req.at_ms, now)
        .await?;
    match &answer {
        Fenced::Accepted => tracing::info!(task = id, server = %server.name, "task started"),
        Fenced::Refused(why) => {
            tracing::warn!(task = id, server = %server.name, %why, "task start refused")
        }
    }
    fenced(answer)
}

pub async fn finish(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    Path((_, raw)): Path<(String, String)>,
    StrictJson(req): StrictJson<FinishTask>,
) -> Result<StatusCode, ApiError> {
    let id = task_id(&raw)?;
    let now = state.clock.now_ms();
    req.check_times(now)?;
    let server = node_server(&state, &node_id).await?;
    let outcome = req.outcome.clone();
    let answer = state.store.finish_task(server.id, id, req, now).await?;
    if answer == Fenced::Accepted {
        tracing::info!(task = id, server = %server.name, ?outcome, "task finished");
        // A slot is free.
        state.dispatch.wake(&server.project, &server.group);
    }
    fenced(answer)
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
    let server = node_server(&state, &node_id).await?;
    if !state.store.holds_lease(server.id, id, q.lease).await? {
        return Err(ApiError::Conflict {
            field: Some("lease".to_owned()),
            message: format!("task {id} is not this server's under lease {}", q.lease),
        });
    }
    // The first push of a server since the console started counts what its tasks hold.
    let server_tasks = if state.task_logs.counts_server(server.id) {
        None
    } else {
        Some(state.store.server_task_ids(server.id).await?)
    };
    let logs = Arc::clone(&state.task_logs);
    let server_id = server.id;
    let appended = tokio::task::spawn_blocking(move || {
        logs.append(id, server_id, server_tasks.as_deref(), q.offset, &body)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // After a gap the agent learns where the console's copy ends and sends from there.
    let size = match appended {
        Ok(size) | Err(LogError::Gap { size }) => size,
        Err(e) => return Err(log_error(e)),
    };
    Ok(Json(LogAck { size }))
}
