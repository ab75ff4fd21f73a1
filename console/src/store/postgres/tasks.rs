//! Tasks in the shared store. Consoles compete for the same rows, so every check that a write
//! depends on reads under a row lock: a start or finish locks its task (the lease it checks
//! cannot change before it writes), an assignment locks the server (its free slots) and takes
//! queued tasks with `FOR UPDATE SKIP LOCKED` (a task another console is handing out is
//! skipped, never handed out twice). A change that makes work or news for an agent sends its
//! wake-up to this console's polls once it commits (see `store/wakes.rs`).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tasknode_protocol::tasks::{FinishTask, HeldTask, TaskState};
use tokio_postgres::Row;

use super::{Cached, PostgresStore, col, db, group_of, look, to_i64};
use crate::store::tasks::{LeaseRow, fence, finished};
use crate::store::wakes::requeued;
use crate::store::{
    Assigned, Fenced, NewTask, Reconciled, ReportedBy, SUBMIT_AUDIT_ACTION, StoreError, Submitted,
    Task, TaskCount, TaskFilter, TaskStore, Wake, no_servers, same_submit,
};

pub(super) const ACTIVE: &str = "('assigned', 'running')";

const TASK_COLUMNS: &str =
    "t.id, p.name, g.name, t.state, t.reason, COALESCE(s.name, t.server_name), t.timeout_secs,
     t.submitted_ms, t.assigned_ms, t.started_ms, t.finished_ms, t.exit_code, t.signal,
     t.log_bytes, t.lease, t.cancel_requested
     FROM tasks t JOIN resource_groups g ON g.id = t.group_id JOIN projects p ON p.id = g.project_id
     LEFT JOIN servers s ON s.id = t.server_id";

pub(super) fn state_of(s: &str) -> Result<TaskState, StoreError> {
    // The CHECK constraint admits only known states.
    TaskState::parse(s).ok_or_else(|| StoreError::Database {
        op: "reading a task",
        source: format!("unknown task state {s:?}").into(),
    })
}

fn task_from_row(r: &Row) -> Result<Task, StoreError> {
    let state: String = col(r, 3)?;
    Ok(Task {
        id: col(r, 0)?,
        project: col(r, 1)?,
        group: col(r, 2)?,
        state: state_of(&state)?,
        reason: col(r, 4)?,
        server: col(r, 5)?,
        timeout_secs: col::<i64>(r, 6)?.max(0) as u64,
        submitted_ms: col(r, 7)?,
        assigned_ms: col(r, 8)?,
        started_ms: col(r, 9)?,
        finished_ms: col(r, 10)?,
        exit_code: col(r, 11)?,
        signal: col(r, 12)?,
        log_bytes: col::<Option<i64>>(r, 13)?.map(|b| b.max(0) as u64),
        lease: col(r, 14)?,
        cancel_requested: col(r, 15)?,
    })
}

async fn task(c: &impl GenericClient, id: i64) -> Result<Option<Task>, StoreError> {
    c.q_opt(&format!("SELECT {TASK_COLUMNS} WHERE t.id = $1"), &[&id])
        .await
        .map_err(db("looking up a task"))?
        .map(|r| task_from_row(&r))
        .transpose()
}

fn not_found(id: i64) -> StoreError {
    StoreError::NotFound {
        kind: "task",
        name: id.to_string(),
    }
}

