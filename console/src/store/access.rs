//! Who may still get in: deleting a user, replacing a user's password, and the install links
//! that are not spent yet. Each change ends what the old credential opened at once: a deleted
//! user's or a new password's web sessions are deleted with it, in the same transaction, and
//! every console checks passwords and links against the store, so none keeps the old one.

use async_trait::async_trait;

use super::StoreError;

/// An install link that can still be used: not spent, not expired. Its token is not kept,
/// only its digest, so a link is named by its id.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallLink {
    pub id: i64,
    pub project: String,
    pub group: String,
    pub user: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// What deleting a user took with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedUser {
    pub name: String,
    pub project: String,
    /// Its install links, spent or not (a link is made for one user).
    pub links: u64,
    /// Its web sessions, ended.
    pub sessions: u64,
}

#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Deletes user `name` (in `project` when given: another project's user is `NotFound`),
    /// its install links and its web sessions. Servers it enrolled keep their own credentials.
    async fn delete_user(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> Result<DeletedUser, StoreError>;
    /// Replaces user `name`'s password hash and ends its web sessions; answers its project.
    async fn set_password(
        &self,
        name: &str,
        project: Option<&str>,
        password_hash: &str,
    ) -> Result<String, StoreError>;
    /// The unspent, unexpired install links at `now_ms` (of `project` when given), oldest
    /// first.
    async fn install_links(
        &self,
        project: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<InstallLink>, StoreError>;
    /// Revokes the unspent link `id` (of `project` when given); a spent, expired or unknown one
    /// is `NotFound`.
    async fn revoke_install_link(
        &self,
        id: i64,
        project: Option<&str>,
        now_ms: i64,
    ) -> Result<InstallLink, StoreError>;
}
