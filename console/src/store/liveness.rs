//! What the store keeps of each node's liveness. Heartbeats do not come here one request at a
//! time: [`crate::liveness`] keeps them in memory and writes them in batches.

use async_trait::async_trait;

use super::StoreError;

/// The last liveness the console persisted for a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Liveness {
    pub agent_version: Option<String>,
    pub last_heartbeat_ms: Option<i64>,
    pub clock_offset_ms: Option<i64>,
    pub running_tasks: u32,
    pub stopped: Option<Stop>,
}

/// A clean agent shutdown.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub at_ms: i64,
    pub reason: String,
}

/// One node's liveness to persist.
#[derive(Debug, Clone, PartialEq)]
pub struct LivenessUpdate {
    pub node_id: String,
    pub liveness: Liveness,
}

#[async_trait]
pub trait LivenessStore: Send + Sync {
    /// Persists a batch of liveness updates in one transaction.
    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError>;
}
