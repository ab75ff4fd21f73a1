//! Liveness in the shared store: a batch is one UPDATE joined to the batch's rows (`unnest` of
//! one array per column), so a batch of thousands of nodes is one round trip. Several consoles
//! write the same node when its agent moves between them: a write never moves a node's last
//! heartbeat back, so the newest heartbeat wins whichever console flushes last.
//!
//! The same statement adds a row to `node_changes` naming the servers it wrote, stamped with
//! its transaction id and its console, as each enrollment does. So a console's periodic load
//! reads the changes other consoles made in transactions its previous load could not see, then
//! those servers alone: about a refresh interval of the others' heartbeats, not every row.
//! Changes older than [`KEPT`] are deleted; a load whose previous one reaches back before the
//! newest deleted change reads every server instead.

use async_trait::async_trait;

use tokio_postgres::{Row, Transaction};

use super::{Cached, PostgresStore, col, db, parse_log_addr, snapshot, to_u32};
use crate::store::{
    ChangeCursor, Liveness, LivenessStore, LivenessUpdate, NodeChanges, NodeRecord, Stop,
    StoreError,
};

/// How long a change stays in `node_changes`: loads run every couple of seconds, so only a
/// console stalled for longer reads every server at its next load.
const KEPT: &str = "60 seconds";

const NODE_COLUMNS: &str = "id, node_id, secret_sha256, enroll_generation, agent_version,
     last_heartbeat_ms, clock_offset_ms, running_tasks, stopped_ms, stop_reason, log_addr FROM servers";

/// Has the transaction's statements priced as what they are: probes of rows in memory. Every
/// server a liveness batch or load reads was written within about a heartbeat interval. With
/// `random_page_cost` at its default, which prices each probe as a read from disk, PostgreSQL
/// hashed the whole servers table for a batch of 5,000 heartbeats (110 ms at 115,000 servers,
/// where 5,000 index probes take 40 ms).
async fn plan_for_memory(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute("SET LOCAL random_page_cost = 1.1").await
}

fn node_from_row(r: &Row) -> Result<NodeRecord, StoreError> {
    let stopped = match col::<Option<i64>>(r, 8)? {
        Some(at_ms) => Some(Stop {
            at_ms,
            reason: col::<Option<String>>(r, 9)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(NodeRecord {
        server_id: col(r, 0)?,
        node_id: col(r, 1)?,
        secret_sha256: col::<Option<String>>(r, 2)?.unwrap_or_default(),
        generation: u64::try_from(col::<i64>(r, 3)?).unwrap_or(0),
        liveness: Liveness {
            agent_version: col(r, 4)?,
            last_heartbeat_ms: col(r, 5)?,
            clock_offset_ms: col(r, 6)?,
            running_tasks: to_u32(col(r, 7)?),
            stopped,
            log_addr: parse_log_addr(col(r, 10)?),
        },
    })
}

#[async_trait]
impl LivenessStore for PostgresStore {
    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let node: Vec<&str> = batch.iter().map(|u| u.node_id.as_str()).collect();
        let version: Vec<Option<&str>> = batch
            .iter()
            .map(|u| u.liveness.agent_version.as_deref())
            .collect();
        let heartbeat: Vec<Option<i64>> =
            batch.iter().map(|u| u.liveness.last_heartbeat_ms).collect();
        let offset: Vec<Option<i64>> = batch.iter().map(|u| u.liveness.clock_offset_ms).collect();
        let running: Vec<i64> = batch
            .iter()
            .map(|u| i64::from(u.liveness.running_tasks))
            .collect();
        let stopped: Vec<Option<i64>> = batch
            .iter()
            .map(|u| u.liveness.stopped.as_ref().map(|s| s.at_ms))
            .collect();
        let reason: Vec<Option<&str>> = batch
            .iter()
            .map(|u| u.liveness.stopped.as_ref().map(|s| s.reason.as_str()))
            .collect();
        let log_addr: Vec<Option<String>> = batch
            .iter()
            .map(|u| u.liveness.log_addr.map(|a| a.to_string()))
            .collect();
        let op = "persisting liveness";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        plan_for_memory(&tx).await.map_err(db(op))?;
        tx.exec(
            "WITH written AS (
                 UPDATE servers s SET agent_version = u.version, last_heartbeat_ms = u.heartbeat,
                        clock_offset_ms = u.clock_offset, running_tasks = u.running,
                        stopped_ms = u.stopped, stop_reason = u.reason, log_addr = u.log_addr
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                             $6::bigint[], $7::text[], $9::text[])
                      AS u(node_id, version, heartbeat, clock_offset, running, stopped, reason,
                           log_addr)
                 WHERE s.node_id = u.node_id
                   AND coalesce(s.last_heartbeat_ms, 0) <= coalesce(u.heartbeat, 0)
                 RETURNING s.id)
             INSERT INTO node_changes (writer, server_ids)
             SELECT $8, array_agg(id) FROM written HAVING count(*) > 0",
            &[
                &node,
                &version,
                &heartbeat,
                &offset,
                &running,
                &stopped,
                &reason,
                &self.writer(),
                &log_addr,
            ],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))
    }

    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let c = self.client().await?;
        c.q_opt(
            &format!("SELECT {NODE_COLUMNS} WHERE node_id = $1"),
            &[&node_id],
        )
        .await
        .map_err(db("looking up a node"))?
        .map(|r| node_from_row(&r))
        .transpose()
    }

    async fn nodes_changed(&self, after: Option<ChangeCursor>) -> Result<NodeChanges, StoreError> {
        let op = "loading liveness";
        let mut c = self.client().await?;
        // The cursor, the pruning mark and the rows from one snapshot.
        let tx = snapshot(&mut c, op).await?;
        plan_for_memory(&tx).await.map_err(db(op))?;
        // Every transaction this load does not see has an id at or above the oldest one its
        // snapshot found running.
        let mark = tx
            .q_one(
                "SELECT txid_snapshot_xmin(txid_current_snapshot()),
                        (SELECT below FROM node_changes_pruned)",
                &[],
            )
            .await
            .map_err(db(op))?;
        let (next, below): (i64, i64) = (col(&mark, 0)?, col(&mark, 1)?);
        let rows = match after {
            // No change it needs was deleted: each has an id at or above `below`.
            Some(ChangeCursor(after)) if after >= below => tx
                .q(
                    &format!(
                        "SELECT {NODE_COLUMNS} WHERE node_id IS NOT NULL AND id IN (
                           SELECT unnest(server_ids) FROM node_changes
                           WHERE xid >= $1 AND writer IS DISTINCT FROM $2)"
                    ),
                    &[&after, &self.writer()],
                )
                .await
                .map_err(db(op))?,
            _ => tx
                .q(
                    &format!("SELECT {NODE_COLUMNS} WHERE node_id IS NOT NULL"),
                    &[],
                )
                .await
                .map_err(db(op))?,
        };
        tx.commit().await.map_err(db(op))?;
        let nodes = rows.iter().map(node_from_row).collect::<Result<_, _>>()?;
        // Consoles prune as they load; two at once delete each row once.
        c.exec(
            &format!(
                "WITH gone AS (DELETE FROM node_changes WHERE at < now() - interval '{KEPT}'
                               RETURNING xid)
                 UPDATE node_changes_pruned SET below = GREATEST(below, (SELECT max(xid) + 1 FROM gone))
                 WHERE EXISTS (SELECT 1 FROM gone)"
            ),
            &[],
        )
        .await
        .map_err(db("pruning liveness changes"))?;
        Ok(NodeChanges {
            nodes,
            next: ChangeCursor(next),
        })
    }
}
