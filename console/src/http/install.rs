//! Install commands: a one-time link per group and user (`POST /api/v1/install-commands`), the
//! install script behind it (`GET /install/{token}`), the agent binaries the script downloads
//! (`GET /dist/agent/{file}`), the console's CA and the yum .repo file. The rules are in
//! `service::install`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tasknode_protocol::wire::{CreateInstallCommand, InstallCommand, YumSetup};

use super::Admin;
use super::error::ApiError;
use super::json::StrictJson;
use crate::app::AppState;
use crate::service::install::Script;
use crate::service::{self, Caller};

pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateInstallCommand>,
) -> Result<(StatusCode, Json<InstallCommand>), ApiError> {
    let command = service::install::create_command(&state, Caller::Admin, req).await?;
    Ok((StatusCode::CREATED, Json(command)))
}

/// `GET /api/v1/yum/{dist}`: the command that points a host's yum at this console.
pub async fn yum_setup(
    _: Admin,
    State(state): State<AppState>,
    Path(dist): Path<String>,
) -> Result<Json<YumSetup>, ApiError> {
    Ok(Json(service::install::yum_setup(&state, &dist)?))
}

/// `GET /ca.pem`: the console's CA certificate.
pub async fn ca_certificate(State(state): State<AppState>) -> Result<Response, ApiError> {
    let pem = service::install::ca_certificate(&state)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pem.to_string(),
    )
        .into_response())
}

/// A refused link still answers with a script, and with 200: the link's only reader is a
/// shell pipe. `x-tasknode-refused` names the refusal for anything else reading it.
pub async fn script(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let shell = (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8");
    let no_store = (header::CACHE_CONTROL, "no-store");
    match service::install::script(&state, token).await {
        Script::Install(text) => (StatusCode::OK, [shell, no_store], text).into_response(),
        Script::Refused { why, script } => (
            StatusCode::OK,
            [
                shell,
                no_store,
                (
                    header::HeaderName::from_static("x-tasknode-refused"),
                    why.as_str(),
                ),
            ],
            script,
        )
            .into_response(),
    }
}

/// `GET /yum/{dist}/tasknode.repo`: the .repo file pointing yum at this console's repository
/// for `dist` (with `serve --dist`).
pub async fn yum_repo(
    State(state): State<AppState>,
    Path(dist): Path<String>,
) -> Result<Response, ApiError> {
    let text = service::install::yum_repo(&state, &dist)?;
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
    let binary = service::install::agent_binary(&state, &file)?;
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
