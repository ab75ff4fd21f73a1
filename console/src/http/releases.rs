//! Release endpoints: operators publish signed update manifests and set each group's rollout
//! (admin token); agents fetch the manifest of the version they are asked to run and report how
//! their update went (node secret). The rules are in `service::releases`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tasknode_protocol::manifest;
use tasknode_protocol::updates::{ReleaseView, RolloutView, SetRollout, UpdateReport};

use super::admin::{NoQuery, ProjectQuery, query};
use super::error::ApiError;
use super::json::{StrictJson, require_json};
use super::{Admin, AuthedNode};
use crate::app::AppState;
use crate::service::{self, Caller};

// ---- operators ----

pub async fn publish(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    require_json(&headers)?;
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                limit: manifest::MAX_MANIFEST_BYTES,
            }
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })?;
    let (release, new) = service::releases::publish(&state, &bytes).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(release)))
}

pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    query(q)?;
    Ok(Json(service::releases::list(&state).await?))
}

pub async fn set_rollout(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<SetRollout>,
) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(
        service::releases::set_rollout(&state, Caller::Admin, req).await?,
    ))
}

pub async fn list_rollouts(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Json<Vec<RolloutView>>, ApiError> {
    let q = query(q)?;
    let views = service::releases::rollouts(&state, Caller::Admin, q.project.as_deref()).await?;
    Ok(Json(views))
}

// ---- agents ----

pub async fn manifest(
    State(state): State<AppState>,
    AuthedNode(_): AuthedNode,
    Path((_, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let text = service::releases::manifest(&state, &version).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

pub async fn report(
    State(state): State<AppState>,
    AuthedNode(node_id): AuthedNode,
    StrictJson(req): StrictJson<UpdateReport>,
) -> Result<StatusCode, ApiError> {
    service::releases::report(&state, &node_id, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}
