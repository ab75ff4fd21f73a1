//! Web sessions and the console's secrets in the embedded store, and the file modes that keep
//! them private: the database holds private keys, so its file is 0600 and its directory 0700.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::super::secrets::{
    SecretBytes, SecretStore, SessionCaps, SessionStore, SessionUser, TokenDigest, WebSession,
};
use super::{SqliteStore, StoreError, sql};

/// Tightens the database's directory to 0700 and the database with its WAL and shared-memory
/// files to 0600. A directory someone else owns, or a shared one (sticky, like /tmp), is not
/// changed but refused: the console needs a directory of its own.
pub(super) fn make_private(db: &Path) -> Result<(), StoreError> {
    let io = |path: &Path, source: std::io::Error| StoreError::Private {
        path: path.to_owned(),
        message: source.to_string(),
    };
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = fs::metadata(dir).map_err(|e| io(dir, e))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        let ours = meta.uid() == rustix::process::geteuid().as_raw();
        if !ours || mode & 0o1000 != 0 {
            return Err(StoreError::Private {
                path: dir.to_owned(),
                message: format!(
                    "the directory is open to other users (mode {:o}) and not this user's own; the database holds private keys: give the console a directory of its own (--data), mode 0700",
                    mode & 0o7777
                ),
            });
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
        tracing::warn!(path = %dir.display(), from = format!("{:o}", mode & 0o777), "the database directory was open to other users; set it to 0700");
    }
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned());
    for suffix in ["", "-wal", "-shm"] {
        let Some(name) = &name else { break };
        let path = dir.join(format!("{name}{suffix}"));
        match fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .map_err(|e| io(&path, e))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
    }
    Ok(())
}

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebSession> {
    let name: Option<String> = r.get(0)?;
    let project: Option<String> = r.get(1)?;
    Ok(WebSession {
        user: name
            .zip(project)
            .map(|(name, project)| SessionUser { name, project }),
        csrf: r.get(2)?,
        created_ms: r.get(3)?,
        seen_ms: r.get(4)?,
        expires_ms: r.get(5)?,
    })
}

/// Whose sessions a cap counts.
enum Among<'a> {
    /// One user's (`None`: the admin's).
    Principal(Option<&'a str>),
    All,
}

