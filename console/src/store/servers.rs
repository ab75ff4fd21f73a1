//! Servers and their enrollment: a server is added to a group by name, and an agent enrolls
//! as it (with a one-time token from an install command), which binds the name to the project.

use async_trait::async_trait;
use tasknode_protocol::NetworkType;
use tasknode_protocol::wire::HostFacts;

use super::StoreError;
use super::liveness::Liveness;

/// A server row with its group and project, as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub group: String,
    /// The group's id, which a rename keeps (wake-ups name groups by it).
    pub group_id: i64,
    pub project: String,
    pub network: NetworkType,
    pub max_concurrency: Option<u32>,
    pub created_ms: i64,
    pub enrollment: Option<Enrollment>,
    pub liveness: Liveness,
}

/// Set when an agent enrolls.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    pub node_id: String,
    /// Hex SHA-256 of the node secret.
    pub secret_sha256: String,
    pub enrolled_ms: i64,
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

/// A one-time enrollment token as stored (the token itself is never kept).
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentToken {
    pub group: String,
    pub project: String,
    pub network: NetworkType,
    pub user: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// When it was used, and by which server.
    pub used: Option<(i64, String)>,
}

/// Spending a token as part of an enrollment.
#[derive(Debug, Clone)]
pub struct SpendToken {
    pub token_sha256: String,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    pub project: Option<String>,
    pub group: Option<String>,
}

#[async_trait]
pub trait ServerStore: Send + Sync {
    /// Adds a server to a group. A name already in a group of the same project is
    /// `ServerTaken`; other projects' servers of that name do not matter until one enrolls.
    async fn add_server(
        &self,
        project: &str,
        group: &str,
        name: &str,
        max_concurrency: Option<u32>,
        now_ms: i64,
    ) -> Result<Server, StoreError>;
    async fn list_servers(&self, filter: &ServerFilter) -> Result<Vec<Server>, StoreError>;
    /// The server of `project` with this name.
    async fn server_by_name(&self, project: &str, name: &str)
    -> Result<Option<Server>, StoreError>;
    /// The server a node id is enrolled as.
    async fn server_by_node(&self, node_id: &str) -> Result<Option<Server>, StoreError>;
    /// The servers with these ids (those that exist), in no particular order.
    async fn servers_by_id(&self, ids: &[i64]) -> Result<Vec<Server>, StoreError>;

    /// Records an enrollment, replacing any earlier one of the same server (its old node id
    /// and secret stop working) and clearing a recorded shutdown. With `spend`, the token is
    /// marked used in the same transaction, and the enrollment fails with `TokenSpent` when
    /// the token was used or expired meanwhile. A name that a server of another project
    /// enrolled with first is `EnrolledElsewhere`. Returns the server's new enrollment
    /// generation: enrollments of one server get increasing generations in the order their
    /// transactions commit.
    async fn enroll(
        &self,
        server_id: i64,
        enrollment: &Enrollment,
        facts: &HostFacts,
        spend: Option<SpendToken>,
    ) -> Result<u64, StoreError>;

    /// Stores a new enrollment token for a group, rendered for a user of its project.
    async fn create_enrollment_token(
        &self,
        project: &str,
        group: &str,
        user: &str,
        token_sha256: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<EnrollmentToken, StoreError>;

    async fn enrollment_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<EnrollmentToken>, StoreError>;
}
