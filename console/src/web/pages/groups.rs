//! Resource groups: the list, a group and its servers, rename and delete.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};
use tasknode_protocol::wire::{CreateGroup, ServerView, Validate};
use tasknode_protocol::{NetworkType, validate};

use super::{find_group, group_info, group_rows, group_url, see_other, visible_groups};
use crate::app::AppState;
use crate::service;
use crate::store::ServerFilter;
use crate::web::forms::FormErrors;
use crate::web::{Posted, Viewer, WebError, render};

/// `?deleted=NAME`: the notice after a group was deleted.
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
        errors.page_status(),
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
        match service::groups::create(&state, viewer.caller(), req).await {
            Ok(g) => return Ok(see_other(&group_url(&g.project, &g.name))),
            Err(e) => errors.refused(e, &["name", "project", "network"]),
        }
    }
    groups_page(&state, &viewer, &errors, form.values(), None).await
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
    viewer: &Viewer,
    project: &str,
    group: &str,
) -> Result<Vec<ServerRow>, WebError> {
    let views = service::servers::views(
        state,
        viewer.caller(),
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

/// `?removed=NAME`: the notice after a server was removed from the group.
#[derive(Debug, Default, Deserialize)]
pub struct GroupQuery {
    removed: Option<String>,
}

pub async fn group(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
    Query(q): Query<GroupQuery>,
) -> Result<Response, WebError> {
    let notice = q
        .removed
        .filter(|r| {
            r.len() <= 253
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        })
        .map(|r| {
            format!("Server {r} was removed from {group}; its agent is told at its next call.")
        });
    group_page(
        &state,
        &viewer,
        &project,
        &group,
        &FormErrors::default(),
        "",
        notice,
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
    notice: Option<String>,
) -> Result<Response, WebError> {
    let g = find_group(state, viewer, project, group).await?;
    let rows = server_rows_of(state, viewer, project, group).await?;
    Ok(render(
        state,
        Some(viewer),
        errors.page_status(),
        "group.html",
        "groups",
        context! {
            group => group_info(&g),
            servers => rows,
            errors => errors,
            new_name => new_name,
            notice => notice,
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
    let rows = server_rows_of(&state, &viewer, &project, &group).await?;
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
            let renamed =
                service::groups::rename(&state, viewer.caller(), &project, &group, &new_name).await;
            match renamed {
                Ok(g) => return Ok(see_other(&group_url(&g.project, &g.name))),
                Err(e) => errors.refused(e, &["new_name"]),
            }
        }
    }
    group_page(&state, &viewer, &project, &group, &errors, &new_name, None).await
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
        errors.page_status(),
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
    match service::groups::delete(&state, viewer.caller(), &project, &group).await {
        Ok(_) => Ok(see_other(&format!("/ui/groups?deleted={group}"))),
        Err(e) => {
            let mut errors = FormErrors::default();
            errors.refused(e, &[]);
            delete_page(&state, &viewer, &project, &group, &errors).await
        }
    }
}
