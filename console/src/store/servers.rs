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
    /// When an operator asked to remove it once its running tasks finish; it takes no new
    /// tasks meanwhile.
    pub draining_ms: Option<i64>,
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

/// What a removal does with the tasks a server holds: `Refuse` while it holds any (or while
/// it is its group's last server and the group has queued tasks); `Drain` hands it no new
/// tasks and removes it once it holds none; `Force` removes it now, queueing its assigned
/// tasks again for the group and cancelling its running ones (with [`forced_reason`]).
pub use tasknode_protocol::wire::RemoveMode;

/// What [`ServerStore::remove_server`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    /// The server is gone (its row, rollout membership and update report); its tasks keep
    /// its name.
    Removed {
        server: Server,
        /// Running tasks cancelled (`Force`).
        cancelled: Vec<i64>,
        /// Assigned tasks it had not started, queued again for the group (`Force`).
        requeued: Vec<i64>,
        /// Tasks queued to its group that now has no server to run them.
        stranded: u64,
    },
    /// Draining: the tasks it still holds; it is removed when they finish.
    Draining { server: Server, holding: Vec<i64> },
}

/// A removed server's node, whose credentials are answered "removed".
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedNode {
    pub node_id: String,
    /// Hex SHA-256 of the node secret.
    pub secret_sha256: String,
    pub server_name: String,
    pub project: String,
    pub removed_ms: i64,
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

    /// Removes server `name` of `project` from its group, as `mode` says ([`RemoveMode`]).
    /// In one transaction: the server row goes, its tasks keep its name, and its node (when
    /// enrolled) is kept in the removed nodes. Asking again for a draining server removes it
    /// once it holds no task; `Refuse` on a draining server answers how it drains.
    async fn remove_server(
        &self,
        project: &str,
        name: &str,
        mode: RemoveMode,
        now_ms: i64,
    ) -> Result<Removal, StoreError>;

    /// Moves server `name` of `project` to group `to` of the same project, keeping its id,
    /// enrollment and tasks (those it runs finish under their group). Refused (`Conflict`)
    /// when `to` is of another network type, when the server is draining, or when it is in
    /// `to` already.
    async fn move_server(&self, project: &str, name: &str, to: &str) -> Result<Server, StoreError>;

    /// The nodes of servers removed at or after `since_ms` (all without it), oldest first.
    async fn removed_nodes_since(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<RemovedNode>, StoreError>;

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

/// What a server's removal finds in its transaction, which both backends read the same way.
#[derive(Debug, Clone, Default)]
pub(super) struct RemovalFacts {
    /// The tasks it holds: assigned (not started) and running, by id.
    pub assigned: Vec<i64>,
    pub running: Vec<i64>,
    /// Its group's other servers that take tasks (not draining).
    pub other_servers: i64,
    /// Tasks queued to its group.
    pub queued: i64,
}

/// What a removal does, decided from [`RemovalFacts`] alike on both backends.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// Mark it draining (when not already) and answer with the tasks it holds.
    Drain(Vec<i64>),
    /// Remove it now, queueing its assigned tasks again and cancelling its running ones;
    /// `stranded` queued tasks of its group are left with no server.
    Remove { stranded: u64 },
}

/// Decides a removal, or refuses it with the way out.
pub(super) fn decide(
    server: &Server,
    mode: RemoveMode,
    facts: &RemovalFacts,
) -> Result<Step, StoreError> {
    let mut held: Vec<i64> = facts
        .assigned
        .iter()
        .chain(&facts.running)
        .copied()
        .collect();
    held.sort_unstable();
    // Queued tasks, and the assigned ones a removal queues again, wait for another server.
    let stranded = if facts.other_servers == 0 {
        u64::try_from(facts.queued).unwrap_or(0) + facts.assigned.len() as u64
    } else {
        0
    };
    let name = &server.name;
    match mode {
        RemoveMode::Force => Ok(Step::Remove { stranded }),
        RemoveMode::Drain if !held.is_empty() => Ok(Step::Drain(held)),
        RemoveMode::Drain => Ok(Step::Remove { stranded }),
        RemoveMode::Refuse if !held.is_empty() && server.draining_ms.is_some() => {
            Err(StoreError::Conflict {
                field: "name",
                message: format!(
                    "server {name} is draining: it takes no new tasks and is removed when its {} held task{} ({}) finish; to remove it now, remove it with force (running tasks are cancelled)",
                    held.len(),
                    plural(held.len()),
                    ids(&held)
                ),
            })
        }
        RemoveMode::Refuse if !held.is_empty() => Err(StoreError::Conflict {
            field: "name",
            message: format!(
                "server {name} holds {} task{} ({}); remove it with drain to let {} finish first (it takes no new tasks meanwhile), or with force to cancel {} now",
                held.len(),
                plural(held.len()),
                ids(&held),
                them(held.len()),
                them(held.len()),
            ),
        }),
        RemoveMode::Refuse if stranded > 0 && server.draining_ms.is_none() => {
            Err(StoreError::Conflict {
                field: "name",
                message: format!(
                    "server {name} is the last server of group {} and {stranded} task{} queued there would wait with no server to run {}; add another server to the group first, cancel {}, or remove it with drain or force ({} stay queued until a server joins the group)",
                    server.group,
                    if stranded == 1 { " is" } else { "s are" },
                    them(stranded as usize),
                    them(stranded as usize),
                    if stranded == 1 {
                        "it would"
                    } else {
                        "they would"
                    },
                ),
            })
        }
        RemoveMode::Refuse => Ok(Step::Remove { stranded }),
    }
}

/// Why server `server` cannot move to group `to` (id `to_id`, of `network`), if it cannot.
pub(super) fn refuse_move(
    server: &Server,
    to_id: i64,
    to: &str,
    network: NetworkType,
) -> Option<StoreError> {
    let name = &server.name;
    let message = if server.group_id == to_id {
        format!("server {name} is in group {to} already")
    } else if server.draining_ms.is_some() {
        format!(
            "server {name} is draining to be removed; it cannot move. Wait until it is removed and add it to group {to}, or remove it with force first"
        )
    } else if network != server.network {
        format!(
            "group {to} is a {network} group and server {name} is in a {} group: a {} server is known by its {}, a {network} one by its {}, so it cannot move; remove it, add it to group {to} by its {}, and run a new install command on it",
            server.network,
            server.network,
            server.network.identity_kind(),
            network.identity_kind(),
            network.identity_kind(),
        )
    } else {
        return None;
    };
    Some(StoreError::Conflict {
        field: "group",
        message,
    })
}

/// The reason a forced removal gives the running tasks it cancels.
pub fn forced_reason(server: &str) -> String {
    format!("cancelled: server {server} was removed from its group with force while this task ran")
}

/// The reason an assigned task queued again by a forced removal carries.
pub fn requeued_reason(server: &str) -> String {
    format!("server {server} was removed before it started this task; queued again")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn them(n: usize) -> &'static str {
    if n == 1 { "it" } else { "them" }
}

fn ids(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| format!("task {i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
