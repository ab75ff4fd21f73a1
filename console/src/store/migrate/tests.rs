//! Tests of the move from SQLite to PostgreSQL at the store level, on a real SQLite file and a
//! throwaway PostgreSQL database: the table list covers both schemas, every row of every table
//! arrives with its id, sequences go past the highest ids ever given out, a target with state
//! is refused, and a copy altered before the check is caught and rolled back.

use std::collections::BTreeSet;

use super::*;
use crate::store::suite::Postgres;
use crate::store::{ProjectStore, TaskLogStore};

/// Rows in every table, with NULLs, a real number, booleans, non-ASCII text, blobs and a task
/// deleted after a newer id was given out.
const FIXTURE: &str = r#"
INSERT INTO projects (id, name, created_ms) VALUES (2, 'finance', 1700000000001);
INSERT INTO users VALUES (1, 2, 'ann', '$argon2id$v=19$x', 1700000000002);
INSERT INTO resource_groups VALUES (1, 2, 'etl', 'classic', 1), (2, 1, 'web', 'vpc', 2);
INSERT INTO servers (id, group_id, project_id, name, max_concurrency, created_ms, node_id,
    secret_sha256, enrolled_ms, hostname, cpu_cores, memory_bytes, os, arch, kernel,
    enroll_generation, agent_version, last_heartbeat_ms, clock_offset_ms, running_tasks,
    stopped_ms, stop_reason)
VALUES (1, 1, 2, 'db-1', NULL, 5, 'node-1', 'ab12', 6, 'db-1', 2.5, 8589934592, 'Debian 12',
        'x86_64', '6.1.0', 1, '0.1.0', 7, -3, 1, NULL, NULL),
       (2, 2, 1, 'c0ffee00-0000-0000-0000-000000000001', 4, 8, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, 0, 9, 'never enrolled');
INSERT INTO enrollment_tokens VALUES (1, 'deadbeef', 1, 1, 9, 10, 11, 'db-1'),
                                     (2, 'feedface', 2, 1, 12, 13, NULL, NULL);
INSERT INTO tasks (id, group_id, script, timeout_secs, state, reason, submitted_ms, server_id,
    lease, assigned_ms, started_ms, finished_ms, exit_code, signal, log_bytes, cancel_requested)
VALUES (1, 1, 'echo héllo ✓', 60, 'succeeded', NULL, 12, 1, 1, 13, 14, 15, 0, NULL, 14, 0),
       (2, 1, 'sleep 99', 60, 'running', NULL, 16, 1, 3, 17, 18, NULL, NULL, NULL, NULL, 1),
       (7, 2, 'true', 1, 'cancelled', 'cancelled', 19, NULL, 0, NULL, NULL, 20, NULL, NULL, NULL, 0);
DELETE FROM tasks WHERE id = 7;
INSERT INTO releases VALUES ('0.2.0', 'stable', '{"m":1}', NULL, 18, 19, 'key-1', '["x86_64"]'),
                            ('0.10.0', 'stable', '{"m":2}', '{"r":2}', 20, 21, 'key-1', '[]');
INSERT INTO rollouts VALUES (1, '0.2.0', '{"count":1}', 0, 'running', 'batch 1', 22);
INSERT INTO rollout_members VALUES (1, 1, 23);
INSERT INTO update_reports VALUES (1, '0.2.0', 'updated', '', 24);
INSERT INTO web_sessions VALUES (randomblob(32), NULL, NULL, 'csrf-1', 25, 26, 27),
                                (zeroblob(32), 'ann', 'finance', 'csrf-2', 28, 29, 30);
INSERT INTO console_secrets VALUES ('admin_token_sha256', randomblob(32), 31),
                                   ('tls_server/ü', X'00FF', 32);
INSERT INTO tasks (id, group_id, script, timeout_secs, state, reason, submitted_ms, server_id,
    lease, assigned_ms, started_ms, finished_ms, exit_code, signal, log_bytes, cancel_requested,
    server_name)
VALUES (3, 1, 'true', 1, 'succeeded', NULL, 33, NULL, 1, 34, 35, 36, 0, NULL, 0, 0, 'db-old');
INSERT INTO removed_nodes VALUES ('node-0', 'cd34', 'db-old', 2, 37);
UPDATE servers SET draining_ms = 38 WHERE id = 1;
INSERT INTO audit_log VALUES (1, 33, 'admin', 'user.create', 'user ann', 'finance'),
                             (2, 34, 'user:ann', 'release.publish', 'release 1.2.0', NULL);
"#;

