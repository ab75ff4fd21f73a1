//! The web console under `/ui`: server-rendered pages (minijinja templates embedded in the
//! binary), a stylesheet and one small script, behind a sign-in with a user's password or the
//! admin token.
//!
//! Every page goes through the same service layer as the API (`crate::service`), so a form
//! and its API call accept and refuse the same things with the same messages; this module
//! turns the service's refusals into pages and messages beside form fields. Forms post back the
//! session's CSRF token; cookies are HttpOnly and SameSite=Strict; pages carry a strict
//! Content-Security-Policy (no inline script or style).

mod forms;
mod pages;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, UndefinedBehavior, Value, context};

use crate::app::AppState;
use crate::service::{Caller, ServiceError};
use session::{Current, Principal, Sessions};

/// What the web console keeps beside the API's state.
pub struct Web {
    pub sessions: Sessions,
    env: Environment<'static>,
    /// Set cookies with `Secure` (the console serves HTTPS).
    secure: bool,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").field("secure", &self.secure).finish()
    }
}

/// The page templates, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../web/templates/base.html")),
    (
        "macros.html",
        include_str!("../../web/templates/macros.html"),
    ),
    ("login.html", include_str!("../../web/templates/login.html")),
    (
        "groups.html",
        include_str!("../../web/templates/groups.html"),
    ),
    ("group.html", include_str!("../../web/templates/group.html")),
    (
        "server_rows.html",
        include_str!("../../web/templates/server_rows.html"),
    ),
    (
        "group_delete.html",
        include_str!("../../web/templates/group_delete.html"),
    ),
    (
        "server.html",
        include_str!("../../web/templates/server.html"),
    ),
    (
        "add_server.html",
        include_str!("../../web/templates/add_server.html"),
    ),
    (
        "install.html",
        include_str!("../../web/templates/install.html"),
    ),
    ("tasks.html", include_str!("../../web/templates/tasks.html")),
    ("task.html", include_str!("../../web/templates/task.html")),
    (
        "releases.html",
        include_str!("../../web/templates/releases.html"),
    ),
    ("audit.html", include_str!("../../web/templates/audit.html")),
];

const STYLESHEET: &str = include_str!("../../web/static/console.css");
const SCRIPT: &str = include_str!("../../web/static/console.js");

impl Web {
    /// The web console's state, with sessions kept in `sessions`.
    pub fn new(
        secure: bool,
        sessions: Arc<dyn crate::store::SessionStore>,
    ) -> Result<Web, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // `.html` templates escape every value for HTML (minijinja's default for the name).
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Web {
            sessions: Sessions::new(sessions),
            env,
            secure,
        })
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/groups") }))
        .route("/ui", get(|| async { Redirect::to("/ui/groups") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/groups") }))
        .route("/ui/static/console.css", get(stylesheet))
        .route("/ui/static/console.js", get(script))
        .route("/ui/login", get(pages::login_page).post(pages::login_user))
        .route("/ui/login/token", post(pages::login_token))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/groups", get(pages::groups).post(pages::create_group))
        .route("/ui/groups/{project}/{group}", get(pages::group))
        .route(
            "/ui/groups/{project}/{group}/servers",
            get(pages::server_rows),
        )
        .route(
            "/ui/groups/{project}/{group}/rename",
            post(pages::rename_group),
        )
        .route(
            "/ui/groups/{project}/{group}/delete",
            get(pages::delete_group_page).post(pages::delete_group),
        )
        .route(
            "/ui/groups/{project}/{group}/add-server",
            get(pages::add_server_page).post(pages::add_server),
        )
        .route(
            "/ui/groups/{project}/{group}/servers/{name}",
            get(pages::server_page),
        )
        .route(
            "/ui/groups/{project}/{group}/servers/{name}/remove",
            post(pages::remove_server),
        )
        .route(
            "/ui/groups/{project}/{group}/servers/{name}/move",
            post(pages::move_server),
        )
        .route(
            "/ui/groups/{project}/{group}/check-server",
            get(pages::check_server),
        )
        .route(
            "/ui/groups/{project}/{group}/install",
            get(pages::install_page).post(pages::create_install),
        )
        .route("/ui/concurrency", get(pages::concurrency))
        .route(
            "/ui/tasks",
            get(pages::tasks)
                .post(pages::submit_task)
                .layer(DefaultBodyLimit::max(
                    tasknode_protocol::tasks::MAX_SUBMIT_BODY_BYTES,
                )),
        )
        .route("/ui/tasks/{id}", get(pages::task))
        .route("/ui/tasks/{id}/cancel", post(pages::cancel_task))
        .route("/ui/tasks/{id}/log", get(pages::task_log))
        .route("/ui/releases", get(pages::releases))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/releases/rollout", post(pages::set_rollout))
        .layer(middleware::from_fn(page_headers))
}

async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    static_file("text/javascript; charset=utf-8", SCRIPT)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every web console response: a strict CSP (only the console's own script and
/// stylesheet), no framing, no sniffing, no referrer beyond the console, and no caching of
/// pages (they hold install links and CSRF tokens).
async fn page_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The web console's error pages and short answers.
#[derive(Debug)]
pub enum WebError {
    /// Not signed in: a page goes to the sign-in form, a script gets 401.
    SignIn { next: String, script: bool },
    /// A status and a message for a person.
    Page { status: StatusCode, message: String },
}

impl WebError {
    fn not_found(what: impl Into<String>) -> WebError {
        WebError::Page {
            status: StatusCode::NOT_FOUND,
            message: what.into(),
        }
    }

    fn forbidden(what: impl Into<String>) -> WebError {
        WebError::Page {
            status: StatusCode::FORBIDDEN,
            message: what.into(),
        }
    }
}

/// The session store's errors (sessions are the web console's own state, kept in the store).
impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> WebError {
        WebError::from(ServiceError::from(e))
    }
}

impl From<ServiceError> for WebError {
    fn from(e: ServiceError) -> WebError {
        WebError::Page {
            status: status(&e),
            message: e.to_string(),
        }
    }
}

/// The status of a page that shows what the service layer refused.
fn status(e: &ServiceError) -> StatusCode {
    crate::app::status::of(e).0
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn { script: true, .. } => (
                StatusCode::UNAUTHORIZED,
                "your session ended; reload the page to sign in again",
            )
                .into_response(),
            WebError::SignIn { next, .. } => {
                Redirect::to(&format!("/ui/login?next={}", encode_path(&next))).into_response()
            }
            WebError::Page { status, message } => {
                // A bare page: the error may come before anything about the viewer is known.
                let body = format!(
                    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} - tasknode</title><link rel=\"stylesheet\" href=\"/ui/static/console.css\"></head><body><main class=\"narrow\"><h1>{}</h1><p class=\"alert\" id=\"page-error\" role=\"alert\">{}</p><p><a href=\"/ui/groups\">Back to resource groups</a></p></main></body></html>",
                    status.canonical_reason().unwrap_or("Error"),
                    minijinja::HtmlEscape(&message)
                );
                (
                    status,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    body,
                )
                    .into_response()
            }
        }
    }
}

