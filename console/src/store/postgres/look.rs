//! A long poll's look on PostgreSQL: square what the agent holds with the tasks table, then
//! hand the server queued tasks of its group, in one transaction under the server's row lock
//! (`FOR NO KEY UPDATE`: rows that only refer to the server stay free to write). A look is
//! most of what dispatch costs the database, so it runs in the database, in one round trip
//! (`in_one`, the function of migration 0010); `TaskStore::reconcile` is a look that takes
//! nothing. `assign` alone (the store suite's) and a server's abandon reuse the steps below.

use deadpool_postgres::GenericClient;
use tasknode_protocol::tasks::{HeldTask, TaskAssignment, TaskState};

use super::tasks::{ACTIVE, state_of};
use super::{Cached, col, db};
use crate::store::{Assigned, Reconciled, StoreError};

pub(super) struct Active {
    id: i64,
    state: TaskState,
    group: i64,
}

/// The server's assigned and running tasks, locked.
pub(super) async fn active_of(
    c: &impl GenericClient,
    server_id: i64,
) -> Result<Vec<Active>, StoreError> {
    let op = "reading a server's tasks";
    let rows = c
        .q(
            &format!(
                "SELECT id, state, group_id FROM tasks WHERE server_id = $1 AND state IN {ACTIVE}
                 ORDER BY id FOR UPDATE"
            ),
            &[&server_id],
        )
        .await
        .map_err(db(op))?;
    rows.iter()
        .map(|r| {
            let state: String = col(r, 1)?;
            Ok(Active {
                id: col(r, 0)?,
                state: state_of(&state)?,
                group: col(r, 2)?,
            })
        })
        .collect()
}

/// How many tasks the server runs or is handed now.
pub(super) async fn active_count(
    c: &impl GenericClient,
    server_id: i64,
) -> Result<u32, StoreError> {
    let row = c
        .q_one(
            &format!("SELECT COUNT(*) FROM tasks WHERE server_id = $1 AND state IN {ACTIVE}"),
            &[&server_id],
        )
        .await
        .map_err(db("counting a server's tasks"))?;
    Ok(u32::try_from(col::<i64>(&row, 0)?).unwrap_or(u32::MAX))
}

/// Puts an assigned task back in the queue, or marks a running one lost.
pub(super) async fn let_go(
    c: &impl GenericClient,
    a: &Active,
    requeue_reason: &str,
    lost_reason: &str,
    now_ms: i64,
    out: &mut Reconciled,
    groups: &mut Vec<i64>,
) -> Result<(), StoreError> {
    if a.state == TaskState::Assigned {
        c.exec(
            "UPDATE tasks SET state = 'queued', server_id = NULL, assigned_ms = NULL, reason = $2
             WHERE id = $1",
            &[&a.id, &requeue_reason],
        )
        .await
        .map_err(db("queueing a task again"))?;
        out.requeued.push(a.id);
        groups.push(a.group);
    } else {
        c.exec(
            "UPDATE tasks SET state = 'lost', finished_ms = $2, reason = $3 WHERE id = $1",
            &[&a.id, &now_ms, &lost_reason],
        )
        .await
        .map_err(db("marking a task lost"))?;
        out.lost.push(a.id);
    }
    Ok(())
}

/// Why an assigned task the agent does not hold is queued again, and a running one lost.
const REQUEUE_REASON: &str = "its server never received the assignment; queued again";
const LOST_REASON: &str =
    "its agent no longer runs it (the agent restarted while it ran); it is not run again";

/// The server a look assigns to, under its lock.
pub(super) struct Locked {
    id: i64,
    group_id: i64,
    draining: bool,
}

/// Locks the server's row: two consoles answering the same agent count its free slots one
/// after the other. `None` when the server is gone.
pub(super) async fn lock_server(
    c: &impl GenericClient,
    server_id: i64,
) -> Result<Option<Locked>, StoreError> {
    let row = c
        .q_opt(
            "SELECT group_id, draining_ms IS NOT NULL FROM servers WHERE id = $1
             FOR NO KEY UPDATE",
            &[&server_id],
        )
        .await
        .map_err(db("locking a server"))?;
    row.map(|r| {
        Ok(Locked {
            id: server_id,
            group_id: col(&r, 0)?,
            draining: col(&r, 1)?,
        })
    })
    .transpose()
}

