//! Releases and rollouts.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use minijinja::context;
use tasknode_protocol::FieldError;
use tasknode_protocol::updates::{Batch, SetRollout};
use tasknode_protocol::wire::Validate;

use super::{group_rows, group_url, see_other, split_group, visible_groups};
use crate::app::AppState;
use crate::service;
use crate::web::forms::{FormErrors, number};
use crate::web::{Posted, Viewer, WebError, render};

pub async fn releases(State(state): State<AppState>, viewer: Viewer) -> Result<Response, WebError> {
    releases_page(&state, &viewer, &FormErrors::default(), BTreeMap::new()).await
}

async fn releases_page(
    state: &AppState,
    viewer: &Viewer,
    errors: &FormErrors,
    values: BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let releases = service::releases::list(state).await?;
    let rollouts: Vec<_> = service::releases::rollouts(state, viewer.caller(), None)
        .await?
        .into_iter()
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
        errors.page_status(),
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
    viewer.caller().require_admin("start a rollout")?;
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
        match service::releases::set_rollout(&state, viewer.caller(), req).await {
            Ok(_) => return Ok(see_other("/ui/releases")),
            Err(e) => errors.refused(e, &["group", "version", "batch", "max_failures"]),
        }
    }
    releases_page(&state, &viewer, &errors, form.values()).await
}
