//! The console's persistent state behind one interface, so that the embedded SQLite store can be
//! joined later by a PostgreSQL one without the HTTP layer changing. Liveness (heartbeats) does
//! not come through here one request at a time: [`crate::liveness`] keeps it in memory and
//! writes it in batches with [`Store::record_liveness`].

mod secrets;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use tasknode_protocol::NetworkType;
use tasknode_protocol::manifest::Manifest;
use tasknode_protocol::tasks::{FinishTask, HeldTask, TaskAssignment, TaskState};
use tasknode_protocol::updates::{Batch, RolloutState, SetRollout, UpdateOutcome, UpdateReport};
use tasknode_protocol::wire::HostFacts;

pub use secrets::{
    SecretBytes, SecretStore, SessionCaps, SessionStore, SessionUser, TokenDigest, WebSession,
    names as secret_names,
};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
    #[error(
        "server {name:?} is already in resource group {group:?} of project {project:?}; a server belongs to one resource group at a time"
    )]
    ServerTaken {
        name: String,
        group: String,
        project: String,
    },
    #[error(
        "user {user:?} is not in project {project:?}; an install command is rendered for a user of the group's project"
    )]
    UserNotInProject { user: String, project: String },
    #[error(
        "this enrollment token was used or expired while enrolling; ask for a new install command"
    )]
    TokenSpent,
    /// Another project's agent enrolled with this host name or UUID first. Says nothing of
    /// where.
    #[error(
        "this server enrolled elsewhere: its host name or UUID belongs to the project an agent first enrolled it in; ask the console's administrator"
    )]
    EnrolledElsewhere,
    #[error("opening database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this console knows ({known}); run a newer tasknode-console"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// The database's file or directory is open to other users and cannot be made private.
    #[error("{path}: {message}")]
    Private { path: PathBuf, message: String },
    #[error("migrating database to schema version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error while {op}: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("task {id} is {state}; {what}")]
    TaskIs {
        id: i64,
        state: TaskState,
        what: &'static str,
    },
    #[error("database worker stopped: {0}")]
    Worker(String),
    /// The request contradicts what is stored; the message says what to do instead.
    #[error("{message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    #[error(
        "version {version} is not published on this console; publish its signed manifest first with `tasknode-console release publish FILE`"
    )]
    NotPublished { version: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub name: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub project: String,
    pub created_ms: i64,
}

/// What enrollment needs to know about a user.
#[derive(Clone)]
pub struct Login {
    pub project: String,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub project: String,
    pub network: NetworkType,
    pub servers: u32,
    pub created_ms: i64,
}

/// What deleting a group removed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedGroup {
    pub name: String,
    pub project: String,
    /// The finished tasks deleted with it, whose logs go too.
    pub tasks: Vec<i64>,
}

/// A server row with its group and project, as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub group: String,
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

/// A task as the store holds it (without its script).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: i64,
    pub project: String,
    pub group: String,
    pub state: TaskState,
    pub reason: Option<String>,
    pub server: Option<String>,
    pub timeout_secs: u64,
    pub submitted_ms: i64,
    pub assigned_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The size of the complete log, once the agent has reported the task finished.
    pub log_bytes: Option<u64>,
    pub lease: i64,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub project: Option<String>,
    pub group: Option<String>,
    pub state: Option<TaskState>,
    /// Newest first, at most this many.
    pub limit: u32,
}

/// What reconciling an agent's held tasks changed and what the agent must stop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// Held tasks the agent must kill: cancelled by an operator, or no longer its own.
    pub cancel: Vec<i64>,
    /// Assigned tasks the agent never received: queued again under a new lease.
    pub requeued: Vec<i64>,
    /// Running tasks the agent no longer holds: lost.
    pub lost: Vec<i64>,
}

/// The answer to an agent's start or finish.
#[derive(Debug, Clone, PartialEq)]
pub enum Fenced {
    Accepted,
    /// Refused, with why: the agent must not run (or report) the task under that lease.
    Refused(String),
}

/// A published release, as the store holds it (without its manifest text).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub version: String,
    pub channel: String,
    /// The Rust targets it has binaries for.
    pub targets: Vec<String>,
    /// Whether a signed rollback manifest is published for it.
    pub rollback: bool,
    /// When that rollback manifest stops being accepted.
    pub rollback_expires_ms: Option<i64>,
    /// When its newest manifest was signed.
    pub issued_ms: i64,
    /// When the console took its newest manifest.
    pub published_ms: i64,
    /// The key that signed its newest manifest (hex).
    pub signed_by: String,
}

/// A manifest file to publish, read (and, where the console can, verified) by the caller.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub manifest: Manifest,
    /// The file exactly as published: agents get these bytes and check their signature.
    pub text: String,
    pub signed_by: String,
}

/// What publishing a manifest changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A version the console did not have.
    New,
    /// A rollback manifest for a version (new, or replacing an older rollback).
    Rollback,
    /// The same file was published before: nothing changed.
    Unchanged,
}

/// A group's rollout and the servers admitted to it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub group_id: i64,
    pub project: String,
    pub group: String,
    pub version: String,
    pub batch: Batch,
    pub max_failures: u32,
    pub state: RolloutState,
    pub reason: String,
    pub started_ms: i64,
    /// Admitted servers: server id → when.
    pub members: BTreeMap<i64, i64>,
}

/// One step of a rollout, as the rollout engine decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    pub group_id: i64,
    /// The rollout the step was decided for: a rollout set since then is left alone.
    pub started_ms: i64,
    /// Servers to admit.
    pub admit: Vec<i64>,
    pub state: RolloutState,
    pub reason: String,
}

