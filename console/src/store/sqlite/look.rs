//! A long poll's look in the embedded store: square what the agent holds with the tasks table
//! (`reconcile`), then hand the server queued tasks of its group (`assign`), each one
//! transaction on the store's single connection. A server's abandon reuses the steps.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tasknode_protocol::tasks::{HeldTask, TaskAssignment, TaskState};

use super::sql;
use crate::store::{Assigned, Reconciled, StoreError};

pub(super) const ACTIVE: &str = "('assigned', 'running')";

pub(super) fn state_of(s: &str) -> rusqlite::Result<TaskState> {
    // The CHECK constraint admits only known states.
    TaskState::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown task state {s:?}").into(),
        )
    })
}

pub(super) struct Active {
    id: i64,
    state: TaskState,
    lease: i64,
    group: i64,
}

pub(super) fn active_of(tx: &Transaction<'_>, server_id: i64) -> Result<Vec<Active>, StoreError> {
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT id, state, lease, group_id FROM tasks WHERE server_id = ?1 AND state IN {ACTIVE}"
        ))
        .map_err(sql("reading a server's tasks"))?;
    let rows = stmt
        .query_map([server_id], |r| {
            let state: String = r.get(1)?;
            Ok(Active {
                id: r.get(0)?,
                state: state_of(&state)?,
                lease: r.get(2)?,
                group: r.get(3)?,
            })
        })
        .map_err(sql("reading a server's tasks"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("reading a server's tasks"))
}

/// Puts an assigned task back in the queue, or marks a running one lost.
pub(super) fn let_go(
    tx: &Transaction<'_>,
    a: &Active,
    requeue_reason: &str,
    lost_reason: &str,
    now_ms: i64,
    out: &mut Reconciled,
    groups: &mut Vec<i64>,
) -> Result<(), StoreError> {
    if a.state == TaskState::Assigned {
        tx.execute(
            "UPDATE tasks SET state = 'queued', server_id = NULL, assigned_ms = NULL, reason = ?2
             WHERE id = ?1",
            params![a.id, requeue_reason],
        )
        .map_err(sql("queueing a task again"))?;
        out.requeued.push(a.id);
        groups.push(a.group);
    } else {
        tx.execute(
            "UPDATE tasks SET state = 'lost', finished_ms = ?2, reason = ?3 WHERE id = ?1",
            params![a.id, now_ms, lost_reason],
        )
        .map_err(sql("marking a task lost"))?;
        out.lost.push(a.id);
    }
    Ok(())
}

pub(super) fn reconcile(
    conn: &mut Connection,
    server_id: i64,
    held: &[HeldTask],
    now_ms: i64,
) -> Result<(Reconciled, Vec<i64>), StoreError> {
    let tx = conn.transaction().map_err(sql("reconciling tasks"))?;
    let mut out = Reconciled::default();
    let mut groups = Vec::new();
    let held_lease: HashMap<i64, i64> = held.iter().map(|h| (h.id, h.lease)).collect();
    for a in active_of(&tx, server_id)? {
        if held_lease.get(&a.id) != Some(&a.lease) {
            let_go(
                &tx,
                &a,
                "its server never received the assignment; queued again",
                "its agent no longer runs it (the agent restarted while it ran); it is not run again",
                now_ms,
                &mut out,
                &mut groups,
            )?;
        }
    }
    let mut stmt = tx
        .prepare_cached("SELECT server_id, lease, state, cancel_requested FROM tasks WHERE id = ?1")
        .map_err(sql("reconciling tasks"))?;
    for h in held {
        let row: Option<(Option<i64>, i64, String, bool)> = stmt
            .query_row([h.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .map_err(sql("reconciling tasks"))?;
        let keep = match row {
            Some((Some(sid), lease, state, cancel)) if sid == server_id && lease == h.lease => {
                let state = state_of(&state).map_err(sql("reconciling tasks"))?;
                // A lost task's result may still come; a cancelled one must die.
                !(cancel || state == TaskState::Cancelled)
            }
            _ => false,
        };
        if !keep {
            out.cancel.push(h.id);
        }
    }
    drop(stmt);
    tx.commit().map_err(sql("reconciling tasks"))?;
    Ok((out, groups))
}

pub(super) fn assign(
    conn: &mut Connection,
    server_id: i64,
    max_concurrency: u32,
    now_ms: i64,
) -> Result<Assigned, StoreError> {
    let tx = conn.transaction().map_err(sql("assigning tasks"))?;
    let active: u32 = tx
        .query_row(
            &format!("SELECT COUNT(*) FROM tasks WHERE server_id = ?1 AND state IN {ACTIVE}"),
            [server_id],
            |r| r.get(0),
        )
        .map_err(sql("assigning tasks"))?;
    let free = max_concurrency.saturating_sub(active);
    if free == 0 {
        return Ok(Assigned {
            full: true,
            ..Assigned::default()
        });
    }
    let (mut picked, submitted_ms): (Vec<TaskAssignment>, Vec<i64>) = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT t.id, t.lease, t.script, t.timeout_secs, t.submitted_ms FROM tasks t
                 WHERE t.group_id = (SELECT group_id FROM servers
                                     WHERE id = ?1 AND draining_ms IS NULL)
                   AND t.state = 'queued'
                 ORDER BY t.id LIMIT ?2",
            )
            .map_err(sql("assigning tasks"))?;
        let rows = stmt
            .query_map(params![server_id, free], |r| {
                Ok((
                    TaskAssignment {
                        id: r.get(0)?,
                        lease: r.get(1)?,
                        script: r.get(2)?,
                        timeout_secs: r.get::<_, i64>(3)?.max(1) as u64,
                    },
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql("assigning tasks"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("assigning tasks"))?
            .into_iter()
            .unzip()
    };
    for a in &mut picked {
        a.lease += 1;
        tx.execute(
            "UPDATE tasks SET state = 'assigned', server_id = ?2, lease = ?3, assigned_ms = ?4,
                    reason = NULL
             WHERE id = ?1",
            params![a.id, server_id, a.lease, now_ms],
        )
        .map_err(sql("assigning tasks"))?;
    }
    tx.commit().map_err(sql("assigning tasks"))?;
    Ok(Assigned {
        full: picked.len() >= free as usize,
        tasks: picked,
        submitted_ms,
    })
}
