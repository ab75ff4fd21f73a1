//! What `GET /metrics` answers: the counters this console keeps ([`crate::metrics`]) and,
//! read at each scrape, the fleet's state: servers by state and tasks by state per group, each
//! group's queue depth, and where each rollout stands. The state is read from the store and the
//! shared liveness, so every console answers the same for it.
//!
//! A scrape costs one pass over the servers and one grouped count of the tasks; it is meant for
//! a scraper every 15 s or so, not for every request.

use std::collections::BTreeMap;

use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tasknode_protocol::tasks::TaskState;
use tasknode_protocol::wire::ServerStatus;

use super::ServiceError;
use crate::app::AppState;
use crate::rollout::update_view;
use crate::store::ServerFilter;

/// Every state a server can be in: each group with servers has a series for each, zeros too,
/// so an alert can compare against 0.
const SERVER_STATES: [ServerStatus; 5] = [
    ServerStatus::Pending,
    ServerStatus::Available,
    ServerStatus::Degraded,
    ServerStatus::Stopped,
    ServerStatus::ClockSkew,
];

/// The text exposition format this answers in (`Content-Type`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics in Prometheus' text format.
pub async fn scrape(state: &AppState) -> Result<String, ServiceError> {
    let fleet = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, ServiceError> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(internal)?;
        fleet.register(Box::new(g.clone())).map_err(internal)?;
        Ok(g)
    };
    let servers = gauge(
        "tasknode_servers",
        "Servers by state, per group.",
        &["project", "group", "state"],
    )?;
    let tasks = gauge(
        "tasknode_tasks",
        "Tasks by state, per group (finished ones stay counted until their group is deleted).",
        &["project", "group", "state"],
    )?;
    let queued = gauge(
        "tasknode_queue_depth",
        "Tasks waiting for a server, per group.",
        &["project", "group"],
    )?;
    let rollout = gauge(
        "tasknode_rollout_servers",
        "Servers of a group's rollout by where they stand: current, waiting, offered, updating, failed or managed.",
        &["project", "group", "version", "state"],
    )?;
    let store_up = IntGauge::new(
        "tasknode_store_up",
        "Whether the store answered a trivial query within 1 s at this scrape.",
    )
    .map_err(internal)?;
    fleet
        .register(Box::new(store_up.clone()))
        .map_err(internal)?;

    store_up.set(i64::from(super::health::ready(state).await));

    let now = state.clock.now_ms();
    let live = state.live.by_server();
    let mut per_group: BTreeMap<(String, String), [i64; SERVER_STATES.len()]> = BTreeMap::new();
    for s in state.store.list_servers(&ServerFilter::default()).await? {
        let liveness = live.get(&s.id).unwrap_or(&s.liveness);
        let (status, _) = crate::status::derive(&s, liveness, now, &state.thresholds);
        let counts = per_group.entry((s.project, s.group)).or_default();
        if let Some(i) = SERVER_STATES.iter().position(|st| *st == status) {
            counts[i] += 1;
        }
    }
    for ((project, group), counts) in &per_group {
        for (st, n) in SERVER_STATES.iter().zip(counts) {
            servers
                .with_label_values(&[project, group, st.as_str()])
                .set(*n);
        }
        // A group with servers and nothing queued has a queue of 0, not none.
        queued.with_label_values(&[project, group]).set(0);
    }
    for c in state.store.task_counts().await? {
        tasks
            .with_label_values(&[&c.project, &c.group, c.state.as_str()])
            .set(c.count);
        if c.state == TaskState::Queued {
            queued
                .with_label_values(&[&c.project, &c.group])
                .set(c.count);
        }
    }
    let snapshot = state.rollouts.tick().await?;
    for r in &snapshot.rollouts {
        for f in snapshot.group(r) {
            rollout
                .with_label_values(&[&r.project, &r.group, &r.version, &update_view(r, f).state])
                .inc();
        }
    }

    let mut families = state.metrics.registry().gather();
    families.extend(fleet.gather());
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(internal)?;
    String::from_utf8(out).map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("rendering the metrics: {e}"))
}
