//! The web console's pages and the forms they post.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use tasknode_protocol::tasks::{MAX_LOG_CHUNK_BYTES, MAX_TIMEOUT_SECS, SubmitTask, TaskView};
use tasknode_protocol::updates::{Batch, SetRollout};
use tasknode_protocol::wire::{AddServer, CreateGroup, CreateInstallCommand, ServerView, Validate};
use tasknode_protocol::{FieldError, NetworkType, concurrency, validate};

use super::forms::{FormErrors, number};
use super::session::{self, Principal};
use super::{Posted, Viewer, WebError, render, safe_next, same_origin};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::{Group, ServerFilter, TaskFilter};

fn group_url(project: &str, group: &str) -> String {
    format!("/ui/groups/{project}/{group}")
}

/// A redirect after a successful post (303: the browser follows it with a GET).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---- sign-in ----

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let signed_in = session::cookie(&headers, session::COOKIE)
        .and_then(|t| state.web.sessions.get(t, state.clock.now_ms()));
    if signed_in.is_some() {
        return see_other(safe_next(q.next.as_deref()));
    }
    login_form(
        &state,
        &headers,
        q.next.as_deref(),
        &FormErrors::default(),
        "",
    )
}

/// The sign-in page. Its forms carry a token that must match a cookie set with the page, so
/// another site cannot sign a browser in to an account of its choosing.
fn login_form(
    state: &AppState,
    headers: &HeaderMap,
    next: Option<&str>,
    errors: &FormErrors,
    user_name: &str,
) -> Response {
    let token = session::cookie(headers, session::LOGIN_COOKIE)
        .filter(|t| t.len() >= 32)
        .map_or_else(crate::auth::generate_secret, str::to_owned);
    let mut res = render(
        state,
        None,
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "login.html",
        "login",
        context! {
            login_csrf => token,
            next => safe_next(next),
            errors => errors,
            user_name => user_name,
        },
    );
    if let Ok(v) =
        session::set_cookie(session::LOGIN_COOKIE, &token, 3600, state.web.secure).parse()
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// Checks a sign-in form's token against its cookie.
fn login_csrf(headers: &HeaderMap, form: &super::forms::Fields) -> Result<(), WebError> {
    same_origin(headers)?;
    match session::cookie(headers, session::LOGIN_COOKIE) {
        Some(cookie) if session::tokens_equal(cookie, form.get("csrf")) => Ok(()),
        _ => Err(super::stale_form()),
    }
}

/// Starts a session for `principal` and goes to `next`.
fn signed_in(state: &AppState, principal: Principal, next: &str) -> Response {
    tracing::info!(who = %principal.label(), "signed in to the web console");
    let token = state.web.sessions.create(principal, state.clock.now_ms());
    let mut res = see_other(safe_next(Some(next)));
    let secure = state.web.secure;
    let cookies = [
        session::set_cookie(session::COOKIE, &token, session::LIFETIME_MS / 1000, secure),
        session::set_cookie(session::LOGIN_COOKIE, "", 0, secure),
    ];
    for c in cookies {
        if let Ok(v) = c.parse() {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

pub async fn login_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: super::forms::Fields,
) -> Result<Response, WebError> {
    login_csrf(&headers, &form)?;
    let next = form.get("next").to_owned();
    let user = form.trimmed("user_name").to_owned();
    let mut errors = FormErrors::default();
    if let Err(e) = validate::name("user_name", &user) {
        errors.field(e);
    }
    let password = form.get("password").to_owned();
    if password.is_empty() {
        errors.field(FieldError::new("password", "must not be empty"));
    }
    if !errors.is_empty() {
        return Ok(login_form(&state, &headers, Some(&next), &errors, &user));
    }
    let login = state.store.login(&user).await?;
    let stored = login.as_ref().map(|l| l.password_hash.clone());
    let ok = state
        .password_work(move || crate::auth::verify_password(&password, stored.as_deref()))
        .await?;
    match login {
        Some(l) if ok => Ok(signed_in(
            &state,
            Principal::User {
                name: user,
                project: l.project,
            },
            &next,
        )),
        _ => {
            tracing::warn!(user = %user, "web console sign-in refused");
            errors.field(FieldError::new(
                "password",
                "wrong user name or password; `tasknode-console user create` makes a user and prints its password",
            ));
            errors.status = Some(StatusCode::UNAUTHORIZED);
            Ok(login_form(&state, &headers, Some(&next), &errors, &user))
        }
    }
}

pub async fn login_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: super::forms::Fields,
) -> Result<Response, WebError> {
    login_csrf(&headers, &form)?;
    let next = form.get("next").to_owned();
    let token = form.trimmed("token");
    let mut errors = FormErrors::default();
    if token.is_empty() {
        errors.field(FieldError::new(
            "token",
            "must not be empty; the admin token is in the console's data directory (admin.token)",
        ));
    } else if !crate::auth::digests_equal(&crate::auth::digest(token), &state.admin_token) {
        tracing::warn!("web console sign-in with a wrong admin token refused");
        errors.field(FieldError::new(
            "token",
            "wrong admin token; use the one in the console's data directory (admin.token)",
        ));
        errors.status = Some(StatusCode::UNAUTHORIZED);
    }
    if !errors.is_empty() {
        return Ok(login_form(&state, &headers, Some(&next), &errors, ""));
    }
    Ok(signed_in(&state, Principal::Admin, &next))
}

pub async fn logout(State(state): State<AppState>, posted: Posted) -> Response {
    state.web.sessions.remove(&posted.viewer.0.digest);
    let mut res = see_other("/ui/login");
    if let Ok(v) = session::set_cookie(session::COOKIE, "", 0, state.web.secure).parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

// ---- resource groups ----

/// The groups a viewer sees, and the projects they can create groups in.
async fn visible_groups(
    state: &AppState,
    viewer: &Viewer,
) -> Result<(Vec<Group>, Vec<String>), WebError> {
    let project = viewer.principal().project();
    let groups = state.store.list_groups(project).await?;
    let projects = match project {
        Some(p) => vec![p.to_owned()],
        None => state
            .store
            .list_projects()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    };
    Ok((groups, projects))
}

#[derive(Debug, Serialize)]
struct GroupRow {
    name: String,
    project: String,
    network: String,
    servers: u32,
    url: String,
}

fn group_rows(groups: &[Group]) -> Vec<GroupRow> {
    groups
        .iter()
        .map(|g| GroupRow {
            name: g.name.clone(),
            project: g.project.clone(),
            network: g.network.to_string(),
            servers: g.servers,
            url: group_url(&g.project, &g.name),
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupsQuery {
    deleted: Option<String>,
}

pub async fn groups(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<GroupsQuery>,
) -> Result<Response, WebError> {
    let notice = q
        .deleted
        .filter(|d| validate::name("group", d).is_ok())
        .map(|d| format!("Resource group {d} was deleted."));
    groups_page(
        &state,
        &viewer,
        &FormErrors::default(),
        BTreeMap::new(),
        notice,
    )
    .await
}

async fn groups_page(
    state: &AppState,
    viewer: &Viewer,
    errors: &FormErrors,
    values: BTreeMap<String, String>,
    notice: Option<String>,
) -> Result<Response, WebError> {
    let (groups, projects) = visible_groups(state, viewer).await?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "groups.html",
        "groups",
        context! {
            groups => group_rows(&groups),
            projects => projects,
            errors => errors,
            values => values,
            notice => notice,
        },
    ))
}

pub async fn create_group(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    let project = match viewer.principal().project() {
        Some(own) => own.to_owned(),
        None => form.trimmed("project").to_owned(),
    };
    let mut errors = FormErrors::default();
    let network = form.get("network").parse::<NetworkType>();
    let req = CreateGroup {
        name: form.trimmed("name").to_owned(),
        project,
        network: *network.as_ref().unwrap_or(&NetworkType::Classic),
    };
    if let Err(e) = &network {
        errors.field(e.clone());
    }
    if let Err(e) = req.validate() {
        errors.field(e);
    }
    if errors.is_empty() {
        match crate::http::admin::create_group_core(&state, req).await {
            Ok(g) => return Ok(see_other(&group_url(&g.project, &g.name))),
            Err(e) => errors.api(e, &["name", "project", "network"]),
        }
    }
    groups_page(&state, &viewer, &errors, form.values(), None).await
}

async fn find_group(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
) -> Result<Group, WebError> {
    viewer.check_project(project)?;
    state
        .store
        .list_groups(Some(project))
        .await?
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| {
            WebError::not_found(format!(
                "there is no resource group {group:?} in project {project:?}"
            ))
        })
}

/// A server as its group's table shows it.
#[derive(Debug, Serialize)]
struct ServerRow {
    #[serde(flatten)]
    view: ServerView,
    status: &'static str,
    heartbeat_ago: Option<String>,
    clock_offset: Option<String>,
    max: String,
}

async fn server_rows_of(
    state: &AppState,
    project: &str,
    group: &str,
) -> Result<Vec<ServerRow>, WebError> {
    let views = crate::http::admin::server_views(
        state,
        ServerFilter {
            project: Some(project.to_owned()),
            group: Some(group.to_owned()),
        },
    )
    .await?;
    let now = state.clock.now_ms();
    Ok(views
        .into_iter()
        .map(|view| {
            let heartbeat_ago = view
                .last_heartbeat
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .map(|t| {
                    let ms = now - crate::clock::unix_ms(t);
                    format!("{} ago", crate::clock::human_duration(ms))
                });
            let clock_offset = view
                .clock_offset_ms
                .map(|ms| format!("{:+.1} s", ms as f64 / 1000.0));
            let max = match (&view.max_concurrency, &view.max_concurrency_source) {
                (Some(n), Some(src)) => format!("{n} ({src})"),
                (Some(n), None) => n.to_string(),
                _ => "computed at enrollment".to_owned(),
            };
            ServerRow {
                status: view.status.as_str(),
                view,
                heartbeat_ago,
                clock_offset,
                max,
            }
        })
        .collect())
}

#[derive(Debug, Serialize)]
struct GroupInfo {
    name: String,
    project: String,
    network: String,
    identity: &'static str,
    enable_uuid: bool,
    url: String,
}

fn group_info(g: &Group) -> GroupInfo {
    GroupInfo {
        name: g.name.clone(),
        project: g.project.clone(),
        network: g.network.to_string(),
        identity: g.network.identity_kind(),
        enable_uuid: g.network.enable_uuid(),
        url: group_url(&g.project, &g.name),
    }
}

pub async fn group(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
) -> Result<Response, WebError> {
    group_page(
        &state,
        &viewer,
        &project,
        &group,
        &FormErrors::default(),
        "",
    )
    .await
}

async fn group_page(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
    errors: &FormErrors,
    new_name: &str,
) -> Result<Response, WebError> {
    let g = find_group(state, viewer, project, group).await?;
    let rows = server_rows_of(state, project, group).await?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "group.html",
        "groups",
        context! {
            group => group_info(&g),
            servers => rows,
            errors => errors,
            new_name => new_name,
        },
    ))
}

/// The rows of a group's server table, which the page fetches every few seconds.
pub async fn server_rows(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let g = find_group(&state, &viewer, &project, &group).await?;
    let rows = server_rows_of(&state, &project, &group).await?;
    Ok(render(
        &state,
        Some(&viewer),
        StatusCode::OK,
        "server_rows.html",
        "groups",
        context! { group => group_info(&g), servers => rows },
    ))
}

pub async fn rename_group(
    State(state): State<AppState>,
    Path((project, group)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    find_group(&state, &viewer, &project, &group).await?;
    let new_name = form.trimmed("new_name").to_owned();
    let mut errors = FormErrors::default();
    match validate::name("new_name", &new_name) {
        Err(e) => errors.field(e),
        Ok(()) => {
            match crate::http::admin::rename_group_core(&state, &project, &group, &new_name).await {
                Ok(g) => return Ok(see_other(&group_url(&g.project, &g.name))),
                Err(mut e) => {
                    if let ApiError::Conflict { field, .. } = &mut e {
                        *field = Some("new_name".to_owned());
                    }
                    errors.api(e, &["new_name"]);
                }
            }
        }
    }
    group_page(&state, &viewer, &project, &group, &errors, &new_name).await
}

pub async fn delete_group_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
) -> Result<Response, WebError> {
    delete_page(&state, &viewer, &project, &group, &FormErrors::default()).await
}

async fn delete_page(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
    errors: &FormErrors,
) -> Result<Response, WebError> {
    let g = find_group(state, viewer, project, group).await?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "group_delete.html",
        "groups",
        context! { group => group_info(&g), servers => g.servers, errors => errors },
    ))
}

