//! Tasks on the wire: what an operator submits, what the console hands an agent, and what the
//! agent reports back. docs/api.md describes the endpoints; docs/architecture.md the lease and
//! fencing rules these types carry.
//!
//! A task is assigned to one server under a *lease*: a number that grows each time the task is
//! handed out. An agent may start a task only after the console has accepted its `start` under
//! the current lease, and every later report carries that lease, so an agent holding a stale
//! assignment (after an outage, or after the console took the task back) can neither start nor
//! finish it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate::{self, FieldError};
use crate::wire::Validate;

/// Largest task script.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;
/// Timeout of a task submitted without one.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// Longest timeout a task may ask for: 7 days.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Largest piece of task log an agent sends, or the console returns, in one request.
pub const MAX_LOG_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest an agent's poll for work waits for something to happen.
pub const MAX_POLL_WAIT_SECS: u64 = 30;
/// Largest body of `POST /api/v1/tasks` (a script at its limit, escaped as JSON).
pub const MAX_SUBMIT_BODY_BYTES: usize = 6 * MAX_SCRIPT_BYTES + 4096;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a free slot on a server of its group.
    Queued,
    /// Handed to a server, not yet started.
    Assigned,
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, was killed by a signal, or could not be started.
    Failed,
    /// Ran past its timeout and was killed.
    TimedOut,
    Cancelled,
    /// Its server stopped (or its agent restarted) while the task ran: the task may or may not
    /// have finished, and it is not run again.
    Lost,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Cancelled => "cancelled",
            TaskState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "queued" => TaskState::Queued,
            "assigned" => TaskState::Assigned,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "timed_out" => TaskState::TimedOut,
            "cancelled" => TaskState::Cancelled,
            "lost" => TaskState::Lost,
            _ => return None,
        })
    }

    /// Nothing more happens to a task in this state (a lost task's result may still arrive).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            TaskState::Queued | TaskState::Assigned | TaskState::Running
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/tasks`: a shell script to run once on a server of a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    pub project: String,
    pub group: String,
    /// Run by `/bin/sh` as the task user, in its own working directory.
    pub script: String,
    /// Killed (the whole process tree) after this long; 1 hour by default, at most 7 days.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Names this submit, so that it can be sent again when its answer was lost (a console
    /// died, a connection dropped): a submit with a key already used in the group answers the
    /// task the first one made (200, not 201) and makes no second one. The same key with
    /// another script or timeout is refused. See [`validate_idempotency_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// An idempotency key is 1 to [`MAX_IDEMPOTENCY_KEY`] characters of `A-Z a-z 0-9 . _ : -`
/// (a UUID fits, and so do most schedulers' run ids).
pub fn validate_idempotency_key(field: &str, key: &str) -> Result<(), FieldError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.chars().all(allowed) {
        return Err(FieldError::new(
            field,
            format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY} characters of A-Z a-z 0-9 . _ : - (a UUID will do)"
            ),
        ));
    }
    Ok(())
}

impl Validate for SubmitTask {
    const MAX_BODY: usize = MAX_SUBMIT_BODY_BYTES;

    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        validate::name("group", &self.group)?;
        if self.script.trim().is_empty() {
            return Err(FieldError::new(
                "script",
                "is empty; give the task something to run",
            ));
        }
        if self.script.len() > MAX_SCRIPT_BYTES {
            return Err(FieldError::new(
                "script",
                format!(
                    "is {} bytes, above the limit of {MAX_SCRIPT_BYTES}; ship large code to the servers and submit a script that calls it",
                    self.script.len()
                ),
            ));
        }
        if self.script.contains('\0') {
            return Err(FieldError::new(
                "script",
                "contains a NUL byte; a shell script cannot",
            ));
        }
        if let Some(t) = self.timeout_secs
            && (t == 0 || t > MAX_TIMEOUT_SECS)
        {
            return Err(FieldError::new(
                "timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds (7 days), got {t}"),
            ));
        }
        if let Some(key) = &self.idempotency_key {
            validate_idempotency_key("idempotency_key", key)?;
        }
        Ok(())
    }
}

