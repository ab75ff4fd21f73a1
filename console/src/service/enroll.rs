//! Enrollment: a credential (a user's password, or a one-time token from an install link) and a
//! host identity become node credentials, if that host name or UUID was added to a group the
//! credential reaches. The store decides which enrollment of a server is valid; the liveness
//! map follows it.

use std::sync::Arc;

use tasknode_protocol::Identity;
use tasknode_protocol::wire::{Credential, EnrollRequest, EnrollResponse};

use super::ServiceError;
use crate::app::AppState;
use crate::auth;
use crate::clock::rfc3339;
use crate::store::{Enrollment, Liveness, SpendToken, StoreError};

/// Where a credential may enroll: any group of a user's project, or the one group of a token.
struct Scope {
    project: String,
    group: Option<String>,
    spend: Option<SpendToken>,
}

/// Checks the credential of an enrollment and says where it may enroll.
async fn scope(
    state: &AppState,
    peer: std::net::IpAddr,
    req: &EnrollRequest,
) -> Result<Scope, ServiceError> {
    match req.credential()? {
        Credential::AccessKey {
            user_name,
            password,
        } => match super::projects::verify_password(state, user_name, password, peer).await? {
            Some(project) => Ok(Scope {
                project,
                group: None,
                spend: None,
            }),
            None => Err(ServiceError::Unauthorized {
                field: "password",
                message: "user name or password is wrong; use the access key printed by `tasknode-console user create`"
                    .to_owned(),
            }),
        },
        Credential::Token(token) => {
            let sha = hex::encode(auth::digest(token));
            let now = state.clock.now_ms();
            let refused = |message: String| ServiceError::Unauthorized {
                field: "enrollment_token",
                message,
            };
            let Some(t) = state.store.enrollment_token(&sha).await? else {
                return Err(refused(
                    "this enrollment token is not known to the console; ask for a new install command"
                        .to_owned(),
                ));
            };
            let renew = format!(
                "create a new one with `tasknode-console install-command --project {} --group {} --user {}`",
                t.project, t.group, t.user
            );
            if let Some((at, server)) = &t.used {
                return Err(refused(format!(
                    "this enrollment token was already used at {} by server {server}; {renew}",
                    rfc3339(*at)
                )));
            }
            if t.expires_ms <= now {
                return Err(refused(format!(
                    "this enrollment token expired at {}; {renew}",
                    rfc3339(t.expires_ms)
                )));
            }
            Ok(Scope {
                project: t.project,
                group: Some(t.group),
                spend: Some(SpendToken {
                    token_sha256: sha,
                    now_ms: now,
                }),
            })
        }
    }
}

/// Enrolls the host of `req`, calling from `peer`: gives it a new node id and secret, which
/// replace any earlier enrollment of the same server.
pub async fn enroll(
    state: &AppState,
    peer: std::net::IpAddr,
    req: EnrollRequest,
) -> Result<EnrollResponse, ServiceError> {
    let identity = req.identity.normalized("identity.value")?;
    let scope = scope(state, peer, &req).await?;

    let value = identity.value().to_owned();
    let kind = identity.network().identity_kind();
    let project = &scope.project;
    let not_found = || ServiceError::NotFound {
        field: Some("identity.value".to_owned()),
        message: match &scope.group {
            None => format!(
                "no server with {kind} {value} in any resource group of project {project}; add it first: \
                 tasknode-console server add --project {project} --group GROUP --name {value}"
            ),
            Some(group) => format!(
                "no server with {kind} {value} in resource group {group} of project {project}; add it first: \
                 tasknode-console server add --project {project} --group {group} --name {value}"
            ),
        },
    };
    // Only the credential's project is looked in; for a token, a server of another group is
    // reported exactly like a missing one.
    let server = state
        .store
        .server_by_name(project, &value)
        .await?
        .filter(|s| scope.group.as_ref().is_none_or(|g| g == &s.group))
        .ok_or_else(not_found)?;
    if server.network != identity.network() {
        let flag = server.network.enable_uuid();
        return Err(ServiceError::Conflict {
            field: Some("identity.kind".to_owned()),
            message: format!(
                "server {value} is in {} group {}, which identifies servers by {}; enroll with --enable-uuid {flag}",
                server.network,
                server.group,
                server.network.identity_kind(),
            ),
        });
    }

    let secret = auth::generate_secret();
    let digest = auth::digest(&secret);
    let now = state.clock.now_ms();
    let enrollment = Enrollment {
        node_id: uuid::Uuid::new_v4().to_string(),
        secret_sha256: hex::encode(digest),
        enrolled_ms: now,
        cpu_cores: req.facts.cpu_cores,
        memory_bytes: req.facts.memory_bytes,
    };
    let by_token = scope.spend.is_some();
    // The previous heartbeat stays on record; what the previous agent reported (its clock,
    // its tasks, its shutdown) does not describe the new one.
    let live = Liveness {
        agent_version: Some(req.facts.agent_version.clone()),
        clock_offset_ms: None,
        running_tasks: 0,
        stopped: None,
        log_addr: None,
        ..server
            .enrollment
            .as_ref()
            .and_then(|e| state.live.get(&e.node_id))
            .unwrap_or_else(|| server.liveness.clone())
    };
    // One decision: the store's transaction decides which secret is valid and numbers it, and
    // the liveness map takes it only if no newer enrollment got there first. Both run in a
    // task of their own, so a client that hangs up between them cannot leave the store and
    // the map apart.
    let decide = {
        let (store, map) = (Arc::clone(&state.store), Arc::clone(&state.live));
        let (server_id, enrollment, facts) = (server.id, enrollment.clone(), req.facts.clone());
        tokio::spawn(async move {
            let generation = store
                .enroll(server_id, &enrollment, &facts, scope.spend)
                .await?;
            map.enroll(server_id, generation, &enrollment.node_id, digest, live);
            Ok::<_, StoreError>(())
        })
    };
    decide
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
    tracing::info!(
        server = %server.name,
        group = %server.group,
        node_id = %enrollment.node_id,
        identity = %match &identity { Identity::Hostname(_) => "hostname", Identity::Uuid(_) => "uuid" },
        by_token,
        "enrolled"
    );
    Ok(EnrollResponse {
        node_id: enrollment.node_id,
        node_secret: secret,
        server_name: server.name,
        group: server.group,
        project: server.project,
        network: server.network,
        heartbeat_interval_secs: super::nodes::interval_secs(state),
        console_time_ms: state.clock.now_ms(),
    })
}
