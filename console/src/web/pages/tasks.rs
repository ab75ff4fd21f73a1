//! Tasks: submit, list, a task with its live log, cancel.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use tasknode_protocol::tasks::{MAX_LOG_CHUNK_BYTES, MAX_TIMEOUT_SECS, SubmitTask};
use tasknode_protocol::wire::Validate;
use tasknode_protocol::{FieldError, validate};

use super::{group_rows, group_url, see_other, split_group, visible_groups};
use crate::app::AppState;
use crate::service;
use crate::store::TaskFilter;
use crate::web::forms::FormErrors;
use crate::web::{Posted, Viewer, WebError, render};

#[derive(Debug, Default, Deserialize)]
pub struct TasksQuery {
    group: Option<String>,
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
    values.insert("key".to_owned(), new_key());
    tasks_page(&state, &viewer, &FormErrors::default(), values).await
}

/// The idempotency key of one rendering of the submit form: a double click, or a browser
/// sending the form again after a lost answer, makes one task.
fn new_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("web-{}", hex::encode(bytes))
}

async fn tasks_page(
    state: &AppState,
    viewer: &Viewer,
    errors: &FormErrors,
    values: BTreeMap<String, String>,
) -> Result<Response, WebError> {
    let filter = TaskFilter {
        limit: 100,
        ..TaskFilter::default()
    };
    let views = service::tasks::list(state, viewer.caller(), filter).await?;
    let (groups, _) = visible_groups(state, viewer).await?;
    Ok(render(
        state,
        Some(viewer),
        errors.page_status(),
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
        Some((p, g)) if viewer.caller().can_use(p) => (p.to_owned(), g.to_owned()),
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
    let mut fresh_key = false;
    // A page from before the form had a key sends none.
    let key = Some(form.get("key").trim())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    if !errors.fields.contains_key("group") {
        let mut req = SubmitTask {
            project,
            group,
            script,
            timeout_secs,
            idempotency_key: key,
        };
        match req.validate() {
            // The key is the form's own, hidden: a bad one was not typed by the user.
            Err(e) if e.field == "idempotency_key" => {
                errors.form = Some(format!(
                    "this form's hidden key {}; the form below has a new one: submit it again",
                    e.message
                ));
                fresh_key = true;
            }
            Err(e) => errors.field(e),
            Ok(()) => {}
        }
        if errors.is_empty() {
            let mut submitted = service::tasks::submit(&state, viewer.caller(), req.clone()).await;
            // The key names a task with another script or timeout: the form was edited and
            // sent again from a page the browser kept. That is a new task, under a new key.
            if let Err(e) = &submitted
                && e.field().as_deref() == Some("idempotency_key")
            {
                req.idempotency_key = Some(new_key());
                submitted = service::tasks::submit(&state, viewer.caller(), req).await;
            }
            match submitted {
                Ok((t, _)) => return Ok(see_other(&format!("/ui/tasks/{}", t.id))),
                Err(e) => errors.refused(e, &["group", "script"]),
            }
        }
    }
    // Shown again with its errors, the form keeps its key: nothing was made with it.
    let mut values = form.values();
    if fresh_key {
        values.insert("key".to_owned(), new_key());
    }
    tasks_page(&state, &viewer, &errors, values).await
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
    // Another project's task, a missing one and a failed look-up read alike.
    service::tasks::get(state, viewer.caller(), id)
        .await
        .map_err(|_| missing())
}

pub async fn task(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let t = visible_task(&state, &viewer, &raw).await?;
    task_page(&state, &viewer, &t, &FormErrors::default()).await
}

async fn task_page(
    state: &AppState,
    viewer: &Viewer,
    t: &crate::store::Task,
    errors: &FormErrors,
) -> Result<Response, WebError> {
    let view = service::tasks::view(state, t).await?;
    Ok(render(
        state,
        Some(viewer),
        errors.page_status(),
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
    match service::tasks::cancel(&state, viewer.caller(), t.id).await {
        Ok(_) => Ok(see_other(&format!("/ui/tasks/{}", t.id))),
        Err(e) => {
            let mut errors = FormErrors::default();
            errors.refused(e, &[]);
            let t = visible_task(&state, &viewer, &raw).await?;
            task_page(&state, &viewer, &t, &errors).await
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
    let chunk = service::logs::read(&state, &t, q.offset, MAX_LOG_CHUNK_BYTES).await?;
    Ok((chunk.headers(), chunk.bytes).into_response())
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
}