/// One task as `GET /api/v1/tasks/{id}` and `task show --json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: i64,
    pub project: String,
    pub group: String,
    pub state: TaskState,
    /// Why the task is in this state, for a person.
    pub reason: String,
    /// The server it was assigned to, if any.
    pub server: Option<String>,
    pub timeout_secs: u64,
    /// RFC 3339, UTC.
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Start and end on the agent's clock, in milliseconds since the Unix epoch.
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub exit_code: Option<i32>,
    /// The signal that ended the script, when one did.
    pub signal: Option<i32>,
    pub duration_ms: Option<i64>,
    /// Bytes of log the console holds.
    pub log_bytes: u64,
    pub cancel_requested: bool,
}

/// `POST /api/v1/nodes/{node_id}/tasks/poll`: an agent asks for work and says what it holds.
/// The console answers at once when it has something for the agent, else after `wait_secs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// Every task the agent has been given and not yet seen finished by the console: those it
    /// runs, those it is starting, those whose result it has still to deliver.
    pub held: Vec<HeldTask>,
    /// False while the agent takes no new work (clock skew, draining for a restart).
    pub accepting: bool,
    /// How long to wait for work, at most [`MAX_POLL_WAIT_SECS`].
    pub wait_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldTask {
    pub id: i64,
    pub lease: i64,
}

/// Most tasks an agent may report holding.
pub const MAX_HELD_TASKS: usize = 4096;

impl Validate for PollRequest {
    fn validate(&self) -> Result<(), FieldError> {
        if self.wait_secs > MAX_POLL_WAIT_SECS {
            return Err(FieldError::new(
                "wait_secs",
                format!(
                    "must be at most {MAX_POLL_WAIT_SECS}, got {}",
                    self.wait_secs
                ),
            ));
        }
        if self.held.len() > MAX_HELD_TASKS {
            return Err(FieldError::new(
                "held",
                format!("lists more than {MAX_HELD_TASKS} tasks"),
            ));
        }
        for (i, h) in self.held.iter().enumerate() {
            if h.id <= 0 {
                return Err(FieldError::new(
                    format!("held[{i}].id"),
                    format!("{} is not a task id (a positive number)", h.id),
                ));
            }
            lease(&format!("held[{i}].lease"), h.lease)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollResponse {
    /// New work. Start each only after `start` is accepted.
    pub assign: Vec<TaskAssignment>,
    /// Held tasks to stop at once: cancelled by an operator, or no longer this agent's.
    pub cancel: Vec<i64>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub id: i64,
    pub lease: i64,
    pub script: String,
    pub timeout_secs: u64,
}

impl fmt::Debug for TaskAssignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskAssignment")
            .field("id", &self.id)
            .field("lease", &self.lease)
            .field("script_bytes", &self.script.len())
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// `POST /api/v1/nodes/{node_id}/tasks/{id}/start`: the agent asks to start a task it was
/// given. Accepted once per lease (and again, idempotently, for the same lease); refused with
/// 409 when the task was cancelled or taken back, and then the agent must not run it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    pub lease: i64,
    /// The agent's clock when it asked.
    pub at_ms: i64,
}

/// Leases start at 1 when a task is first handed out.
fn lease(field: &str, value: i64) -> Result<(), FieldError> {
    if value >= 1 {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value} is not a lease; leases count from 1"),
        ))
    }
}

impl Validate for StartTask {
    fn validate(&self) -> Result<(), FieldError> {
        lease("lease", self.lease)?;
        validate::time_ms("at_ms", self.at_ms)
    }
}

impl StartTask {
    /// Checks the reported time against the console's clock `now_ms` (see
    /// [`validate::AGENT_TIME_WINDOW_MS`]).
    pub fn check_times(&self, now_ms: i64) -> Result<(), FieldError> {
        validate::agent_time("at_ms", self.at_ms, now_ms)
    }
}

/// How a task's run ended, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The script exited with this code.
    Exited { code: i32 },
    /// The script was ended by a signal nobody on the agent sent.
    Signaled { signal: i32 },
    /// It ran past its timeout; the agent killed its process group.
    TimedOut,
    /// An operator cancelled it; the agent killed its process group.
    Cancelled,
    /// The agent stopped (shutdown after the drain timeout) and killed it.
    Killed { reason: String },
    /// The script could not be started at all.
    NotStarted { reason: String },
}