pub async fn delete_group(
    State(state): State<AppState>,
    Path((project, group)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, .. } = posted;
    find_group(&state, &viewer, &project, &group).await?;
    match crate::http::admin::delete_group_core(&state, &project, &group).await {
        Ok(_) => Ok(see_other(&format!("/ui/groups?deleted={group}"))),
        Err(e) => {
            let mut errors = FormErrors::default();
            errors.api(e, &[]);
            delete_page(&state, &viewer, &project, &group, &errors).await
        }
    }
}

// ---- adding a server ----

pub async fn add_server_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
) -> Result<Response, WebError> {
    add_server_form(
        &state,
        &viewer,
        &project,
        &group,
        &FormErrors::default(),
        BTreeMap::new(),
    )
    .await
}

async fn add_server_form(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
    errors: &FormErrors,
    values: BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let g = find_group(state, viewer, project, group).await?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "add_server.html",
        "groups",
        context! {
            group => group_info(&g),
            errors => errors,
            values => values,
            max_concurrency_limit => concurrency::MAX,
        },
    ))
}

pub async fn add_server(
    State(state): State<AppState>,
    Path((project, group)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    find_group(&state, &viewer, &project, &group).await?;
    let mut errors = FormErrors::default();
    let max = number(
        "max_concurrency",
        form.get("max_concurrency"),
        u64::from(concurrency::MIN)..=u64::from(concurrency::MAX),
    );
    let req = AddServer {
        project: project.clone(),
        group: group.clone(),
        name: form.trimmed("name").to_owned(),
        max_concurrency: max
            .as_ref()
            .ok()
            .copied()
            .flatten()
            .and_then(|n| u32::try_from(n).ok()),
    };
    if let Err(e) = max {
        errors.field(e);
    }
    if let Err(e) = req.validate() {
        errors.field(e);
    }
    if errors.is_empty() {
        match crate::http::admin::add_server_core(&state, req).await {
            Ok(_) => return Ok(see_other(&group_url(&project, &group))),
            Err(e) => errors.api(e, &["name", "max_concurrency"]),
        }
    }
    add_server_form(&state, &viewer, &project, &group, &errors, form.values()).await
}

#[derive(Debug, Default, Deserialize)]
pub struct CheckQuery {
    #[serde(default)]
    name: String,
}

/// What the add-server form shows as a name is typed.
#[derive(Debug, Serialize)]
pub struct Check {
    ok: bool,
    message: String,
}

/// Checks a server name as it is typed: the rules of the group's network type, and whether
/// another group has it already (and which).
pub async fn check_server(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
    Query(q): Query<CheckQuery>,
) -> Result<Json<Check>, WebError> {
    let g = find_group(&state, &viewer, &project, &group).await?;
    let name = match g.network.parse_server_name("name", q.name.trim()) {
        Ok(name) => name,
        Err(e) => {
            return Ok(Json(Check {
                ok: false,
                message: format!(
                    "{}; group {} is a {} group, so servers are added by {}",
                    e.message,
                    g.name,
                    g.network,
                    g.network.identity_kind()
                ),
            }));
        }
    };
    let check = match state.store.server_by_name(&name).await? {
        Some(s) if s.group == g.name && s.project == g.project => Check {
            ok: false,
            message: format!("server {name} is already in this group"),
        },
        Some(s) => Check {
            ok: false,
            message: crate::store::StoreError::ServerTaken {
                name,
                group: s.group,
                project: s.project,
            }
            .to_string(),
        },
        None => Check {
            ok: true,
            message: format!("{name} can be added"),
        },
    };
    Ok(Json(check))
}

#[derive(Debug, Default, Deserialize)]
pub struct ConcurrencyQuery {
    #[serde(default)]
    cores: String,
    #[serde(default)]
    memory_gib: String,
}

#[derive(Debug, Serialize)]
pub struct Calculated {
    max_concurrency: Option<u32>,
    message: String,
    /// The field at fault, when the input is bad.
    field: Option<String>,
}

/// The concurrency calculator: the max concurrency the console would compute for a host with
/// these cores and this much memory, by the same formula as at enrollment.
pub async fn concurrency(_: Viewer, Query(q): Query<ConcurrencyQuery>) -> Json<Calculated> {
    let parse = |field: &str, text: &str, max: f64| -> Result<f64, FieldError> {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0 && *v <= max)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!(
                        "{} is not a number above 0 and at most {max}",
                        validate::show(text)
                    ),
                )
            })
    };
    let result = parse("cores", &q.cores, 4096.0)
        .and_then(|cores| parse("memory_gib", &q.memory_gib, 65536.0).map(|gib| (cores, gib)));
    Json(match result {
        Err(e) => Calculated {
            max_concurrency: None,
            message: e.message,
            field: Some(e.field),
        },
        Ok((cores, gib)) => {
            let bytes = (gib * (1u64 << 30) as f64) as u64;
            let n = concurrency::max_concurrency(cores, bytes);
            let by_cpu = cores * concurrency::TASKS_PER_CORE;
            let limit = if by_cpu <= gib { "CPU" } else { "memory" };
            Calculated {
                max_concurrency: Some(n),
                message: format!(
                    "{n} tasks at once: half a core and 1 GiB per task, so {limit} is the limit (between {} and {})",
                    concurrency::MIN,
                    concurrency::MAX
                ),
                field: None,
            }
        }
    })
}

