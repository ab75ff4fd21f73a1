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

/// An enrolled node as every console may load it: who it is, the digest of its secret, the
/// enrollment generation that made it, and its liveness as last written by any console.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub server_id: i64,
    pub node_id: String,
    /// Hex SHA-256 of the node secret.
    pub secret_sha256: String,
    /// The server's enrollment generation (see [`super::ServerStore::enroll`]).
    pub generation: u64,
    pub liveness: Liveness,
}

#[async_trait]
pub trait LivenessStore: Send + Sync {
    /// Persists a batch of liveness updates in one transaction.
    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError>;
    /// The enrolled node `node_id`, if it is the current enrollment of a server.
    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError>;
    /// Every enrolled node whose last heartbeat, clean shutdown or enrollment is at or after
    /// `since_ms` (all of them without it): what other consoles wrote since a console's last
    /// load, give or take the lookback the caller allows for.
    async fn nodes_changed_since(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<NodeRecord>, StoreError>;
}
