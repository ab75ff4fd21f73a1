//! A console's state for unit tests: the test's own store and liveness map, everything else as
//! `serve` builds it without flags (plain HTTP, no dist, no agent binaries).

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::auth;
use crate::clock::Clock;
use crate::dispatch::Dispatch;
use crate::liveness::LivenessMap;
use crate::status::Thresholds;
use crate::store::LogLimits;
use crate::store::{SessionStore, Store};

/// What the state is made of.
pub(crate) struct TestConsole<'a> {
    pub store: Arc<dyn Store>,
    pub live: Arc<LivenessMap>,
    pub admin_token: &'a str,
    pub limits: LogLimits,
}

pub(crate) fn state(c: TestConsole<'_>) -> AppState {
    let clock = Clock::default();
    let thresholds = Thresholds {
        interval: Duration::from_secs(10),
        degraded_after: Duration::from_secs(30),
        stopped_after: Duration::from_secs(600),
    };
    let log_key = auth::generate_log_key();
    let url = "http://127.0.0.1:1";
    AppState {
        store: Arc::clone(&c.store),
        live: Arc::clone(&c.live),
        clock,
        thresholds,
        admin_token: auth::digest(c.admin_token),
        credentials: Arc::new(crate::throttle::Throttle::new(2)),
        public_url: url.into(),
        agent_urls: Arc::from(vec![url.to_owned()]),
        templates: Arc::new(tasknode_render::Templates::embedded().expect("embedded templates")),
        artifacts: Arc::default(),
        console_ca: None,
        dist: None,
        dispatch: Dispatch::following(c.store.wakes()),
        log_limits: c.limits,
        log_key_public: tasknode_protocol::logtoken::encode_key(&log_key.verifying_key()).into(),
        log_key: Arc::new(log_key),
        rollouts: Arc::new(crate::rollout::RolloutEngine::new(
            Arc::clone(&c.store),
            c.live,
            clock,
            thresholds,
        )),
        trusted_proxies: Arc::from(Vec::new()),
        metrics: Arc::new(crate::metrics::Metrics::new().expect("metrics")),
        web: crate::web::state(false, c.store as Arc<dyn SessionStore>).expect("web state"),
    }
}
