//! Leases in the shared store. Taking one is a single `INSERT ... ON CONFLICT DO UPDATE ...
//! WHERE`: the row lock it takes serializes consoles trying at once, and the condition is
//! evaluated on the row as the winner left it, so exactly one of them holds the lease.

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::{PostgresStore, db};
use crate::store::{Fence, LeaseStore, StoreError};

/// Whether `fence` names a lease its holder holds at `now_ms`. The lease row is locked
/// `FOR SHARE` until the caller's transaction ends, so no one takes it over meanwhile.
pub(super) async fn holds(
    c: &impl GenericClient,
    fence: &Fence,
    now_ms: i64,
) -> Result<bool, StoreError> {
    Ok(c.query_opt(
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND expires_ms > $3 FOR SHARE",
        &[&fence.name, &fence.holder, &now_ms],
    )
    .await
    .map_err(db("checking a lease"))?
    .is_some())
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= $4",
                &[&name, &holder, &now_ms.saturating_add(ttl_ms), &now_ms],
            )
            .await
            .map_err(db("taking a lease"))?;
        Ok(n == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await
        .map_err(db("giving up a lease"))?;
        Ok(())
    }
}