/// Deletes the least recently used sessions `among` until fewer than `cap` are left.
fn make_room(tx: &rusqlite::Transaction<'_>, among: Among<'_>, cap: u32) -> Result<(), StoreError> {
    let (filter, name) = match among {
        Among::Principal(name) => ("WHERE user_name IS ?1", name),
        Among::All => ("WHERE ?1 IS NULL", None),
    };
    let count: i64 = tx
        .query_row(
            &format!("SELECT count(*) FROM web_sessions {filter}"),
            [name],
            |r| r.get(0),
        )
        .map_err(sql("counting web sessions"))?;
    let over = count - i64::from(cap) + 1;
    if over > 0 {
        tx.execute(
            &format!(
                "DELETE FROM web_sessions WHERE token_sha256 IN
                 (SELECT token_sha256 FROM web_sessions {filter} ORDER BY seen_ms LIMIT ?2)"
            ),
            params![name, over],
        )
        .map_err(sql("deleting the oldest web sessions"))?;
    }
    Ok(())
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        token: &TokenDigest,
        session: &WebSession,
        caps: SessionCaps,
    ) -> Result<(), StoreError> {
        let token = *token;
        let s = session.clone();
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("starting a transaction"))?;
            tx.execute(
                "DELETE FROM web_sessions WHERE expires_ms <= ?1",
                [s.created_ms],
            )
            .map_err(sql("deleting expired web sessions"))?;
            let name = s.user.as_ref().map(|u| u.name.as_str());
            make_room(&tx, Among::Principal(name), caps.per_principal)?;
            make_room(&tx, Among::All, caps.total)?;
            tx.execute(
                "INSERT INTO web_sessions
                 (token_sha256, user_name, project, csrf, created_ms, seen_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &token[..],
                    name,
                    s.user.as_ref().map(|u| u.project.as_str()),
                    s.csrf,
                    s.created_ms,
                    s.seen_ms,
                    s.expires_ms
                ],
            )
            .map_err(sql("storing a web session"))?;
            tx.commit().map_err(sql("storing a web session"))
        })
        .await
    }

    async fn session(
        &self,
        token: &TokenDigest,
        now_ms: i64,
    ) -> Result<Option<WebSession>, StoreError> {
        let token = *token;
        self.call(move |conn| {
            let found = conn
                .query_row(
                    "SELECT user_name, project, csrf, created_ms, seen_ms, expires_ms
                     FROM web_sessions WHERE token_sha256 = ?1",
                    [&token[..]],
                    session_from_row,
                )
                .optional()
                .map_err(sql("looking up a web session"))?;
            match found {
                Some(s) if s.expires_ms <= now_ms => {
                    conn.execute(
                        "DELETE FROM web_sessions WHERE token_sha256 = ?1",
                        [&token[..]],
                    )
                    .map_err(sql("deleting an expired web session"))?;
                    Ok(None)
                }
                other => Ok(other),
            }
        })
        .await
    }

    async fn touch_session(
        &self,
        token: &TokenDigest,
        seen_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let token = *token;
        self.call(move |conn| {
            conn.execute(
                "UPDATE web_sessions SET seen_ms = ?2, expires_ms = ?3
                 WHERE token_sha256 = ?1 AND seen_ms < ?2",
                params![&token[..], seen_ms, expires_ms],
            )
            .map_err(sql("recording a web session's use"))?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, token: &TokenDigest) -> Result<(), StoreError> {
        let token = *token;
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM web_sessions WHERE token_sha256 = ?1",
                [&token[..]],
            )
            .map_err(sql("deleting a web session"))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn secret(&self, name: &str) -> Result<Option<SecretBytes>, StoreError> {
        let name = name.to_owned();
        self.call(move |conn| {
            conn.query_row(
                "SELECT value FROM console_secrets WHERE name = ?1",
                [name],
                |r| r.get(0).map(SecretBytes),
            )
            .optional()
            .map_err(sql("reading a console secret"))
        })
        .await
    }

    async fn insert_secret(
        &self,
        name: &str,
        value: &[u8],
        now_ms: i64,
    ) -> Result<SecretBytes, StoreError> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.call(move |conn| {
            // IMMEDIATE: the write lock first, so the read below sees what won.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql("starting a transaction"))?;
            tx.execute(
                "INSERT INTO console_secrets (name, value, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, value, now_ms],
            )
            .map_err(sql("storing a console secret"))?;
            let stored = tx
                .query_row(
                    "SELECT value FROM console_secrets WHERE name = ?1",
                    [&name],
                    |r| r.get(0).map(SecretBytes),
                )
                .map_err(sql("reading a console secret"))?;
            tx.commit().map_err(sql("storing a console secret"))?;
            Ok(stored)
        })
        .await
    }

    async fn set_secret(&self, name: &str, value: &[u8], now_ms: i64) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO console_secrets (name, value, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                 created_ms = excluded.created_ms",
                params![name, value, now_ms],
            )
            .map_err(sql("replacing a console secret"))?;
            Ok(())
        })
        .await
    }

    async fn prune_secrets(&self, prefix: &str, keep: u32) -> Result<u64, StoreError> {
        let prefix = prefix.to_owned();
        self.call(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM console_secrets
                     WHERE substr(name, 1, length(?1)) = ?1 AND name NOT IN
                       (SELECT name FROM console_secrets WHERE substr(name, 1, length(?1)) = ?1
                        ORDER BY created_ms DESC, name LIMIT ?2)",
                    params![prefix, keep],
                )
                .map_err(sql("deleting old console secrets"))?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
