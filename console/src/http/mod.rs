//! The HTTP API under `/api/v1`: routes, shared state, authentication and the console-time
//! header every response carries. docs/api.md documents each endpoint.

pub(crate) mod admin;
mod agent;
#[cfg(test)]
mod boundary_tests;
pub mod error;
pub(crate) mod install;
mod json;
pub(crate) mod releases;
pub(crate) mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tasknode_protocol::{MAX_BODY_BYTES, TIME_HEADER};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::{self, SecretDigest};
use crate::clock::Clock;
use crate::liveness::LivenessMap;
use crate::status::Thresholds;
use crate::store::Store;
use error::ApiError;

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub live: Arc<LivenessMap>,
    pub clock: Clock,
    pub thresholds: Thresholds,
    pub admin_token: SecretDigest,
    /// Bounds Argon2 work (19 MiB and tens of milliseconds each): a few hashes at once, a
    /// bounded queue, and backoff per user name and address after failures.
    pub credentials: Arc<crate::throttle::Throttle>,
    /// The URL servers reach this console at; install commands and scripts carry it.
    pub public_url: String,
    /// The URLs agents talk to (`serve --agent-url`, else `public_url`), in order; install
    /// scripts and commands write them all into the agent config.
    pub agent_urls: Arc<[String]>,
    /// The template environment install scripts are rendered with.
    pub templates: Arc<tasknode_dist::Templates>,
    /// The agent binaries install scripts download (none without `--agent-dir`).
    pub artifacts: Arc<tasknode_dist::artifacts::AgentArtifacts>,
    /// With `serve --tls`: the console's CA certificate (PEM), which install scripts and agents
    /// pin.
    pub console_ca: Option<Arc<str>>,
    /// With `serve --dist`: the release directory whose repositories and key are served.
    pub dist: Option<Arc<std::path::Path>>,
    /// Wakes agents' long polls when their group has work.
    pub dispatch: Arc<crate::tasks::Dispatch>,
    /// The task logs agents push.
    pub task_logs: Arc<crate::tasks::TaskLogs>,
    /// Signs the tokens the console reads classic servers' logs with.
    pub log_key: Arc<ed25519_dalek::SigningKey>,
    /// Its public half, as heartbeat answers carry it.
    pub log_key_public: Arc<str>,
    /// Runs rollouts; heartbeat answers carry the version it wants each server to run.
    pub rollouts: Arc<crate::rollout::RolloutEngine>,
    /// The web console's sessions and page templates.
    pub web: Arc<crate::web::Web>,
}

impl AppState {
    /// Runs `f` (hashing a new password, for the admin) on the blocking pool through the
    /// bounded queue of Argon2 work, counted under `peer`'s address.
    pub async fn password_work<T: Send + 'static>(
        &self,
        peer: std::net::IpAddr,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        Ok(self.credentials.work(peer, f).await?)
    }
}

pub fn router(state: AppState) -> Router {
    let routes = routes(&state);
    with_layers(routes, state)
}

/// Every route of the console, before [`with_layers`].
fn routes(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    if let Some(dist) = &state.dist {
        // tower-http serves files under these roots only: it refuses `..` and absolute paths.
        router = router
            .nest_service("/repo", ServeDir::new(dist.join("repo")))
            .nest_service("/releases", ServeDir::new(dist.join("releases")))
            .route_service(
                "/RPM-GPG-KEY-tasknode",
                ServeFile::new(dist.join(tasknode_dist::keys::PACKAGE_PUBLIC)),
            )
            .route("/yum/{dist}/tasknode.repo", get(install::yum_repo));
    }
    router
        .merge(crate::web::router())
        .route("/api/v1/health", get(agent::health))
        .route("/api/v1/enroll", post(agent::enroll))
        .route("/api/v1/nodes/{node_id}", get(agent::node))
        .route("/api/v1/nodes/{node_id}/heartbeat", post(agent::heartbeat))
        .route("/api/v1/nodes/{node_id}/shutdown", post(agent::shutdown))
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
        .route("/install/{token}", get(install::script))
        .route("/dist/agent/{file}", get(install::agent_binary))
        .route("/ca.pem", get(install::ca_certificate))
}

/// What every request goes through, whatever its route: the fallbacks, the body limit, the
/// panic backstop and the console-time header. The layers apply to the routes added before
/// this call, so it comes last.
pub(crate) fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A panic in a handler is a bug; it answers that one request with a 500 instead of
        // dropping the connection, and the console goes on serving.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(state.clone(), console_time))
        .with_state(state)
}

/// The answer to a request whose handler panicked. The panic message stays in the log: it may
/// quote the request.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked; answered 500");
    ApiError::Internal("the console failed on this request; its log says why".to_owned())
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        field: None,
        message: "no such endpoint; see docs/api.md for the API under /api/v1".to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Stamps every response with the console's clock.
async fn console_time(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&state.clock.now_ms().to_string()) {
        res.headers_mut().insert(TIME_HEADER, v);
    }
    res
}

/// The bearer token of a request, or an error naming the header.
fn bearer<'h>(headers: &'h HeaderMap, what: &str) -> Result<&'h str, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized {
            field: "authorization",
            message: format!("missing Authorization header; send `Authorization: Bearer <{what}>`"),
        })?;
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized {
            field: "authorization",
            message: format!(
                "malformed Authorization header; send `Authorization: Bearer <{what}>`"
            ),
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
        state
            .live
            .authenticate(&node_id, secret)
            .map_err(|e| ApiError::Unauthorized {
                field: "authorization",
                message: e.to_string(),
            })?;
        Ok(AuthedNode(node_id))
    }
}

/// Proof that a request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers, "admin token")?;
        if auth::digests_equal(&auth::digest(token), &state.admin_token) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized {
                field: "authorization",
                message:
                    "wrong admin token; use the one in the console's data directory (admin.token)"
                        .to_owned(),
            })
        }
    }
}
