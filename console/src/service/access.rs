//! Taking access away: deleting a user, replacing a user's password, and listing and revoking
//! the install links not spent yet. Each ends what the old credential opened at once, on every
//! console (see `store::access`), and goes into the audit log.

use tasknode_protocol::access::{DeletedUserView, InstallLinkView};
use tasknode_protocol::validate;
use tasknode_protocol::wire::CreatedUser;

use super::{Caller, ServiceError, audit};
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::store::InstallLink;

/// Deletes user `name`, its install links and its web sessions (the admin only). Servers it
/// enrolled keep running: their credentials are their own.
pub async fn delete_user(
    state: &AppState,
    caller: Caller<'_>,
    name: &str,
) -> Result<DeletedUserView, ServiceError> {
    caller.require_admin("delete a user")?;
    validate::name("user_name", name)?;
    let gone = state.store.delete_user(name, caller.project()).await?;
    tracing::info!(user = %gone.name, project = %gone.project, links = gone.links, sessions = gone.sessions, "user deleted");
    audit::record(
        state,
        caller,
        "user.delete",
        format!("user {}", gone.name),
        Some(&gone.project),
    )
    .await;
    Ok(DeletedUserView {
        user_name: gone.name,
        project: gone.project,
        links_revoked: gone.links,
        sessions_ended: gone.sessions,
    })
}

/// Gives user `name` a new random password (the admin only), which the answer carries once.
/// The old one stops working at once, and the user's web sessions end. The hashing is counted
/// under `peer`'s address, as creating a user is.
pub async fn replace_password(
    state: &AppState,
    caller: Caller<'_>,
    peer: std::net::IpAddr,
    name: &str,
) -> Result<CreatedUser, ServiceError> {
    caller.require_admin("replace a password")?;
    validate::name("user_name", name)?;
    // An unknown user is refused before Argon2 time is spent on it.
    if state.store.login(name).await?.is_none() {
        return Err(crate::store::StoreError::NotFound {
            kind: "user",
            name: name.to_owned(),
        }
        .into());
    }
    let (password, hash) = super::projects::new_password(state, peer).await?;
    let project = state.store.set_password(name, None, &hash).await?;
    tracing::info!(user = name, project = %project, "password replaced");
    audit::record(
        state,
        caller,
        "user.password",
        format!("user {name}"),
        Some(&project),
    )
    .await;
    Ok(CreatedUser {
        user_name: name.to_owned(),
        password,
        project,
    })
}

fn link_view(l: InstallLink) -> InstallLinkView {
    InstallLinkView {
        id: l.id,
        project: l.project,
        group: l.group,
        user_name: l.user,
        created_at: rfc3339(l.created_ms),
        expires_at: rfc3339(l.expires_ms),
    }
}

/// The install links that still work, oldest first: a user sees their project's only.
pub async fn links(
    state: &AppState,
    caller: Caller<'_>,
    project: Option<&str>,
) -> Result<Vec<InstallLinkView>, ServiceError> {
    let project = caller.project().or(project);
    Ok(state
        .store
        .install_links(project, state.clock.now_ms())
        .await?
        .into_iter()
        .map(link_view)
        .collect())
}

/// Revokes the unspent install link `id`: its script is refused from then on. Another
/// project's link is refused as unknown.
pub async fn revoke_link(
    state: &AppState,
    caller: Caller<'_>,
    id: i64,
) -> Result<InstallLinkView, ServiceError> {
    let link = state
        .store
        .revoke_install_link(id, caller.project(), state.clock.now_ms())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound { .. } => ServiceError::NotFound {
                field: Some("id".to_owned()),
                message: format!(
                    "no unspent install link {id}; `tasknode-console install-command list` shows those that still work"
                ),
            },
            other => other.into(),
        })?;
    tracing::info!(link = id, group = %link.group, user = %link.user, "install link revoked");
    audit::record(
        state,
        caller,
        "install_link.revoke",
        format!(
            "install link {id} (group {}, user {})",
            link.group, link.user
        ),
        Some(&link.project),
    )
    .await;
    Ok(link_view(link))
}
