//! Deleting users, replacing passwords and the install links not spent yet, in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{SqliteStore, sql};
use crate::store::{AccessStore, DeletedUser, InstallLink, StoreError};

/// A user's id and project, when it is in `project` (any project when `None`).
fn user_in(
    tx: &Transaction<'_>,
    name: &str,
    project: Option<&str>,
) -> Result<(i64, String), StoreError> {
    tx.query_row(
        "SELECT u.id, p.name FROM users u JOIN projects p ON p.id = u.project_id
         WHERE u.name = ?1 AND (?2 IS NULL OR p.name = ?2)",
        params![name, project],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(sql("looking up a user"))?
    .ok_or_else(|| StoreError::NotFound {
        kind: "user",
        name: name.to_owned(),
    })
}

const LINKS: &str = "SELECT t.id, p.name, g.name, u.name, t.created_ms, t.expires_ms
     FROM enrollment_tokens t JOIN resource_groups g ON g.id = t.group_id
     JOIN projects p ON p.id = g.project_id JOIN users u ON u.id = t.user_id
     WHERE t.used_ms IS NULL AND t.expires_ms > ?1 AND (?2 IS NULL OR p.name = ?2)";

fn links(
    conn: &Connection,
    extra: &str,
    now_ms: i64,
    project: Option<&str>,
    id: Option<i64>,
) -> Result<Vec<InstallLink>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("{LINKS} {extra}"))
        .map_err(sql("listing install links"))?;
    let rows = stmt
        .query_map(params![now_ms, project, id], |r| {
            Ok(InstallLink {
                id: r.get(0)?,
                project: r.get(1)?,
                group: r.get(2)?,
                user: r.get(3)?,
                created_ms: r.get(4)?,
                expires_ms: r.get(5)?,
            })
        })
        .map_err(sql("listing install links"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("listing install links"))
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn delete_user(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> Result<DeletedUser, StoreError> {
        let (name, project) = (name.to_owned(), project.map(str::to_owned));
        self.call(move |conn| {
            let op = "deleting a user";
            let tx = conn.transaction().map_err(sql(op))?;
            let (id, project) = user_in(&tx, &name, project.as_deref())?;
            let links = tx
                .execute("DELETE FROM enrollment_tokens WHERE user_id = ?1", [id])
                .map_err(sql(op))?;
            let sessions = tx
                .execute("DELETE FROM web_sessions WHERE user_name = ?1", [&name])
                .map_err(sql(op))?;
            tx.execute("DELETE FROM users WHERE id = ?1", [id])
                .map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            Ok(DeletedUser {
                name,
                project,
                links: links as u64,
                sessions: sessions as u64,
            })
        })
        .await
    }

    async fn set_password(
        &self,
        name: &str,
        project: Option<&str>,
        password_hash: &str,
    ) -> Result<String, StoreError> {
        let (name, project, hash) = (
            name.to_owned(),
            project.map(str::to_owned),
            password_hash.to_owned(),
        );
        self.call(move |conn| {
            let op = "replacing a password";
            let tx = conn.transaction().map_err(sql(op))?;
            let (id, project) = user_in(&tx, &name, project.as_deref())?;
            tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                params![id, hash],
            )
            .map_err(sql(op))?;
            tx.execute("DELETE FROM web_sessions WHERE user_name = ?1", [&name])
                .map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            Ok(project)
        })
        .await
    }

    async fn install_links(
        &self,
        project: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<InstallLink>, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| {
            links(
                conn,
                "AND ?3 IS NULL ORDER BY t.id",
                now_ms,
                project.as_deref(),
                None,
            )
        })
        .await
    }

    async fn revoke_install_link(
        &self,
        id: i64,
        project: Option<&str>,
        now_ms: i64,
    ) -> Result<InstallLink, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| {
            let op = "revoking an install link";
            let tx = conn.transaction().map_err(sql(op))?;
            let link = links(&tx, "AND t.id = ?3", now_ms, project.as_deref(), Some(id))?
                .pop()
                .ok_or_else(|| StoreError::NotFound {
                    kind: "unspent install link",
                    name: id.to_string(),
                })?;
            tx.execute("DELETE FROM enrollment_tokens WHERE id = ?1", [id])
                .map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            Ok(link)
        })
        .await
    }
}