impl Outcome {
    /// The task state this outcome ends in.
    pub fn state(&self) -> TaskState {
        match self {
            Outcome::Exited { code: 0 } => TaskState::Succeeded,
            Outcome::TimedOut => TaskState::TimedOut,
            Outcome::Cancelled => TaskState::Cancelled,
            Outcome::Exited { .. }
            | Outcome::Signaled { .. }
            | Outcome::Killed { .. }
            | Outcome::NotStarted { .. } => TaskState::Failed,
        }
    }
}

/// `POST /api/v1/nodes/{node_id}/tasks/{id}/finish`: a task's result. Sent after the whole
/// log has been pushed; accepted again, idempotently, for the same lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishTask {
    pub lease: i64,
    pub outcome: Outcome,
    /// The agent's clock at process start (absent when it never started) and at the end.
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
    /// Size of the task's complete log.
    pub log_bytes: u64,
}

/// Largest task log size an agent may report (the console keeps at most
/// [`MAX_LOG_CHUNK_BYTES`] per push and its own cap per task; classic servers keep theirs).
pub const MAX_REPORTED_LOG_BYTES: u64 = 1 << 40;
/// Highest signal number Linux has (SIGRTMAX).
pub const MAX_SIGNAL: i32 = 64;

impl Validate for FinishTask {
    fn validate(&self) -> Result<(), FieldError> {
        lease("lease", self.lease)?;
        match &self.outcome {
            Outcome::Killed { reason } | Outcome::NotStarted { reason } => {
                validate::text("outcome.reason", reason)?
            }
            Outcome::Exited { code } if !(0..=255).contains(code) => {
                return Err(FieldError::new(
                    "outcome.code",
                    format!("{code} is not an exit code (0 to 255)"),
                ));
            }
            Outcome::Signaled { signal } if !(1..=MAX_SIGNAL).contains(signal) => {
                return Err(FieldError::new(
                    "outcome.signal",
                    format!("{signal} is not a signal number (1 to {MAX_SIGNAL})"),
                ));
            }
            _ => {}
        }
        if let Some(s) = self.started_ms {
            validate::time_ms("started_ms", s)?;
        }
        validate::time_ms("finished_ms", self.finished_ms)?;
        validate::at_most("log_bytes", self.log_bytes, MAX_REPORTED_LOG_BYTES)
    }
}

impl FinishTask {
    /// Checks the reported times against the console's clock `now_ms` (see
    /// [`validate::AGENT_TIME_WINDOW_MS`]).
    pub fn check_times(&self, now_ms: i64) -> Result<(), FieldError> {
        if let Some(s) = self.started_ms {
            validate::agent_time("started_ms", s, now_ms)?;
        }
        validate::agent_time("finished_ms", self.finished_ms, now_ms)
    }
}

/// Answer to a pushed piece of log: how many bytes of it the console now holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogAck {
    pub size: u64,
}

/// Headers of `GET /api/v1/tasks/{id}/log`.
pub mod log_headers {
    /// The task's state.
    pub const STATE: &str = "x-tasknode-task-state";
    /// Bytes of log the console holds.
    pub const SIZE: &str = "x-tasknode-log-size";
    /// `true` once the task is final and the console holds its whole log.
    pub const COMPLETE: &str = "x-tasknode-log-complete";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(script: &str, timeout_secs: Option<u64>) -> SubmitTask {
        SubmitTask {
            project: "default".into(),
            group: "g".into(),
            script: script.into(),
            timeout_secs,
            idempotency_key: None,
        }
    }

