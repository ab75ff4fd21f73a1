//! The audit log, newest first, a page at a time: the admin sees every entry, a user those of
//! their own project.

use axum::extract::{Query, State};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use crate::app::AppState;
use crate::service;
use crate::web::{Viewer, WebError, render};

/// `?before=ID`: the page of entries older than that one.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    before: Option<String>,
}

pub async fn audit(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Result<Response, WebError> {
    // A bad cursor shows the first page rather than an error: it is a link, not a form.
    let before = q
        .before
        .and_then(|b| b.parse::<i64>().ok())
        .filter(|b| *b > 0);
    let page = service::audit::page(&state, viewer.caller(), before, None).await?;
    Ok(render(
        &state,
        Some(&viewer),
        axum::http::StatusCode::OK,
        "audit.html",
        "audit",
        context! {
            entries => page.entries,
            next_before => page.next_before,
            first_page => before.is_none(),
        },
    ))
}
