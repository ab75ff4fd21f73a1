//! The sweep that takes tasks back from servers that stopped. Which polls a change wakes is
//! `dispatch.rs`; the logs VPC servers push are kept by the store (`store/logs.rs`).

use std::sync::Arc;
use std::time::Duration;

use tasknode_protocol::wire::ServerStatus;

use crate::clock::Clock;
use crate::liveness::LivenessMap;
use crate::status::{self, Thresholds};
use crate::store::Store;

pub use crate::dispatch::Dispatch;

/// Every `every`, takes the tasks of stopped servers back: assigned ones are queued again,
/// running ones reported lost (never run again). Of several consoles on one database, only
/// the one holding `lease` does.
pub async fn sweep_periodically(
    store: Arc<dyn Store>,
    live: Arc<LivenessMap>,
    lease: Arc<crate::lease::Lease>,
    clock: Clock,
    thresholds: Thresholds,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !lease.held() {
            continue;
        }
        let fence = lease.fence();
        if let Err(e) = sweep(store.as_ref(), &live, &clock, &thresholds, &fence).await {
            tracing::warn!(error = %e, "checking the servers of running tasks failed; will retry");
        }
    }
}

async fn sweep(
    store: &dyn Store,
    live: &LivenessMap,
    clock: &Clock,
    thresholds: &Thresholds,
    fence: &crate::store::Fence,
) -> Result<(), crate::store::StoreError> {
    let busy = store.busy_servers().await?;
    if busy.is_empty() {
        return Ok(());
    }
    // Only the busy servers: at 100,000 servers, listing them all every few seconds (and
    // copying every node's liveness) held the store while tasks ran.
    let servers = store.servers_by_id(&busy).await?;
    let now = clock.now_ms();
    for s in &servers {
        let l = s
            .enrollment
            .as_ref()
            .and_then(|e| live.get(&e.node_id))
            .unwrap_or_else(|| s.liveness.clone());
        let (st, reason) = status::derive(s, &l, now, thresholds);
        if st != ServerStatus::Stopped {
            continue;
        }
        let why = format!("server {} stopped ({reason})", s.name);
        let r = store
            .abandon_server_tasks(s.id, &why, now, Some(fence))
            .await?;
        if !r.requeued.is_empty() || !r.lost.is_empty() {
            // The store wakes the polls of the requeued tasks' group.
            tracing::warn!(server = %s.name, requeued = ?r.requeued, lost = ?r.lost, "took tasks back from a stopped server");
        }
    }
    Ok(())
}
