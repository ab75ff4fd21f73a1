//! Access endpoints (admin token): deleting a user, replacing a user's password, the install
//! links not spent yet, and the audit log. The rules are in `service::access` and
//! `service::audit`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use tasknode_protocol::access::{AuditPage, DeletedUserView, InstallLinkView};
use tasknode_protocol::wire::{CreatedUser, Validate};

use super::Admin;
use super::admin::{ProjectQuery, query};
use super::error::ApiError;
use crate::app::{AppState, ClientAddr};
use crate::service::{self, Caller};

/// `POST /api/v1/users/{name}/delete`
pub async fn delete_user(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DeletedUserView>, ApiError> {
    Ok(Json(
        service::access::delete_user(&state, Caller::Admin, &name).await?,
    ))
}

/// `POST /api/v1/users/{name}/password`: a new password, shown once.
pub async fn replace_password(
    _: Admin,
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Path(name): Path<String>,
) -> Result<Json<CreatedUser>, ApiError> {
    Ok(Json(
        service::access::replace_password(&state, Caller::Admin, peer, &name).await?,
    ))
}

/// `GET /api/v1/install-links?project=P`
pub async fn links(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Json<Vec<InstallLinkView>>, ApiError> {
    let q = query(q)?;
    Ok(Json(
        service::access::links(&state, Caller::Admin, q.project.as_deref()).await?,
    ))
}

/// `POST /api/v1/install-links/{id}/revoke`
pub async fn revoke_link(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InstallLinkView>, ApiError> {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid("id", "an install link's id is a positive number"))?;
    Ok(Json(
        service::access::revoke_link(&state, Caller::Admin, id).await?,
    ))
}

/// Query parameters of `GET /audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

impl Validate for AuditQuery {
    fn validate(&self) -> Result<(), tasknode_protocol::FieldError> {
        match self.before {
            Some(b) if b < 1 => Err(tasknode_protocol::FieldError::new(
                "before",
                "is an entry id, above 0 (the next_before of the page before)",
            )),
            _ => Ok(()),
        }
    }
}

/// `GET /api/v1/audit?before=ID&limit=N`
pub async fn audit(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let q = query(q)?;
    Ok(Json(
        service::audit::page(&state, Caller::Admin, q.before, q.limit).await?,
    ))
}