// ---- install commands ----

async fn install_users(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
) -> Result<Vec<String>, WebError> {
    Ok(match viewer.principal() {
        Principal::User { name, .. } => vec![name.clone()],
        Principal::Admin => state
            .store
            .list_users(Some(project))
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect(),
    })
}

/// How long an install link can be asked to last, as the form offers it.
const TTLS: [(&str, u64); 4] = [
    ("1 hour", 3600),
    ("1 day", 24 * 3600),
    ("3 days", 3 * 24 * 3600),
    ("7 days", 7 * 24 * 3600),
];

pub async fn install_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
) -> Result<Response, WebError> {
    install_form(
        &state,
        &viewer,
        &project,
        &group,
        &FormErrors::default(),
        None,
    )
    .await
}

async fn install_form(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
    errors: &FormErrors,
    created: Option<tasknode_protocol::wire::InstallCommand>,
) -> Result<Response, WebError> {
    let g = find_group(state, viewer, project, group).await?;
    let users = install_users(state, viewer, project).await?;
    // With a release directory, the console also serves the yum repositories.
    let yum = state.dist.as_ref().map(|_| {
        context! {
            repo_url => format!("{}/yum/el7/tasknode.repo", state.public_url),
            console => state.public_url.clone(),
        }
    });
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "install.html",
        "groups",
        context! {
            group => group_info(&g),
            users => users,
            ttls => TTLS.iter().map(|(label, secs)| context! { label, secs }).collect::<Vec<_>>(),
            errors => errors,
            created => created,
            yum => yum,
            serves_agents => !state.artifacts.binaries.is_empty(),
        },
    ))
}

