//! Adding a server: the form, the check as a name is typed, the concurrency calculator.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};
use tasknode_protocol::wire::{AddServer, Validate};
use tasknode_protocol::{FieldError, concurrency, validate};

use super::{find_group, group_info, group_url, see_other};
use crate::app::AppState;
use crate::service;
use crate::web::forms::{FormErrors, number};
use crate::web::{Posted, Viewer, WebError, render};

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
        errors.page_status(),
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
        match service::servers::add(&state, viewer.caller(), req).await {
            Ok(_) => return Ok(see_other(&group_url(&project, &group))),
            Err(e) => errors.refused(e, &["name", "max_concurrency"]),
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
/// another group of the same project has it already (and which). Other projects are never
/// looked at: their servers neither block this one nor are told of.
pub async fn check_server(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((project, group)): Path<(String, String)>,
    Query(q): Query<CheckQuery>,
) -> Result<Json<Check>, WebError> {
    let check =
        service::servers::check_name(&state, viewer.caller(), &project, &group, &q.name).await?;
    Ok(Json(Check {
        ok: check.ok,
        message: check.message,
    }))
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
