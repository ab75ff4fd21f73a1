//! Tasks as agents see them: the long poll that hands out work and cancellations, starting and
//! finishing a task under its lease, and pushing its log (VPC servers). Every call comes from a
//! node already authenticated by its secret; what it sends is fenced by the task's lease.

use std::time::Duration;

use tasknode_protocol::tasks::{FinishTask, LogAck, PollRequest, PollResponse, StartTask};
use tasknode_protocol::{MAX_CLOCK_OFFSET_MS, concurrency};

use super::ServiceError;
use super::nodes::node_server;
use crate::app::AppState;
use crate::store::{Appended, Fenced, Server, Wake};

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
/// wake-up for it (work it can take, news for its server) makes it look again; see
/// [`crate::dispatch`] for which polls a wake-up reaches.
pub async fn poll(
    state: &AppState,
    node_id: &str,
    req: PollRequest,
) -> Result<PollResponse, ServiceError> {
    let server = node_server(state, node_id).await?;
    // A draining server that holds nothing more is removed here, and its agent told so.
    if super::removal::finish_drain(state, &server).await? {
        return Err(super::nodes::removed(&server.name));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_secs);
    let max = max_concurrency(&server);
    // Registered before the first look, so a change committed after it wakes this poll.
    let mut ticket = state.dispatch.register(node_id, server.id, server.group_id);
    loop {
        // A newer poll of this node means this one's agent is gone: it neither squares what
        // it held nor takes work, and answers at once.
        if ticket.superseded() {
            return Ok(PollResponse {
                assign: Vec::new(),
                cancel: Vec::new(),
            });
        }
        ticket.begin_look();
        let now = state.clock.now_ms();
        // The clock is judged from the last heartbeat: a skewed agent gets no work.
        let skewed = state
            .live
            .get(node_id)
            .and_then(|l| l.clock_offset_ms)
            .is_some_and(|o| o.abs() > MAX_CLOCK_OFFSET_MS);
        let can_take = req.accepting && !skewed && !state.dispatch.is_closing();
        // Tasks queued again here wake their group's polls (the store sends the wake-up).
        let began = std::time::Instant::now();
        let (rec, assigned) = state
            .store
            .look(server.id, req.held.clone(), can_take.then_some(max), now)
            .await?;
        state.metrics.store_call("look", began.elapsed());
        if !rec.requeued.is_empty() || !rec.lost.is_empty() {
            tracing::warn!(server = %server.name, requeued = ?rec.requeued, lost = ?rec.lost, "agent does not hold tasks assigned to it");
        }
        for created in &assigned.submitted_ms {
            state.metrics.dispatched(now - created);
        }
        let assign = assigned.tasks;
        for a in &assign {
            tracing::info!(task = a.id, lease = a.lease, server = %server.name, "task assigned");
        }
        let superseded = ticket.superseded();
        ticket.looked(assign.len(), can_take && !assigned.full && !superseded);
        // Superseded while assigning: the newer poll may already have looked and found
        // nothing. Woken, it looks again, queues the work again (its agent does not hold it)
        // and takes it.
        if !assign.is_empty() && superseded {
            state.dispatch.wake(Wake::Server { server: server.id });
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
            () = ticket.woken() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = state.dispatch.closed() => {}
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
    if let Some(by) = state
        .store
        .start_as_node(node_id, id, req.lease, req.at_ms, now)
        .await?
    {
        tracing::info!(task = id, server = %by.server, "task started");
        return Ok(());
    }
    // Anything but the usual start: the node's server (or why it has none), and why not.
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

/// Records how task `id` ended on node `node_id`'s server, under its lease; the store wakes
/// that server's poll (on any console): a slot is free.
pub async fn finish(
    state: &AppState,
    node_id: &str,
    id: i64,
    req: FinishTask,
) -> Result<(), ServiceError> {
    let now = state.clock.now_ms();
    req.check_times(now)?;
    if let Some(by) = state.store.finish_as_node(node_id, id, &req, now).await? {
        tracing::info!(task = id, server = %by.server, outcome = ?req.outcome, "task finished");
        // The server is looked up only to complete its drain: the result is in either way.
        if by.draining
            && let Ok(server) = node_server(state, node_id).await
        {
            drain_after_finish(state, &server).await;
        }
        return Ok(());
    }
    // Anything but the usual finish: the node's server (or why it has none), and why not.
    let server = node_server(state, node_id).await?;
    let outcome = req.outcome.clone();
    let answer = state.store.finish_task(server.id, id, req, now).await?;
    if answer == Fenced::Accepted {
        tracing::info!(task = id, server = %server.name, ?outcome, "task finished");
        drain_after_finish(state, &server).await;
    }
    fenced(answer)
}

/// A draining server's last result removes it. The result is kept either way.
async fn drain_after_finish(state: &AppState, server: &Server) {
    if let Err(e) = super::removal::finish_drain(state, server).await {
        tracing::warn!(server = %server.name, error = %e, "completing a drain failed; the next poll tries again");
    }
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
    body: bytes::Bytes,
) -> Result<LogAck, ServiceError> {
    let server = node_server(state, node_id).await?;
    if !state.store.holds_lease(server.id, id, lease).await? {
        return Err(ServiceError::Conflict {
            field: Some("lease".to_owned()),
            message: format!("task {id} is not this server's under lease {lease}"),
        });
    }
    let appended = state
        .store
        .append_log(id, server.id, offset, body, state.log_limits)
        .await?;
    match appended {
        Appended::Size(size) | Appended::Gap { size } => Ok(LogAck { size }),
        Appended::TaskFull { limit } => Err(ServiceError::LimitReached {
            field: "offset",
            message: format!(
                "this task's log would pass the console's limit of {limit} bytes per task (serve --max-task-log); the rest stays on the server"
            ),
        }),
        Appended::ServerFull { limit } => Err(ServiceError::LimitReached {
            field: "offset",
            message: format!(
                "this server's task logs on the console would pass its limit of {limit} bytes per server (serve --max-server-logs); delete groups whose old tasks are no longer needed, or raise the limit"
            ),
        }),
    }
}
