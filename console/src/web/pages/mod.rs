//! The web console's pages and the forms they post, one module per part of the console, and
//! what they share: finding a group the viewer may see, and the links between pages.

mod audit;
mod groups;
mod install;
mod releases;
mod server_manage;
mod servers;
mod signin;
mod tasks;

pub use audit::*;
pub use groups::*;
pub use install::*;
pub use releases::*;
pub use server_manage::*;
pub use servers::*;
pub use signin::*;
pub use tasks::*;

use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use tasknode_protocol::validate;

use super::{Viewer, WebError};
use crate::app::AppState;
use crate::service;
use crate::store::Group;

fn group_url(project: &str, group: &str) -> String {
    format!("/ui/groups/{project}/{group}")
}

/// A redirect after a successful post (303: the browser follows it with a GET).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The groups a viewer sees, and the projects they can create groups in.
async fn visible_groups(
    state: &AppState,
    viewer: &Viewer,
) -> Result<(Vec<Group>, Vec<String>), WebError> {
    let groups = service::groups::list(state, viewer.caller(), None).await?;
    let projects = service::groups::projects(state, viewer.caller()).await?;
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

async fn find_group(
    state: &AppState,
    viewer: &Viewer,
    project: &str,
    group: &str,
) -> Result<Group, WebError> {
    Ok(service::groups::find(state, viewer.caller(), project, group).await?)
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

/// `project/group`, as the task forms name a group.
fn split_group(value: &str) -> Option<(&str, &str)> {
    value
        .split_once('/')
        .filter(|(p, g)| validate::name("project", p).is_ok() && validate::name("group", g).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_forms_name_groups_as_project_slash_group() {
        assert_eq!(split_group("default/etl"), Some(("default", "etl")));
        for bad in ["", "etl", "/etl", "default/", "a/b/c", "x/$(id)"] {
            assert_eq!(split_group(bad), None, "{bad}");
        }
    }
}
