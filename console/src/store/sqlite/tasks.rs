//! Tasks in the embedded store. Every transition is one transaction under the store's single
//! connection, so the checks ("is this lease current?", "is there a free slot?") and the writes
//! that follow them cannot interleave with another request's.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tasknode_protocol::tasks::{FinishTask, HeldTask, TaskState};

use async_trait::async_trait;

use super::look::{ACTIVE, active_of, assign, let_go, reconcile, state_of};
use super::{SqliteStore, group_of, server_by_node, sql};
use crate::store::tasks::{LeaseRow, fence, finished};
use crate::store::wakes::requeued;
use crate::store::{
    Assigned, Fenced, NewTask, Reconciled, ReportedBy, SUBMIT_AUDIT_ACTION, Server, StoreError,
    Submitted, Task, TaskCount, TaskFilter, TaskStore, Wake, no_servers, same_submit,
    submit_audit_object,
};

const TASK_COLUMNS: &str =
    "t.id, p.name, g.name, t.state, t.reason, COALESCE(s.name, t.server_name), t.timeout_secs,
     t.submitted_ms, t.assigned_ms, t.started_ms, t.finished_ms, t.exit_code, t.signal,
     t.log_bytes, t.lease, t.cancel_requested
     FROM tasks t JOIN resource_groups g ON g.id = t.group_id JOIN projects p ON p.id = g.project_id
     LEFT JOIN servers s ON s.id = t.server_id";

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let state: String = r.get(3)?;
    Ok(Task {
        id: r.get(0)?,
        project: r.get(1)?,
        group: r.get(2)?,
        state: state_of(&state)?,
        reason: r.get(4)?,
        server: r.get(5)?,
        timeout_secs: r.get::<_, i64>(6)?.max(0) as u64,
        submitted_ms: r.get(7)?,
        assigned_ms: r.get(8)?,
        started_ms: r.get(9)?,
        finished_ms: r.get(10)?,
        exit_code: r.get(11)?,
        signal: r.get(12)?,
        log_bytes: r.get::<_, Option<i64>>(13)?.map(|b| b.max(0) as u64),
        lease: r.get(14)?,
        cancel_requested: r.get(15)?,
    })
}

fn task(conn: &Connection, id: i64) -> Result<Option<Task>, StoreError> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} WHERE t.id = ?1"),
        [id],
        task_from_row,
    )
    .optional()
    .map_err(sql("looking up a task"))
}

fn not_found(id: i64) -> StoreError {
    StoreError::NotFound {
        kind: "task",
        name: id.to_string(),
    }
}

/// A submit, as [`TaskStore::submit_task_once`] says; also the task's group.
fn submit(
    conn: &mut Connection,
    new: &NewTask<'_>,
    now_ms: i64,
) -> Result<(Submitted, i64), StoreError> {
    let op = "submitting a task";
    let NewTask {
        project,
        group,
        script,
        key,
        ..
    } = *new;
    let timeout = i64::try_from(new.timeout_secs).unwrap_or(i64::MAX);
    // Immediate: the key's check and the insert hold the write lock together, also against
    // another process on the same file.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(op))?;
    let (gid, _) = group_of(&tx, project, group)?;
    if let Some(key) = key {
        let earlier: Option<(i64, String, i64)> = tx
            .query_row(
                "SELECT id, script, timeout_secs FROM tasks
                 WHERE group_id = ?1 AND idempotency_key = ?2",
                params![gid, key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql(op))?;
        if let Some((id, earlier_script, earlier_timeout)) = earlier {
            same_submit(
                key,
                id,
                (&earlier_script, earlier_timeout),
                (script, timeout),
            )?;
            let t = task(&tx, id)?.ok_or_else(|| not_found(id))?;
            let found = Submitted {
                task: t,
                created: false,
            };
            return Ok((found, gid));
        }
    }
    let has_servers: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM servers WHERE group_id = ?1)",
            params![gid],
            |r| r.get(0),
        )
        .map_err(sql(op))?;
    if !has_servers {
        return Err(no_servers(project, group));
    }
    tx.execute(
        "INSERT INTO tasks (group_id, script, timeout_secs, state, submitted_ms, idempotency_key)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
        params![gid, script, timeout, now_ms, key],
    )
    .map_err(sql(op))?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO audit_log (at_ms, actor, action, object, project)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            now_ms,
            new.actor,
            SUBMIT_AUDIT_ACTION,
            submit_audit_object(id, group),
            project
        ],
    )
    .map_err(sql(op))?;
    let t = task(&tx, id)?.ok_or_else(|| not_found(id))?;
    tx.commit().map_err(sql(op))?;
    let made = Submitted {
        task: t,
        created: true,
    };
    Ok((made, gid))
}