/// A SQLite database at the newest schema holding [`FIXTURE`], in a directory of its own,
/// with the pushed logs of tasks 1 (2.5 MiB: several chunks) and 2, and two files that are not
/// the log of a task (deleted task 7's, and a note).
fn populated() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasknode.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(FIXTURE).unwrap();
    let logs = dir.path().join("task-logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("1.log"), long_log()).unwrap();
    std::fs::write(logs.join("2.log"), "started\n").unwrap();
    std::fs::write(logs.join("7.log"), "a deleted task's\n").unwrap();
    std::fs::write(logs.join("notes.txt"), "not a log\n").unwrap();
    (dir, path)
}

/// Task 1's log: 2.5 MiB that differ from chunk to chunk.
fn long_log() -> Vec<u8> {
    (0..5 * 512 * 1024u32).map(|i| (i % 251) as u8).collect()
}

fn quiet(_: Progress) {}

fn lite_rows(path: &Path, table: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn the_table_list_names_every_table_of_both_schemas_with_its_primary_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasknode.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let listed: BTreeSet<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
    let lite_tables: BTreeSet<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<BTreeSet<String>, _>>()
        .unwrap()
        .into_iter()
        .filter(|t| !NOT_MOVED.contains(&t.as_str()))
        .collect();
    assert_eq!(
        lite_tables, listed,
        "a SQLite migration added or removed a table: teach store/migrate.rs's TABLES"
    );
    for t in TABLES {
        let mut pk: Vec<(i64, String)> = conn
            .prepare("SELECT pk, name FROM pragma_table_info(?1) WHERE pk > 0")
            .unwrap()
            .query_map([t.name], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        pk.sort();
        let pk: Vec<String> = pk.into_iter().map(|p| p.1).collect();
        assert_eq!(pk, t.key, "the key of {} is its primary key", t.name);
    }

    let h = Postgres::new();
    drop(h.connect().await.unwrap());
    let pg_tables: BTreeSet<String> = h
        .psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        .lines()
        .filter(|t| !NOT_MOVED.contains(t) && !LOG_TABLES.contains(t))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        pg_tables, listed,
        "a PostgreSQL migration added or removed a table: teach store/migrate.rs's TABLES"
    );
    // Both schemas have the same columns, of types the copy knows: an empty migration succeeds.
    let store = h.connect().await.unwrap();
    let report = migrate(&path, &store, &quiet).await.unwrap();
    assert_eq!(report.tables.len(), TABLES.len() + 1);
}

