//! The audit log: who changed what, when. The service layer records an entry after each change
//! an operator makes has committed (a console that dies between the two loses that one entry);
//! entries are never changed or deleted by the console.

use async_trait::async_trait;

use super::StoreError;

/// One change, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// `admin`, or `user:NAME`.
    pub actor: String,
    /// What was done: `user.delete`, `server.remove`, `task.submit`, ...
    pub action: String,
    /// What it was done to: `user etl`, `server db-1 in group etl`, `task 42`, ...
    pub object: String,
    /// The project it belongs to; `None` for what belongs to none (a release).
    pub project: Option<String>,
}

/// An entry to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: &'static str,
    pub object: String,
    pub project: Option<String>,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, entry: &NewAuditEntry, now_ms: i64) -> Result<(), StoreError>;
    /// Entries newest first, older than `before` (an id) when given, at most `limit`; of
    /// `project` when given (then entries of no project are left out too).
    async fn audit_log(
        &self,
        project: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}
