//! Leases: a named singleton (the rollout engine and the stopped-server sweep) runs on the one
//! console holding its lease. A lease is a row (name, holder, expires_ms) taken and renewed
//! with one conditional write, so of several consoles trying at once exactly one holds it; when
//! its holder stops renewing, another takes it once it expired. A step a holder decided is
//! written only while the lease is still its own ([`Fence`]), checked in the step's transaction.

use async_trait::async_trait;

use super::StoreError;

/// The lease a write is made under: the write applies only while `holder` holds `name`
/// unexpired at the write's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
}

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` until `now_ms + ttl_ms`, or renews it: succeeds when no
    /// one holds it, `holder` holds it, or its holder's time ran out (`expires_ms <= now_ms`).
    /// Returns whether `holder` holds it now.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Gives lease `name` up if `holder` holds it (a clean shutdown), so another console takes
    /// it at its next try instead of after the lease expired.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}
