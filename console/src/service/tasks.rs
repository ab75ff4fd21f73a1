//! Tasks as operators see them: submit, list, look up, cancel, and the view of a task (its
//! state and why, in words) that the API answers and the web console shows.

use tasknode_protocol::tasks::{DEFAULT_TIMEOUT_SECS, SubmitTask, TaskState, TaskView};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::clock::{human_duration, rfc3339};
use crate::store::{NewTask, StoreError, Task, TaskFilter};

/// Queues a task (`req` already validated); the store wakes a poll of its group (on any
/// console) that can take it. With an idempotency key already used in the group, the task
/// that key made instead, and false: nothing new is queued or audited.
pub async fn submit(
    state: &AppState,
    caller: Caller<'_>,
    req: SubmitTask,
) -> Result<(TaskView, bool), ServiceError> {
    caller.check_project(&req.project)?;
    let timeout = req.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
    // The store refuses a group that is missing (NotFound names it) or has no servers.
    let began = std::time::Instant::now();
    let submitted = state
        .store
        .submit_task_once(
            &NewTask {
                project: &req.project,
                group: &req.group,
                script: &req.script,
                timeout_secs: timeout,
                key: req.idempotency_key.as_deref(),
                actor: &super::audit::actor(caller),
            },
            state.clock.now_ms(),
        )
        .await?;
    state.metrics.store_call("submit", began.elapsed());
    let t = submitted.task;
    if !submitted.created {
        tracing::info!(task = t.id, group = %t.group, project = %t.project, "task submitted again: its idempotency key names it");
        return Ok((view(state, &t).await?, false));
    }
    // The store wrote its audit entry with it.
    tracing::info!(task = t.id, group = %t.group, project = %t.project, "task submitted");
    Ok((render(&t, 0), true))
}

/// The tasks `filter` selects, newest first; a user's are those of their project only.
pub async fn list(
    state: &AppState,
    caller: Caller<'_>,
    mut filter: TaskFilter,
) -> Result<Vec<TaskView>, ServiceError> {
    if let Some(own) = caller.project() {
        filter.project = Some(own.to_owned());
    }
    let tasks = state.store.list_tasks(&filter).await?;
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let held = state.store.log_sizes(&ids).await?;
    Ok(tasks
        .iter()
        .map(|t| render(t, held.get(&t.id).copied().unwrap_or(0)))
        .collect())
}

fn no_task(id: i64) -> ServiceError {
    ServiceError::NotFound {
        field: Some("id".to_owned()),
        message: format!("there is no task {id}; `tasknode-console task list` shows the tasks"),
    }
}

/// Task `id`, if the caller may see it (another project's task is reported as missing).
pub async fn get(state: &AppState, caller: Caller<'_>, id: i64) -> Result<Task, ServiceError> {
    state
        .store
        .task(id)
        .await?
        .filter(|t| caller.can_use(&t.project))
        .ok_or_else(|| no_task(id))
}

/// Asks for task `id` to be cancelled; the store wakes the poll of the server holding it (on
/// any console), so its agent hears at once.
pub async fn cancel(
    state: &AppState,
    caller: Caller<'_>,
    id: i64,
) -> Result<TaskView, ServiceError> {
    get(state, caller, id).await?;
    let t = state
        .store
        .cancel_task(id, state.clock.now_ms())
        .await
        .map_err(|e| match e {
            StoreError::TaskIs { .. } => ServiceError::Conflict {
                field: Some("id".to_owned()),
                message: e.to_string(),
            },
            StoreError::NotFound { .. } => no_task(id),
            other => other.into(),
        })?;
    tracing::info!(task = id, state = %t.state, "task cancel requested");
    super::audit::record(
        state,
        caller,
        "task.cancel",
        format!("task {id} in group {}", t.group),
        Some(&t.project),
    )
    .await;
    view(state, &t).await
}

/// What a person reads about a task: its state and why, in words.
pub async fn view(state: &AppState, t: &Task) -> Result<TaskView, ServiceError> {
    let held = state.store.log_sizes(&[t.id]).await?;
    Ok(render(t, held.get(&t.id).copied().unwrap_or(0)))
}

/// [`view`] of a task whose pushed log holds `held` bytes.
fn render(t: &Task, held: u64) -> TaskView {
    // Logs pushed by VPC servers are in the store; classic servers keep theirs and report the
    // size.
    let log_bytes = match held {
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
    TaskView {
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
    }
}