pub async fn create_install(
    State(state): State<AppState>,
    Path((project, group)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    find_group(&state, &viewer, &project, &group).await?;
    let mut errors = FormErrors::default();
    let user_name = match viewer.principal() {
        Principal::User { name, .. } => name.clone(),
        Principal::Admin => form.trimmed("user_name").to_owned(),
    };
    let ttl = form.trimmed("ttl_secs");
    let ttl_secs = TTLS.iter().map(|(_, s)| *s).find(|s| s.to_string() == ttl);
    if ttl_secs.is_none() {
        errors.field(FieldError::new(
            "ttl_secs",
            "choose how long the link works: 1 hour, 1 day, 3 days or 7 days",
        ));
    }
    let req = CreateInstallCommand {
        project: project.clone(),
        group: group.clone(),
        user_name,
        ttl_secs,
    };
    if let Err(e) = req.validate() {
        errors.field(e);
    }
    if errors.is_empty() {
        match crate::http::install::create_command(&state, req).await {
            Ok(created) => {
                return install_form(&state, &viewer, &project, &group, &errors, Some(created))
                    .await;
            }
            Err(e) => errors.api(e, &["user_name", "ttl_secs"]),
        }
    }
    install_form(&state, &viewer, &project, &group, &errors, None).await
}

// ---- tasks ----

#[derive(Debug, Default, Deserialize)]
pub struct TasksQuery {
    group: Option<String>,
}

/// `project/group`, as the task forms name a group.
fn split_group(value: &str) -> Option<(&str, &str)> {
    value
        .split_once('/')
        .filter(|(p, g)| validate::name("project", p).is_ok() && validate::name("group", g).is_ok())
}

pub async fn tasks(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<TasksQuery>,
) -> Result<Response, WebError> {
    let mut values = BTreeMap::new();
    if let Some(g) = q.group.filter(|g| split_group(g).is_some()) {
        values.insert("group".to_owned(), g);
    }
    values.insert("timeout".to_owned(), "1h".to_owned());
    tasks_page(&state, &viewer, &FormErrors::default(), values).await
}

async fn tasks_page(
    state: &AppState,
    viewer: &Viewer,
    errors: &FormErrors,
    values: BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let project = viewer.principal().project().map(str::to_owned);
    let tasks = state
        .store
        .list_tasks(&TaskFilter {
            project: project.clone(),
            limit: 100,
            ..TaskFilter::default()
        })
        .await?;
    let views = tasks
        .iter()
        .map(|t| crate::http::tasks::task_view(state, t))
        .collect::<Result<Vec<TaskView>, _>>()?;
    let (groups, _) = visible_groups(state, viewer).await?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "tasks.html",
        "tasks",
        context! {
            tasks => views,
            groups => group_rows(&groups),
            errors => errors,
            values => values,
        },
    ))
}

