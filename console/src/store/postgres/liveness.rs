//! Liveness in the shared store: a batch is one UPDATE joined to the batch's rows (`unnest` of
//! one array per column), so a batch of thousands of nodes is one round trip. Several consoles
//! write the same node when its agent moves between them: a write never moves a node's last
//! heartbeat back, so the newest heartbeat wins whichever console flushes last.
//!
//! Each write stamps its rows with its transaction id and its console (`live_xid`,
//! `live_writer`), so a console's periodic load takes only what other consoles wrote since its
//! last one: about a refresh interval of the others' heartbeats, not every node seen lately.

use async_trait::async_trait;

use tokio_postgres::Row;

use super::{Cached, PostgresStore, col, db, parse_log_addr, to_u32};
use crate::store::{
    ChangeCursor, Liveness, LivenessStore, LivenessUpdate, NodeChanges, NodeRecord, Stop,
    StoreError,
};

const NODE_COLUMNS: &str = "id, node_id, secret_sha256, enroll_generation, agent_version,
     last_heartbeat_ms, clock_offset_ms, running_tasks, stopped_ms, stop_reason, log_addr FROM servers";

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
        let c = self.client().await?;
        c.exec(
            "UPDATE servers s SET agent_version = u.version, last_heartbeat_ms = u.heartbeat,
                    clock_offset_ms = u.clock_offset, running_tasks = u.running,
                    stopped_ms = u.stopped, stop_reason = u.reason, log_addr = u.log_addr,
                    live_xid = txid_current(), live_writer = $8
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::text[], $9::text[])
                  AS u(node_id, version, heartbeat, clock_offset, running, stopped, reason,
                       log_addr)
             WHERE s.node_id = u.node_id
               AND coalesce(s.last_heartbeat_ms, 0) <= coalesce(u.heartbeat, 0)",
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
        .map_err(db("persisting liveness"))?;
        Ok(())
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
        let c = self.client().await?;
        // Every transaction this load does not see has an id at or above the oldest one its
        // snapshot found running; taken before the load, it is at or below the load's own.
        let next: i64 = col(
            &c.q_one("SELECT txid_snapshot_xmin(txid_current_snapshot())", &[])
                .await
                .map_err(db(op))?,
            0,
        )?;
        let rows = match after {
            None => c
                .query(
                    &format!("SELECT {NODE_COLUMNS} WHERE node_id IS NOT NULL"),
                    &[],
                )
                .await
                .map_err(db(op))?,
            Some(ChangeCursor(after)) => c
                .q(
                    &format!(
                        "SELECT {NODE_COLUMNS} WHERE node_id IS NOT NULL AND live_xid >= $1
                           AND live_writer IS DISTINCT FROM $2"
                    ),
                    &[&after, &self.writer()],
                )
                .await
                .map_err(db(op))?,
        };
        Ok(NodeChanges {
            nodes: rows.iter().map(node_from_row).collect::<Result<_, _>>()?,
            next: ChangeCursor(next),
        })
    }
}
