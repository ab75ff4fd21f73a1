//! The audit log in PostgreSQL.

use async_trait::async_trait;

use super::{Cached, PostgresStore, col, db};
use crate::store::{AuditEntry, AuditStore, NewAuditEntry, StoreError};

#[async_trait]
impl AuditStore for PostgresStore {
    async fn record_audit(&self, e: &NewAuditEntry, now_ms: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.exec(
            "INSERT INTO audit_log (at_ms, actor, action, object, project)
             VALUES ($1, $2, $3, $4, $5)",
            &[&now_ms, &e.actor, &e.action, &e.object, &e.project],
        )
        .await
        .map_err(db("recording an audit entry"))?;
        Ok(())
    }

    async fn audit_log(
        &self,
        project: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, at_ms, actor, action, object, project FROM audit_log
                 WHERE ($1::text IS NULL OR project = $1) AND ($2::bigint IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
                &[&project, &before, &i64::from(limit)],
            )
            .await
            .map_err(db("reading the audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: col(r, 0)?,
                    at_ms: col(r, 1)?,
                    actor: col(r, 2)?,
                    action: col(r, 3)?,
                    object: col(r, 4)?,
                    project: col(r, 5)?,
                })
            })
            .collect()
    }
}
