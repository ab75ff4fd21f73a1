//! The console's Prometheus instruments: what is counted as it happens (heartbeats, how long
//! tasks waited for a server, how long the store takes). What is a state rather than an event
//! (servers by state, tasks by state, rollout progress) is read at each scrape by
//! `service::metrics`, so this console's numbers agree with every other console's.
//!
//! Counters and histograms count what this console saw: with several consoles, sum them across
//! consoles (`sum without (instance)`); the state gauges are the same on every console.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, Opts, Registry};

/// Store calls whose time is measured, by the name they carry in `op`.
pub const STORE_OPS: [&str; 3] = ["look", "submit", "ping"];

/// The instruments, registered once in their own registry.
pub struct Metrics {
    registry: Registry,
    pub heartbeats: IntCounter,
    pub dispatch: Histogram,
    pub store: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let heartbeats = IntCounter::with_opts(Opts::new(
            "tasknode_heartbeats_total",
            "Heartbeats this console accepted.",
        ))?;
        // From a task's submit until a server's poll took it: 1 ms to about 2 minutes.
        let dispatch = Histogram::with_opts(
            HistogramOpts::new(
                "tasknode_dispatch_seconds",
                "How long tasks waited in the queue before a server took them.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 18)?),
        )?;
        let store = HistogramVec::new(
            HistogramOpts::new(
                "tasknode_store_seconds",
                "How long store calls took, by call.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            &["op"],
        )?;
        registry.register(Box::new(heartbeats.clone()))?;
        registry.register(Box::new(dispatch.clone()))?;
        registry.register(Box::new(store.clone()))?;
        // Every op from the first scrape on, so a rate over a quiet one is 0 rather than absent.
        for op in STORE_OPS {
            store.with_label_values(&[op]);
        }
        Ok(Metrics {
            registry,
            heartbeats,
            dispatch,
            store,
        })
    }

    /// Records that a store call `op` (one of [`STORE_OPS`]) took `took`.
    pub fn store_call(&self, op: &'static str, took: Duration) {
        self.store
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
    }

    /// Records that a task waited `waited_ms` between its submit and its assignment.
    pub fn dispatched(&self, waited_ms: i64) {
        // A clock step between two consoles can make it negative: it counts as no wait.
        self.dispatch.observe(waited_ms.max(0) as f64 / 1000.0);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
