//! Signing in and out: a user with a password, or the admin token.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use tasknode_protocol::{FieldError, validate};

use super::see_other;
use crate::app::{AppState, ClientAddr};
use crate::service::{self, ServiceError};
use crate::web::forms::FormErrors;
use crate::web::session::{self, Principal};
use crate::web::{Posted, WebError, render, safe_next, same_origin};

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    // A cookie that is no live session (or a store that cannot say) gets the sign-in form.
    if let Some(token) = session::cookie(&headers, session::COOKIE)
        && let Ok(Some(_)) = state.web.sessions.get(token, state.clock.now_ms()).await
    {
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
        errors.page_status(),
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
fn login_csrf(headers: &HeaderMap, form: &crate::web::forms::Fields) -> Result<(), WebError> {
    same_origin(headers)?;
    match session::cookie(headers, session::LOGIN_COOKIE) {
        Some(cookie) if session::tokens_equal(cookie, form.get("csrf")) => Ok(()),
        _ => Err(crate::web::stale_form()),
    }
}

/// Starts a session for `principal` and goes to `next`.
async fn signed_in(
    state: &AppState,
    principal: Principal,
    next: &str,
) -> Result<Response, WebError> {
    let who = principal.label();
    let token = state
        .web
        .sessions
        .create(principal, state.clock.now_ms())
        .await?;
    tracing::info!(%who, "signed in to the web console");
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
    Ok(res)
}

pub async fn login_user(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    form: crate::web::forms::Fields,
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
    // Refused at once (before even looking the user up) past the queue or after repeated
    // failures: the form says why, and when to try again.
    let throttled = |refused: crate::throttle::Refused, errors: &mut FormErrors| {
        tracing::warn!(user = %user, peer = %peer, "web console sign-in throttled");
        errors.field(FieldError::new("password", refused.message()));
        errors.status = Some(StatusCode::TOO_MANY_REQUESTS);
        let mut res = login_form(&state, &headers, Some(&next), errors, &user);
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(refused.retry_after_secs()),
        );
        res
    };
    let checked = service::projects::verify_password(&state, &user, &password, peer).await;
    match checked {
        Err(ServiceError::Throttled(refused)) => Ok(throttled(refused, &mut errors)),
        Err(e) => Err(e.into()),
        Ok(Some(project)) => {
            signed_in(
                &state,
                Principal::User {
                    name: user,
                    project,
                },
                &next,
            )
            .await
        }
        Ok(None) => {
            tracing::warn!(user = %user, peer = %peer, "web console sign-in refused");
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
    form: crate::web::forms::Fields,
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
    } else if !service::projects::is_admin_token(&state, token) {
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
    signed_in(&state, Principal::Admin, &next).await
}

pub async fn logout(State(state): State<AppState>, posted: Posted) -> Result<Response, WebError> {
    state.web.sessions.remove(&posted.viewer.0.digest).await?;
    let mut res = see_other("/ui/login");
    if let Ok(v) = session::set_cookie(session::COOKIE, "", 0, state.web.secure).parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}
