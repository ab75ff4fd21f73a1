//! Projects and their users, and the credentials people sign in with: a user's password
//! (checked through the throttle that bounds Argon2 work) and the admin token.

use tasknode_protocol::wire::{CreatedUser, ProjectView, UserView};

use super::ServiceError;
use crate::app::AppState;
use crate::auth;
use crate::clock::rfc3339;
use crate::store::StoreError;

pub async fn create_project(state: &AppState, name: &str) -> Result<ProjectView, ServiceError> {
    let p = state
        .store
        .create_project(name, state.clock.now_ms())
        .await?;
    super::audit::record(
        state,
        super::Caller::Admin,
        "project.create",
        format!("project {}", p.name),
        Some(&p.name),
    )
    .await;
    Ok(ProjectView {
        name: p.name,
        created_at: rfc3339(p.created_ms),
    })
}

pub async fn list_projects(state: &AppState) -> Result<Vec<ProjectView>, ServiceError> {
    let projects = state.store.list_projects().await?;
    Ok(projects
        .into_iter()
        .map(|p| ProjectView {
            name: p.name,
            created_at: rfc3339(p.created_ms),
        })
        .collect())
}

/// Creates user `name` in `project` with a new random password, which the answer carries (the
/// console keeps only its hash). The hashing is counted under `peer`'s address.
pub async fn create_user(
    state: &AppState,
    peer: std::net::IpAddr,
    project: &str,
    name: &str,
) -> Result<CreatedUser, ServiceError> {
    // Refuse an unknown project before spending Argon2 time on a password for it.
    let projects = state.store.list_projects().await?;
    if !projects.iter().any(|p| p.name == project) {
        return Err(StoreError::NotFound {
            kind: "project",
            name: project.to_owned(),
        }
        .into());
    }
    let (password, hash) = new_password(state, peer).await?;
    let user = state
        .store
        .create_user(project, name, &hash, state.clock.now_ms())
        .await?;
    tracing::info!(user = %user.name, project = %user.project, "user created");
    super::audit::record(
        state,
        super::Caller::Admin,
        "user.create",
        format!("user {}", user.name),
        Some(&user.project),
    )
    .await;
    Ok(CreatedUser {
        user_name: user.name,
        password,
        project: user.project,
    })
}

/// A new random password and its Argon2id hash, the hashing counted under `peer`'s address by
/// the credential throttle.
pub(super) async fn new_password(
    state: &AppState,
    peer: std::net::IpAddr,
) -> Result<(String, String), ServiceError> {
    let password = auth::generate_password();
    let to_hash = password.clone();
    let hash = state
        .credentials
        .work(peer, move || auth::hash_password(&to_hash))
        .await?
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok((password, hash))
}

/// The users of `project`, or of every project.
pub async fn list_users(
    state: &AppState,
    project: Option<&str>,
) -> Result<Vec<UserView>, ServiceError> {
    let users = state.store.list_users(project).await?;
    Ok(users
        .into_iter()
        .map(|u| UserView {
            user_name: u.name,
            project: u.project,
            created_at: rfc3339(u.created_ms),
        })
        .collect())
}

/// Checks `user`'s password, as enrollment and the web console's sign-in do: refused at once
/// (before even looking the user up) past the queue of Argon2 work or after repeated failures
/// from that user name or `peer`'s address ([`ServiceError::Throttled`] says when to try
/// again). Answers the user's project, or `None` for a wrong user name or password.
pub async fn verify_password(
    state: &AppState,
    user: &str,
    password: &str,
    peer: std::net::IpAddr,
) -> Result<Option<String>, ServiceError> {
    let attempt = state.credentials.begin(user, peer).await?;
    let login = state.store.login(user).await?;
    let stored_hash = login.as_ref().map(|l| l.password_hash.clone());
    let password = password.to_owned();
    let ok = attempt
        .verify(move || auth::verify_password(&password, stored_hash.as_deref()))
        .await?;
    Ok(login.filter(|_| ok).map(|l| l.project))
}

/// Whether `token` is the admin token (compared in constant time, by digest).
pub fn is_admin_token(state: &AppState, token: &str) -> bool {
    auth::digests_equal(&auth::digest(token), &state.admin_token)
}
