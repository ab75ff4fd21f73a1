//! Tests of the SQLite store against throwaway databases.

use super::*;

fn facts() -> HostFacts {
    HostFacts {
        hostname: "db-1".into(),
        cpu_cores: 8.0,
        memory_bytes: 16 << 30,
        os: "CentOS release 6.10 (Final)".into(),
        arch: "x86_64".into(),
        kernel: "2.6.32-754.el6.x86_64".into(),
        agent_version: "0.1.0".into(),
    }
}

#[tokio::test]
async fn a_server_is_in_at_most_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    store
        .create_group("default", "bi", NetworkType::Classic, 1)
        .await
        .unwrap();
    store
        .add_server("default", "etl", "db-1", None, 2)
        .await
        .unwrap();
    let err = store
        .add_server("default", "bi", "db-1", None, 3)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ServerTaken { group, project, .. } if group == "etl" && project == "default"),
        "{err}"
    );
    let err = store
        .add_server("default", "nope", "db-2", None, 3)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            kind: "resource group",
            ..
        }
    ));
    let groups = store.list_groups(None).await.unwrap();
    assert_eq!(groups.iter().map(|g| g.servers).collect::<Vec<_>>(), [0, 1]);
}

#[tokio::test]
async fn state_survives_reopening_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .create_user("default", "etl", "$argon2id$x", 1)
            .await
            .unwrap();
        store
            .create_group("default", "g", NetworkType::Vpc, 1)
            .await
            .unwrap();
        let s = store
            .add_server(
                "default",
                "g",
                "4c4c4544-0042-3510-8051-b4c04f333232",
                Some(4),
                1,
            )
            .await
            .unwrap();
        let e = Enrollment {
            node_id: "n1".into(),
            secret_sha256: "ab".into(),
            enrolled_ms: 5,
            cpu_cores: 8.0,
            memory_bytes: 16 << 30,
        };
        store.enroll(s.id, &e, &facts(), None).await.unwrap();
        store
            .record_liveness(vec![LivenessUpdate {
                node_id: "n1".into(),
                liveness: Liveness {
                    agent_version: Some("0.1.0".into()),
                    last_heartbeat_ms: Some(9),
                    clock_offset_ms: Some(-3),
                    running_tasks: 2,
                    stopped: Some(Stop {
                        at_ms: 10,
                        reason: "SIGTERM".into(),
                    }),
                },
            }])
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.login("etl").await.unwrap().unwrap().project,
        "default"
    );
    let servers = store.list_servers(&ServerFilter::default()).await.unwrap();
    assert_eq!(servers.len(), 1);
    let s = &servers[0];
    assert_eq!(s.max_concurrency, Some(4));
    assert_eq!(s.enrollment.as_ref().unwrap().node_id, "n1");
    assert_eq!(s.liveness.last_heartbeat_ms, Some(9));
    assert_eq!(s.liveness.stopped.as_ref().unwrap().reason, "SIGTERM");
}

#[tokio::test]
async fn a_token_is_spent_once_with_its_enrollment_and_not_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    store
        .create_user("default", "etl", "$argon2id$x", 1)
        .await
        .unwrap();
    store
        .create_group("default", "g", NetworkType::Classic, 1)
        .await
        .unwrap();
    let err = store
        .create_enrollment_token("default", "g", "nobody", "aa", 1, 100)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UserNotInProject { .. }), "{err}");
    let t = store
        .create_enrollment_token("default", "g", "etl", "aa", 1, 100)
        .await
        .unwrap();
    assert_eq!((t.group.as_str(), t.used.is_none()), ("g", true));
    let a = store
        .add_server("default", "g", "a", None, 1)
        .await
        .unwrap();
    let b = store
        .add_server("default", "g", "b", None, 1)
        .await
        .unwrap();
    let enrollment = |id: &str| Enrollment {
        node_id: id.into(),
        secret_sha256: "00".into(),
        enrolled_ms: 5,
        cpu_cores: 1.0,
        memory_bytes: 1,
    };
    let spend = |now| {
        Some(SpendToken {
            token_sha256: "aa".into(),
            now_ms: now,
        })
    };
    store
        .enroll(a.id, &enrollment("na"), &facts(), spend(50))
        .await
        .unwrap();
    let err = store
        .enroll(b.id, &enrollment("nb"), &facts(), spend(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TokenSpent));
    // The refused enrollment left server b as it was.
    let b_now = store.server_by_name("b").await.unwrap().unwrap();
    assert!(b_now.enrollment.is_none());
    let t = store.enrollment_token("aa").await.unwrap().unwrap();
    assert_eq!(t.used, Some((50, "a".to_owned())));

    store
        .create_enrollment_token("default", "g", "etl", "bb", 1, 100)
        .await
        .unwrap();
    let spend_late = Some(SpendToken {
        token_sha256: "bb".into(),
        now_ms: 100,
    });
    let err = store
        .enroll(b.id, &enrollment("nb"), &facts(), spend_late)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TokenSpent),
        "an expired token must not enroll"
    );
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
