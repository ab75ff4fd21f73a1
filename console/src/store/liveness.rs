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
    /// Where its log service listens (classic servers): the address its last heartbeat came
    /// from and the port it named. Kept by the PostgreSQL store only, so that every console
    /// reads a classic server's task logs, not just the one its heartbeats reach; a SQLite
    /// console has it from the next heartbeat after a restart.
    pub log_addr: Option<std::net::SocketAddr>,
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

/// Where a console's loads of liveness have got to, as the store that returned it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCursor(pub(crate) i64);

/// What [`LivenessStore::nodes_changed`] found, and where the next load starts.
#[derive(Debug, Clone)]
pub struct NodeChanges {
    pub nodes: Vec<NodeRecord>,
    pub next: ChangeCursor,
}

#[async_trait]
pub trait LivenessStore: Send + Sync {
    /// Persists a batch of liveness updates in one transaction.
    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError>;
    /// The enrolled node `node_id`, if it is the current enrollment of a server.
    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError>;
    /// The enrolled nodes whose liveness or enrollment may have changed since `after` was
    /// returned (every node without it), and where the next load starts. What this store
    /// itself wrote is left out where the backend can tell: on PostgreSQL each write records
    /// the servers it changed with its transaction and console, and a load returns only the
    /// servers other consoles wrote (or enrolled, through any console) in transactions its
    /// previous load could not see. SQLite, which one console uses, returns every node.
    async fn nodes_changed(&self, after: Option<ChangeCursor>) -> Result<NodeChanges, StoreError>;
}
