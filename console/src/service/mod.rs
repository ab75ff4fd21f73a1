//! The console's rules, in one layer that the JSON API (`http/`) and the web console (`web/`)
//! both call: what is valid, who may touch which project, what is stored, whom a change wakes.
//! Each function takes the shared state and what the caller asked for, already parsed, and
//! answers with plain values or a [`ServiceError`]; none knows HTTP, so the API and the pages
//! accept and refuse the same things with the same messages.

pub mod access;
pub mod audit;
#[cfg(test)]
mod caller_tests;
pub mod enroll;
mod error;
pub mod groups;
pub mod health;
pub mod install;
pub mod logs;
pub mod metrics;
pub mod nodes;
pub mod projects;
pub mod releases;
pub mod removal;
pub mod servers;
pub mod tasks;
pub mod work;
#[cfg(test)]
mod work_tests;

pub use error::ServiceError;

/// Who asks, as far as the rules care: the admin (the API's token, or a web session signed in
/// with it) sees and changes every project; a user (a web session signed in with a password)
/// only their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    Admin,
    User { name: &'a str, project: &'a str },
}

impl<'a> Caller<'a> {
    /// The one project this caller is confined to; `None` for the admin.
    pub fn project(&self) -> Option<&'a str> {
        match self {
            Caller::Admin => None,
            Caller::User { project, .. } => Some(project),
        }
    }

    /// Whether this caller may see and change `project`.
    pub fn can_use(&self, project: &str) -> bool {
        self.project().is_none_or(|own| own == project)
    }

    /// Refuses a project this caller may not use, as if it did not exist.
    pub fn check_project(&self, project: &str) -> Result<(), ServiceError> {
        if self.can_use(project) {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                field: None,
                message: format!("there is no project {project:?} you can see"),
            })
        }
    }

    /// Refuses anyone but the admin to `what` (start a rollout, say).
    pub fn require_admin(&self, what: &str) -> Result<(), ServiceError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::User { .. } => Err(ServiceError::Forbidden {
                message: format!("only the admin can {what}; sign in with the admin token"),
            }),
        }
    }
}

/// Runs `f` on the blocking pool (file I/O of task logs).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))
}