fn list(conn: &Connection, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {TASK_COLUMNS}
             WHERE (?1 IS NULL OR p.name = ?1) AND (?2 IS NULL OR g.name = ?2)
               AND (?3 IS NULL OR t.state = ?3)
             ORDER BY t.id DESC LIMIT ?4"
        ))
        .map_err(sql("listing tasks"))?;
    let rows = stmt
        .query_map(
            params![f.project, f.group, f.state.map(TaskState::as_str), f.limit],
            task_from_row,
        )
        .map_err(sql("listing tasks"))?;
    rows.collect::<Result<_, _>>().map_err(sql("listing tasks"))
}

/// Cancels task `id`; returns it and the server that held it (whose agent must hear).
fn cancel(conn: &mut Connection, id: i64, now_ms: i64) -> Result<(Task, Option<i64>), StoreError> {
    let tx = conn.transaction().map_err(sql("cancelling a task"))?;
    let t = task(&tx, id)?.ok_or_else(|| not_found(id))?;
    let holder: Option<i64> = tx
        .query_row("SELECT server_id FROM tasks WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .map_err(sql("cancelling a task"))?;
    match t.state {
        // Never started: nothing runs, so it ends here. An agent that was handed an assigned
        // task has its start refused.
        TaskState::Queued | TaskState::Assigned => {
            tx.execute(
                "UPDATE tasks SET state = 'cancelled', finished_ms = ?2, cancel_requested = 1,
                        reason = 'cancelled before it started'
                 WHERE id = ?1",
                params![id, now_ms],
            )
            .map_err(sql("cancelling a task"))?;
        }
        TaskState::Running => {
            tx.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?1", [id])
                .map_err(sql("cancelling a task"))?;
        }
        state => {
            return Err(StoreError::TaskIs {
                id,
                state,
                what: "there is nothing to cancel",
            });
        }
    }
    let t = task(&tx, id)?.ok_or_else(|| not_found(id))?;
    tx.commit().map_err(sql("cancelling a task"))?;
    Ok((t, holder))
}

fn lease_of(tx: &Transaction<'_>, id: i64) -> Result<Option<LeaseRow>, StoreError> {
    tx.query_row(
        "SELECT server_id, lease, state FROM tasks WHERE id = ?1",
        [id],
        |r| {
            let state: String = r.get(2)?;
            Ok(LeaseRow {
                server_id: r.get(0)?,
                lease: r.get(1)?,
                state: state_of(&state)?,
            })
        },
    )
    .optional()
    .map_err(sql("checking a task's lease"))
}

fn start(
    conn: &mut Connection,
    server_id: i64,
    id: i64,
    lease: i64,
    at_ms: i64,
) -> Result<Fenced, StoreError> {
    let tx = conn.transaction().map_err(sql("starting a task"))?;
    let row = lease_of(&tx, id)?;
    if let Some(why) = fence(id, row.as_ref(), server_id, lease) {
        return Ok(Fenced::Refused(why));
    }
    let answer = match row.map(|r| r.state) {
        Some(TaskState::Assigned) => {
            tx.execute(
                "UPDATE tasks SET state = 'running', started_ms = ?2 WHERE id = ?1",
                params![id, at_ms],
            )
            .map_err(sql("starting a task"))?;
            Fenced::Accepted
        }
        // The agent asks again when it did not hear the first answer.
        Some(TaskState::Running) => Fenced::Accepted,
        Some(state) => Fenced::Refused(format!("task {id} is {state}; it must not start")),
        None => Fenced::Refused(format!("there is no task {id}")),
    };
    tx.commit().map_err(sql("starting a task"))?;
    Ok(answer)
}

fn finish(
    conn: &mut Connection,
    server_id: i64,
    id: i64,
    report: &FinishTask,
) -> Result<Fenced, StoreError> {
    let tx = conn.transaction().map_err(sql("finishing a task"))?;
    let row = lease_of(&tx, id)?;
    if let Some(why) = fence(id, row.as_ref(), server_id, report.lease) {
        return Ok(Fenced::Refused(why));
    }
    let Some(f) = row.and_then(|r| finished(r.state, report)) else {
        // Already recorded: the agent did not hear the first answer.
        return Ok(Fenced::Accepted);
    };
    tx.execute(
        "UPDATE tasks SET state = ?2, reason = ?3, started_ms = COALESCE(?4, started_ms),
                finished_ms = ?5, exit_code = ?6, signal = ?7, log_bytes = ?8
         WHERE id = ?1",
        params![
            id,
            f.state.as_str(),
            f.reason,
            report.started_ms,
            report.finished_ms,
            f.exit_code,
            f.signal,
            f.log_bytes,
        ],
    )
    .map_err(sql("finishing a task"))?;
    tx.commit().map_err(sql("finishing a task"))?;
    Ok(Fenced::Accepted)
}

/// A start or finish by node `node_id`, fenced by `step` under the node's server: the server
/// when it was accepted. One console, one connection: the lookup costs no round trip.
fn as_node(
    conn: &mut Connection,
    node_id: &str,
    step: impl FnOnce(&mut Connection, i64) -> Result<Fenced, StoreError>,
) -> Result<Option<ReportedBy>, StoreError> {
    let Some(Server {
        id,
        name,
        draining_ms,
        ..
    }) = server_by_node(conn, node_id)?
    else {
        return Ok(None);
    };
    Ok(match step(conn, id)? {
        Fenced::Accepted => Some(ReportedBy {
            server_id: id,
            server: name,
            draining: draining_ms.is_some(),
        }),
        Fenced::Refused(_) => None,
    })
}

fn holds_lease(conn: &Connection, server_id: i64, id: i64, lease: i64) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM tasks WHERE id = ?1 AND server_id = ?2 AND lease = ?3",
        params![id, server_id, lease],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(sql("checking a task's lease"))
}