#[tokio::test]
async fn every_row_of_every_table_moves_with_its_id_and_checks_the_same() {
    let (_dir, path) = populated();
    let h = Postgres::new();
    let store = h.connect().await.unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let report = migrate(&path, &store, &|p| seen.lock().unwrap().push(p.table))
        .await
        .unwrap();
    for t in &report.tables {
        assert!(t.same(), "{t:?}");
        assert!(t.sqlite_rows > 0, "the fixture fills {}", t.table);
        let files = (t.table == "task_logs").then_some(2);
        assert_eq!(
            t.postgres_rows as i64,
            files.unwrap_or_else(|| lite_rows(&path, t.table)),
            "{}",
            t.table
        );
        assert_eq!(t.sqlite_sha256.len(), 64);
    }
    // The pushed logs of tasks that exist moved, byte for byte; the other files stayed.
    assert_eq!(report.log_files_left, 2);
    assert_eq!(
        store.read_log(1, 0, 4 << 20).await.unwrap(),
        (long_log(), 5 * 512 * 1024)
    );
    assert_eq!(
        store.read_log(2, 0, 100).await.unwrap(),
        (b"started\n".to_vec(), 8)
    );
    assert_eq!(
        h.psql("SELECT count(*) FROM task_log_chunks WHERE task_id = 1"),
        "3"
    );
    assert!(seen.lock().unwrap().contains(&"tasks"));
    // The ids are the SQLite ones; values of every type arrive unchanged.
    assert_eq!(
        h.psql("SELECT id || ' ' || name FROM projects ORDER BY id"),
        "1 default\n2 finance"
    );
    assert_eq!(
        h.psql("SELECT script || ' ' || cancel_requested FROM tasks ORDER BY id"),
        "echo héllo ✓ false\nsleep 99 true\ntrue false"
    );
    assert_eq!(
        h.psql("SELECT server_name FROM tasks WHERE id = 3"),
        "db-old"
    );
    assert_eq!(
        h.psql("SELECT cpu_cores || ' ' || memory_bytes || ' ' || clock_offset_ms FROM servers WHERE id = 1"),
        "2.5 8589934592 -3"
    );
    assert_eq!(
        h.psql("SELECT encode(value, 'hex') FROM console_secrets WHERE name = 'tls_server/ü'"),
        "00ff"
    );
    // Task 7 was deleted: its id is not given out again, nor any below it.
    let next = |table: &str| {
        report
            .next_ids
            .iter()
            .find(|n| n.table == table)
            .map(|n| n.next_id)
    };
    assert_eq!(next("tasks"), Some(8));
    assert_eq!(next("servers"), Some(3));
    assert_eq!(
        h.psql("SELECT nextval(pg_get_serial_sequence('tasks', 'id'))"),
        "8"
    );
    assert_eq!(
        h.psql("SELECT nextval(pg_get_serial_sequence('users', 'id'))"),
        "2"
    );
    // The PostgreSQL store reads what moved.
    let groups = store.list_groups(Some("finance")).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name, "etl");

    // A second migration into the database is refused, naming what it found; nothing changes.
    let before = h.psql("SELECT count(*) || ' ' || max(id) FROM tasks");
    let err = migrate(&path, &store, &quiet).await.unwrap_err();
    match &err {
        MigrateError::NotEmpty { found } => {
            let tables: Vec<&str> = found.iter().map(|f| f.0).collect();
            assert!(tables.contains(&"projects"), "{tables:?}");
            assert!(tables.contains(&"servers"), "{tables:?}");
            assert!(tables.contains(&"tasks"), "{tables:?}");
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(text.contains("tasks: 3 rows"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(
        h.psql("SELECT count(*) || ' ' || max(id) FROM tasks"),
        before
    );
}

#[tokio::test]
async fn a_copy_altered_before_the_check_is_caught_and_rolled_back() {
    let (_dir, path) = populated();
    let h = Postgres::new();
    let store = h.connect().await.unwrap();
    let err = run(
        &path,
        &store,
        &quiet,
        Some("UPDATE tasks SET exit_code = 1 WHERE id = 1"),
    )
    .await
    .unwrap_err();
    let MigrateError::Mismatch { tables, report } = &err else {
        panic!("{err}");
    };
    assert_eq!(tables, &["tasks"]);
    let tasks = report.tables.iter().find(|t| t.table == "tasks").unwrap();
    assert_eq!(tasks.sqlite_rows, tasks.postgres_rows);
    assert_ne!(tasks.sqlite_sha256, tasks.postgres_sha256);
    assert!(err.to_string().contains("tasks"), "{err}");
    // Rolled back: the target is as empty as before.
    assert_eq!(h.psql("SELECT count(*) FROM tasks"), "0");
    assert_eq!(
        h.psql("SELECT string_agg(name, ',') FROM projects"),
        "default"
    );

    // A row gone is caught too, by its count.
    let err = run(
        &path,
        &store,
        &quiet,
        Some("DELETE FROM web_sessions WHERE user_name IS NULL"),
    )
    .await
    .unwrap_err();
    let MigrateError::Mismatch { tables, report } = &err else {
        panic!("{err}");
    };
    assert_eq!(tables, &["web_sessions"]);
    let s = report
        .tables
        .iter()
        .find(|t| t.table == "web_sessions")
        .unwrap();
    assert_eq!((s.sqlite_rows, s.postgres_rows), (2, 1));

    // And a byte of a pushed log changed in the copy.
    let err = run(
        &path,
        &store,
        &quiet,
        Some(
            "UPDATE task_log_chunks SET data = decode('537461727465640a', 'hex') WHERE task_id = 2",
        ),
    )
    .await
    .unwrap_err();
    let MigrateError::Mismatch { tables, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(tables, &["task_logs"]);
    assert_eq!(h.psql("SELECT count(*) FROM task_logs"), "0");

    // Untouched, the same source moves.
    migrate(&path, &store, &quiet).await.unwrap();
}

#[tokio::test]
async fn a_value_postgres_would_change_is_refused_naming_table_column_and_row() {
    let (_dir, path) = populated();
    Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE tasks SET cancel_requested = 2 WHERE id = 2")
        .unwrap();
    let h = Postgres::new();
    let store = h.connect().await.unwrap();
    let err = migrate(&path, &store, &quiet).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, MigrateError::Value { table: "tasks", column, row, .. } if column == "cancel_requested" && row == "2"),
        "{text}"
    );
    assert!(text.contains("not a boolean"), "{text}");
    assert_eq!(h.psql("SELECT count(*) FROM users"), "0");
}

#[test]
fn the_checksum_tells_apart_what_renders_alike_as_text() {
    let sum = |values: &[Value]| {
        let mut c = Checksum::new();
        for v in values {
            c.value(v);
        }
        c.end_row();
        c.finish().1
    };
    let a = sum(&[Value::Text("ab".into()), Value::Text("c".into())]);
    let b = sum(&[Value::Text("a".into()), Value::Text("bc".into())]);
    assert_ne!(a, b);
    assert_ne!(sum(&[Value::Null]), sum(&[Value::Text(String::new())]));
    assert_ne!(sum(&[Value::Int(1)]), sum(&[Value::Bool(true)]));
    assert_ne!(
        sum(&[Value::Text("x".into())]),
        sum(&[Value::Bytes(b"x".to_vec())])
    );
}
