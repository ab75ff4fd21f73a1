//! Tests of what only the SQLite store has: its migrations from older schemas (0006, on a
//! database of the schema before), its refusal of a newer schema, and its sync mode. What both
//! backends share is tested by the store suite (`store/suite/`).

use super::*;
use crate::store::*;
use tasknode_protocol::wire::HostFacts;

fn facts() -> HostFacts {
    crate::store::suite::servers::facts()
}

fn enrollment(node_id: &str) -> Enrollment {
    crate::store::suite::servers::enrollment(node_id)
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

/// Makes a database of schema version 5 (the one before 0006) at `path`, with projects,
/// groups, pending and enrolled servers, tasks on them, a rollout and an update report.
fn schema_5_with_data(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    for (_, script) in MIGRATIONS.iter().filter(|m| m.0 <= 5) {
        conn.execute_batch(script).unwrap();
    }
    conn.pragma_update(None, "user_version", 5).unwrap();
    conn.execute_batch(
        "INSERT INTO projects (id, name, created_ms) VALUES (2, 'red', 1);
         INSERT INTO users (id, project_id, name, password_hash, created_ms) VALUES (1, 2, 'ann', 'h', 1);
         INSERT INTO resource_groups (id, project_id, name, network, created_ms)
             VALUES (1, 1, 'etl', 'classic', 1), (2, 2, 'vpc', 'vpc', 1);
         INSERT INTO servers (id, group_id, name, max_concurrency, created_ms, node_id, secret_sha256,
                              enrolled_ms, cpu_cores, memory_bytes, agent_version, last_heartbeat_ms,
                              running_tasks)
             VALUES (10, 1, 'db-1', 4, 2, 'node-a', 'ab', 3, 2.0, 1024, '0.1.0', 99, 1);
         INSERT INTO servers (id, group_id, name, created_ms)
             VALUES (11, 2, '4c4c4544-0042-3510-8051-b4c04f333232', 2);
         INSERT INTO tasks (id, group_id, script, timeout_secs, state, submitted_ms, server_id, lease)
             VALUES (5, 1, 'true', 60, 'running', 4, 10, 1);
         INSERT INTO releases (version, channel, manifest, issued_ms, published_ms, signed_by, targets)
             VALUES ('0.2.0', 'stable', '{}', 1, 1, 'k', 'x86_64-unknown-linux-musl');
         INSERT INTO rollouts (group_id, version, batch, max_failures, state, reason, started_ms)
             VALUES (1, '0.2.0', '{\"kind\":\"all\"}', 0, 'running', 'r', 1);
         INSERT INTO rollout_members (group_id, server_id, admitted_ms) VALUES (1, 10, 1);
         INSERT INTO update_reports (server_id, version, outcome, reason, at_ms)
             VALUES (10, '0.2.0', 'started', 'trial', 1);
         INSERT INTO enrollment_tokens (token_sha256, group_id, user_id, created_ms, expires_ms)
             VALUES ('t', 2, 1, 1, 9);",
    )
    .unwrap();
}

#[tokio::test]
async fn migration_6_keeps_every_server_and_what_refers_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    schema_5_with_data(&path);

    let store = SqliteStore::open(&path).unwrap();
    let servers = store.list_servers(&ServerFilter::default()).await.unwrap();
    assert_eq!(servers.len(), 2);
    let enrolled = store.server_by_node("node-a").await.unwrap().unwrap();
    assert_eq!(
        (enrolled.id, enrolled.name.as_str(), enrolled.group.as_str()),
        (10, "db-1", "etl")
    );
    assert_eq!(enrolled.project, "default");
    assert_eq!(enrolled.max_concurrency, Some(4));
    assert_eq!(enrolled.liveness.last_heartbeat_ms, Some(99));
    assert_eq!(enrolled.enrollment.as_ref().unwrap().secret_sha256, "ab");
    let pending = store
        .server_by_name("red", "4c4c4544-0042-3510-8051-b4c04f333232")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((pending.id, pending.enrollment.is_none()), (11, true));
    // Tasks, rollout members and update reports still point at their servers.
    assert_eq!(
        store.task(5).await.unwrap().unwrap().server.as_deref(),
        Some("db-1")
    );
    assert_eq!(store.busy_servers().await.unwrap(), [10]);
    let rollouts = store.list_rollouts(None).await.unwrap();
    assert_eq!(
        rollouts[0].members.keys().copied().collect::<Vec<_>>(),
        [10]
    );
    assert_eq!(store.update_reports().await.unwrap()[0].server_id, 10);

    // The new rule holds on the migrated data: red may add db-1 (pending), and its enrollment
    // is refused, since default's db-1 was enrolled before the migration.
    let red = store
        .add_server("red", "vpc", "db-1", None, 5)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = store
        .enroll(red.id, &enrollment("nr"), &facts(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EnrolledElsewhere), "{err}");
    // Re-enrolling the migrated server numbers past the generation the migration gave it.
    let g = store
        .enroll(10, &enrollment("node-b"), &facts(), None)
        .await
        .unwrap();
    assert_eq!(g, 2);
    drop(store);

    // Foreign keys are on again and hold; the version is the newest; a newer one is still
    // refused.
    let known = super::MIGRATIONS.last().map_or(0, |m| m.0);
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, known);
    let dangling: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .optional()
        .unwrap();
    assert_eq!(dangling, None);
    conn.pragma_update(None, "user_version", known + 1).unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::TooNew { found, known: k, .. }) if found == known + 1 && k == known
    ));
}

#[test]
fn every_commit_is_synced_to_disk_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let conn = store.conn.lock().unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    // 2 is FULL: in WAL mode, NORMAL (1) may lose the last commits on a power loss.
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}