fn server_task_ids(conn: &Connection, server_id: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM tasks WHERE server_id = ?1")
        .map_err(sql("listing a server's tasks"))?;
    let rows = stmt
        .query_map([server_id], |r| r.get(0))
        .map_err(sql("listing a server's tasks"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("listing a server's tasks"))
}

fn busy_servers(conn: &Connection) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT DISTINCT server_id FROM tasks WHERE state IN {ACTIVE} AND server_id IS NOT NULL"
        ))
        .map_err(sql("listing busy servers"))?;
    let rows = stmt
        .query_map([], |r| r.get(0))
        .map_err(sql("listing busy servers"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("listing busy servers"))
}

/// Tasks per group and state, for the metrics.
const TASK_COUNTS: &str = "SELECT p.name, g.name, t.state, COUNT(*)
     FROM tasks t JOIN resource_groups g ON g.id = t.group_id JOIN projects p ON p.id = g.project_id
     GROUP BY p.name, g.name, t.state ORDER BY p.name, g.name, t.state";

fn task_counts(conn: &Connection) -> Result<Vec<TaskCount>, StoreError> {
    let mut stmt = conn
        .prepare_cached(TASK_COUNTS)
        .map_err(sql("counting tasks"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TaskCount {
                project: r.get(0)?,
                group: r.get(1)?,
                state: state_of(&r.get::<_, String>(2)?)?,
                count: r.get(3)?,
            })
        })
        .map_err(sql("counting tasks"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("counting tasks"))
}