/// Hands the locked server queued tasks of its group, oldest first, until it runs
/// `max_concurrency` (it runs `active` now). A draining server takes none.
pub(super) async fn assign(
    c: &impl GenericClient,
    server: &Locked,
    max_concurrency: u32,
    active: u32,
    now_ms: i64,
) -> Result<Assigned, StoreError> {
    if server.draining {
        return Ok(Assigned::default());
    }
    let free = i64::from(max_concurrency.saturating_sub(active));
    if free == 0 {
        return Ok(Assigned {
            full: true,
            ..Assigned::default()
        });
    }
    // One statement claims and assigns them all: a round trip per task was most of an
    // assign's time at thousands of tasks a second.
    let rows = c
        .q(
            "WITH picked AS (
                 SELECT id FROM tasks WHERE group_id = $1 AND state = 'queued'
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE tasks t SET state = 'assigned', server_id = $3, lease = t.lease + 1,
                    assigned_ms = $4, reason = NULL
             FROM picked WHERE t.id = picked.id
             RETURNING t.id, t.lease, t.script, t.timeout_secs, t.submitted_ms",
            &[&server.group_id, &free, &server.id, &now_ms],
        )
        .await
        .map_err(db("assigning tasks"))?;
    let mut picked = Vec::with_capacity(rows.len());
    for r in &rows {
        let task = TaskAssignment {
            id: col(r, 0)?,
            lease: col(r, 1)?,
            script: col(r, 2)?,
            timeout_secs: col::<i64>(r, 3)?.max(1) as u64,
        };
        picked.push((task, col::<i64>(r, 4)?));
    }
    picked.sort_by_key(|(a, _)| a.id);
    let (tasks, submitted_ms): (Vec<_>, Vec<_>) = picked.into_iter().unzip();
    Ok(Assigned {
        full: i64::try_from(tasks.len()).unwrap_or(i64::MAX) >= free,
        tasks,
        submitted_ms,
    })
}

/// A whole look in one round trip: `tasknode_look` (migration 0010) locks the server, then
/// its active tasks, squares them with `held`, and (with `take`) runs the claim of `assign`,
/// in one transaction. Also returns the groups of the tasks queued again (their wake-ups go
/// out after it commits).
pub(super) async fn in_one(
    c: &impl GenericClient,
    server_id: i64,
    held: &[HeldTask],
    take: Option<u32>,
    now_ms: i64,
) -> Result<(Reconciled, Assigned, Vec<i64>), StoreError> {
    let op = "looking for work";
    let ids: Vec<i64> = held.iter().map(|h| h.id).collect();
    let leases: Vec<i64> = held.iter().map(|h| h.lease).collect();
    let rows = c
        .q(
            "SELECT r_kind, r_id, r_group, r_lease, r_script, r_timeout, r_submitted
             FROM tasknode_look($1, $2, $3, $4, $5, $6, $7)",
            &[
                &server_id,
                &ids,
                &leases,
                &take.map(i64::from),
                &now_ms,
                &REQUEUE_REASON,
                &LOST_REASON,
            ],
        )
        .await
        .map_err(db(op))?;
    let mut out = Reconciled::default();
    let mut assigned = Assigned::default();
    let mut groups = Vec::new();
    let mut picked = Vec::new();
    for r in &rows {
        let kind: &str = col(r, 0)?;
        match kind {
            "requeued" => {
                out.requeued.push(col(r, 1)?);
                groups.push(col(r, 2)?);
            }
            "lost" => out.lost.push(col(r, 1)?),
            "cancel" => out.cancel.push(col(r, 1)?),
            "full" => assigned.full = true,
            "assigned" => picked.push((
                TaskAssignment {
                    id: col(r, 1)?,
                    lease: col(r, 3)?,
                    script: col(r, 4)?,
                    timeout_secs: col::<i64>(r, 5)?.max(1) as u64,
                },
                col::<i64>(r, 6)?,
            )),
            other => {
                return Err(StoreError::Database {
                    op,
                    source: format!("tasknode_look returned a row of unknown kind {other:?}")
                        .into(),
                });
            }
        }
    }
    picked.sort_by_key(|(a, _)| a.id);
    (assigned.tasks, assigned.submitted_ms) = picked.into_iter().unzip();
    Ok((out, assigned, groups))
}
