//! Removing a server from its group and moving it to another, in the shared store. A removal
//! is one transaction that holds the server row's lock (an agent's assign takes it too, so no
//! console hands the server a task meanwhile) and its held tasks' locks (a start or finish
//! waits); what it finds decides it ([`crate::store::servers`]).

use tokio_postgres::GenericClient;

use super::{PostgresStore, col, db, group_of, parse_network, project_id, server_named};
use crate::store::servers::{RemovalFacts, Step, decide, forced_reason, requeued_reason};
use crate::store::wakes::requeued;
use crate::store::{Removal, RemoveMode, RemovedNode, Server, StoreError, Wake};

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        kind: "server",
        name: name.to_owned(),
    }
}

/// Server `name` of `project` with its row locked, or `NotFound`.
async fn locked(c: &impl GenericClient, project: &str, name: &str) -> Result<Server, StoreError> {
    let server = server_named(c, project, name)
        .await?
        .ok_or_else(|| not_found(name))?;
    let still = c
        .query_opt(
            "SELECT 1 FROM servers WHERE id = $1 FOR UPDATE",
            &[&server.id],
        )
        .await
        .map_err(db("locking a server"))?;
    if still.is_none() {
        return Err(not_found(name));
    }
    // Read again under the lock: another console may have changed it meanwhile.
    server_named(c, project, name)
        .await?
        .ok_or_else(|| not_found(name))
}

async fn held(c: &impl GenericClient, server_id: i64, state: &str) -> Result<Vec<i64>, StoreError> {
    c.query(
        "SELECT id FROM tasks WHERE server_id = $1 AND state = $2 ORDER BY id FOR UPDATE",
        &[&server_id, &state],
    )
    .await
    .map_err(db("removing a server"))?
    .iter()
    .map(|r| col(r, 0))
    .collect()
}

impl PostgresStore {
    pub(super) async fn remove(
        &self,
        project: &str,
        name: &str,
        mode: RemoveMode,
        now_ms: i64,
    ) -> Result<Removal, StoreError> {
        let op = "removing a server";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let server = locked(&*tx, project, name).await?;
        let count = |r: tokio_postgres::Row| col::<i64>(&r, 0);
        let facts = RemovalFacts {
            assigned: held(&*tx, server.id, "assigned").await?,
            running: held(&*tx, server.id, "running").await?,
            other_servers: count(
                tx.query_one(
                    "SELECT COUNT(*) FROM servers
                     WHERE group_id = $1 AND id != $2 AND draining_ms IS NULL",
                    &[&server.group_id, &server.id],
                )
                .await
                .map_err(db(op))?,
            )?,
            queued: count(
                tx.query_one(
                    "SELECT COUNT(*) FROM tasks WHERE group_id = $1 AND state = 'queued'",
                    &[&server.group_id],
                )
                .await
                .map_err(db(op))?,
            )?,
        };
        let stranded = match decide(&server, mode, &facts)? {
            Step::Drain(holding) => {
                tx.execute(
                    "UPDATE servers SET draining_ms = COALESCE(draining_ms, $2) WHERE id = $1",
                    &[&server.id, &now_ms],
                )
                .await
                .map_err(db(op))?;
                let wakes = [Wake::Server { server: server.id }];
                tx.commit().await.map_err(db(op))?;
                self.woke(&wakes);
                let draining_ms = server.draining_ms.or(Some(now_ms));
                return Ok(Removal::Draining {
                    server: Server {
                        draining_ms,
                        ..server
                    },
                    holding,
                });
            }
            Step::Remove { stranded } => stranded,
        };
        // Held tasks: those not started go back to the group's queue, running ones are
        // cancelled.
        let mut groups = Vec::new();
        for id in &facts.assigned {
            let row = tx
                .query_one(
                    "UPDATE tasks SET state = 'queued', server_id = NULL, assigned_ms = NULL, reason = $2
                     WHERE id = $1 RETURNING group_id",
                    &[id, &requeued_reason(&server.name)],
                )
                .await
                .map_err(db(op))?;
            groups.push(col::<i64>(&row, 0)?);
        }
        tx.execute(
            "UPDATE tasks SET state = 'cancelled', cancel_requested = TRUE, finished_ms = $2,
                    reason = $3
             WHERE server_id = $1 AND state = 'running'",
            &[&server.id, &now_ms, &forced_reason(&server.name)],
        )
        .await
        .map_err(db(op))?;
        // Its tasks keep its name; the row goes (its rollout membership and update report by
        // ON DELETE CASCADE).
        tx.execute(
            "UPDATE tasks SET server_name = $2, server_id = NULL WHERE server_id = $1",
            &[&server.id, &server.name],
        )
        .await
        .map_err(db(op))?;
        if let Some(e) = &server.enrollment {
            let pid = project_id(&tx, project).await?;
            tx.execute(
                "INSERT INTO removed_nodes (node_id, secret_sha256, server_name, project_id, removed_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&e.node_id, &e.secret_sha256, &server.name, &pid, &now_ms],
            )
            .await
            .map_err(db(op))?;
        }
        tx.execute("DELETE FROM servers WHERE id = $1", &[&server.id])
            .await
            .map_err(db(op))?;
        let mut wakes = requeued(&groups);
        wakes.push(Wake::Server { server: server.id });
        tx.commit().await.map_err(db(op))?;
        self.woke(&wakes);
        Ok(Removal::Removed {
            server,
            cancelled: facts.running,
            requeued: facts.assigned,
            stranded,
        })
    }

    pub(super) async fn move_to(
        &self,
        project: &str,
        name: &str,
        to: &str,
    ) -> Result<Server, StoreError> {
        let op = "moving a server";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let server = locked(&*tx, project, name).await?;
        let (gid, network) = group_of(&tx, project, to).await?;
        if let Some(refused) =
            crate::store::servers::refuse_move(&server, gid, to, parse_network(&network))
        {
            return Err(refused);
        }
        tx.execute(
            "UPDATE servers SET group_id = $2 WHERE id = $1",
            &[&server.id, &gid],
        )
        .await
        .map_err(db(op))?;
        // It leaves its old group's rollout; its new group's admits it as it goes.
        tx.execute(
            "DELETE FROM rollout_members WHERE server_id = $1",
            &[&server.id],
        )
        .await
        .map_err(db(op))?;
        let moved = server_named(&*tx, project, name)
            .await?
            .ok_or_else(|| not_found(name))?;
        let wakes = [Wake::Moved { server: moved.id }];
        tx.commit().await.map_err(db(op))?;
        self.woke(&wakes);
        Ok(moved)
    }

    pub(super) async fn removed_since(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<RemovedNode>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT r.node_id, r.secret_sha256, r.server_name, p.name, r.removed_ms
             FROM removed_nodes r JOIN projects p ON p.id = r.project_id
             WHERE $1::bigint IS NULL OR r.removed_ms >= $1
             ORDER BY r.removed_ms, r.node_id",
            &[&since_ms],
        )
        .await
        .map_err(db("reading removed nodes"))?
        .iter()
        .map(|r| {
            Ok(RemovedNode {
                node_id: col(r, 0)?,
                secret_sha256: col(r, 1)?,
                server_name: col(r, 2)?,
                project: col(r, 3)?,
                removed_ms: col(r, 4)?,
            })
        })
        .collect()
    }
}
