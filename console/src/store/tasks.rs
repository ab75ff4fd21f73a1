//! Tasks: submitted to a group, handed to one of its servers under a lease (the fencing token
//! every start, log and finish must carry), and squared with what each agent holds. A submit,
//! a task queued again, a cancel of a task a server holds and a finish each send a
//! [`super::Wake`] once committed.

use async_trait::async_trait;
use tasknode_protocol::tasks::{FinishTask, HeldTask, TaskAssignment, TaskState};

use super::StoreError;

/// How many tasks one group holds in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCount {
    pub project: String,
    pub group: String,
    pub state: TaskState,
    pub count: i64,
}

/// A task as the store holds it (without its script).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: i64,
    pub project: String,
    pub group: String,
    pub state: TaskState,
    pub reason: Option<String>,
    pub server: Option<String>,
    pub timeout_secs: u64,
    pub submitted_ms: i64,
    pub assigned_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The size of the complete log, once the agent has reported the task finished.
    pub log_bytes: Option<u64>,
    pub lease: i64,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub project: Option<String>,
    pub group: Option<String>,
    pub state: Option<TaskState>,
    /// Newest first, at most this many.
    pub limit: u32,
}

/// What reconciling an agent's held tasks changed and what the agent must stop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// Held tasks the agent must kill: cancelled by an operator, or no longer its own.
    pub cancel: Vec<i64>,
    /// Assigned tasks the agent never received: queued again under a new lease.
    pub requeued: Vec<i64>,
    /// Running tasks the agent no longer holds: lost.
    pub lost: Vec<i64>,
}

/// The audit action of a submit, and its object: what the audit log says of task `id` of
/// `group`. PostgreSQL writes the same text in SQL (`format('task %s in group %s', …)`); the
/// store suite holds both to it.
pub const SUBMIT_AUDIT_ACTION: &str = "task.submit";
pub fn submit_audit_object(id: i64, group: &str) -> String {
    format!("task {id} in group {group}")
}

/// The refusal of a new task for a group without servers.
pub fn no_servers(project: &str, group: &str) -> StoreError {
    StoreError::Conflict {
        field: "group",
        message: format!(
            "group {group} has no servers, so nothing would run this task; add one first: tasknode-console server add --project {project} --group {group} --name HOSTNAME_OR_UUID"
        ),
    }
}

/// Whether a submit under `key` repeats the one that made task `id` (`earlier`: its script and
/// timeout in seconds) and so may be answered with that task; if not, the refusal.
pub fn same_submit(
    key: &str,
    id: i64,
    earlier: (&str, i64),
    now: (&str, i64),
) -> Result<(), StoreError> {
    if earlier == now {
        return Ok(());
    }
    Err(StoreError::Conflict {
        field: "idempotency_key",
        message: format!(
            "{key:?} already names task {id} of this group, submitted with another script or timeout; a new task needs a new key"
        ),
    })
}

/// What [`TaskStore::assign`] handed a server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assigned {
    pub tasks: Vec<TaskAssignment>,
    /// When each of `tasks` was submitted, in the same order (the dispatch-latency metric).
    pub submitted_ms: Vec<i64>,
    /// The server has no free slot left (or had none): the queue may hold more than it took.
    /// When false, it took every queued task it could see.
    pub full: bool,
}

/// The server an agent's start or finish was accepted for, as the store found it by the
/// agent's node id (see [`TaskStore::start_as_node`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedBy {
    pub server_id: i64,
    pub server: String,
    /// The server is draining: the caller completes its removal once it holds nothing.
    pub draining: bool,
}

/// The answer to an agent's start or finish.
#[derive(Debug, Clone, PartialEq)]
pub enum Fenced {
    Accepted,
    /// Refused, with why: the agent must not run (or report) the task under that lease.
    Refused(String),
}

