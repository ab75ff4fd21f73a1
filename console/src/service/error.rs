//! `ServiceError`: why the console's rules refused or failed a request, with the field at
//! fault. It knows nothing of HTTP: the JSON API maps it to status codes and error bodies
//! (`http/error.rs`), the web console to pages and messages beside form fields (`web/`).

use tasknode_protocol::FieldError;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A value is not acceptable; the error names its field and says what is wrong.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The credential (`field`) does not prove who the caller says it is.
    #[error("{message}")]
    Unauthorized {
        field: &'static str,
        message: String,
    },
    /// The caller is known but may not do this (a project's user starting a rollout).
    #[error("{message}")]
    Forbidden { message: String },
    /// Nothing of that name, or nothing the caller may see.
    #[error("{message}")]
    NotFound {
        field: Option<String>,
        message: String,
    },
    /// The request does not fit what is there (a name taken, a stale lease).
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// Well-formed, but refused for what it says (a release whose signature or binaries do
    /// not check out).
    #[error("{message}")]
    Unprocessable {
        field: &'static str,
        message: String,
    },
    /// Accepting this would pass a limit on what a client may keep on the console.
    #[error("{message}")]
    LimitReached {
        field: &'static str,
        message: String,
    },
    /// The calling node's server was removed from its group: its credentials prove who it
    /// was, and no longer open anything. Its agent stops knocking.
    #[error("{message}")]
    Removed { message: String },
    /// Something the console relies on (an agent's log service) failed.
    #[error("{message}")]
    Upstream { message: String },
    /// A password check refused before hashing (busy, or backing off after failures).
    #[error("{}", .0.message())]
    Throttled(crate::throttle::Refused),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ServiceError {
        ServiceError::Invalid(FieldError::new(field, message))
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<String> {
        match self {
            ServiceError::Invalid(e) => Some(e.field.clone()),
            ServiceError::Unauthorized { field, .. }
            | ServiceError::Unprocessable { field, .. }
            | ServiceError::LimitReached { field, .. } => Some((*field).to_owned()),
            ServiceError::NotFound { field, .. } | ServiceError::Conflict { field, .. } => {
                field.clone()
            }
            ServiceError::Forbidden { .. }
            | ServiceError::Removed { .. }
            | ServiceError::Upstream { .. }
            | ServiceError::Throttled(_)
            | ServiceError::Internal(_) => None,
        }
    }
}

impl From<FieldError> for ServiceError {
    fn from(e: FieldError) -> Self {
        ServiceError::Invalid(e)
    }
}

impl From<crate::throttle::Refused> for ServiceError {
    fn from(r: crate::throttle::Refused) -> Self {
        ServiceError::Throttled(r)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists { kind, .. } => ServiceError::Conflict {
                field: Some(
                    if kind == "project" || kind == "user" || kind == "resource group" {
                        "name".to_owned()
                    } else {
                        kind.to_owned()
                    },
                ),
                message: e.to_string(),
            },
            StoreError::NotFound { kind, .. } => ServiceError::NotFound {
                field: Some(match kind {
                    "resource group" => "group".to_owned(),
                    other => other.to_owned(),
                }),
                message: e.to_string(),
            },
            StoreError::UserNotInProject { .. } => ServiceError::NotFound {
                field: Some("user_name".to_owned()),
                message: e.to_string(),
            },
            StoreError::EnrolledElsewhere => ServiceError::Conflict {
                field: Some("identity.value".to_owned()),
                message: e.to_string(),
            },
            StoreError::TokenSpent => ServiceError::Unauthorized {
                field: "enrollment_token",
                message: e.to_string(),
            },
            StoreError::Conflict { field, .. } => ServiceError::Conflict {
                field: Some(field.to_owned()),
                message: e.to_string(),
            },
            StoreError::NotPublished { .. } => ServiceError::NotFound {
                field: Some("version".to_owned()),
                message: e.to_string(),
            },
            StoreError::ServerTaken { .. } => ServiceError::Conflict {
                field: Some("name".to_owned()),
                message: e.to_string(),
            },
            other => {
                tracing::error!(error = %other, "store failure");
                ServiceError::Internal(other.to_string())
            }
        }
    }
}
