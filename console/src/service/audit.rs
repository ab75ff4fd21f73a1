//! The audit log: every change an operator makes through the API, the CLI or the web console
//! is recorded after it commits, with who made it (a submit's entry the store writes with the
//! task: see `TaskStore::submit_task_once`). A user reads the entries of their own project
//! only; the admin reads all.

use tasknode_protocol::access::{AUDIT_PAGE, AUDIT_PAGE_MAX, AuditEntryView, AuditPage};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::store::NewAuditEntry;

/// How the log names `caller`.
pub fn actor(caller: Caller<'_>) -> String {
    match caller {
        Caller::Admin => "admin".to_owned(),
        Caller::User { name, .. } => format!("user:{name}"),
    }
}

/// Records that `caller` did `action` to `object` (of `project`). The change has committed:
/// a failure to record it is logged, and does not turn the change into an error.
pub async fn record(
    state: &AppState,
    caller: Caller<'_>,
    action: &'static str,
    object: String,
    project: Option<&str>,
) {
    record_as(state, actor(caller), action, object, project).await;
}

/// The same for an actor that is not an operator: `node:ID`, a server's own agent.
pub async fn record_as(
    state: &AppState,
    actor: String,
    action: &'static str,
    object: String,
    project: Option<&str>,
) {
    let entry = NewAuditEntry {
        actor,
        action,
        object,
        project: project.map(str::to_owned),
    };
    if let Err(e) = state.store.record_audit(&entry, state.clock.now_ms()).await {
        tracing::error!(error = %e, action, object = %entry.object, actor = %entry.actor, "could not record an audit entry; the change itself was made");
    }
}

/// A page of the log, newest first: entries older than `before` (an id), at most `limit`
/// (default 50, at most 500).
pub async fn page(
    state: &AppState,
    caller: Caller<'_>,
    before: Option<i64>,
    limit: Option<u32>,
) -> Result<AuditPage, ServiceError> {
    let limit = match limit {
        None => AUDIT_PAGE,
        Some(n) if (1..=AUDIT_PAGE_MAX).contains(&n) => n,
        Some(n) => {
            return Err(ServiceError::Invalid(
                tasknode_protocol::validate::FieldError::new(
                    "limit",
                    format!("must be between 1 and {AUDIT_PAGE_MAX}, got {n}"),
                ),
            ));
        }
    };
    // One more than asked tells whether an older page exists.
    let mut entries = state
        .store
        .audit_log(caller.project(), before, limit + 1)
        .await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_before = more.then(|| entries.last().map(|e| e.id)).flatten();
    Ok(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryView {
                id: e.id,
                at: rfc3339(e.at_ms),
                actor: e.actor,
                action: e.action,
                object: e.object,
                project: e.project,
            })
            .collect(),
        next_before,
    })
}