fn abandon(
    conn: &mut Connection,
    server_id: i64,
    reason: &str,
    now_ms: i64,
) -> Result<(Reconciled, Vec<i64>), StoreError> {
    let tx = conn
        .transaction()
        .map_err(sql("abandoning a server's tasks"))?;
    let mut out = Reconciled::default();
    let mut groups = Vec::new();
    let requeue = format!("{reason} before starting it; queued again");
    let lost =
        format!("{reason} while it ran; it may or may not have finished, and it is not run again");
    for a in active_of(&tx, server_id)? {
        let_go(&tx, &a, &requeue, &lost, now_ms, &mut out, &mut groups)?;
    }
    tx.commit().map_err(sql("abandoning a server's tasks"))?;
    Ok((out, groups))
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn submit_task_once(
        &self,
        t: &NewTask<'_>,
        now_ms: i64,
    ) -> Result<Submitted, StoreError> {
        let (project, group, script) = (
            t.project.to_owned(),
            t.group.to_owned(),
            t.script.to_owned(),
        );
        let (key, actor) = (t.key.map(str::to_owned), t.actor.to_owned());
        let timeout_secs = t.timeout_secs;
        let (submitted, group) = self
            .call(move |conn| {
                let t = NewTask {
                    project: &project,
                    group: &group,
                    script: &script,
                    timeout_secs,
                    key: key.as_deref(),
                    actor: &actor,
                };
                submit(conn, &t, now_ms)
            })
            .await?;
        if submitted.created {
            self.wakes.send(Wake::Work { group, tasks: 1 });
        }
        Ok(submitted)
    }

    async fn task(&self, id: i64) -> Result<Option<Task>, StoreError> {
        self.call(move |conn| task(conn, id)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let filter = filter.clone();
        self.call(move |conn| list(conn, &filter)).await
    }

    async fn cancel_task(&self, id: i64, now_ms: i64) -> Result<Task, StoreError> {
        let (t, holder) = self.call(move |conn| cancel(conn, id, now_ms)).await?;
        if let Some(server) = holder {
            self.wakes.send(Wake::Server { server });
        }
        Ok(t)
    }

    async fn reconcile(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError> {
        let (out, groups) = self
            .call(move |conn| reconcile(conn, server_id, &held, now_ms))
            .await?;
        for w in requeued(&groups) {
            self.wakes.send(w);
        }
        Ok(out)
    }

    async fn assign(
        &self,
        server_id: i64,
        max_concurrency: u32,
        now_ms: i64,
    ) -> Result<Assigned, StoreError> {
        self.call(move |conn| assign(conn, server_id, max_concurrency, now_ms))
            .await
    }

    async fn look(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        take: Option<u32>,
        now_ms: i64,
    ) -> Result<(Reconciled, Assigned), StoreError> {
        // One trip to the store's thread; each step its own transaction, as apart.
        let (out, groups, assigned) = self
            .call(move |conn| {
                let (out, groups) = reconcile(conn, server_id, &held, now_ms)?;
                let assigned = match take {
                    Some(max) => assign(conn, server_id, max, now_ms)?,
                    None => Assigned::default(),
                };
                Ok((out, groups, assigned))
            })
            .await?;
        for w in requeued(&groups) {
            self.wakes.send(w);
        }
        Ok((out, assigned))
    }

    async fn start_task(
        &self,
        server_id: i64,
        id: i64,
        lease: i64,
        at_ms: i64,
        _now_ms: i64,
    ) -> Result<Fenced, StoreError> {
        self.call(move |conn| start(conn, server_id, id, lease, at_ms))
            .await
    }

    async fn finish_task(
        &self,
        server_id: i64,
        id: i64,
        report: FinishTask,
        _now_ms: i64,
    ) -> Result<Fenced, StoreError> {
        let answer = self
            .call(move |conn| finish(conn, server_id, id, &report))
            .await?;
        if answer == Fenced::Accepted {
            self.wakes.send(Wake::Slot { server: server_id });
        }
        Ok(answer)
    }

    async fn start_as_node(
        &self,
        node_id: &str,
        id: i64,
        lease: i64,
        at_ms: i64,
        _now_ms: i64,
    ) -> Result<Option<ReportedBy>, StoreError> {
        let node_id = node_id.to_owned();
        self.call(move |conn| {
            as_node(conn, &node_id, |conn, server| {
                start(conn, server, id, lease, at_ms)
            })
        })
        .await
    }

    async fn finish_as_node(
        &self,
        node_id: &str,
        id: i64,
        report: &FinishTask,
        _now_ms: i64,
    ) -> Result<Option<ReportedBy>, StoreError> {
        let (node_id, report) = (node_id.to_owned(), report.clone());
        let by = self
            .call(move |conn| {
                as_node(conn, &node_id, |conn, server| {
                    finish(conn, server, id, &report)
                })
            })
            .await?;
        if let Some(by) = &by {
            self.wakes.send(Wake::Slot {
                server: by.server_id,
            });
        }
        Ok(by)
    }

    async fn holds_lease(&self, server_id: i64, id: i64, lease: i64) -> Result<bool, StoreError> {
        self.call(move |conn| holds_lease(conn, server_id, id, lease))
            .await
    }

    async fn server_task_ids(&self, server_id: i64) -> Result<Vec<i64>, StoreError> {
        self.call(move |conn| server_task_ids(conn, server_id))
            .await
    }

    async fn busy_servers(&self) -> Result<Vec<i64>, StoreError> {
        self.call(|conn| busy_servers(conn)).await
    }

    async fn task_counts(&self) -> Result<Vec<TaskCount>, StoreError> {
        self.call(|conn| task_counts(conn)).await
    }

    async fn abandon_server_tasks(
        &self,
        server_id: i64,
        reason: &str,
        now_ms: i64,
        fence: Option<&crate::store::Fence>,
    ) -> Result<Reconciled, StoreError> {
        let (reason, fence) = (reason.to_owned(), fence.cloned());
        let (out, groups) = self
            .call(move |conn| {
                if let Some(f) = &fence
                    && !super::leases::holds(conn, f, now_ms)?
                {
                    return Ok((Reconciled::default(), Vec::new()));
                }
                abandon(conn, server_id, &reason, now_ms)
            })
            .await?;
        for w in requeued(&groups) {
            self.wakes.send(w);
        }
        Ok(out)
    }
}