async fn lease_of(c: &impl GenericClient, id: i64) -> Result<Option<LeaseRow>, StoreError> {
    let row = c
        .q_opt(
            "SELECT server_id, lease, state FROM tasks WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db("checking a task's lease"))?;
    let Some(r) = row else { return Ok(None) };
    let state: String = col(&r, 2)?;
    Ok(Some(LeaseRow {
        server_id: col(&r, 0)?,
        lease: col(&r, 1)?,
        state: state_of(&state)?,
    }))
}

fn ids(rows: &[Row]) -> Result<Vec<i64>, StoreError> {
    rows.iter().map(|r| col(r, 0)).collect()
}

#[async_trait]
impl TaskStore for PostgresStore {
    async fn submit_task_once(
        &self,
        new: &NewTask<'_>,
        now_ms: i64,
    ) -> Result<Submitted, StoreError> {
        let op = "submitting a task";
        let NewTask {
            project,
            group,
            script,
            key,
            actor,
            ..
        } = *new;
        let timeout = to_i64(new.timeout_secs);
        let c = self.client().await?;
        // Twice at most: a group made, or a keyed task removed, between the statements below
        // sends the submit round again.
        for _ in 0..2 {
            // The usual case in one statement, with its audit entry (the object as
            // `submit_audit_object` writes it), the task read back as `task` reads it (the
            // names matched are the ones given). No row: the project or group is missing, it
            // has no servers, or the key names a task already (the insert waited for the
            // submit that made it). The group's first server is looked for by a range of the
            // `(group_id, id)` index that only that index can answer in order: given
            // `group_id = g.id ORDER BY id` (or EXISTS), the planner may expect a match near the
            // start of the table and walk it by id instead, which took 0.6 to 0.8 s a submit at
            // 100,000 servers when the group's were the newest.
            let row = c
                .q_opt(
                    "WITH g AS (
                         SELECT g.id FROM resource_groups g
                         JOIN projects p ON p.id = g.project_id
                         WHERE p.name = $1 AND g.name = $2
                           AND (SELECT s.id FROM servers s
                                WHERE (s.group_id, s.id) > (g.id, 0) AND s.group_id <= g.id
                                ORDER BY s.group_id, s.id LIMIT 1) IS NOT NULL)
                     , t AS (
                         INSERT INTO tasks (group_id, script, timeout_secs, state, submitted_ms,
                                            idempotency_key)
                         SELECT g.id, $3, $4, 'queued', $5, $6 FROM g
                         ON CONFLICT (group_id, idempotency_key)
                             WHERE idempotency_key IS NOT NULL DO NOTHING
                         RETURNING *)
                     , a AS (
                         INSERT INTO audit_log (at_ms, actor, action, object, project)
                         SELECT $5, $7, $8, format('task %s in group %s', t.id, $2::text), $1
                         FROM t)
                     SELECT id, $1::text, $2::text, state, reason, server_name, timeout_secs,
                            submitted_ms, assigned_ms, started_ms, finished_ms, exit_code,
                            signal, log_bytes, lease, cancel_requested, group_id
                     FROM t",
                    &[
                        &project,
                        &group,
                        &script,
                        &timeout,
                        &now_ms,
                        &key,
                        &actor,
                        &SUBMIT_AUDIT_ACTION,
                    ],
                )
                .await
                .map_err(db(op))?;
            if let Some(row) = row {
                let t = task_from_row(&row)?;
                self.woke(&[Wake::Work {
                    group: col(&row, 16)?,
                    tasks: 1,
                }]);
                return Ok(Submitted {
                    task: t,
                    created: true,
                });
            }
            let (gid, _) = group_of(&c, project, group).await?;
            let earlier = match key {
                Some(key) => c
                    .q_opt(
                        "SELECT id, script, timeout_secs FROM tasks
                         WHERE group_id = $1 AND idempotency_key = $2",
                        &[&gid, &key],
                    )
                    .await
                    .map_err(db(op))?,
                None => None,
            };
            let (Some(key), Some(row)) = (key, earlier) else {
                let has_servers = c
                    .q_opt(
                        // The same range as the submit's (see there).
                        "SELECT 1 FROM servers s WHERE (s.group_id, s.id) > ($1, 0)
                           AND s.group_id <= $1 ORDER BY s.group_id, s.id LIMIT 1",
                        &[&gid],
                    )
                    .await
                    .map_err(db(op))?
                    .is_some();
                if !has_servers {
                    return Err(no_servers(project, group));
                }
                continue;
            };
            let id: i64 = col(&row, 0)?;
            let (earlier_script, earlier_timeout): (String, i64) = (col(&row, 1)?, col(&row, 2)?);
            same_submit(
                key,
                id,
                (&earlier_script, earlier_timeout),
                (script, timeout),
            )?;
            let t = task(&c, id).await?.ok_or_else(|| not_found(id))?;
            return Ok(Submitted {
                task: t,
                created: false,
            });
        }
        Err(StoreError::Conflict {
            field: "group",
            message: format!(
                "group {group} changed twice while this task was being submitted; submit it again"
            ),
        })
    }

    async fn task(&self, id: i64) -> Result<Option<Task>, StoreError> {
        let c = self.client().await?;
        task(&c, id).await
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .q(
                &format!(
                    "SELECT {TASK_COLUMNS}
                     WHERE ($1::text IS NULL OR p.name = $1) AND ($2::text IS NULL OR g.name = $2)
                       AND ($3::text IS NULL OR t.state = $3)
                     ORDER BY t.id DESC LIMIT $4"
                ),
                &[
                    &f.project,
                    &f.group,
                    &f.state.map(TaskState::as_str),
                    &i64::from(f.limit),
                ],
            )
            .await
            .map_err(db("listing tasks"))?;
        rows.iter().map(task_from_row).collect()
    }

    async fn cancel_task(&self, id: i64, now_ms: i64) -> Result<Task, StoreError> {
        let op = "cancelling a task";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let row = lease_of(&tx, id).await?.ok_or_else(|| not_found(id))?;
        let state = row.state;
        // The agent holding it must hear (and its slot may be free).
        let wakes: Vec<Wake> = match (state, row.server_id) {
            (TaskState::Assigned | TaskState::Running, Some(server)) => {
                vec![Wake::Server { server }]
            }
            _ => Vec::new(),
        };
        match state {
            // Never started: nothing runs, so it ends here. An agent that was handed an
            // assigned task has its start refused.
            TaskState::Queued | TaskState::Assigned => {
                tx.exec(
                    "UPDATE tasks SET state = 'cancelled', finished_ms = $2, cancel_requested = TRUE,
                            reason = 'cancelled before it started'
                     WHERE id = $1",
                    &[&id, &now_ms],
                )
                .await
                .map_err(db(op))?;
            }
            TaskState::Running => {
                tx.exec(
                    "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(db(op))?;
            }
            state => {
                return Err(StoreError::TaskIs {
                    id,
                    state,
                    what: "there is nothing to cancel",
                });
            }
        }
        let t = task(&tx, id).await?.ok_or_else(|| not_found(id))?;
        tx.commit().await.map_err(db(op))?;
        self.woke(&wakes);
        Ok(t)
    }

    async fn reconcile(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError> {
        // A look that takes nothing: the same steps as a poll's, in one place.
        let (out, _) = self.look(server_id, held, None, now_ms).await?;
        Ok(out)
    }

    async fn assign(
        &self,
        server_id: i64,
        max_concurrency: u32,
        now_ms: i64,
    ) -> Result<Assigned, StoreError> {
        let op = "assigning tasks";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let Some(server) = look::lock_server(&tx, server_id).await? else {
            return Ok(Assigned::default());
        };
        let active = look::active_count(&tx, server_id).await?;
        let assigned = look::assign(&tx, &server, max_concurrency, active, now_ms).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(assigned)
    }

    async fn look(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        take: Option<u32>,
        now_ms: i64,
    ) -> Result<(Reconciled, Assigned), StoreError> {
        let c = self.client().await?;
        let (out, assigned, groups) = look::in_one(&c, server_id, &held, take, now_ms).await?;
        self.woke(&requeued(&groups));
        Ok((out, assigned))
    }

    async fn start_as_node(
        &self,
        node_id: &str,
        id: i64,
        lease: i64,
        at_ms: i64,
        _now_ms: i64,
    ) -> Result<Option<ReportedBy>, StoreError> {
        let c = self.client().await?;
        // The node's server is joined, not looked up first: a round trip less on each of the
        // two calls every task brings.
        c.q_opt(
            "UPDATE tasks t SET state = 'running', started_ms = $2
             FROM servers s
             WHERE t.id = $1 AND s.node_id = $3 AND t.server_id = s.id AND t.lease = $4
               AND t.state = 'assigned'
             RETURNING s.id, s.name, s.draining_ms IS NOT NULL",
            &[&id, &at_ms, &node_id, &lease],
        )
        .await
        .map_err(db("starting a task"))?
        .map(|r| reported_by(&r))
        .transpose()
    }

    async fn finish_as_node(
        &self,
        node_id: &str,
        id: i64,
        report: &FinishTask,
        _now_ms: i64,
    ) -> Result<Option<ReportedBy>, StoreError> {
        // Assigned or running, both finish alike.
        let Some(f) = finished(TaskState::Running, report) else {
            return Ok(None);
        };
        let c = self.client().await?;
        let by = c
            .q_opt(
                "UPDATE tasks t SET state = $2, reason = $3,
                        started_ms = COALESCE($4, t.started_ms), finished_ms = $5,
                        exit_code = $6, signal = $7, log_bytes = $8
                 FROM servers s
                 WHERE t.id = $1 AND s.node_id = $9 AND t.server_id = s.id AND t.lease = $10
                   AND t.state IN ('assigned', 'running')
                 RETURNING s.id, s.name, s.draining_ms IS NOT NULL",
                &[
                    &id,
                    &f.state.as_str(),
                    &f.reason,
                    &report.started_ms,
                    &report.finished_ms,
                    &f.exit_code,
                    &f.signal,
                    &f.log_bytes,
                    &node_id,
                    &report.lease,
                ],
            )
            .await
            .map_err(db("finishing a task"))?
            .map(|r| reported_by(&r))
            .transpose()?;
        if let Some(by) = &by {
            self.woke(&[Wake::Slot {
                server: by.server_id,
            }]);
        }
        Ok(by)
    }

    async fn start_task(
        &self,
        server_id: i64,
        id: i64,
        lease: i64,
        at_ms: i64,
        _now_ms: i64,
    ) -> Result<Fenced, StoreError> {
        let op = "starting a task";
        let mut c = self.client().await?;
        // The usual start came by start_as_node; this one is answered under the row lock.
        let tx = c.transaction().await.map_err(db(op))?;
        let row = lease_of(&tx, id).await?;
        if let Some(why) = fence(id, row.as_ref(), server_id, lease) {
            return Ok(Fenced::Refused(why));
        }
        let answer = match row.map(|r| r.state) {
            Some(TaskState::Assigned) => {
                tx.exec(
                    "UPDATE tasks SET state = 'running', started_ms = $2 WHERE id = $1",
                    &[&id, &at_ms],
                )
                .await
                .map_err(db(op))?;
                Fenced::Accepted
            }
            // The agent asks again when it did not hear the first answer.
            Some(TaskState::Running) => Fenced::Accepted,
            Some(state) => Fenced::Refused(format!("task {id} is {state}; it must not start")),
            None => Fenced::Refused(format!("there is no task {id}")),
        };
        tx.commit().await.map_err(db(op))?;
        Ok(answer)
    }

    async fn finish_task(
        &self,
        server_id: i64,
        id: i64,
        report: FinishTask,
        _now_ms: i64,
    ) -> Result<Fenced, StoreError> {
        let op = "finishing a task";
        let mut c = self.client().await?;
        // A slot of the server is free.
        let wakes = [Wake::Slot { server: server_id }];
        // The usual finish came by finish_as_node; this one is answered under the row lock.
        let tx = c.transaction().await.map_err(db(op))?;
        let row = lease_of(&tx, id).await?;
        if let Some(why) = fence(id, row.as_ref(), server_id, report.lease) {
            return Ok(Fenced::Refused(why));
        }
        let Some(f) = row.and_then(|r| finished(r.state, &report)) else {
            // Already recorded: the agent did not hear the first answer.
            return Ok(Fenced::Accepted);
        };
        tx.exec(
            "UPDATE tasks SET state = $2, reason = $3, started_ms = COALESCE($4, started_ms),
                    finished_ms = $5, exit_code = $6, signal = $7, log_bytes = $8
             WHERE id = $1",
            &[
                &id,
                &f.state.as_str(),
                &f.reason,
                &report.started_ms,
                &report.finished_ms,
                &f.exit_code,
                &f.signal,
                &f.log_bytes,
            ],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        self.woke(&wakes);
        Ok(Fenced::Accepted)
    }

    async fn holds_lease(&self, server_id: i64, id: i64, lease: i64) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let r = c
            .q_one(
                "SELECT COUNT(*) FROM tasks WHERE id = $1 AND server_id = $2 AND lease = $3",
                &[&id, &server_id, &lease],
            )
            .await
            .map_err(db("checking a task's lease"))?;
        Ok(col::<i64>(&r, 0)? > 0)
    }

    async fn server_task_ids(&self, server_id: i64) -> Result<Vec<i64>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .q(
                "SELECT id FROM tasks WHERE server_id = $1 ORDER BY id",
                &[&server_id],
            )
            .await
            .map_err(db("listing a server's tasks"))?;
        ids(&rows)
    }

    async fn task_counts(&self) -> Result<Vec<TaskCount>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT p.name, g.name, t.state, COUNT(*)
     FROM tasks t JOIN resource_groups g ON g.id = t.group_id JOIN projects p ON p.id = g.project_id
     GROUP BY p.name, g.name, t.state ORDER BY p.name, g.name, t.state",
                &[],
            )
            .await
            .map_err(db("counting tasks"))?;
        rows.iter()
            .map(|r| {
                Ok(TaskCount {
                    project: col(r, 0)?,
                    group: col(r, 1)?,
                    state: state_of(&col::<String>(r, 2)?)?,
                    count: col(r, 3)?,
                })
            })
            .collect()
    }

    async fn busy_servers(&self) -> Result<Vec<i64>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .q(
                &format!(
                    "SELECT DISTINCT server_id FROM tasks
                     WHERE state IN {ACTIVE} AND server_id IS NOT NULL ORDER BY server_id"
                ),
                &[],
            )
            .await
            .map_err(db("listing busy servers"))?;
        ids(&rows)
    }

    async fn abandon_server_tasks(
        &self,
        server_id: i64,
        reason: &str,
        now_ms: i64,
        fence: Option<&crate::store::Fence>,
    ) -> Result<Reconciled, StoreError> {
        let op = "abandoning a server's tasks";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        if let Some(f) = fence
            && !super::leases::holds(&*tx, f, now_ms).await?
        {
            return Ok(Reconciled::default());
        }
        let mut out = Reconciled::default();
        let mut groups = Vec::new();
        let requeue = format!("{reason} before starting it; queued again");
        let lost = format!(
            "{reason} while it ran; it may or may not have finished, and it is not run again"
        );
        for a in look::active_of(&tx, server_id).await? {
            look::let_go(&tx, &a, &requeue, &lost, now_ms, &mut out, &mut groups).await?;
        }
        let wakes = requeued(&groups);
        tx.commit().await.map_err(db(op))?;
        self.woke(&wakes);
        Ok(out)
    }
}

/// The `RETURNING s.id, s.name, draining` of a start or finish by node.
fn reported_by(r: &Row) -> Result<ReportedBy, StoreError> {
    Ok(ReportedBy {
        server_id: col(r, 0)?,
        server: col(r, 1)?,
        draining: col(r, 2)?,
    })
}