/// A timeout as typed: `90s`, `30m`, `2h`, `1d`.
fn timeout(text: &str) -> Result<u64, FieldError> {
    let bad = || {
        FieldError::new(
            "timeout",
            format!(
                "{} is not a duration from 1s to 7d; write it like 90s, 30m, 2h or 1d",
                validate::show(text)
            ),
        )
    };
    let secs = humantime::parse_duration(text.trim())
        .map_err(|_| bad())?
        .as_secs();
    if secs == 0 || secs > MAX_TIMEOUT_SECS {
        return Err(bad());
    }
    Ok(secs)
}

pub async fn submit_task(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    let mut errors = FormErrors::default();
    let (project, group) = match split_group(form.get("group")) {
        Some((p, g)) if viewer.principal().can_use(p) => (p.to_owned(), g.to_owned()),
        _ => {
            errors.field(FieldError::new(
                "group",
                "choose the resource group to run it in",
            ));
            (String::new(), String::new())
        }
    };
    let timeout_secs = match timeout(form.get("timeout")) {
        Ok(secs) => Some(secs),
        Err(e) => {
            errors.field(e);
            None
        }
    };
    // Browsers send a textarea's line ends as CRLF; a shell script needs LF.
    let script = form.get("script").replace("\r\n", "\n");
    if !errors.fields.contains_key("group") {
        let req = SubmitTask {
            project,
            group,
            script,
            timeout_secs,
        };
        if let Err(e) = req.validate() {
            errors.field(e);
        }
        if errors.is_empty() {
            match crate::http::tasks::submit_task(&state, req).await {
                Ok(t) => return Ok(see_other(&format!("/ui/tasks/{}", t.id))),
                Err(e) => errors.api(e, &["group", "script"]),
            }
        }
    }
    tasks_page(&state, &viewer, &errors, form.values()).await
}

