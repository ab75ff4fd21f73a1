//! Install commands: a one-time link per group and user (`POST /api/v1/install-commands`), the
//! install script behind it (`GET /install/{token}`), and the agent binaries the script
//! downloads (`GET /dist/agent/{file}`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tasknode_dist::render::{self, InstallCredential, InstallInputs};
use tasknode_protocol::wire::{CreateInstallCommand, InstallCommand};
use tasknode_protocol::{layout, validate};

use super::error::ApiError;
use super::json::StrictJson;
use super::{Admin, AppState};
use crate::auth;
use crate::clock::rfc3339;

/// By default an install link works for a day.
const DEFAULT_TTL_SECS: u64 = 24 * 3600;

pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateInstallCommand>,
) -> Result<(StatusCode, Json<InstallCommand>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(create_command(&state, req).await?),
    ))
}

/// Makes a one-time install link (`req` already validated) and the commands that run it, as
/// the API and the web console hand them out.
pub(crate) async fn create_command(
    state: &AppState,
    req: CreateInstallCommand,
) -> Result<InstallCommand, ApiError> {
    if state.artifacts.binaries.is_empty() {
        return Err(ApiError::Conflict {
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

/// `GET /ca.pem`: the console's CA certificate, public by nature; install commands check it
/// against the SHA-256 they carry before trusting it.
pub async fn ca_certificate(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(pem) = state.console_ca.clone() else {
        return Err(ApiError::NotFound {
            field: None,
            message: "this console has no CA of its own (it serves without --tls)".to_owned(),
        });
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pem.to_string(),
    )
        .into_response())
}

/// Why an install link was refused, as the `x-tasknode-refused` header says it.
#[derive(Clone, Copy)]
enum Refused {
    Unknown,
    Used,
    Expired,
    Failed,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::Used => "used",
            Refused::Expired => "expired",
            Refused::Failed => "failed",
        }
    }
}

/// A refused link still answers with a script, and with 200: the link's only reader is a
/// shell pipe, and `wget -qO- LINK | sh` shows nothing of an error page. The script prints the
/// reason and exits 1, unless it is asked to `--uninstall`: the command an operator ran once
/// keeps removing what it installed. `x-tasknode-refused` names the refusal for anything else
/// reading it.
fn refusal(state: &AppState, why: Refused, message: &str) -> Response {
    let body = match render::refused_install_sh(
        &state.templates,
        &state.public_url,
        state.console_ca.as_deref(),
        message,
    ) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "rendering a refusal script");
            let quoted = tasknode_dist::escape::shell(message).unwrap_or_else(|_| "''".to_owned());
            format!("#!/bin/sh\nprintf 'tasknode: %s\\n' {quoted} >&2\nexit 1\n")
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::HeaderName::from_static("x-tasknode-refused"),
                why.as_str(),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn script(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if validate::enrollment_token("token", &token).is_err() {
        return refusal(
            &state,
            Refused::Unknown,
            "this install link is not valid; copy the whole command again",
        );
    }
    let sha = hex::encode(auth::digest(&token));
    let t = match state.store.enrollment_token(&sha).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return refusal(
                &state,
                Refused::Unknown,
                "this install link is not known to the console; ask for a new install command",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "looking up an install link");
            return refusal(
                &state,
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
            &state,
            Refused::Used,
            &format!(
                "this install link was used at {} by server {server}; {renew}",
                rfc3339(*at)
            ),
        );
    }
    if t.expires_ms <= state.clock.now_ms() {
        return refusal(
            &state,
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
        Ok(text) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering install.sh");
            refusal(
                &state,
                Refused::Failed,
                "the console could not render the install script; see its log",
            )
        }
    }
}

/// `GET /yum/{dist}/tasknode.repo`: the .repo file pointing yum at this console's repository
/// for `dist` (with `serve --dist`).
pub async fn yum_repo(
    State(state): State<AppState>,
    Path(dist): Path<String>,
) -> Result<Response, ApiError> {
    let text = tasknode_dist::render::repo(&state.templates, &state.public_url, &dist).map_err(
        |e| match e {
            tasknode_dist::render::RenderError::Field(_) => ApiError::NotFound {
                field: Some("dist".to_owned()),
                message: format!(
                    "no repository for {}; dists: {}",
                    validate::show(&dist),
                    tasknode_dist::render::DISTS.join(", ")
                ),
            },
            other => ApiError::Internal(other.to_string()),
        },
    )?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response())
}

pub async fn agent_binary(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    // Only names the console scanned are served: no path from the request reaches the disk.
    let Some(binary) = state
        .artifacts
        .binaries
        .iter()
        .find(|b| tasknode_dist::artifacts::file_name(&b.arch) == file)
    else {
        return Err(ApiError::NotFound {
            field: None,
            message: format!("no agent binary {}", validate::show(&file)),
        });
    };
    // The bytes read when the console started: the ones the script's SHA-256 was taken of.
    let bytes = axum::body::Bytes::from_owner(Shared(std::sync::Arc::clone(&binary.data)));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static("x-checksum-sha256"),
                binary.sha256.clone(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Lets a shared buffer back a response body without copying it.
struct Shared(std::sync::Arc<[u8]>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
