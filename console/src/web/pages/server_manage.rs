//! One server of a group: removing it (refused while it holds tasks, drained or forced) and
//! moving it to another group of its project, through `service::removal` as the API does.

use axum::extract::{Path, State};
use axum::response::Response;
use minijinja::context;
use serde::Serialize;
use tasknode_protocol::wire::{MoveServer, RemoveMode, ServerView, Validate};

use super::{find_group, group_info, group_url, see_other};
use crate::app::AppState;
use crate::service;
use crate::store::ServerFilter;
use crate::web::forms::FormErrors;
use crate::web::{Posted, Viewer, WebError, render};

fn server_url(project: &str, group: &str, name: &str) -> String {
    format!("{}/servers/{name}", group_url(project, group))
}

/// Server `name` of group `group`, if the viewer may see it.
async fn find_server(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
    name: &str,
) -> Result<ServerView, WebError> {
    service::servers::views(
        state,
        viewer.caller(),
        ServerFilter {
            project: Some(project.to_owned()),
            group: Some(group.to_owned()),
        },
    )
    .await?
    .into_iter()
    .find(|s| s.name == name)
    .ok_or_else(|| WebError::not_found(format!("there is no server {name:?} in group {group:?}")))
}

#[derive(Debug, Serialize)]
struct ServerInfo {
    name: String,
    status: &'static str,
    reason: String,
    running_tasks: u32,
    url: String,
}

/// The page, with `errors` and `notice` (what a removal that is still draining said).
async fn page(
    state: &AppState,
    viewer: &Viewer,
    (project, group, name): (&str, &str, &str),
    errors: &FormErrors,
    notice: Option<String>,
) -> Result<Response, WebError> {
    let g = find_group(state, viewer, project, group).await?;
    let s = find_server(state, viewer, project, group, name).await?;
    // Where it may move: the other groups of its project with its network type.
    let targets: Vec<String> = service::groups::list(state, viewer.caller(), Some(project))
        .await?
        .into_iter()
        .filter(|o| o.project == g.project && o.network == g.network && o.name != g.name)
        .map(|o| o.name)
        .collect();
    Ok(render(
        state,
        Some(viewer),
        errors.page_status(),
        "server.html",
        "groups",
        context! {
            group => group_info(&g),
            server => ServerInfo {
                url: server_url(project, group, &s.name),
                status: s.status.as_str(),
                name: s.name,
                reason: s.reason,
                running_tasks: s.running_tasks,
            },
            targets => targets,
            errors => errors,
            notice => notice,
        },
    ))
}

pub async fn server_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group, name)): Path<(String, String, String)>,
) -> Result<Response, WebError> {
    page(
        &state,
        &viewer,
        (&project, &group, &name),
        &FormErrors::default(),
        None,
    )
    .await
}

pub async fn remove_server(
    State(state): State<AppState>,
    Path((project, group, name)): Path<(String, String, String)>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    // Only a server of this group, which the viewer may see, is removed from this page.
    find_server(&state, &viewer, &project, &group, &name).await?;
    let mut errors = FormErrors::default();
    let mode = match form.get("mode") {
        "" | "refuse" => Some(RemoveMode::Refuse),
        "drain" => Some(RemoveMode::Drain),
        "force" => Some(RemoveMode::Force),
        _ => None,
    };
    let Some(mode) = mode else {
        errors.field(tasknode_protocol::FieldError::new(
            "mode",
            "must be refuse, drain or force",
        ));
        return page(&state, &viewer, (&project, &group, &name), &errors, None).await;
    };
    match service::removal::remove(&state, viewer.caller(), &project, &name, mode).await {
        Ok(r) if r.state == "removed" => Ok(see_other(&format!(
            "{}?removed={name}",
            group_url(&project, &group)
        ))),
        Ok(r) => {
            page(
                &state,
                &viewer,
                (&project, &group, &name),
                &errors,
                Some(r.message),
            )
            .await
        }
        Err(e) => {
            errors.refused(e, &["mode"]);
            page(&state, &viewer, (&project, &group, &name), &errors, None).await
        }
    }
}

pub async fn move_server(
    State(state): State<AppState>,
    Path((project, group, name)): Path<(String, String, String)>,
    posted: Posted,
) -> Result<Response, WebError> {
    let Posted { viewer, form } = posted;
    find_server(&state, &viewer, &project, &group, &name).await?;
    let mut errors = FormErrors::default();
    let req = MoveServer {
        project: project.clone(),
        name: name.clone(),
        group: form.trimmed("group").to_owned(),
    };
    match req.validate() {
        Err(e) => errors.field(e),
        Ok(()) => match service::removal::move_to(&state, viewer.caller(), req).await {
            Ok(moved) => return Ok(see_other(&group_url(&moved.project, &moved.group))),
            Err(e) => errors.refused(e, &["group"]),
        },
    }
    page(&state, &viewer, (&project, &group, &name), &errors, None).await
}
