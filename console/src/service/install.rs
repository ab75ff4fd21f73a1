//! Installing agents: one-time install links per group and user and the commands that run
//! them, the install script behind a link (or a script that says why the link was refused),
//! the yum .repo file, the agent binaries and the console's CA that scripts download.

use std::sync::Arc;

use tasknode_protocol::wire::{CreateInstallCommand, InstallCommand, YumSetup};
use tasknode_protocol::{layout, validate};
use tasknode_render::artifacts::AgentBinary;
use tasknode_render::dist::Dist;
use tasknode_render::render::{self, InstallCredential, InstallInputs};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::auth;
use crate::clock::rfc3339;

/// By default an install link works for a day.
const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// The users an install link can be made for: a user makes them for themselves only.
pub async fn users(
    state: &AppState,
    caller: Caller<'_>,
    project: &str,
) -> Result<Vec<String>, ServiceError> {
    caller.check_project(project)?;
    Ok(match caller {
        Caller::User { name, .. } => vec![name.to_owned()],
        Caller::Admin => state
            .store
            .list_users(Some(project))
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect(),
    })
}

/// Whether this console serves agent binaries (else no install script could install one).
pub fn serves_agents(state: &AppState) -> bool {
    !state.artifacts.binaries.is_empty()
}

/// Makes a one-time install link (`req` already validated) and the commands that run it.
pub async fn create_command(
    state: &AppState,
    caller: Caller<'_>,
    req: CreateInstallCommand,
) -> Result<InstallCommand, ServiceError> {
    caller.check_project(&req.project)?;
    if let Caller::User { name, .. } = caller
        && name != req.user_name
    {
        return Err(ServiceError::Forbidden {
            message: "a user makes install links for themselves only".to_owned(),
        });
    }
    if !serves_agents(state) {
        return Err(ServiceError::Conflict {
            field: None,
            message: "this console serves no agent binaries, so an install script could not install one; start it with --agent-dir DIR".to_owned(),
        });
    }
    let token = format!("{}{}", validate::TOKEN_PREFIX, auth::generate_secret());
    let now = state.clock.now_ms();
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    let expires = now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX));
    let t = state
        .store
        .create_enrollment_token(
            &req.project,
            &req.group,
            &req.user_name,
            &hex::encode(auth::digest(&token)),
            now,
            expires,
        )
        .await?;
    let url = format!("{}/install/{token}", state.public_url);
    tracing::info!(group = %t.group, user = %t.user, expires = %rfc3339(expires), "install command created");
    super::audit::record(
        state,
        caller,
        "install_link.create",
        format!(
            "install link for user {} in group {}, until {}",
            t.user,
            t.group,
            rfc3339(expires)
        ),
        Some(&t.project),
    )
    .await;
    let ca = state.console_ca.as_deref().map(|pem| {
        (
            format!("{}/ca.pem", state.public_url),
            hex::encode(auth::digest(pem)),
        )
    });
    let (command, wget_command) =
        commands(&url, ca.as_ref().map(|(u, s)| (u.as_str(), s.as_str())));
    Ok(InstallCommand {
        command,
        wget_command,
        ca_url: ca.as_ref().map(|(u, _)| u.clone()),
        ca_sha256: ca.map(|(_, s)| s),
        url,
        group: t.group,
        project: t.project,
        user_name: t.user,
        network: t.network,
        enable_uuid: t.network.enable_uuid(),
        expires_at: rfc3339(expires),
    })
}

/// Where the install command puts the console's CA: in the install script's state directory
/// ([`layout::INSTALL_STATE_DIR`]), which `--uninstall --purge` removes.
fn bootstrap_ca() -> String {
    format!("{}/console-ca.pem", layout::INSTALL_STATE_DIR)
}

