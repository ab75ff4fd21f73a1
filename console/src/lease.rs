//! The lease that makes one console of those sharing a database the one that runs the
//! singletons: the rollout engine's advancing ticks and the sweep that takes tasks back from
//! stopped servers. Every console tries to take or renew it each tick; the one holding it runs
//! them, the others only answer (heartbeats carry desired versions read from the store's
//! rollout state on every console). When the holder dies it stops renewing, and another
//! console takes the lease over once it expired ([`TTL`] after the last renewal). A step the
//! holder decided is written under a [`Fence`] that the store checks in the step's transaction,
//! so a holder whose lease lapsed while it decided writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{Fence, Store};

/// The singletons' lease.
pub const NAME: &str = "engine";
/// How often the lease is renewed (or tried for).
pub const RENEW: Duration = Duration::from_secs(1);
/// How long a renewal holds it: a few renewals, so one slow database call does not lose it.
pub const TTL: Duration = Duration::from_secs(5);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// This console's view of the lease.
pub struct Lease {
    store: Arc<dyn Store>,
    clock: Clock,
    holder: String,
    /// Until when (console time) the last successful renewal holds it; 0: not held.
    until_ms: AtomicI64,
}

impl Lease {
    /// A lease tried for as `holder`: a name unique to this console process.
    pub fn new(store: Arc<dyn Store>, clock: Clock, holder: String) -> Lease {
        Lease {
            store,
            clock,
            holder,
            until_ms: AtomicI64::new(0),
        }
    }

    /// A holder name for this process: host, process id and a random part.
    pub fn holder_name() -> String {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
        format!("{host}:{}:{nonce}", std::process::id())
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this console holds the lease now, as of its last renewal.
    pub fn held(&self) -> bool {
        self.clock.now_ms() < self.until_ms.load(Ordering::Relaxed)
    }

    /// What a step decided under this lease is written with.
    pub fn fence(&self) -> Fence {
        Fence {
            name: NAME.to_owned(),
            holder: self.holder.clone(),
        }
    }

    /// Takes or renews the lease; returns whether this console holds it.
    pub async fn renew(&self) -> bool {
        let now = self.clock.now_ms();
        let was = self.held();
        match self
            .store
            .acquire_lease(NAME, &self.holder, now, ms(TTL))
            .await
        {
            Ok(true) => self
                .until_ms
                .store(now.saturating_add(ms(TTL)), Ordering::Relaxed),
            // Another console holds it.
            Ok(false) => self.until_ms.store(0, Ordering::Relaxed),
            // Unknown: the lease is ours until the last renewal's term ends, no longer.
            Err(e) => tracing::warn!(error = %e, "renewing the engine lease failed; will retry"),
        }
        let is = self.held();
        if is && !was {
            tracing::info!(holder = %self.holder, "took the engine lease: this console runs rollouts and the stopped-server sweep");
        } else if was && !is {
            tracing::warn!(holder = %self.holder, "lost the engine lease: another console runs rollouts and the sweep");
        }
        is
    }

    /// Gives the lease up (a clean shutdown), so another console takes it at once.
    pub async fn release(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
        if let Err(e) = self.store.release_lease(NAME, &self.holder).await {
            tracing::warn!(error = %e, "giving up the engine lease failed; it expires by itself");
        }
    }
}

/// Renews `lease` every [`RENEW`] until the task is dropped.
pub async fn renew_periodically(lease: Arc<Lease>) {
    let mut ticker = tokio::time::interval(RENEW);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        lease.renew().await;
    }
}
