//! The nodes of removed servers, in memory: a request that proves a removed node's secret is
//! answered "removed" (410 Gone, code `server_removed`) rather than "unknown node", so its
//! agent stops knocking and says how to enroll again, while its credentials open nothing.
//! Every console loads them from the store at start and, when consoles share a database, with
//! each liveness refresh. Node ids are never reused, so an entry never goes stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{self, SecretDigest};
use crate::clock::Clock;
use crate::liveness::LivenessMap;
use crate::store::{RemovedNode, Store};

/// How far consoles' clocks may differ: a removal is loaded from this long before the last
/// load, by the removing console's clock.
pub const CLOCK_ALLOWANCE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Tombstone {
    secret: SecretDigest,
    server: String,
}

/// Removed nodes by node id.
#[derive(Debug, Default)]
pub struct RemovedNodes {
    by_id: Mutex<HashMap<String, Tombstone>>,
}

impl RemovedNodes {
    /// Remembers these removed nodes (ones with an unreadable digest are skipped: no secret
    /// could match them).
    pub fn remember(&self, nodes: &[RemovedNode]) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        for n in nodes {
            let mut secret = [0u8; 32];
            if hex::decode_to_slice(&n.secret_sha256, &mut secret).is_ok() {
                map.insert(
                    n.node_id.clone(),
                    Tombstone {
                        secret,
                        server: n.server_name.clone(),
                    },
                );
            }
        }
    }

    /// The name of the removed server whose node this is, when `secret` is its secret.
    pub fn check(&self, node_id: &str, secret: &str) -> Option<String> {
        let presented = auth::digest(secret);
        let map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.get(node_id)
            .filter(|t| auth::digests_equal(&t.secret, &presented))
            .map(|t| t.server.clone())
    }

    /// Whether node `node_id` was removed (its secret already checked).
    pub fn contains(&self, node_id: &str) -> Option<String> {
        let map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.get(node_id).map(|t| t.server.clone())
    }
}

/// Every `every`, drops from `map` the nodes of servers removed (through any console) at most
/// `lookback` before the previous load began (the consoles' clocks may differ that much), so
/// their credentials stop working here too. Rows seen twice change nothing.
pub async fn refresh_periodically(
    map: Arc<LivenessMap>,
    store: Arc<dyn Store>,
    clock: Clock,
    every: Duration,
    lookback: Duration,
) {
    let lookback_ms = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
    let mut since = clock.now_ms().saturating_sub(lookback_ms);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let began = clock.now_ms();
        match store.removed_nodes_since(Some(since)).await {
            Ok(removed) => {
                map.forget_removed(&removed);
                since = began.saturating_sub(lookback_ms);
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading the servers other consoles removed failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_removed_nodes_own_secret_is_told_it_was_removed() {
        let removed = RemovedNodes::default();
        removed.remember(&[RemovedNode {
            node_id: "n1".into(),
            secret_sha256: hex::encode(auth::digest("s3cret")),
            server_name: "db-1".into(),
            project: "default".into(),
            removed_ms: 1,
        }]);
        assert_eq!(removed.check("n1", "s3cret").as_deref(), Some("db-1"));
        assert_eq!(removed.check("n1", "guess"), None);
        assert_eq!(removed.check("n2", "s3cret"), None);
    }
}
