//! Install commands: the one-time link for a group and a user.

use axum::extract::{Path, State};
use axum::response::Response;
use minijinja::context;
use tasknode_protocol::wire::{CreateInstallCommand, Validate};
use tasknode_protocol::{FieldError, layout};

use super::{find_group, group_info};
use crate::app::AppState;
use crate::service;
use crate::web::forms::FormErrors;
use crate::web::session::Principal;
use crate::web::{Posted, Viewer, WebError, render};

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
    let users = service::install::users(state, viewer.caller(), project).await?;
    // With a release directory, the console also serves the yum repositories. The host paths
    // and names come from the layout, the one place that states them.
    let yum = service::install::yum_setup(state, "el7").ok().map(|setup| {
        context! {
            setup => setup.command,
            ca_file => setup.ca_file,
            package => layout::PACKAGE_NAME,
            config => layout::Layout::package().config,
            service => layout::SERVICE,
            consoles => state.agent_urls.to_vec(),
        }
    });
    Ok(render(
        state,
        Some(viewer),
        errors.page_status(),
        "install.html",
        "groups",
        context! {
            group => group_info(&g),
            users => users,
            ttls => TTLS.iter().map(|(label, secs)| context! { label, secs }).collect::<Vec<_>>(),
            errors => errors,
            created => created,
            yum => yum,
            serves_agents => service::install::serves_agents(state),
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
        match service::install::create_command(&state, viewer.caller(), req).await {
            Ok(created) => {
                return install_form(&state, &viewer, &project, &group, &errors, Some(created))
                    .await;
            }
            Err(e) => errors.refused(e, &["user_name", "ttl_secs"]),
        }
    }
    install_form(&state, &viewer, &project, &group, &errors, None).await
}
