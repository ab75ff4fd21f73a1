//! Whether the store answers at all: the trivial query the console's `/healthz` runs, so a
//! load balancer stops sending requests to a console that cannot reach its database.

use async_trait::async_trait;

use super::StoreError;

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Runs the cheapest query the backend has (`SELECT 1`) on a connection it would use for
    /// requests.
    async fn ping(&self) -> Result<(), StoreError>;
}
