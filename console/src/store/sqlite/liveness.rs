//! Liveness in the embedded store: one transaction per batch the liveness map hands over. A
//! write never moves a node's last heartbeat back (see the shared store's).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, sql};
use crate::store::{
    ChangeCursor, Liveness, LivenessStore, LivenessUpdate, NodeChanges, NodeRecord, Stop,
    StoreError,
};

const NODE_COLUMNS: &str = "id, node_id, secret_sha256, enroll_generation, agent_version,
     last_heartbeat_ms, clock_offset_ms, running_tasks, stopped_ms, stop_reason FROM servers";

fn node_from_row(r: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    let stopped = match r.get::<_, Option<i64>>(8)? {
        Some(at_ms) => Some(Stop {
            at_ms,
            reason: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(NodeRecord {
        server_id: r.get(0)?,
        node_id: r.get(1)?,
        secret_sha256: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        generation: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        liveness: Liveness {
            agent_version: r.get(4)?,
            last_heartbeat_ms: r.get(5)?,
            clock_offset_ms: r.get(6)?,
            running_tasks: r.get(7)?,
            stopped,
            // One console: the address lives in its memory only.
            log_addr: None,
        },
    })
}

#[async_trait]
impl LivenessStore for SqliteStore {
    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("persisting liveness"))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE servers SET agent_version = ?2, last_heartbeat_ms = ?3, clock_offset_ms = ?4,
                                running_tasks = ?5, stopped_ms = ?6, stop_reason = ?7
                         WHERE node_id = ?1
                           AND coalesce(last_heartbeat_ms, 0) <= coalesce(?3, 0)",
                    )
                    .map_err(sql("persisting liveness"))?;
                for u in &batch {
                    let l = &u.liveness;
                    stmt.execute(params![
                        u.node_id,
                        l.agent_version,
                        l.last_heartbeat_ms,
                        l.clock_offset_ms,
                        l.running_tasks,
                        l.stopped.as_ref().map(|s| s.at_ms),
                        l.stopped.as_ref().map(|s| s.reason.as_str()),
                    ])
                    .map_err(sql("persisting liveness"))?;
                }
            }
            tx.commit().map_err(sql("persisting liveness"))
        })
        .await
    }

    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let node_id = node_id.to_owned();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {NODE_COLUMNS} WHERE node_id = ?1"),
                [node_id],
                node_from_row,
            )
            .optional()
            .map_err(sql("looking up a node"))
        })
        .await
    }

    async fn nodes_changed(&self, _after: Option<ChangeCursor>) -> Result<NodeChanges, StoreError> {
        // One console writes this database: there is no one else's change to pick out.
        let nodes = self
            .call(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!("SELECT {NODE_COLUMNS} WHERE node_id IS NOT NULL"))
                    .map_err(sql("loading liveness"))?;
                let rows = stmt
                    .query_map([], node_from_row)
                    .map_err(sql("loading liveness"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(sql("loading liveness"))
            })
            .await?;
        Ok(NodeChanges {
            nodes,
            next: ChangeCursor(0),
        })
    }
}
