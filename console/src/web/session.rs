//! Web console sessions: who signed in, and the CSRF token their forms carry.
//!
//! A session is a random 32-byte token in an HttpOnly, SameSite=Strict cookie; the store keeps
//! only its SHA-256 (so a leaked database or memory dump holds no usable cookie), with who
//! signed in and the session's CSRF token, which every form posts back. Being in the store, a
//! session outlives a console restart and works on every console sharing the store; a
//! sign-out or an expiry ends it on all of them.

use std::sync::Arc;

use crate::auth::{self, SecretDigest};
use crate::store::{SessionCaps, SessionStore, SessionUser, StoreError, WebSession};

/// The cookie holding the session token.
pub const COOKIE: &str = "tasknode_session";
/// The cookie holding the login form's CSRF token (before there is a session).
pub const LOGIN_COOKIE: &str = "tasknode_login";

/// A session ends after this long without a request...
pub const IDLE_MS: i64 = 2 * 3600 * 1000;
/// ...and this long after sign-in, whatever happens.
pub const LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// A use is written to the store at most this often per session, so page views are reads.
/// The idle limit counts from the last use written.
pub const TOUCH_EVERY_MS: i64 = 60 * 1000;
/// Sessions kept at most; past these the least recently used go.
pub const CAPS: SessionCaps = SessionCaps {
    per_principal: 100,
    total: 10_000,
};

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

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct Current {
    pub principal: Principal,
    pub csrf: String,
    pub digest: SecretDigest,
}

/// The sessions, kept in the store.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

/// When a session created at `created_ms` and used at `seen_ms` ends.
fn expires(created_ms: i64, seen_ms: i64) -> i64 {
    seen_ms
        .saturating_add(IDLE_MS)
        .min(created_ms.saturating_add(LIFETIME_MS))
}

/// Whether a cookie value can be a session token at all (43 characters of base64url): anything
/// else is not looked up.
fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Sessions {
    pub fn new(store: Arc<dyn SessionStore>) -> Sessions {
        Sessions { store }
    }

    /// Starts a session; returns the cookie token (the store keeps only its digest).
    pub async fn create(&self, principal: Principal, now_ms: i64) -> Result<String, StoreError> {
        let token = auth::generate_secret();
        let session = WebSession {
            user: match principal {
                Principal::Admin => None,
                Principal::User { name, project } => Some(SessionUser { name, project }),
            },
            csrf: auth::generate_secret(),
            created_ms: now_ms,
            seen_ms: now_ms,
            expires_ms: expires(now_ms, now_ms),
        };
        self.store
            .create_session(&auth::digest(&token), &session, CAPS)
            .await?;
        Ok(token)
    }

    /// The session behind a cookie token, if it is live; marks it used (in the store at most
    /// once a minute).
    pub async fn get(&self, token: &str, now_ms: i64) -> Result<Option<Current>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let digest = auth::digest(token);
        let Some(s) = self.store.session(&digest, now_ms).await? else {
            return Ok(None);
        };
        if now_ms - s.seen_ms >= TOUCH_EVERY_MS {
            self.store
                .touch_session(&digest, now_ms, expires(s.created_ms, now_ms))
                .await?;
        }
        Ok(Some(Current {
            principal: match s.user {
                None => Principal::Admin,
                Some(u) => Principal::User {
                    name: u.name,
                    project: u.project,
                },
            },
            csrf: s.csrf,
            digest,
        }))
    }

    /// Ends a session (sign-out).
    pub async fn remove(&self, digest: &SecretDigest) -> Result<(), StoreError> {
        self.store.delete_session(digest).await
    }
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
    use crate::store::SqliteStore;

    fn sessions() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (dir, Sessions::new(Arc::new(store)))
    }

    #[tokio::test]
    async fn sessions_expire_when_idle_and_at_their_lifetime() {
        let (_dir, s) = sessions();
        let token = s.create(Principal::Admin, 0).await.unwrap();
        assert!(s.get(&token, IDLE_MS - 1).await.unwrap().is_some());
        // Used just now, so idle time starts again.
        assert!(s.get(&token, 2 * IDLE_MS - 2).await.unwrap().is_some());
        let late = s.create(Principal::Admin, 0).await.unwrap();
        for t in (0..LIFETIME_MS).step_by((IDLE_MS / 2) as usize) {
            assert!(s.get(&late, t).await.unwrap().is_some(), "{t}");
        }
        assert!(s.get(&late, LIFETIME_MS).await.unwrap().is_none());
        let idle = s.create(Principal::Admin, 0).await.unwrap();
        assert!(s.get(&idle, IDLE_MS).await.unwrap().is_none());
        assert!(s.get("not-a-session", 0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_use_is_written_at_most_once_a_minute() {
        let (_dir, s) = sessions();
        let token = s.create(Principal::Admin, 0).await.unwrap();
        // Seen under a minute after sign-in: not written, so the idle time runs from sign-in.
        assert!(s.get(&token, TOUCH_EVERY_MS - 1).await.unwrap().is_some());
        assert!(s.get(&token, IDLE_MS).await.unwrap().is_none());
        let token = s.create(Principal::Admin, 0).await.unwrap();
        // A minute later it is written, and the idle time runs from then.
        assert!(s.get(&token, TOUCH_EVERY_MS).await.unwrap().is_some());
        assert!(
            s.get(&token, TOUCH_EVERY_MS + IDLE_MS - 1)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn signing_out_ends_the_session_and_csrf_tokens_differ() {
        let (_dir, s) = sessions();
        let a = s
            .create(
                Principal::User {
                    name: "etl".into(),
                    project: "default".into(),
                },
                0,
            )
            .await
            .unwrap();
        let b = s.create(Principal::Admin, 0).await.unwrap();
        let ca = s.get(&a, 1).await.unwrap().map(|c| c.csrf);
        let cb = s.get(&b, 1).await.unwrap().map(|c| c.csrf);
        assert_ne!(ca, cb);
        let Some(current) = s.get(&a, 1).await.unwrap() else {
            panic!("session a is live");
        };
        assert!(current.principal.can_use("default"));
        assert!(!current.principal.can_use("other"));
        s.remove(&current.digest).await.unwrap();
        assert!(s.get(&a, 2).await.unwrap().is_none());
        assert!(s.get(&b, 2).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn hostile_tokens_are_not_sessions() {
        let (_dir, s) = sessions();
        s.create(Principal::Admin, 0).await.unwrap();
        for token in [
            "",
            "x",
            &"A".repeat(43),
            &"A".repeat(10_000),
            "../../etc/passwd",
            "ä".repeat(22).as_str(),
            "'; DROP TABLE web_sessions; --0123456789abcd",
        ] {
            assert!(s.get(token, 1).await.unwrap().is_none(), "{token}");
        }
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
