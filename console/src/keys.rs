//! The admin token and the log-token key, kept in the store so that every console sharing it
//! accepts the same token and signs with the same key, and a restart changes neither.
//!
//! Each is created once with an insert-if-absent: of consoles starting together the first to
//! store one wins and the others take the stored value. A store without them (an older
//! console's) takes them from the files that console kept in the data directory, so the admin
//! token an operator has keeps working and classic servers keep accepting log tokens.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;

use crate::auth::{self, SecretDigest};
use crate::store::{SecretStore, secret_names};

/// The admin token's digest: the store's; else that of DATA/admin.token (an older console's
/// token, or a new one written there, mode 0600, for the admin commands on this host), stored.
pub async fn admin_token(
    store: &dyn SecretStore,
    token_path: &Path,
    now_ms: i64,
) -> anyhow::Result<SecretDigest> {
    let name = secret_names::ADMIN_TOKEN_SHA256;
    if let Some(stored) = store.secret(name).await? {
        let digest = digest_of(&stored.0)?;
        if auth::read_admin_token(token_path).is_some_and(|d| !auth::digests_equal(&d, &digest)) {
            tracing::warn!(path = %token_path.display(), "this file's admin token is not the one the console's database holds, so it is refused; use the token of the console that created the database");
        }
        tracing::info!(path = %token_path.display(), "admin token (its digest kept in the database)");
        return Ok(digest);
    }
    // File first, then the store: a crash between the two leaves a file the next start
    // imports, never a stored digest whose token nobody has.
    let (digest, created) = auth::load_or_create_admin_token(token_path)?;
    let stored = digest_of(&store.insert_secret(name, &digest, now_ms).await?.0)?;
    if !auth::digests_equal(&stored, &digest) {
        if created {
            // Another console stored its token first: this one was never valid.
            std::fs::remove_file(token_path)
                .with_context(|| format!("removing {}", token_path.display()))?;
        }
        tracing::warn!(path = %token_path.display(), "another console created the admin token at the same time; use the token it wrote");
    } else if created {
        tracing::info!(path = %token_path.display(), "wrote a new admin token (mode 0600); admin commands read it from there");
    } else {
        tracing::info!(path = %token_path.display(), "moved the admin token's digest into the database; the file stays for the admin commands");
    }
    Ok(stored)
}

/// Makes a new admin token: written to `token_path` (mode 0600, replacing the file), then put
/// in the store in place of the old one. A crash between the two leaves the old token working
/// and the next start warning that the file's token is not the database's.
pub async fn new_admin_token(
    store: &dyn SecretStore,
    token_path: &Path,
    now_ms: i64,
) -> anyhow::Result<SecretDigest> {
    let token = auth::generate_secret();
    let tmp = token_path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            writeln!(f, "{token}")?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, token_path));
    written.with_context(|| format!("writing {}", token_path.display()))?;
    let digest = auth::digest(&token);
    store
        .set_secret(secret_names::ADMIN_TOKEN_SHA256, &digest, now_ms)
        .await?;
    tracing::info!(path = %token_path.display(), "made a new admin token (mode 0600); the old one no longer works");
    Ok(digest)
}

/// The key that signs log tokens: the store's; else the one an older console kept in
/// `old_path`, or a new one, stored.
pub async fn log_key(
    store: &dyn SecretStore,
    old_path: &Path,
    now_ms: i64,
) -> anyhow::Result<SigningKey> {
    let name = secret_names::LOG_TOKEN_KEY;
    if let Some(stored) = store.secret(name).await? {
        return key_of(&stored.0);
    }
    let (key, imported) = match auth::read_log_key(old_path)? {
        Some(key) => (key, true),
        None => (auth::generate_log_key(), false),
    };
    let stored = key_of(&store.insert_secret(name, &key.to_bytes(), now_ms).await?.0)?;
    if stored.to_bytes() != key.to_bytes() {
        tracing::info!("another console created the log-token key first; using it");
    } else if imported {
        tracing::info!(path = %old_path.display(), "moved the log-token key into the database; the file is no longer read and may be removed");
    } else {
        tracing::info!("created the log-token key in the database");
    }
    Ok(stored)
}

fn digest_of(bytes: &[u8]) -> anyhow::Result<SecretDigest> {
    match <SecretDigest>::try_from(bytes) {
        Ok(d) => Ok(d),
        Err(_) => bail!(
            "the database's admin token digest ({}) is {} bytes, not 32: the database is damaged; restore it from a backup",
            secret_names::ADMIN_TOKEN_SHA256,
            bytes.len()
        ),
    }
}

fn key_of(bytes: &[u8]) -> anyhow::Result<SigningKey> {
    match <[u8; 32]>::try_from(bytes) {
        Ok(b) => Ok(SigningKey::from_bytes(&b)),
        Err(_) => bail!(
            "the database's log-token key ({}) is {} bytes, not 32: the database is damaged; restore it from a backup",
            secret_names::LOG_TOKEN_KEY,
            bytes.len()
        ),
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
