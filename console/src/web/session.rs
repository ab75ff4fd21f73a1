//! Web console sessions: who signed in, and the CSRF token their forms carry.
//!
//! A session is a random 32-byte token in an HttpOnly, SameSite=Strict cookie; the console
//! keeps only its SHA-256, in memory, so a restart signs everyone out and a leaked memory dump
//! holds no usable cookie. Each session has its own CSRF token, which every form posts back.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::{self, SecretDigest};

/// The cookie holding the session token.
pub const COOKIE: &str = "tasknode_session";
/// The cookie holding the login form's CSRF token (before there is a session).
pub const LOGIN_COOKIE: &str = "tasknode_login";

/// A session ends after this long without a request...
pub const IDLE_MS: i64 = 2 * 3600 * 1000;
/// ...and this long after sign-in, whatever happens.
pub const LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// Sessions kept at most; past this the oldest goes first.
const MAX_SESSIONS: usize = 10_000;

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Signed in with the admin token: every project, releases and rollouts.
    Admin,
    /// A user of one project: that project's groups, servers, install commands and tasks.
    User { name: String, project: String },
}

impl Principal {
    /// Whether this principal may see and change `project`.
    pub fn can_use(&self, project: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::User { project: own, .. } => own == project,
        }
    }

    /// The one project a user is confined to; `None` for the admin.
    pub fn project(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::User { project, .. } => Some(project),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// How the page header names who is signed in.
    pub fn label(&self) -> String {
        match self {
            Principal::Admin => "admin (token)".to_owned(),
            Principal::User { name, project } => format!("{name} ({project})"),
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    csrf: String,
    created_ms: i64,
    seen_ms: i64,
}

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct Current {
    pub principal: Principal,
    pub csrf: String,
    pub digest: SecretDigest,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<SecretDigest, Session>>,
}

impl Sessions {
    /// Starts a session; returns the cookie token (the console keeps only its digest).
    pub fn create(&self, principal: Principal, now_ms: i64) -> String {
        let token = auth::generate_secret();
        let session = Session {
            principal,
            csrf: auth::generate_secret(),
            created_ms: now_ms,
            seen_ms: now_ms,
        };
        let mut map = self.lock();
        map.retain(|_, s| alive(s, now_ms));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.seen_ms)
                .map(|(digest, _)| *digest)
        {
            map.remove(&oldest);
        }
        map.insert(auth::digest(&token), session);
        token
    }

    /// The session behind a cookie token, if it is live; marks it used.
    pub fn get(&self, token: &str, now_ms: i64) -> Option<Current> {
        let digest = auth::digest(token);
        let mut map = self.lock();
        let session = map.get_mut(&digest)?;
        if !alive(session, now_ms) {
            map.remove(&digest);
            return None;
        }
        session.seen_ms = now_ms;
        Some(Current {
            principal: session.principal.clone(),
            csrf: session.csrf.clone(),
            digest,
        })
    }

    /// Ends a session (sign-out).
    pub fn remove(&self, digest: &SecretDigest) {
        self.lock().remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretDigest, Session>> {
        // A panic while holding the lock leaves the map itself consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn alive(s: &Session, now_ms: i64) -> bool {
    now_ms - s.seen_ms < IDLE_MS && now_ms - s.created_ms < LIFETIME_MS
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole console; `Secure` when the
/// console is served over HTTPS. `max_age_secs` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Compares two tokens in constant time (through their digests).
pub fn tokens_equal(a: &str, b: &str) -> bool {
    auth::digests_equal(&auth::digest(a), &auth::digest(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_their_lifetime() {
        let s = Sessions::default();
        let token = s.create(Principal::Admin, 0);
        assert!(s.get(&token, IDLE_MS - 1).is_some());
        // Used just now, so idle time starts again.
        assert!(s.get(&token, 2 * IDLE_MS - 2).is_some());
        let late = s.create(Principal::Admin, 0);
        for t in (0..LIFETIME_MS).step_by((IDLE_MS / 2) as usize) {
            assert!(s.get(&late, t).is_some(), "{t}");
        }
        assert!(s.get(&late, LIFETIME_MS).is_none());
        let idle = s.create(Principal::Admin, 0);
        assert!(s.get(&idle, IDLE_MS).is_none());
        assert!(s.get("not-a-session", 0).is_none());
    }

    #[test]
    fn signing_out_ends_the_session_and_csrf_tokens_differ() {
        let s = Sessions::default();
        let a = s.create(
            Principal::User {
                name: "etl".into(),
                project: "default".into(),
            },
            0,
        );
        let b = s.create(Principal::Admin, 0);
        let (ca, cb) = (s.get(&a, 1).map(|c| c.csrf), s.get(&b, 1).map(|c| c.csrf));
        assert_ne!(ca, cb);
        let Some(current) = s.get(&a, 1) else {
            panic!("session a is live");
        };
        assert!(current.principal.can_use("default"));
        assert!(!current.principal.can_use("other"));
        s.remove(&current.digest);
        assert!(s.get(&a, 2).is_none());
        assert!(s.get(&b, 2).is_some());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("a=1; tasknode_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(set_cookie(COOKIE, "v", 60, true).ends_with("HttpOnly; SameSite=Strict; Secure"));
    }
}
