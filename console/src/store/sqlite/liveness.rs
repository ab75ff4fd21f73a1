//! Liveness in the embedded store: one transaction per batch the liveness map hands over.

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, sql};
use crate::store::{LivenessStore, LivenessUpdate, StoreError};

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
                         WHERE node_id = ?1",
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
}