/// Percent-encodes a path for a query parameter.
fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui//")
                && !n.contains(['\\', '\r', '\n'])
                && n != "/ui/login" =>
        {
            n
        }
        _ => "/ui/groups",
    }
}

/// A signed-in viewer of a page.
#[derive(Debug, Clone)]
pub struct Viewer(pub Current);

impl Viewer {
    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// The viewer as the service layer's rules see them.
    pub fn caller(&self) -> Caller<'_> {
        match self.principal() {
            Principal::Admin => Caller::Admin,
            Principal::User { name, project } => Caller::User { name, project },
        }
    }
}

/// Requests the console's own script makes say so, and get 401 instead of a redirect.
const SCRIPT_HEADER: &str = "x-tasknode-script";

impl FromRequestParts<AppState> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let current = match session::cookie(&parts.headers, session::COOKIE) {
            Some(token) => state.web.sessions.get(token, state.clock.now_ms()).await?,
            None => None,
        };
        match current {
            Some(current) => Ok(Viewer(current)),
            None => Err(WebError::SignIn {
                next: parts
                    .uri
                    .path_and_query()
                    .map_or("/ui/groups", |p| p.as_str())
                    .to_owned(),
                script: parts.headers.contains_key(SCRIPT_HEADER),
            }),
        }
    }
}

/// A form posted by a signed-in viewer, with its CSRF token checked: the field `csrf` must be
/// the session's token, and an `Origin` header, when the browser sends one, must be this host.
#[derive(Debug)]
pub struct Posted {
    pub viewer: Viewer,
    pub form: forms::Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, WebError> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        same_origin(&parts.headers)?;
        let req = Request::from_parts(parts, body);
        let form = forms::Fields::from_request(req, state).await?;
        let sent = form.get("csrf");
        if !session::tokens_equal(sent, &viewer.0.csrf) {
            return Err(stale_form());
        }
        Ok(Posted { viewer, form })
    }
}

fn stale_form() -> WebError {
    WebError::forbidden(
        "this form was not sent from a current page of this console (its CSRF token is missing or old); go back, reload the page and send it again",
    )
}

/// Refuses a post whose `Origin` is another site.
fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(stale_form()),
    }
}

/// Renders `template` with `ctx` and what every page has: the viewer, the CSRF token, the
/// section of the console it belongs to.
fn render(
    state: &AppState,
    viewer: Option<&Viewer>,
    status: StatusCode,
    template: &str,
    section: &str,
    ctx: Value,
) -> Response {
    let base = match viewer {
        Some(v) => context! {
            viewer => v.principal().label(),
            is_admin => v.principal().is_admin(),
            csrf => v.0.csrf.clone(),
            section => section,
        },
        None => context! { viewer => (), is_admin => false, csrf => "", section => section },
    };
    let result = state
        .web
        .env
        .get_template(template)
        .and_then(|t| t.render(context! { ..ctx, ..base }));
    match result {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "rendering a page failed");
            WebError::Page {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("rendering page {template} failed: {e}"),
            }
            .into_response()
        }
    }
}

/// The shared state's web part, for `AppState`.
pub fn state(
    secure: bool,
    sessions: Arc<dyn crate::store::SessionStore>,
) -> anyhow::Result<Arc<Web>> {
    Ok(Arc::new(Web::new(secure, sessions)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        if let Err(e) = Web::new(false, Arc::new(store)) {
            panic!("{e:#}");
        }
    }

    #[test]
    fn sign_in_goes_back_only_to_console_pages() {
        assert_eq!(safe_next(Some("/ui/tasks/3")), "/ui/tasks/3");
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example/"),
            Some("/ui//evil.example"),
            Some("/api/v1/servers"),
            Some("/ui/login"),
            Some("/ui/x\r\nSet-Cookie: a=b"),
        ] {
            assert_eq!(safe_next(bad), "/ui/groups", "{bad:?}");
        }
    }

    #[test]
    fn origins_must_be_this_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }
}
