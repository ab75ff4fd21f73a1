//! Web sessions and the console's secrets in the shared store. Creating a session takes a
//! transaction-scoped advisory lock, so consoles signing users in at once apply the caps one at
//! a time; a secret is inserted with `ON CONFLICT DO NOTHING` and read back, so every console
//! gets the value stored first.

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::{PostgresStore, col, db};
use crate::store::{
    SecretBytes, SecretStore, SessionCaps, SessionStore, SessionUser, StoreError, TokenDigest,
    WebSession,
};

/// The advisory lock session caps are applied under ("sessions" in ASCII).
const SESSION_LOCK: i64 = 0x7365_7373_696f_6e73;

fn session_from_row(r: &tokio_postgres::Row) -> Result<WebSession, StoreError> {
    let name: Option<String> = col(r, 0)?;
    let project: Option<String> = col(r, 1)?;
    Ok(WebSession {
        user: name
            .zip(project)
            .map(|(name, project)| SessionUser { name, project }),
        csrf: col(r, 2)?,
        created_ms: col(r, 3)?,
        seen_ms: col(r, 4)?,
        expires_ms: col(r, 5)?,
    })
}

/// Deletes the least recently used sessions of `user` (`Some(None)`: the admin's; `None`: of
/// everyone) until fewer than `cap` are left.
async fn make_room(
    c: &impl GenericClient,
    user: Option<Option<&str>>,
    cap: u32,
) -> Result<(), StoreError> {
    let (filter, name) = match user {
        Some(name) => ("WHERE user_name IS NOT DISTINCT FROM $1", name),
        None => ("WHERE $1::text IS NULL", None),
    };
    let count: i64 = col(
        &c.query_one(
            &format!("SELECT count(*) FROM web_sessions {filter}"),
            &[&name],
        )
        .await
        .map_err(db("counting web sessions"))?,
        0,
    )?;
    let over = count - i64::from(cap) + 1;
    if over > 0 {
        c.execute(
            &format!(
                "DELETE FROM web_sessions WHERE token_sha256 IN
                 (SELECT token_sha256 FROM web_sessions {filter} ORDER BY seen_ms LIMIT $2)"
            ),
            &[&name, &over],
        )
        .await
        .map_err(db("deleting the oldest web sessions"))?;
    }
    Ok(())
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(
        &self,
        token: &TokenDigest,
        session: &WebSession,
        caps: SessionCaps,
    ) -> Result<(), StoreError> {
        let op = "storing a web session";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SESSION_LOCK])
            .await
            .map_err(db(op))?;
        tx.execute(
            "DELETE FROM web_sessions WHERE expires_ms <= $1",
            &[&session.created_ms],
        )
        .await
        .map_err(db("deleting expired web sessions"))?;
        let name = session.user.as_ref().map(|u| u.name.as_str());
        make_room(&*tx, Some(name), caps.per_principal).await?;
        make_room(&*tx, None, caps.total).await?;
        tx.execute(
            "INSERT INTO web_sessions
             (token_sha256, user_name, project, csrf, created_ms, seen_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &&token[..],
                &name,
                &session.user.as_ref().map(|u| u.project.as_str()),
                &session.csrf,
                &session.created_ms,
                &session.seen_ms,
                &session.expires_ms,
            ],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))
    }

    async fn session(
        &self,
        token: &TokenDigest,
        now_ms: i64,
    ) -> Result<Option<WebSession>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT user_name, project, csrf, created_ms, seen_ms, expires_ms
                 FROM web_sessions WHERE token_sha256 = $1",
                &[&&token[..]],
            )
            .await
            .map_err(db("looking up a web session"))?;
        let Some(row) = row else { return Ok(None) };
        let found = session_from_row(&row)?;
        if found.expires_ms <= now_ms {
            c.execute(
                "DELETE FROM web_sessions WHERE token_sha256 = $1",
                &[&&token[..]],
            )
            .await
            .map_err(db("deleting an expired web session"))?;
            return Ok(None);
        }
        Ok(Some(found))
    }

    async fn touch_session(
        &self,
        token: &TokenDigest,
        seen_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE web_sessions SET seen_ms = $2, expires_ms = $3
                 WHERE token_sha256 = $1 AND seen_ms < $2",
                &[&&token[..], &seen_ms, &expires_ms],
            )
            .await
            .map_err(db("recording a web session's use"))?;
        Ok(())
    }

    async fn delete_session(&self, token: &TokenDigest) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM web_sessions WHERE token_sha256 = $1",
                &[&&token[..]],
            )
            .await
            .map_err(db("deleting a web session"))?;
        Ok(())
    }
}

#[async_trait]
impl SecretStore for PostgresStore {
    async fn secret(&self, name: &str) -> Result<Option<SecretBytes>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT value FROM console_secrets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db("reading a console secret"))?;
        row.map(|r| col(&r, 0).map(SecretBytes)).transpose()
    }

    async fn insert_secret(
        &self,
        name: &str,
        value: &[u8],
        now_ms: i64,
    ) -> Result<SecretBytes, StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO console_secrets (name, value, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &value, &now_ms],
        )
        .await
        .map_err(db("storing a console secret"))?;
        // Committed by whichever console won: the insert above waited for it when it raced.
        let row = c
            .query_one(
                "SELECT value FROM console_secrets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db("reading a console secret"))?;
        col(&row, 0).map(SecretBytes)
    }

    async fn set_secret(&self, name: &str, value: &[u8], now_ms: i64) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO console_secrets (name, value, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                 created_ms = excluded.created_ms",
                &[&name, &value, &now_ms],
            )
            .await
            .map_err(db("replacing a console secret"))?;
        Ok(())
    }

    async fn prune_secrets(&self, prefix: &str, keep: u32) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM console_secrets
                 WHERE left(name, length($1)) = $1 AND name NOT IN
                   (SELECT name FROM console_secrets WHERE left(name, length($1)) = $1
                    ORDER BY created_ms DESC, name LIMIT $2)",
                &[&prefix, &i64::from(keep)],
            )
            .await
            .map_err(db("deleting old console secrets"))
    }
}
