//! The long poll against a real SQLite store, with K agents' polls waiting in one group: a
//! submit of one task makes one poll look (one reconcile and one assign), not K, and N tasks
//! submitted reach N polls, all while the others go on waiting: none waits for its timeout.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tasknode_protocol::NetworkType;
use tasknode_protocol::tasks::{PollRequest, PollResponse, SubmitTask};
use tasknode_protocol::wire::HostFacts;
use tokio::sync::mpsc;

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::liveness::LivenessMap;
use crate::store::LogLimits;
use crate::store::{Enrollment, SqliteStore, Store};

/// Longer than the test takes: a poll that answers did so because it was woken.
const WAIT_SECS: u64 = 30;

/// A console whose group `etl` holds `k` enrolled servers (nodes `node-0`..) of one slot each.
async fn console(dir: &std::path::Path, k: usize) -> AppState {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("t.db")).unwrap());
    let state = crate::app::testing::state(crate::app::testing::TestConsole {
        store: Arc::clone(&store),
        live: Arc::new(LivenessMap::default()),
        admin_token: "admin",
        limits: LogLimits::default(),
    });
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    for i in 0..k {
        let name = format!("db-{i}");
        let s = store
            .add_server("default", "etl", &name, Some(1), 1)
            .await
            .unwrap();
        let enrollment = Enrollment {
            node_id: format!("node-{i}"),
            secret_sha256: "00".repeat(32),
            enrolled_ms: 1,
            cpu_cores: 4.0,
            memory_bytes: 8 << 30,
        };
        let facts = HostFacts {
            hostname: name,
            cpu_cores: 4.0,
            memory_bytes: 8 << 30,
            os: "Debian".into(),
            arch: "x86_64".into(),
            kernel: "6.1".into(),
            agent_version: "0.1.0".into(),
        };
        store.enroll(s.id, &enrollment, &facts, None).await.unwrap();
    }
    state
}

type Answer = (usize, Result<PollResponse, ServiceError>);

/// Starts the long polls of nodes `0..k`, holding nothing; waits until all of them wait.
async fn poll_all(state: &AppState, k: usize) -> mpsc::UnboundedReceiver<Answer> {
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..k {
        let (state, tx) = (state.clone(), tx.clone());
        tokio::spawn(async move {
            let req = PollRequest {
                held: Vec::new(),
                accepting: true,
                wait_secs: WAIT_SECS,
            };
            let answer = super::work::poll(&state, &format!("node-{i}"), req).await;
            let _ = tx.send((i, answer));
        });
    }
    for _ in 0..500 {
        if state.dispatch.polls() == (k, k) {
            return rx;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the polls did not all wait: {:?}", state.dispatch.polls());
}

async fn submit(state: &AppState) {
    let req = SubmitTask {
        project: "default".into(),
        group: "etl".into(),
        script: "true".into(),
        timeout_secs: None,
        idempotency_key: None,
    };
    super::tasks::submit(state, Caller::Admin, req)
        .await
        .unwrap();
}

/// The next poll to answer, which must answer with one task, long before its wait ends.
async fn next_with_a_task(rx: &mut mpsc::UnboundedReceiver<Answer>) -> usize {
    let (i, answer) = tokio::time::timeout(Duration::from_secs(WAIT_SECS / 2), rx.recv())
        .await
        .expect("a poll answers long before its wait ends")
        .unwrap();
    let answer = answer.unwrap();
    assert_eq!(answer.assign.len(), 1, "poll {i}: {answer:?}");
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_makes_one_of_fifty_waiting_polls_look_not_fifty() {
    const K: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let state = console(dir.path(), K).await;
    let mut rx = poll_all(&state, K).await;
    let before = state.dispatch.looks();
    submit(&state).await;
    next_with_a_task(&mut rx).await;
    // Time for any other poll the submit woke to look (every one did, before).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let looks = state.dispatch.looks() - before;
    assert_eq!(looks, 1, "one submit made {looks} of {K} polls look");
    assert!(rx.try_recv().is_err(), "only one poll answered");
    assert_eq!(state.dispatch.polls(), (K - 1, K - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_tasks_reach_n_of_the_waiting_polls_promptly() {
    const K: usize = 50;
    const N: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let state = console(dir.path(), K).await;
    let mut rx = poll_all(&state, K).await;
    let before = state.dispatch.looks();
    for _ in 0..N {
        submit(&state).await;
    }
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..N {
        assert!(answered.insert(next_with_a_task(&mut rx).await));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "only {N} polls answered");
    let looks = state.dispatch.looks() - before;
    assert!(
        looks as usize <= 2 * N,
        "{N} submits made {looks} of {K} polls look"
    );
    // Nothing is left queued.
    let queued = state
        .store
        .list_tasks(&crate::store::TaskFilter {
            state: Some(tasknode_protocol::tasks::TaskState::Queued),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(queued.is_empty(), "{queued:?}");
}
