//! Projects and users, and the resource groups a project divides its servers into: who may
//! sign in, and the names every other domain hangs off.

use async_trait::async_trait;
use tasknode_protocol::NetworkType;

use super::StoreError;

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

#[async_trait]
pub trait ProjectStore: Send + Sync {
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
    /// A group, with how many servers it has (a count: a submit's check, not every
    /// enrollment's), or `NotFound`.
    async fn group(&self, project: &str, group: &str) -> Result<Group, StoreError>;
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
}
