//! Tasks as agents see them: the long poll that hands out work and cancellations, starting and
//! finishing a task under its lease, and pushing its log (VPC servers). Every call comes from a
//! node already authenticated by its secret; what it sends is fenced by the task's lease.

use std::sync::Arc;
use std::time::Duration;

use tasknode_protocol::tasks::{FinishTask, LogAck, PollRequest, PollResponse, StartTask};
use tasknode_protocol::{MAX_CLOCK_OFFSET_MS, concurrency};

use super::nodes::node_server;
use super::tasks::log_error;
use super::{ServiceError, blocking};
use crate::app::AppState;
use crate::store::{Fenced, Server};
use crate::tasks::LogError;

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

/// The long poll of node `node_id`: squares what its agent holds with what the store says,
/// then answers at once with work or cancellations, or waits (up to `req.wait_secs`) until a
/// submit, a cancel or a free slot in its group wakes it.
pub async fn poll(
    state: &AppState,
    node_id: &str,
    req: PollRequest,
) -> Result<PollResponse, ServiceError> {
    let server = node_server(state, node_id).await?;
    let wake = state.dispatch.group(&server.project, &server.group);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_secs);
    let max = max_concurrency(&server);
    let this_poll = state.dispatch.begin_poll(node_id);
    loop {
        // Registered before looking, so a submit in between still wakes this poll.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // A newer poll of this node means this one's agent is gone: it neither squares what
        // it held nor takes work, and answers at once.
        if !state.dispatch.is_newest(node_id, this_poll) {
            return Ok(PollResponse {
                assign: Vec::new(),
                cancel: Vec::new(),
            });
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
            .get(node_id)
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
        if !assign.is_empty() && !state.dispatch.is_newest(node_id, this_poll) {
            state.dispatch.wake(&server.project, &server.group);
        }
        if !assign.is_empty()
            || !rec.cancel.is_empty()
            || tokio::time::Instant::now() >= deadline
            || state.dispatch.is_closing()
        {
            return Ok(PollResponse {
                assign,
                cancel: rec.cancel,
            });
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.dispatch.closed() => {}
        }
    }
}

fn fenced(answer: Fenced) -> Result<(), ServiceError> {
    match answer {
        Fenced::Accepted => Ok(()),
        Fenced::Refused(message) => Err(ServiceError::Conflict {
            field: Some("lease".to_owned()),
            message,
        }),
    }
}

/// Records that task `id` started on node `node_id`'s server, under its lease.
pub async fn start(
    state: &AppState,
    node_id: &str,
    id: i64,
    req: StartTask,
) -> Result<(), ServiceError> {
    let now = state.clock.now_ms();
    req.check_times(now)?;
    let server = node_server(state, node_id).await?;
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

/// Records how task `id` ended on node `node_id`'s server, under its lease, and wakes the
/// group's polls: a slot is free.
pub async fn finish(
    state: &AppState,
    node_id: &str,
    id: i64,
    req: FinishTask,
) -> Result<(), ServiceError> {
    let now = state.clock.now_ms();
    req.check_times(now)?;
    let server = node_server(state, node_id).await?;
    let outcome = req.outcome.clone();
    let answer = state.store.finish_task(server.id, id, req, now).await?;
    if answer == Fenced::Accepted {
        tracing::info!(task = id, server = %server.name, ?outcome, "task finished");
        state.dispatch.wake(&server.project, &server.group);
    }
    fenced(answer)
}

/// Appends `body` at `offset` to the console's copy of task `id`'s log, pushed by the server
/// holding the task under `lease`; answers the copy's size (after a gap too, so the agent
/// sends from there).
pub async fn push_log(
    state: &AppState,
    node_id: &str,
    id: i64,
    lease: i64,
    offset: u64,
    body: impl AsRef<[u8]> + Send + 'static,
) -> Result<LogAck, ServiceError> {
    let server = node_server(state, node_id).await?;
    if !state.store.holds_lease(server.id, id, lease).await? {
        return Err(ServiceError::Conflict {
            field: Some("lease".to_owned()),
            message: format!("task {id} is not this server's under lease {lease}"),
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
    let appended = blocking(move || {
        logs.append(
            id,
            server_id,
            server_tasks.as_deref(),
            offset,
            body.as_ref(),
        )
    })
    .await?;
    match appended {
        Ok(size) | Err(LogError::Gap { size }) => Ok(LogAck { size }),
        Err(e) => Err(log_error(e)),
    }
}
