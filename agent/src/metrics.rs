//! The agent's optional metrics endpoint (`[metrics] listen`, off by default): heartbeats sent
//! and answered, when a console last answered, the clock offset, running tasks and slots, in
//! Prometheus' text format. It is served through the log service's bounded accept loop
//! ([`crate::logserver::spawn`]) to the addresses `[metrics] allow` names (loopback by
//! default): it says nothing secret, but no more than the operator chose is exposed.
//!
//! The few fixed series are written here rather than through a metrics crate: the static
//! agent's size is budgeted, and no value from outside the agent reaches a label.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::tasks::Runner;

/// The content type of Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the heartbeat loop records.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    answered: AtomicU64,
    failed: AtomicU64,
    /// Unix ms of the last answered heartbeat; 0 before the first.
    last_answered_ms: AtomicI64,
    offset_ms: AtomicI64,
    offset_known: AtomicBool,
    skewed: AtomicBool,
    slots: AtomicU32,
}

impl AgentMetrics {
    pub fn new(slots: u32) -> AgentMetrics {
        let m = AgentMetrics::default();
        m.slots.store(slots, Ordering::Relaxed);
        m
    }

    /// One heartbeat: answered or not, at `at_ms`, with the clock offset it measured.
    pub fn heartbeat(&self, answered: bool, at_ms: i64, offset_ms: Option<i64>, skewed: bool) {
        if answered {
            self.answered.fetch_add(1, Ordering::Relaxed);
            self.last_answered_ms.store(at_ms, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(o) = offset_ms {
            self.offset_ms.store(o, Ordering::Relaxed);
            self.offset_known.store(true, Ordering::Relaxed);
        }
        self.skewed.store(skewed, Ordering::Relaxed);
    }

    /// The text exposition, with `running` tasks now.
    pub fn render(&self, running: u32) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let version = format!("{{version=\"{}\"}}", label_value(crate::version()));
        metric(
            "tasknode_agent_info",
            "gauge",
            "The agent's version, as a label.",
            &[(&version, "1".to_owned())],
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "tasknode_agent_heartbeats_total",
            "counter",
            "Heartbeats sent, by whether a console answered.",
            &[
                ("{result=\"answered\"}", load(&self.answered)),
                ("{result=\"failed\"}", load(&self.failed)),
            ],
        );
        metric(
            "tasknode_agent_last_answered_heartbeat_timestamp_seconds",
            "gauge",
            "When a console last answered a heartbeat, Unix time (0: never since the start).",
            &[("", seconds(self.last_answered_ms.load(Ordering::Relaxed)))],
        );
        if self.offset_known.load(Ordering::Relaxed) {
            metric(
                "tasknode_agent_clock_offset_seconds",
                "gauge",
                "The console's clock minus this host's, from the last answer; beyond 120 s no work is taken.",
                &[("", seconds(self.offset_ms.load(Ordering::Relaxed)))],
            );
        }
        metric(
            "tasknode_agent_clock_skewed",
            "gauge",
            "1 while the clock offset is beyond 120 s and the agent takes no work.",
            &[(
                "",
                u8::from(self.skewed.load(Ordering::Relaxed)).to_string(),
            )],
        );
        metric(
            "tasknode_agent_running_tasks",
            "gauge",
            "Tasks running now.",
            &[("", running.to_string())],
        );
        metric(
            "tasknode_agent_max_concurrency",
            "gauge",
            "How many tasks this server runs at once at most, from its CPU and memory.",
            &[("", self.slots.load(Ordering::Relaxed).to_string())],
        );
        out
    }
}

fn seconds(ms: i64) -> String {
    (ms as f64 / 1000.0).to_string()
}

/// A label value as the text format quotes it.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Clone)]
struct Service {
    metrics: Arc<AgentMetrics>,
    runner: Arc<Runner>,
}

/// `GET /metrics`, and nothing else.
pub fn router(metrics: Arc<AgentMetrics>, runner: Arc<Runner>) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(Service { metrics, runner })
}

async fn serve(State(s): State<Service>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        s.metrics.render(s.runner.running()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_keep_the_sign_and_milliseconds() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_700_000_000_123), "1700000000.123");
        assert_eq!(seconds(-1500), "-1.5");
        assert_eq!(seconds(-500), "-0.5");
    }
}
