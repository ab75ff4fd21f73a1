//! The console's persistent state behind one interface per domain (projects and users, servers
//! and enrollment, liveness, tasks and their pushed logs, releases) and the wake-ups its changes send, with `Store`
//! the sum of them, so the HTTP layer
//! holds an `Arc<dyn Store>` and does not know which backend is behind it: the embedded SQLite
//! database, or a PostgreSQL that several consoles share.

mod access;
mod audit;
mod health;
mod leases;
mod liveness;
mod logs;
pub mod migrate;
mod postgres;
mod projects;
mod releases;
mod secrets;
mod servers;
mod sqlite;
#[cfg(test)]
mod suite;
mod tasks;
mod wakes;

use tasknode_protocol::tasks::TaskState;

pub use access::{AccessStore, DeletedUser, InstallLink};
pub use audit::{AuditEntry, AuditStore, NewAuditEntry};
pub use health::HealthStore;
pub use leases::{Fence, LeaseStore};
pub use liveness::{
    ChangeCursor, Liveness, LivenessStore, LivenessUpdate, NodeChanges, NodeRecord, Stop,
};
pub use logs::{Appended, LogLimits, TaskLogStore};
pub use postgres::{PostgresStore, Roots, redact as redact_url};
pub use projects::{DeletedGroup, Group, Login, Project, ProjectStore, User};
pub use releases::{Advance, NewRelease, Published, Release, ReleaseStore, Rollout, UpdateRecord};
pub use secrets::{
    SecretBytes, SecretStore, SessionCaps, SessionStore, SessionUser, TokenDigest, WebSession,
    names as secret_names,
};
pub use servers::{
    Enrollment, EnrollmentToken, Removal, RemoveMode, RemovedNode, Server, ServerFilter,
    ServerStore, SpendToken,
};
pub use sqlite::SqliteStore;
pub use tasks::{
    Assigned, Fenced, NewTask, Reconciled, ReportedBy, SUBMIT_AUDIT_ACTION, Submitted, Task,
    TaskCount, TaskFilter, TaskStore, no_servers, same_submit, submit_audit_object,
};
pub use wakes::{Origin, Wake, WakeFeed, WakeStore};

/// A driver's error, kept as the source of a [`StoreError`] without its type reaching callers.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every domain of the store; what the console holds.
pub trait Store:
    ProjectStore
    + AccessStore
    + AuditStore
    + ServerStore
    + LivenessStore
    + LeaseStore
    + TaskStore
    + TaskLogStore
    + ReleaseStore
    + SessionStore
    + SecretStore
    + WakeStore
    + HealthStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: ProjectStore
        + AccessStore
        + AuditStore
        + ServerStore
        + LivenessStore
        + LeaseStore
        + TaskStore
        + TaskLogStore
        + ReleaseStore
        + SessionStore
        + SecretStore
        + WakeStore
        + HealthStore
        + Send
        + Sync
        + 'static
{
}

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
    /// The database could not be opened or reached. `database` names it without a password.
    #[error("opening database {database}: {source}")]
    Open {
        database: String,
        #[source]
        source: DriverError,
    },
    #[error(
        "database {database} has schema version {found}, newer than this console knows ({known}); run a newer tasknode-console"
    )]
    TooNew {
        database: String,
        found: i64,
        known: i64,
    },
    /// The database's file or directory is open to other users and cannot be made private.
    #[error("{path}: {message}")]
    Private {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("migrating database to schema version {version}: {source}")]
    Migrate {
        version: i64,
        #[source]
        source: DriverError,
    },
    #[error("database error while {op}: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: DriverError,
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
