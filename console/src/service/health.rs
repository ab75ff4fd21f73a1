//! Whether this console should be sent requests: what `/healthz` answers a load balancer. A
//! console that cannot reach its store within a short time, or is shutting down, is not ready;
//! one that is says nothing more (the probe needs no credentials, so it tells no one anything).

use std::time::Duration;

use crate::app::AppState;

/// How long the store gets to answer a trivial query. Under a load balancer's check interval,
/// so a hung database takes a console out as fast as a dead one.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether this console can serve: not shutting down, and its store answered `SELECT 1`
/// within [`STORE_TIMEOUT`]. A failure is logged here; the caller learns only no.
pub async fn ready(state: &AppState) -> bool {
    if state.dispatch.is_closing() {
        return false;
    }
    let began = std::time::Instant::now();
    let answer = tokio::time::timeout(STORE_TIMEOUT, state.store.ping()).await;
    state.metrics.store_call("ping", began.elapsed());
    match answer {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the store did not answer; answering 503");
            false
        }
        Err(_) => {
            tracing::warn!(
                timeout = ?STORE_TIMEOUT,
                "health check: the store did not answer in time; answering 503"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ready;
    use crate::app::testing::{TestConsole, state};
    use crate::liveness::LivenessMap;
    use crate::store::LogLimits;
    use crate::store::{SqliteStore, Store};

    #[tokio::test]
    async fn ready_while_the_store_answers_and_not_once_closing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
        let state = state(TestConsole {
            store,
            live: Arc::new(LivenessMap::default()),
            admin_token: "t",
            limits: LogLimits::default(),
        });
        assert!(ready(&state).await);
        state.dispatch.close();
        assert!(!ready(&state).await);
    }
}