/// The curl and GNU wget commands that fetch the script at `url` and run it. The link reaches
/// curl and wget on standard input (`echo` is a shell builtin), so it is on no command line.
/// With a console CA (`ca`: its URL and SHA-256), the command first downloads the CA without
/// checking the server, checks the file against the SHA-256, and then trusts only it.
fn commands(url: &str, ca: Option<(&str, &str)>) -> (String, String) {
    match ca {
        None => (
            format!("echo 'url = \"{url}\"' | curl -fsSL -K - | sh"),
            format!("echo '{url}' | wget -qO- -i - | sh"),
        ),
        Some((ca_url, sha)) => {
            let dir = layout::INSTALL_STATE_DIR;
            let ca = bootstrap_ca();
            let check = format!("echo '{sha}  {ca}' | sha256sum -c");
            (
                format!(
                    "mkdir -p {dir} && curl -fsSk -o {ca} {ca_url} && {check} && echo 'url = \"{url}\"' | curl -fsSL --cacert {ca} -K - | sh"
                ),
                format!(
                    "mkdir -p {dir} && wget -q --no-check-certificate -O {ca} {ca_url} && {check} && echo '{url}' | wget -qO- --ca-certificate={ca} -i - | sh"
                ),
            )
        }
    }
}

/// The console's CA certificate (PEM), public by nature; install commands check it against
/// the SHA-256 they carry before trusting it.
pub fn ca_certificate(state: &AppState) -> Result<Arc<str>, ServiceError> {
    state
        .console_ca
        .clone()
        .ok_or_else(|| ServiceError::NotFound {
            field: None,
            message: "this console has no CA of its own (it serves without --tls)".to_owned(),
        })
}

/// Why an install link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Unknown,
    Used,
    Expired,
    Failed,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::Used => "used",
            Refused::Expired => "expired",
            Refused::Failed => "failed",
        }
    }
}

/// What an install link answers: always a script, since its only reader is a shell pipe
/// (`wget -qO- LINK | sh` shows nothing of an error page).
#[derive(Debug)]
pub enum Script {
    /// install.sh, rendered for the link's group and token.
    Install(String),
    /// A script that prints why the link was refused and exits 1, unless it is asked to
    /// `--uninstall`: the command an operator ran once keeps removing what it installed.
    Refused { why: Refused, script: String },
}

fn refusal(state: &AppState, why: Refused, message: &str) -> Script {
    let script = match render::refused_install_sh(
        &state.templates,
        &state.public_url,
        state.console_ca.as_deref(),
        message,
    ) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "rendering a refusal script");
            let quoted =
                tasknode_render::escape::shell(message).unwrap_or_else(|_| "''".to_owned());
            format!("#!/bin/sh\nprintf 'tasknode: %s\\n' {quoted} >&2\nexit 1\n")
        }
    };
    Script::Refused { why, script }
}

/// The script behind install link `token`.
pub async fn script(state: &AppState, token: String) -> Script {
    if validate::enrollment_token("token", &token).is_err() {
        return refusal(
            state,
            Refused::Unknown,
            "this install link is not valid; copy the whole command again",
        );
    }
    let sha = hex::encode(auth::digest(&token));
    let t = match state.store.enrollment_token(&sha).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return refusal(
                state,
                Refused::Unknown,
                "this install link is not known to the console; ask for a new install command",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "looking up an install link");
            return refusal(
                state,
                Refused::Failed,
                "the console could not look up this install link; try again",
            );
        }
    };
    let renew = format!(
        "create a new one with: tasknode-console install-command --project {} --group {} --user {}",
        t.project, t.group, t.user
    );
    if let Some((at, server)) = &t.used {
        return refusal(
            state,
            Refused::Used,
            &format!(
                "this install link was used at {} by server {server}; {renew}",
                rfc3339(*at)
            ),
        );
    }
    if t.expires_ms <= state.clock.now_ms() {
        return refusal(
            state,
            Refused::Expired,
            &format!(
                "this install link expired at {}; {renew}",
                rfc3339(t.expires_ms)
            ),
        );
    }
    let inputs = InstallInputs {
        console_url: &state.public_url,
        agent_urls: &state.agent_urls,
        console_ca: state.console_ca.as_deref(),
        credential: InstallCredential::Token(token),
        group: &t.group,
        enable_uuid: t.network.enable_uuid(),
        artifacts: &state.artifacts,
    };
    match render::install_sh(&state.templates, &inputs) {
        Ok(text) => Script::Install(text),
        Err(e) => {
            tracing::error!(error = %e, "rendering install.sh");
            refusal(
                state,
                Refused::Failed,
                "the console could not render the install script; see its log",
            )
        }
    }
}

