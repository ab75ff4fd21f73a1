//! Liveness in the shared store: a batch is one UPDATE joined to the batch's rows (`unnest` of
//! one array per column), so a batch of thousands of nodes is one round trip.

use async_trait::async_trait;

use super::{PostgresStore, db};
use crate::store::{LivenessStore, LivenessUpdate, StoreError};

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
        let c = self.client().await?;
        c.execute(
            "UPDATE servers s SET agent_version = u.version, last_heartbeat_ms = u.heartbeat,
                    clock_offset_ms = u.clock_offset, running_tasks = u.running,
                    stopped_ms = u.stopped, stop_reason = u.reason
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::text[])
                  AS u(node_id, version, heartbeat, clock_offset, running, stopped, reason)
             WHERE s.node_id = u.node_id",
            &[
                &node, &version, &heartbeat, &offset, &running, &stopped, &reason,
            ],
        )
        .await
        .map_err(db("persisting liveness"))?;
        Ok(())
    }
}
