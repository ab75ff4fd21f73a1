//! The audit log in SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, sql};
use crate::store::{AuditEntry, AuditStore, NewAuditEntry, StoreError};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, entry: &NewAuditEntry, now_ms: i64) -> Result<(), StoreError> {
        let e = entry.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO audit_log (at_ms, actor, action, object, project)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_ms, e.actor, e.action, e.object, e.project],
            )
            .map_err(sql("recording an audit entry"))?;
            Ok(())
        })
        .await
    }

    async fn audit_log(
        &self,
        project: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| {
            let op = "reading the audit log";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, at_ms, actor, action, object, project FROM audit_log
                     WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3",
                )
                .map_err(sql(op))?;
            let rows = stmt
                .query_map(params![project, before, limit], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        object: r.get(4)?,
                        project: r.get(5)?,
                    })
                })
                .map_err(sql(op))?;
            rows.collect::<Result<_, _>>().map_err(sql(op))
        })
        .await
    }
}
