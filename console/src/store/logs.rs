//! The task logs VPC servers push (classic servers keep theirs and serve them on port 8000).
//! A push carries bytes from an offset of the agent's log; the store keeps the log in order,
//! skips what it holds already (a resend after a lost answer), refuses a gap, and keeps what
//! fits under the limits per task and per server. The rules are [`plan`], shared by both
//! backends: SQLite keeps one file per task beside its database (one console owns both);
//! PostgreSQL keeps the bytes in tables, so every console on the database reads what any of
//! them received.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreError;

/// How much task log VPC servers may push (`serve --max-task-log`, `--max-server-logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Largest log of one task.
    pub per_task: u64,
    /// Most log of one server, all its tasks together.
    pub per_server: u64,
}

impl Default for LogLimits {
    /// By default 1 GiB per task and 50 GiB per server.
    fn default() -> LogLimits {
        LogLimits {
            per_task: 1 << 30,
            per_server: 50 << 30,
        }
    }
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Kept (all of it, what fitted, or nothing new): the log now holds `size` bytes.
    Size(u64),
    /// The push starts past the end: the store holds `size` bytes; send from there.
    Gap { size: u64 },
    /// The task's log is at its limit: nothing more is kept.
    TaskFull { limit: u64 },
    /// The server's logs are at their limit: nothing more is kept.
    ServerFull { limit: u64 },
}

/// What to do with a push of `len` bytes at `offset` to a log of `size` bytes, whose server
/// holds `server_total` bytes of log in all (this log's included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Store `take` bytes of the push from byte `skip` of it, at the end of the log.
    Keep { skip: usize, take: usize },
    /// Store nothing and answer this.
    Answer(Appended),
}

pub(crate) fn plan(
    size: u64,
    offset: u64,
    len: usize,
    server_total: u64,
    limits: LogLimits,
) -> Plan {
    if offset > size {
        return Plan::Answer(Appended::Gap { size });
    }
    let skip = usize::try_from(size - offset).unwrap_or(usize::MAX);
    if skip >= len {
        return Plan::Answer(Appended::Size(size));
    }
    // What fits under both limits is kept; a push with no room left at all is refused, so the
    // store holds the head of a long log and the agent learns where it stopped.
    let task_room = limits.per_task.saturating_sub(size);
    if task_room == 0 {
        return Plan::Answer(Appended::TaskFull {
            limit: limits.per_task,
        });
    }
    let server_room = limits.per_server.saturating_sub(server_total);
    if server_room == 0 {
        return Plan::Answer(Appended::ServerFull {
            limit: limits.per_server,
        });
    }
    let room = usize::try_from(task_room.min(server_room)).unwrap_or(usize::MAX);
    Plan::Keep {
        skip,
        take: (len - skip).min(room),
    }
}

#[async_trait]
pub trait TaskLogStore: Send + Sync {
    /// Bytes held of the logs of `tasks`, for those that have one.
    async fn log_sizes(&self, tasks: &[i64]) -> Result<HashMap<i64, u64>, StoreError>;

    /// Adds `bytes`, which start at `offset` of the agent's log of task `task`, pushed by
    /// server `server` (which holds the task: the caller checked its lease). What the answer
    /// says is on disk when it returns.
    async fn append_log(
        &self,
        task: i64,
        server: i64,
        offset: u64,
        bytes: Bytes,
        limits: LogLimits,
    ) -> Result<Appended, StoreError>;

    /// Up to `max` bytes of task `task`'s log from `offset`, and the log's size.
    async fn read_log(
        &self,
        task: i64,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64), StoreError>;

    /// Removes the logs of `tasks` (deleted tasks'); a log never written is no error.
    async fn remove_logs(&self, tasks: &[i64]) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: LogLimits = LogLimits {
        per_task: 100,
        per_server: 150,
    };

    #[test]
    fn a_push_keeps_what_is_new_and_fits() {
        assert_eq!(plan(0, 0, 10, 0, L), Plan::Keep { skip: 0, take: 10 });
        // A resend overlapping the end keeps only the new part.
        assert_eq!(plan(10, 4, 10, 10, L), Plan::Keep { skip: 6, take: 4 });
        // A resend of what is held keeps nothing and answers the size.
        assert_eq!(plan(10, 0, 10, 10, L), Plan::Answer(Appended::Size(10)));
        assert_eq!(plan(10, 10, 0, 10, L), Plan::Answer(Appended::Size(10)));
        assert_eq!(
            plan(10, 11, 5, 10, L),
            Plan::Answer(Appended::Gap { size: 10 })
        );
    }

    #[test]
    fn the_limits_cut_a_push_and_then_refuse_the_next() {
        assert_eq!(plan(95, 95, 10, 95, L), Plan::Keep { skip: 0, take: 5 });
        assert_eq!(
            plan(100, 100, 1, 100, L),
            Plan::Answer(Appended::TaskFull { limit: 100 })
        );
        // This task has room, its server less.
        assert_eq!(plan(20, 20, 50, 140, L), Plan::Keep { skip: 0, take: 10 });
        assert_eq!(
            plan(20, 20, 1, 150, L),
            Plan::Answer(Appended::ServerFull { limit: 150 })
        );
    }
}