/// A task to submit: its group, what it runs, and who submits it.
#[derive(Debug, Clone, Copy)]
pub struct NewTask<'a> {
    pub project: &'a str,
    pub group: &'a str,
    pub script: &'a str,
    pub timeout_secs: u64,
    /// The idempotency key (see [`TaskStore::submit_task_once`]).
    pub key: Option<&'a str>,
    /// Who submits it, as the audit log names them (`admin`, `user:NAME`).
    pub actor: &'a str,
}

/// What a submit made, or found.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub task: Task,
    /// False when an earlier submit with the same idempotency key made `task`.
    pub created: bool,
}

#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Queues a task for a group, as the admin (see `submit_task_once`).
    async fn submit_task(
        &self,
        project: &str,
        group: &str,
        script: &str,
        timeout_secs: u64,
        now_ms: i64,
    ) -> Result<Task, StoreError> {
        let submitted = self
            .submit_task_once(
                &NewTask {
                    project,
                    group,
                    script,
                    timeout_secs,
                    key: None,
                    actor: "admin",
                },
                now_ms,
            )
            .await?;
        Ok(submitted.task)
    }
    /// Queues a task for a group, unless `key` is given and a task of the group already
    /// carries it: then that task, not created, when it was submitted with the same script and
    /// timeout, and a `Conflict` on `idempotency_key` when not. Two submits with one key make
    /// one task, also when they race on two consoles. A group without servers takes no new
    /// task ([`no_servers`]): nothing would ever run it. A task made is audited as submitted
    /// by its actor ([`submit_audit_object`]) in the same transaction, so no task goes
    /// unrecorded; a task found under its key is not audited again.
    async fn submit_task_once(
        &self,
        task: &NewTask<'_>,
        now_ms: i64,
    ) -> Result<Submitted, StoreError>;
    async fn task(&self, id: i64) -> Result<Option<Task>, StoreError>;
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;
    /// Cancels a queued task at once; asks the agent of an assigned or running one to kill it.
    /// A final task is `TaskIs`.
    async fn cancel_task(&self, id: i64, now_ms: i64) -> Result<Task, StoreError>;

    /// Squares the console's view of a server's tasks with what its agent holds: assigned
    /// tasks the agent does not hold go back to the queue, running ones it does not hold are
    /// lost, and held tasks that are cancelled or not the agent's (under that lease) are to be
    /// killed.
    async fn reconcile(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError>;
    /// Hands queued tasks of the server's group to it, oldest first, until it runs
    /// `max_concurrency` tasks, each under a new lease. Each queued task is handed to one
    /// server only, also when several consoles assign at once.
    async fn assign(
        &self,
        server_id: i64,
        max_concurrency: u32,
        now_ms: i64,
    ) -> Result<Assigned, StoreError>;
    /// A long poll's look: [`TaskStore::reconcile`], then (with `take`, the server's max
    /// concurrency, when its agent may take work) [`TaskStore::assign`], both under the same
    /// guarantees as apart. On PostgreSQL it is one transaction under the server's lock: the
    /// look is most of what dispatch costs the database.
    async fn look(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        take: Option<u32>,
        now_ms: i64,
    ) -> Result<(Reconciled, Assigned), StoreError>;
    async fn start_task(
        &self,
        server_id: i64,
        id: i64,
        lease: i64,
        at_ms: i64,
        now_ms: i64,
    ) -> Result<Fenced, StoreError>;
    async fn finish_task(
        &self,
        server_id: i64,
        id: i64,
        report: FinishTask,
        now_ms: i64,
    ) -> Result<Fenced, StoreError>;
    /// The usual start, fenced by the node itself: task `id` is assigned, under `lease`, to
    /// the server node `node_id` is enrolled as now. It starts, in one step without a lookup
    /// of the server first. `None` when this step does not take it (another node, a
    /// re-enrolled or removed server, a stale lease, a task not assigned): nothing changed,
    /// and the caller looks the node's server up and asks [`TaskStore::start_task`], which
    /// answers it and tells why. A repeat may get either answer; it changes nothing.
    async fn start_as_node(
        &self,
        node_id: &str,
        id: i64,
        lease: i64,
        at_ms: i64,
        now_ms: i64,
    ) -> Result<Option<ReportedBy>, StoreError>;
    /// The usual finish, fenced as [`TaskStore::start_as_node`] is: the task, assigned or
    /// running, takes its result and its server's poll is woken (a slot is free). `None` when
    /// this step does not take it, with nothing changed: the caller asks
    /// [`TaskStore::finish_task`].
    async fn finish_as_node(
        &self,
        node_id: &str,
        id: i64,
        report: &FinishTask,
        now_ms: i64,
    ) -> Result<Option<ReportedBy>, StoreError>;
    /// Whether `id` is assigned to `server_id` under `lease` (its log may be pushed).
    async fn holds_lease(&self, server_id: i64, id: i64, lease: i64) -> Result<bool, StoreError>;
    /// Ids of the tasks assigned to a server (whose logs it pushed, on a VPC).
    async fn server_task_ids(&self, server_id: i64) -> Result<Vec<i64>, StoreError>;
    /// The servers that have assigned or running tasks.
    async fn busy_servers(&self) -> Result<Vec<i64>, StoreError>;
    /// How many tasks each group holds in each state; a state a group has none in is absent.
    async fn task_counts(&self) -> Result<Vec<TaskCount>, StoreError>;
    /// A server is gone (stopped): its assigned tasks are queued again, its running ones lost.
    /// With `fence`, only while that lease is held at `now_ms` (else nothing changes).
    async fn abandon_server_tasks(
        &self,
        server_id: i64,
        reason: &str,
        now_ms: i64,
        fence: Option<&super::Fence>,
    ) -> Result<Reconciled, StoreError>;
}

