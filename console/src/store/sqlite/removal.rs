//! Removing a server from its group and moving it to another, in the embedded store. A
//! removal is one transaction: what it finds decides it ([`crate::store::servers`]), and the
//! server row, its held tasks and its node's tombstone change together.

use rusqlite::{Connection, params};

use super::{group_of, project_id, server_named, sql};
use crate::store::servers::{RemovalFacts, Step, decide, forced_reason, requeued_reason};
use crate::store::{Removal, RemoveMode, RemovedNode, Server, StoreError};

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        kind: "server",
        name: name.to_owned(),
    }
}

fn ids(conn: &Connection, query: &str, id: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare(query).map_err(sql("removing a server"))?;
    stmt.query_map([id], |r| r.get::<_, i64>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sql("removing a server"))
}

/// Removes server `name` of `project` as `mode` says. Returns what it did and the groups whose
/// queue got tasks back (for their wake-ups).
pub(super) fn remove(
    conn: &mut Connection,
    project: &str,
    name: &str,
    mode: RemoveMode,
    now_ms: i64,
) -> Result<(Removal, Vec<i64>), StoreError> {
    let op = "removing a server";
    let tx = conn.transaction().map_err(sql(op))?;
    let server = server_named(&tx, project, name)?.ok_or_else(|| not_found(name))?;
    let facts = RemovalFacts {
        assigned: ids(
            &tx,
            "SELECT id FROM tasks WHERE server_id = ?1 AND state = 'assigned' ORDER BY id",
            server.id,
        )?,
        running: ids(
            &tx,
            "SELECT id FROM tasks WHERE server_id = ?1 AND state = 'running' ORDER BY id",
            server.id,
        )?,
        other_servers: tx
            .query_row(
                "SELECT COUNT(*) FROM servers WHERE group_id = ?1 AND id != ?2 AND draining_ms IS NULL",
                params![server.group_id, server.id],
                |r| r.get(0),
            )
            .map_err(sql(op))?,
        queued: tx
            .query_row(
                "SELECT COUNT(*) FROM tasks WHERE group_id = ?1 AND state = 'queued'",
                [server.group_id],
                |r| r.get(0),
            )
            .map_err(sql(op))?,
    };
    let stranded = match decide(&server, mode, &facts)? {
        Step::Drain(holding) => {
            tx.execute(
                "UPDATE servers SET draining_ms = COALESCE(draining_ms, ?2) WHERE id = ?1",
                params![server.id, now_ms],
            )
            .map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            let draining_ms = server.draining_ms.or(Some(now_ms));
            return Ok((
                Removal::Draining {
                    server: Server {
                        draining_ms,
                        ..server
                    },
                    holding,
                },
                Vec::new(),
            ));
        }
        Step::Remove { stranded } => stranded,
    };
    // Held tasks: those not started go back to the group's queue, running ones are cancelled.
    let mut groups = Vec::new();
    for id in &facts.assigned {
        let group: i64 = tx
            .query_row(
                "UPDATE tasks SET state = 'queued', server_id = NULL, assigned_ms = NULL, reason = ?2
                 WHERE id = ?1 RETURNING group_id",
                params![id, requeued_reason(&server.name)],
                |r| r.get(0),
            )
            .map_err(sql(op))?;
        groups.push(group);
    }
    tx.execute(
        "UPDATE tasks SET state = 'cancelled', cancel_requested = 1, finished_ms = ?2, reason = ?3
         WHERE server_id = ?1 AND state = 'running'",
        params![server.id, now_ms, forced_reason(&server.name)],
    )
    .map_err(sql(op))?;
    // Its tasks keep its name; the row goes (its rollout membership and update report by ON
    // DELETE CASCADE).
    tx.execute(
        "UPDATE tasks SET server_name = ?2, server_id = NULL WHERE server_id = ?1",
        params![server.id, server.name],
    )
    .map_err(sql(op))?;
    if let Some(e) = &server.enrollment {
        tx.execute(
            "INSERT INTO removed_nodes (node_id, secret_sha256, server_name, project_id, removed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                e.node_id,
                e.secret_sha256,
                server.name,
                project_id(&tx, project)?,
                now_ms
            ],
        )
        .map_err(sql(op))?;
    }
    tx.execute("DELETE FROM servers WHERE id = ?1", [server.id])
        .map_err(sql(op))?;
    tx.commit().map_err(sql(op))?;
    Ok((
        Removal::Removed {
            server,
            cancelled: facts.running,
            requeued: facts.assigned,
            stranded,
        },
        groups,
    ))
}

/// Moves server `name` of `project` to group `to` of the same project.
pub(super) fn move_to(
    conn: &mut Connection,
    project: &str,
    name: &str,
    to: &str,
) -> Result<Server, StoreError> {
    let op = "moving a server";
    let tx = conn.transaction().map_err(sql(op))?;
    let server = server_named(&tx, project, name)?.ok_or_else(|| not_found(name))?;
    let (gid, network) = group_of(&tx, project, to)?;
    let network = super::parse_network(&network);
    if let Some(refused) = crate::store::servers::refuse_move(&server, gid, to, network) {
        return Err(refused);
    }
    tx.execute(
        "UPDATE servers SET group_id = ?2 WHERE id = ?1",
        params![server.id, gid],
    )
    .map_err(sql(op))?;
    // It leaves its old group's rollout; its new group's admits it as it goes.
    tx.execute(
        "DELETE FROM rollout_members WHERE server_id = ?1",
        [server.id],
    )
    .map_err(sql(op))?;
    let moved = server_named(&tx, project, name)?.ok_or_else(|| not_found(name))?;
    tx.commit().map_err(sql(op))?;
    Ok(moved)
}

/// The removed nodes since `since_ms` (all without it), oldest first.
pub(super) fn removed_since(
    conn: &Connection,
    since_ms: Option<i64>,
) -> Result<Vec<RemovedNode>, StoreError> {
    let op = "reading removed nodes";
    let mut stmt = conn
        .prepare(
            "SELECT r.node_id, r.secret_sha256, r.server_name, p.name, r.removed_ms
             FROM removed_nodes r JOIN projects p ON p.id = r.project_id
             WHERE ?1 IS NULL OR r.removed_ms >= ?1
             ORDER BY r.removed_ms, r.node_id",
        )
        .map_err(sql(op))?;
    stmt.query_map([since_ms], |r| {
        Ok(RemovedNode {
            node_id: r.get(0)?,
            secret_sha256: r.get(1)?,
            server_name: r.get(2)?,
            project: r.get(3)?,
            removed_ms: r.get(4)?,
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(sql(op))
}