/// A server's latest update report.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRecord {
    pub server_id: i64,
    pub version: String,
    pub outcome: UpdateOutcome,
    pub reason: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    pub project: Option<String>,
    pub group: Option<String>,
}

#[async_trait]
pub trait Store: SessionStore + SecretStore + Send + Sync + 'static {
    async fn create_project(&self, name: &str, now_ms: i64) -> Result<Project, StoreError>;
    async fn list_projects(&self) -> Result<Vec<Project>, StoreError>;

    async fn create_user(
        &self,
        project: &str,
        name: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<User, StoreError>;
    async fn list_users(&self, project: Option<&str>) -> Result<Vec<User>, StoreError>;
    async fn login(&self, user_name: &str) -> Result<Option<Login>, StoreError>;

    async fn create_group(
        &self,
        project: &str,
        name: &str,
        network: NetworkType,
        now_ms: i64,
    ) -> Result<Group, StoreError>;
    async fn list_groups(&self, project: Option<&str>) -> Result<Vec<Group>, StoreError>;
    /// The network type of a group, or `NotFound`.
    async fn group_network(&self, project: &str, group: &str) -> Result<NetworkType, StoreError>;
    /// Renames a group (`Exists` when the project has a group of that name already).
    async fn rename_group(
        &self,
        project: &str,
        group: &str,
        new_name: &str,
    ) -> Result<Group, StoreError>;
    /// Deletes an empty group with its finished tasks, enrollment tokens and rollout; refused
    /// (`Conflict`) while it has servers or unfinished tasks.
    async fn delete_group(&self, project: &str, group: &str) -> Result<DeletedGroup, StoreError>;

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

    /// Persists a batch of liveness updates in one transaction.
    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError>;

    /// Queues a task for a group.
    async fn submit_task(
        &self,
        project: &str,
        group: &str,
        script: &str,
        timeout_secs: u64,
        now_ms: i64,
    ) -> Result<Task, StoreError>;
    async fn task(&self, id: i64) -> Result<Option<Task>, StoreError>;
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;
    /// Cancels a queued task at once; asks the agent of an assigned or running one to kill it.
    /// A final task is `TaskIs`.
    async fn cancel_task(&self, id: i64, now_ms: i64) -> Result<Task, StoreError>;

    /// Squares the console's view of a server's tasks with what its agent holds: assigned
    /// tasks the agent does not hold go back to the queue, running ones it does not hold are
    /// lost, and held tasks that are cancelled or not the agent's (under that lease) are to be
    /// killed.
    async fn reconcile(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError>;
    /// Hands queued tasks of the server's group to it, oldest first, until it runs
    /// `max_concurrency` tasks, each under a new lease.
    async fn assign(
        &self,
        server_id: i64,
        max_concurrency: u32,
        now_ms: i64,
    ) -> Result<Vec<TaskAssignment>, StoreError>;
    async fn start_task(
        &self,
        server_id: i64,
        id: i64,
        lease: i64,
        at_ms: i64,
        now_ms: i64,
    ) -> Result<Fenced, StoreError>;
    async fn finish_task(
        &self,
        server_id: i64,
        id: i64,
        report: FinishTask,
        now_ms: i64,
    ) -> Result<Fenced, StoreError>;
    /// Whether `id` is assigned to `server_id` under `lease` (its log may be pushed).
    async fn holds_lease(&self, server_id: i64, id: i64, lease: i64) -> Result<bool, StoreError>;
    /// Ids of the tasks assigned to a server (whose logs it pushed, on a VPC).
    async fn server_task_ids(&self, server_id: i64) -> Result<Vec<i64>, StoreError>;
    /// The servers that have assigned or running tasks.
    async fn busy_servers(&self) -> Result<Vec<i64>, StoreError>;
    /// A server is gone (stopped): its assigned tasks are queued again, its running ones lost.
    async fn abandon_server_tasks(
        &self,
        server_id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError>;

    /// Publishes a manifest file. The same file again changes nothing; a rollback manifest
    /// for a published version is kept beside its manifest (and may also be a version's first
    /// publication); other content for a published version is a `Conflict`.
    async fn publish_release(
        &self,
        release: NewRelease,
        now_ms: i64,
    ) -> Result<(Release, Published), StoreError>;
    /// Every release, the newest version first.
    async fn list_releases(&self) -> Result<Vec<Release>, StoreError>;
    /// The manifest file to hand an agent for `version`: its rollback manifest when one is
    /// published and has not expired at `now_ms`, else its manifest.
    async fn release_manifest(
        &self,
        version: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError>;

    /// Sets the rollout of a group (running, with `reason`), replacing any earlier one and
    /// clearing the servers it admitted. The version must be published (`NotPublished`).
    async fn set_rollout(
        &self,
        rollout: &SetRollout,
        reason: &str,
        now_ms: i64,
    ) -> Result<Rollout, StoreError>;
    /// Rollouts with their admitted servers, by project and group; of one project with
    /// `project`.
    async fn list_rollouts(&self, project: Option<&str>) -> Result<Vec<Rollout>, StoreError>;
    /// Admits servers to a rollout and records its state. Returns false (and changes nothing)
    /// when the group's rollout was set again since the step was decided.
    async fn advance_rollout(&self, step: &Advance, now_ms: i64) -> Result<bool, StoreError>;

    /// Keeps `report` as the server's latest.
    async fn record_update_report(
        &self,
        server_id: i64,
        report: &UpdateReport,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// The latest report of every server that sent one.
    async fn update_reports(&self) -> Result<Vec<UpdateRecord>, StoreError>;
}