/// A task's row as a start or finish is fenced by it (each backend reads it, locked).
pub(super) struct LeaseRow {
    pub server_id: Option<i64>,
    pub lease: i64,
    pub state: TaskState,
}

/// Why a report under `lease` from `server_id` does not count, if it does not: the rule both
/// backends apply before a start or finish writes anything.
pub(super) fn fence(id: i64, row: Option<&LeaseRow>, server_id: i64, lease: i64) -> Option<String> {
    match row {
        None => Some(format!("there is no task {id}")),
        Some(r) if r.server_id != Some(server_id) || r.lease != lease => Some(format!(
            "task {id} is no longer this server's under lease {lease} (it is {} under lease {})",
            r.state, r.lease
        )),
        Some(_) => None,
    }
}

/// What a finish that passed its fence writes.
pub(super) struct Finished {
    pub state: TaskState,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub log_bytes: i64,
}

/// The row a fenced finish writes for a task in `state`, or `None` when the result is recorded
/// already (the agent did not hear the first answer, and is answered the same again). A result
/// delivered after the task was reported lost says so in its reason.
pub(super) fn finished(state: TaskState, report: &FinishTask) -> Option<Finished> {
    use tasknode_protocol::tasks::Outcome;
    if !matches!(
        state,
        TaskState::Running | TaskState::Assigned | TaskState::Lost
    ) {
        return None;
    }
    let mut reason = match &report.outcome {
        Outcome::Killed { reason } => Some(format!("killed by its agent: {reason}")),
        Outcome::NotStarted { reason } => Some(format!("could not start: {reason}")),
        _ => None,
    };
    if state == TaskState::Lost {
        reason = Some(format!(
            "its server came back after it was reported lost and delivered this result{}",
            reason.map(|r| format!("; {r}")).unwrap_or_default()
        ));
    }
    let (exit_code, signal) = match report.outcome {
        Outcome::Exited { code } => (Some(code), None),
        Outcome::Signaled { signal } => (None, Some(signal)),
        _ => (None, None),
    };
    Some(Finished {
        state: report.outcome.state(),
        reason,
        exit_code,
        signal,
        log_bytes: i64::try_from(report.log_bytes).unwrap_or(i64::MAX),
    })
}