    #[test]
    fn a_submission_names_the_field_at_fault() {
        submit("echo hi", None).validate().unwrap();
        submit("echo hi", Some(MAX_TIMEOUT_SECS))
            .validate()
            .unwrap();
        assert_eq!(submit("  \n", None).validate().unwrap_err().field, "script");
        assert_eq!(submit("a\0b", None).validate().unwrap_err().field, "script");
        let big = "x".repeat(MAX_SCRIPT_BYTES + 1);
        assert_eq!(submit(&big, None).validate().unwrap_err().field, "script");
        for t in [0, MAX_TIMEOUT_SECS + 1] {
            let e = submit("true", Some(t)).validate().unwrap_err();
            assert_eq!(e.field, "timeout_secs");
        }
        let keyed = |key: &str| SubmitTask {
            idempotency_key: Some(key.into()),
            ..submit("true", None)
        };
        for good in [
            "0b7c3e4a-6a0e-4d7e-9a55-3f0d7c1e2b9a",
            "airflow:dag.run_1",
            "k",
        ] {
            keyed(good).validate().unwrap();
        }
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
        for bad in ["", "a b", "a/b", "ключ", "k\n", &long] {
            let e = keyed(bad).validate().unwrap_err();
            assert_eq!(e.field, "idempotency_key", "{bad:?}");
        }
    }

    #[test]
    fn outcomes_map_to_states() {
        assert_eq!(Outcome::Exited { code: 0 }.state(), TaskState::Succeeded);
        assert_eq!(Outcome::Exited { code: 3 }.state(), TaskState::Failed);
        assert_eq!(Outcome::Signaled { signal: 9 }.state(), TaskState::Failed);
        assert_eq!(Outcome::TimedOut.state(), TaskState::TimedOut);
        assert_eq!(Outcome::Cancelled.state(), TaskState::Cancelled);
        for s in [
            "queued",
            "assigned",
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "lost",
        ] {
            let state = TaskState::parse(s).unwrap();
            assert_eq!(state.as_str(), s);
            assert_eq!(serde_json::to_value(state).unwrap(), s);
        }
        assert!(TaskState::parse("done").is_none());
    }

    #[test]
    fn agent_reports_are_range_checked() {
        let now = 1_800_000_000_000;
        let start = |lease, at_ms| StartTask { lease, at_ms };
        start(1, now).validate().unwrap();
        start(1, now).check_times(now).unwrap();
        assert_eq!(start(0, now).validate().unwrap_err().field, "lease");
        for at in [-1, i64::MAX, i64::MIN, 253_402_300_800_000] {
            assert_eq!(start(1, at).validate().unwrap_err().field, "at_ms");
        }
        assert_eq!(
            start(1, now + 400 * 86_400_000)
                .check_times(now)
                .unwrap_err()
                .field,
            "at_ms"
        );
        let finish = |outcome, started_ms, finished_ms, log_bytes| FinishTask {
            lease: 1,
            outcome,
            started_ms,
            finished_ms,
            log_bytes,
        };
        finish(Outcome::Exited { code: 0 }, Some(now), now, 10)
            .validate()
            .unwrap();
        let field = |f: FinishTask| f.validate().unwrap_err().field;
        assert_eq!(
            field(finish(Outcome::Exited { code: -1 }, None, now, 0)),
            "outcome.code"
        );
        assert_eq!(
            field(finish(Outcome::Exited { code: 256 }, None, now, 0)),
            "outcome.code"
        );
        assert_eq!(
            field(finish(Outcome::Signaled { signal: 0 }, None, now, 0)),
            "outcome.signal"
        );
        assert_eq!(
            field(finish(Outcome::TimedOut, Some(-1), now, 0)),
            "started_ms"
        );
        assert_eq!(
            field(finish(Outcome::TimedOut, None, i64::MAX, 0)),
            "finished_ms"
        );
        assert_eq!(
            field(finish(Outcome::TimedOut, None, now, u64::MAX)),
            "log_bytes"
        );
        let old = finish(Outcome::TimedOut, Some(1), now, 0);
        old.validate().unwrap();
        assert_eq!(old.check_times(now).unwrap_err().field, "started_ms");
        let poll = PollRequest {
            held: vec![HeldTask { id: 0, lease: 1 }],
            accepting: true,
            wait_secs: 1,
        };
        assert_eq!(poll.validate().unwrap_err().field, "held[0].id");
    }

    #[test]
    fn outcomes_serialize_tagged() {
        let json = serde_json::to_string(&Outcome::Exited { code: 2 }).unwrap();
        assert_eq!(json, r#"{"type":"exited","code":2}"#);
        let back: Outcome = serde_json::from_str(r#"{"type":"timed_out"}"#).unwrap();
        assert_eq!(back, Outcome::TimedOut);
    }
}