async fn visible_task(
    state: &AppState,
    viewer: &Viewer,
    raw: &str,
) -> Result<crate::store::Task, WebError> {
    let missing = || WebError::not_found(format!("there is no task {raw:?} you can see"));
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(missing)?;
    let t = crate::http::tasks::task_or_404(state, id)
        .await
        .map_err(|_| missing())?;
    if !viewer.principal().can_use(&t.project) {
        return Err(missing());
    }
    Ok(t)
}

pub async fn task(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let t = visible_task(&state, &viewer, &raw).await?;
    task_page(&state, &viewer, &t, &FormErrors::default())
}

fn task_page(
    state: &AppState,
    viewer: &Viewer,
    t: &crate::store::Task,
    errors: &FormErrors,
) -> Result<Response, WebError> {
    let view = crate::http::tasks::task_view(state, t)?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "task.html",
        "tasks",
        context! {
            task => view,
            final => t.state.is_final(),
            group_url => group_url(&t.project, &t.group),
            errors => errors,
        },
    ))
}

pub async fn cancel_task(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    posted: Posted,
) -> Result<Response, WebError> {
    let viewer = posted.viewer;
    let t = visible_task(&state, &viewer, &raw).await?;
    match crate::http::tasks::cancel_task(&state, t.id).await {
        Ok(_) => Ok(see_other(&format!("/ui/tasks/{}", t.id))),
        Err(e) => {
            let mut errors = FormErrors::default();
            errors.api(e, &[]);
            let t = visible_task(&state, &viewer, &raw).await?;
            task_page(&state, &viewer, &t, &errors)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    offset: u64,
}

/// A piece of a task's log from `offset`, for the task page's live view: the bytes, and the
/// task's state, the log's size and whether it is complete in headers (as the API sends them).
pub async fn task_log(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, WebError> {
    let t = visible_task(&state, &viewer, &raw).await?;
    let chunk = crate::http::tasks::read_log(&state, &t, q.offset, MAX_LOG_CHUNK_BYTES).await?;
    Ok(chunk.into_response())
}

// ---- releases ----

pub async fn releases(State(state): State<AppState>, viewer: Viewer) -> Result<Response, WebError> {
    releases_page(&state, &viewer, &FormErrors::default(), BTreeMap::new()).await
}

async fn releases_page(
    state: &AppState,
    viewer: &Viewer,
    errors: &FormErrors,
    values: BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let releases: Vec<_> = state
        .store
        .list_releases()
        .await?
        .into_iter()
        .map(crate::http::releases::release_view)
        .collect();
    let project = viewer.principal().project();
    let rollouts: Vec<_> = state
        .rollouts
        .tick()
        .await?
        .views()
        .into_iter()
        .filter(|r| project.is_none_or(|p| p == r.project))
        .map(|r| {
            context! {
                url => group_url(&r.project, &r.group),
                batch => r.batch.to_string(),
                state => r.state.as_str(),
                ..minijinja::Value::from_serialize(&r)
            }
        })
        .collect();
    let (groups, _) = visible_groups(state, viewer).await?;
    Ok(render(
        state,
        Some(viewer),
        if errors.is_empty() {
            StatusCode::OK
        } else {
            errors.status()
        },
        "releases.html",
        "releases",
        context! {
            releases => releases,
            rollouts => rollouts,
            groups => group_rows(&groups),
            errors => errors,
            values => values,
        },
    ))
}

pub async fn set_rollout(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    viewer.require_admin("start a rollout")?;
    let mut errors = FormErrors::default();
    let (project, group) = match split_group(form.get("group")) {
        Some((p, g)) => (p.to_owned(), g.to_owned()),
        None => {
            errors.field(FieldError::new(
                "group",
                "choose the resource group to update",
            ));
            (String::new(), String::new())
        }
    };
    let batch = Batch::parse(form.trimmed("batch"));
    let max_failures = number("max_failures", form.get("max_failures"), 0..=10_000);
    let req = SetRollout {
        project,
        group,
        version: form.trimmed("version").to_owned(),
        batch: *batch.as_ref().unwrap_or(&Batch::All),
        max_failures: max_failures
            .as_ref()
            .ok()
            .copied()
            .flatten()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    };
    if let Err(e) = batch {
        errors.field(e);
    }
    if let Err(e) = max_failures {
        errors.field(e);
    }
    if !errors.fields.contains_key("group")
        && let Err(e) = req.validate()
    {
        errors.field(e);
    }
    if errors.is_empty() {
        match crate::http::releases::start_rollout(&state, req).await {
            Ok(_) => return Ok(see_other("/ui/releases")),
            Err(e) => errors.api(e, &["group", "version", "batch", "max_failures"]),
        }
    }
    releases_page(&state, &viewer, &errors, form.values()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_typed() {
        assert_eq!(timeout("90s"), Ok(90));
        assert_eq!(timeout(" 2h "), Ok(7200));
        assert_eq!(timeout("7d"), Ok(MAX_TIMEOUT_SECS));
        for bad in ["", "0s", "8d", "soon", "-1h"] {
            assert_eq!(timeout(bad).unwrap_err().field, "timeout", "{bad}");
        }
    }

    #[test]
    fn task_forms_name_groups_as_project_slash_group() {
        assert_eq!(split_group("default/etl"), Some(("default", "etl")));
        for bad in ["", "etl", "/etl", "default/", "a/b/c", "x/$(id)"] {
            assert_eq!(split_group(bad), None, "{bad}");
        }
    }
}
