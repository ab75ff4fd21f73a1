//! The JSON API under `/api/v1` (and the files install scripts and yum fetch): its routes,
//! authentication (the admin token, a node's secret) and its errors. Each handler parses the
//! request, calls the service layer and writes the answer. docs/api.md documents each endpoint.

mod access;
mod admin;
mod agent;
pub mod error;
mod health;
mod install;
mod json;
mod metrics;
mod releases;
mod tasks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::services::{ServeDir, ServeFile};

use crate::app::AppState;
use crate::service::{self, ServiceError};
use error::ApiError;

/// Every route of the JSON API and of the files the console serves to hosts.
pub fn routes(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    if let Some(dist) = &state.dist {
        // tower-http serves files under these roots only: it refuses `..` and absolute paths.
        router = router
            .nest_service(
                "/repo",
                ServeDir::new(dist.join(tasknode_render::published::REPO_DIR)),
            )
            .nest_service(
                "/releases",
                ServeDir::new(dist.join(tasknode_render::published::RELEASES_DIR)),
            )
            .route_service(
                "/RPM-GPG-KEY-tasknode",
                ServeFile::new(dist.join(tasknode_render::published::PACKAGE_PUBLIC)),
            )
            .route("/yum/{dist}/tasknode.repo", get(install::yum_repo));
    }
    router
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/health", get(agent::health))
        .route("/api/v1/enroll", post(agent::enroll))
        .route("/api/v1/nodes/{node_id}", get(agent::node))
        .route("/api/v1/nodes/{node_id}/heartbeat", post(agent::heartbeat))
        .route("/api/v1/nodes/{node_id}/shutdown", post(agent::shutdown))
        .route("/api/v1/nodes/{node_id}/leave", post(agent::leave))
        .route(
            "/api/v1/projects",
            get(admin::list_projects).post(admin::create_project),
        )
        .route(
            "/api/v1/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/api/v1/groups",
            get(admin::list_groups).post(admin::create_group),
        )
        .route("/api/v1/groups/rename", post(admin::rename_group))
        .route("/api/v1/groups/delete", post(admin::delete_group))
        .route(
            "/api/v1/servers",
            get(admin::list_servers).post(admin::add_server),
        )
        .route("/api/v1/servers/remove", post(admin::remove_server))
        .route("/api/v1/servers/move", post(admin::move_server))
        .route(
            "/api/v1/tasks",
            get(tasks::list)
                .post(tasks::submit)
                .layer(DefaultBodyLimit::max(
                    tasknode_protocol::tasks::MAX_SUBMIT_BODY_BYTES,
                )),
        )
        .route("/api/v1/tasks/{id}", get(tasks::show))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/v1/tasks/{id}/log", get(tasks::log))
        .route("/api/v1/nodes/{node_id}/tasks/poll", post(tasks::poll))
        .route(
            "/api/v1/nodes/{node_id}/tasks/{id}/start",
            post(tasks::start),
        )
        .route(
            "/api/v1/nodes/{node_id}/tasks/{id}/finish",
            post(tasks::finish),
        )
        .route(
            "/api/v1/nodes/{node_id}/tasks/{id}/log",
            post(tasks::push_log).layer(DefaultBodyLimit::max(
                tasknode_protocol::tasks::MAX_LOG_CHUNK_BYTES,
            )),
        )
        .route(
            "/api/v1/releases",
            get(releases::list).post(releases::publish),
        )
        .route(
            "/api/v1/rollouts",
            get(releases::list_rollouts).post(releases::set_rollout),
        )
        .route(
            "/api/v1/nodes/{node_id}/manifest/{version}",
            get(releases::manifest),
        )
        .route("/api/v1/nodes/{node_id}/update", post(releases::report))
        .route("/api/v1/install-commands", post(install::create))
        .route("/api/v1/install-links", get(access::links))
        .route(
            "/api/v1/install-links/{id}/revoke",
            post(access::revoke_link),
        )
        .route("/api/v1/users/{name}/delete", post(access::delete_user))
        .route(
            "/api/v1/users/{name}/password",
            post(access::replace_password),
        )
        .route("/api/v1/audit", get(access::audit))
        .route("/api/v1/yum/{dist}", get(install::yum_setup))
        .route("/install/{token}", get(install::script))
        .route("/dist/agent/{file}", get(install::agent_binary))
        .route("/ca.pem", get(install::ca_certificate))
}

/// The answer to a request whose handler panicked. The panic message stays in the log: it may
/// quote the request.
pub fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked; answered 500");
    ApiError::Service(ServiceError::Internal(
        "the console failed on this request; its log says why".to_owned(),
    ))
    .into_response()
}

/// The answer to a path no route takes.
pub async fn not_found() -> ApiError {
    ApiError::Service(ServiceError::NotFound {
        field: None,
        message: "no such endpoint; see docs/api.md for the API under /api/v1".to_owned(),
    })
}

/// The answer to a method a route does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The bearer token of a request, or an error naming the header.
fn bearer<'h>(headers: &'h HeaderMap, what: &str) -> Result<&'h str, ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Service(ServiceError::Unauthorized {
            field: "authorization",
            message: format!("missing Authorization header; send `Authorization: Bearer <{what}>`"),
        })
    })?;
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Service(ServiceError::Unauthorized {
                field: "authorization",
                message: format!(
                    "malformed Authorization header; send `Authorization: Bearer <{what}>`"
                ),
            })
        })
}

/// A node that proved itself with its secret: the `{node_id}` of the path, checked before the
/// body is read, so an unauthenticated caller learns nothing from body errors.
pub struct AuthedNode(pub String);

impl FromRequestParts<AppState> for AuthedNode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(mut params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::invalid("node_id", e.body_text()))?;
        let node_id = params
            .remove("node_id")
            .ok_or_else(|| ApiError::invalid("node_id", "the path names no node"))?;
        let secret = bearer(&parts.headers, "node secret")?;
        service::nodes::authenticate(state, &node_id, secret).await?;
        Ok(AuthedNode(node_id))
    }
}

/// Proof that a request carries the admin token. The API is the admin's: every handler behind
/// it calls the service layer as [`service::Caller::Admin`].
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers, "admin token")?;
        if service::projects::is_admin_token(state, token) {
            Ok(Admin)
        } else {
            Err(ApiError::Service(ServiceError::Unauthorized {
                field: "authorization",
                message:
                    "wrong admin token; use the one in the console's data directory (admin.token)"
                        .to_owned(),
            }))
        }
    }
}
