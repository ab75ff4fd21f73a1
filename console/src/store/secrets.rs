//! What every console sharing a store must agree on, beside the fleet's state: web sessions
//! (so a restart or another console signs no one out) and the console's own secrets (the admin
//! token's digest, the log-token key, the TLS CA and server certificates), created once with an
//! insert-if-absent so consoles starting together end up with the same values.

use async_trait::async_trait;

use super::StoreError;

/// The SHA-256 of a session token: the only form of it the store keeps.
pub type TokenDigest = [u8; 32];

/// Names of the secrets the console keeps ([`SecretStore`]).
pub mod names {
    /// SHA-256 of the admin token (32 bytes).
    pub const ADMIN_TOKEN_SHA256: &str = "admin_token_sha256";
    /// The ed25519 key that signs log tokens (its 32 secret bytes).
    pub const LOG_TOKEN_KEY: &str = "log_token_key";
    /// The console CA: JSON `{"cert_pem", "key_pem"}`.
    pub const TLS_CA: &str = "tls_ca";
    /// Prefix of server certificates issued by the CA, one per set of names: JSON
    /// `{"cert_pem", "key_pem"}`.
    pub const TLS_SERVER_PREFIX: &str = "tls_server/";
}

/// A secret's bytes; `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// Who a stored session belongs to: a user of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub name: String,
    pub project: String,
}

/// A web console session as the store keeps it (without its token).
#[derive(Clone, PartialEq, Eq)]
pub struct WebSession {
    /// The signed-in user; `None` for the admin (signed in with the admin token).
    pub user: Option<SessionUser>,
    /// The token every form of the session posts back.
    pub csrf: String,
    pub created_ms: i64,
    /// When it was last used, as last recorded (at most a minute stale).
    pub seen_ms: i64,
    /// When it ends unless used again: the sooner of its idle and lifetime limits.
    pub expires_ms: i64,
}

impl std::fmt::Debug for WebSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSession")
            .field("user", &self.user)
            .field("csrf", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .field("seen_ms", &self.seen_ms)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Bounds on stored sessions, so a flood of sign-ins cannot fill the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCaps {
    /// Sessions of one user (or of the admin) at most; past it the least recently used goes.
    pub per_principal: u32,
    /// Sessions at most in all; past it the least recently used goes.
    pub total: u32,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session under its token's digest. In the same transaction it deletes the
    /// sessions expired at `session.created_ms`, then, while the principal has
    /// `caps.per_principal` sessions or the store `caps.total`, the least recently used ones.
    async fn create_session(
        &self,
        token: &TokenDigest,
        session: &WebSession,
        caps: SessionCaps,
    ) -> Result<(), StoreError>;
    /// The session behind a token digest, unless it is missing or expired at `now_ms` (an
    /// expired one is deleted).
    async fn session(
        &self,
        token: &TokenDigest,
        now_ms: i64,
    ) -> Result<Option<WebSession>, StoreError>;
    /// Records a use of a session: when it was seen and when it now expires.
    async fn touch_session(
        &self,
        token: &TokenDigest,
        seen_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError>;
    /// Ends a session (sign-out); a missing one is no error.
    async fn delete_session(&self, token: &TokenDigest) -> Result<(), StoreError>;
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret named `name`.
    async fn secret(&self, name: &str) -> Result<Option<SecretBytes>, StoreError>;
    /// Stores `value` under `name` unless a secret of that name exists, and returns what is
    /// stored afterwards: `value` when this call stored it, else the value stored first. Any
    /// number of consoles calling at once all get the same answer.
    async fn insert_secret(
        &self,
        name: &str,
        value: &[u8],
        now_ms: i64,
    ) -> Result<SecretBytes, StoreError>;
    /// Stores `value` under `name`, replacing what was there (a new admin token).
    async fn set_secret(&self, name: &str, value: &[u8], now_ms: i64) -> Result<(), StoreError>;
    /// Deletes the secrets whose names start with `prefix`, except the `keep` newest; returns
    /// how many went.
    async fn prune_secrets(&self, prefix: &str, keep: u32) -> Result<u64, StoreError>;
}
