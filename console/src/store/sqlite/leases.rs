//! Leases in the embedded store. One console serves a SQLite database, so its leases are
//! always its own; they are kept the same way as in the shared store all the same.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, sql};
use crate::store::{Fence, LeaseStore, StoreError};

/// Whether `fence` names a lease its holder holds at `now_ms`.
pub(super) fn holds(conn: &Connection, fence: &Fence, now_ms: i64) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND expires_ms > ?3",
            params![fence.name, fence.holder, now_ms],
            |_| Ok(()),
        )
        .optional()
        .map_err(sql("checking a lease"))?
        .is_some())
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.call(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE
                     SET holder = excluded.holder, expires_ms = excluded.expires_ms
                     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4",
                    params![name, holder, now_ms.saturating_add(ttl_ms), now_ms],
                )
                .map_err(sql("taking a lease"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.call(move |conn| {
            conn.execute(
                "UPDATE leases SET expires_ms = 0 WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map_err(sql("giving up a lease"))?;
            Ok(())
        })
        .await
    }
}
