//! Deleting users, replacing passwords and the install links not spent yet, in PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::{PostgresStore, col, db};
use crate::store::{AccessStore, DeletedUser, InstallLink, StoreError};

/// A user's id and project, locked for the change, when it is in `project` (any when `None`).
async fn user_in(
    c: &impl GenericClient,
    name: &str,
    project: Option<&str>,
) -> Result<(i64, String), StoreError> {
    let row = c
        .query_opt(
            "SELECT u.id, p.name FROM users u JOIN projects p ON p.id = u.project_id
             WHERE u.name = $1 AND ($2::text IS NULL OR p.name = $2) FOR UPDATE OF u",
            &[&name, &project],
        )
        .await
        .map_err(db("looking up a user"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "user",
            name: name.to_owned(),
        })?;
    Ok((col(&row, 0)?, col(&row, 1)?))
}

/// The unspent, unexpired links at `now_ms`, of `project` and with `id` when given.
async fn links(
    c: &impl GenericClient,
    now_ms: i64,
    project: Option<&str>,
    id: Option<i64>,
) -> Result<Vec<InstallLink>, StoreError> {
    let rows = c
        .query(
            "SELECT t.id, p.name, g.name, u.name, t.created_ms, t.expires_ms
             FROM enrollment_tokens t JOIN resource_groups g ON g.id = t.group_id
             JOIN projects p ON p.id = g.project_id JOIN users u ON u.id = t.user_id
             WHERE t.used_ms IS NULL AND t.expires_ms > $1
               AND ($2::text IS NULL OR p.name = $2) AND ($3::bigint IS NULL OR t.id = $3)
             ORDER BY t.id",
            &[&now_ms, &project, &id],
        )
        .await
        .map_err(db("listing install links"))?;
    rows.iter()
        .map(|r| {
            Ok(InstallLink {
                id: col(r, 0)?,
                project: col(r, 1)?,
                group: col(r, 2)?,
                user: col(r, 3)?,
                created_ms: col(r, 4)?,
                expires_ms: col(r, 5)?,
            })
        })
        .collect()
}

#[async_trait]
impl AccessStore for PostgresStore {
    async fn delete_user(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> Result<DeletedUser, StoreError> {
        let op = "deleting a user";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let (id, project) = user_in(&*tx, name, project).await?;
        let links = tx
            .execute("DELETE FROM enrollment_tokens WHERE user_id = $1", &[&id])
            .await
            .map_err(db(op))?;
        let sessions = tx
            .execute("DELETE FROM web_sessions WHERE user_name = $1", &[&name])
            .await
            .map_err(db(op))?;
        tx.execute("DELETE FROM users WHERE id = $1", &[&id])
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(DeletedUser {
            name: name.to_owned(),
            project,
            links,
            sessions,
        })
    }

    async fn set_password(
        &self,
        name: &str,
        project: Option<&str>,
        password_hash: &str,
    ) -> Result<String, StoreError> {
        let op = "replacing a password";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let (id, project) = user_in(&*tx, name, project).await?;
        tx.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            &[&id, &password_hash],
        )
        .await
        .map_err(db(op))?;
        tx.execute("DELETE FROM web_sessions WHERE user_name = $1", &[&name])
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(project)
    }

    async fn install_links(
        &self,
        project: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<InstallLink>, StoreError> {
        let c = self.client().await?;
        links(&**c, now_ms, project, None).await
    }

    async fn revoke_install_link(
        &self,
        id: i64,
        project: Option<&str>,
        now_ms: i64,
    ) -> Result<InstallLink, StoreError> {
        let op = "revoking an install link";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let link = links(&*tx, now_ms, project, Some(id))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                kind: "unspent install link",
                name: id.to_string(),
            })?;
        // Only while still unspent: an enrollment spending it meanwhile wins.
        let deleted = tx
            .execute(
                "DELETE FROM enrollment_tokens WHERE id = $1 AND used_ms IS NULL",
                &[&id],
            )
            .await
            .map_err(db(op))?;
        if deleted == 0 {
            return Err(StoreError::NotFound {
                kind: "unspent install link",
                name: id.to_string(),
            });
        }
        tx.commit().await.map_err(db(op))?;
        Ok(link)
    }
}