/// The .repo file pointing yum at this console's repository for `dist` (with `serve --dist`).
/// A console with its own CA names it as the repository's `sslcacert`.
pub fn yum_repo(state: &AppState, dist: &str) -> Result<String, ServiceError> {
    let ca_file = state.console_ca.as_ref().map(|_| layout::YUM_CA_FILE);
    let not_found = || ServiceError::NotFound {
        field: Some("dist".to_owned()),
        message: format!(
            "no repository for {}; dists: {}",
            validate::show(dist),
            Dist::names()
        ),
    };
    let dist: Dist = dist.parse().map_err(|_| not_found())?;
    render::repo(&state.templates, &state.public_url, dist, ca_file).map_err(|e| match e {
        render::RenderError::Field(_) => not_found(),
        other => ServiceError::Internal(other.to_string()),
    })
}

/// How a host points yum at this console's repository for `dist`: the command that fetches the
/// .repo and, for a console with its own CA, first the CA, checked against its SHA-256 (as the
/// install command does) and kept where the .repo's `sslcacert` points.
pub fn yum_setup(state: &AppState, dist: &str) -> Result<YumSetup, ServiceError> {
    if state.dist.is_none() {
        return Err(ServiceError::NotFound {
            field: None,
            message: "this console serves no yum repository; start it with --dist DIR".to_owned(),
        });
    }
    // The same check and message as the .repo itself.
    yum_repo(state, dist)?;
    let repo_url = format!("{}/yum/{dist}/tasknode.repo", state.public_url);
    let repo_file = layout::YUM_REPO_FILE;
    let ca = state
        .console_ca
        .as_deref()
        .map(|pem| hex::encode(auth::digest(pem)));
    let (command, ca_url, ca_file) = match &ca {
        None => (format!("curl -fsS -o {repo_file} {repo_url}"), None, None),
        Some(sha) => {
            let ca_url = format!("{}/ca.pem", state.public_url);
            let ca_file = layout::YUM_CA_FILE;
            let dir = ca_file.rsplit_once('/').map_or("/", |(d, _)| d);
            (
                format!(
                    "mkdir -p {dir} && curl -fsSk -o {ca_file} {ca_url} && echo '{sha}  {ca_file}' | sha256sum -c && curl -fsS --cacert {ca_file} -o {repo_file} {repo_url}"
                ),
                Some(ca_url),
                Some(ca_file.to_owned()),
            )
        }
    };
    Ok(YumSetup {
        dist: dist.to_owned(),
        repo_url,
        repo_file: repo_file.to_owned(),
        ca_url,
        ca_sha256: ca,
        ca_file,
        command,
    })
}

/// The agent binary named `file`. Only names the console scanned are served: no path from the
/// request reaches the disk. Its bytes are the ones read when the console started, the ones
/// install scripts carry the SHA-256 of.
pub fn agent_binary<'s>(state: &'s AppState, file: &str) -> Result<&'s AgentBinary, ServiceError> {
    state
        .artifacts
        .binaries
        .iter()
        .find(|b| tasknode_render::artifacts::file_name(b.arch) == file)
        .ok_or_else(|| ServiceError::NotFound {
            field: None,
            message: format!("no agent binary {}", validate::show(file)),
        })
}
