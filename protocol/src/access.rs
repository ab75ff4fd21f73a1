//! The wire types of access management: deleting users, replacing passwords, the install
//! links not spent yet, and the audit log of who changed what.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/users/{name}/delete`: what went with the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedUserView {
    pub user_name: String,
    pub project: String,
    /// Its install links (spent or not), deleted.
    pub links_revoked: u64,
    /// Its web sessions, ended.
    pub sessions_ended: u64,
}

/// An install link that can still be used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallLinkView {
    pub id: i64,
    pub project: String,
    pub group: String,
    pub user_name: String,
    pub created_at: String,
    pub expires_at: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntryView {
    pub id: i64,
    pub at: String,
    /// `admin`, or `user:NAME`.
    pub actor: String,
    pub action: String,
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// `GET /api/v1/audit`: a page of entries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// Entries per page unless asked otherwise, and at most.
pub const AUDIT_PAGE: u32 = 50;
pub const AUDIT_PAGE_MAX: u32 = 500;
