//! Tests of the SQLite store against throwaway databases.

use super::*;
use crate::store::*;
use tasknode_protocol::NetworkType;
use tasknode_protocol::wire::HostFacts;

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
    let b_now = store.server_by_name("default", "b").await.unwrap().unwrap();
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

mod tasks {
    use super::*;
    use tasknode_protocol::tasks::{FinishTask, HeldTask, Outcome, TaskState};

    fn done(lease: i64, code: i32) -> FinishTask {
        FinishTask {
            lease,
            outcome: Outcome::Exited { code },
            started_ms: Some(10),
            finished_ms: 20,
            log_bytes: 0,
        }
    }

    /// A store with group `etl` holding two servers; returns it and their ids.
    async fn store(dir: &std::path::Path) -> (SqliteStore, i64, i64) {
        let store = SqliteStore::open(&dir.join("t.db")).unwrap();
        store
            .create_group("default", "etl", NetworkType::Classic, 1)
            .await
            .unwrap();
        let a = store
            .add_server("default", "etl", "db-1", Some(2), 1)
            .await
            .unwrap();
        let b = store
            .add_server("default", "etl", "db-2", Some(2), 1)
            .await
            .unwrap();
        (store, a.id, b.id)
    }

    #[tokio::test]
    async fn a_stale_lease_can_neither_start_nor_finish_a_task() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = store(dir.path()).await;
        let t = store
            .submit_task("default", "etl", "true", 60, 1)
            .await
            .unwrap();
        let first = store.assign(a, 2, 2).await.unwrap();
        assert_eq!((first.len(), first[0].lease), (1, 1));
        // Server a never received it (its next poll holds nothing): queued again.
        let r = store.reconcile(a, vec![], 3).await.unwrap();
        assert_eq!(r.requeued, [t.id]);
        let second = store.assign(b, 2, 4).await.unwrap();
        assert_eq!(second[0].lease, 2);
        // The stale assignment is fenced off; the current one starts, once.
        assert!(matches!(
            store.start_task(a, t.id, 1, 5, 5).await.unwrap(),
            Fenced::Refused(_)
        ));
        assert_eq!(
            store.start_task(b, t.id, 2, 5, 5).await.unwrap(),
            Fenced::Accepted
        );
        assert_eq!(
            store.start_task(b, t.id, 2, 5, 5).await.unwrap(),
            Fenced::Accepted
        );
        assert!(matches!(
            store.finish_task(a, t.id, done(1, 0), 6).await.unwrap(),
            Fenced::Refused(_)
        ));
        // Held by a under the old lease: a is told to kill it.
        let r = store
            .reconcile(a, vec![HeldTask { id: t.id, lease: 1 }], 6)
            .await
            .unwrap();
        assert_eq!(r.cancel, [t.id]);
        assert_eq!(
            store.finish_task(b, t.id, done(2, 3), 7).await.unwrap(),
            Fenced::Accepted
        );
        // A repeat of the result changes nothing.
        assert_eq!(
            store.finish_task(b, t.id, done(2, 0), 8).await.unwrap(),
            Fenced::Accepted
        );
        let t = store.task(t.id).await.unwrap().unwrap();
        assert_eq!((t.state, t.exit_code), (TaskState::Failed, Some(3)));
        let err = store.cancel_task(t.id, 9).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::TaskIs {
                    state: TaskState::Failed,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn assignment_stops_at_max_concurrency_and_a_lost_task_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, _) = store(dir.path()).await;
        for _ in 0..3 {
            store
                .submit_task("default", "etl", "true", 60, 1)
                .await
                .unwrap();
        }
        let got = store.assign(a, 2, 2).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(store.assign(a, 2, 3).await.unwrap().is_empty());
        for g in &got {
            store.start_task(a, g.id, g.lease, 4, 4).await.unwrap();
        }
        assert_eq!(store.busy_servers().await.unwrap(), [a]);
        let r = store
            .abandon_server_tasks(a, "server db-1 stopped", 5)
            .await
            .unwrap();
        assert_eq!(r.lost.len(), 2);
        // Lost tasks are not queued again: only the third one is handed out.
        let next = store.assign(a, 2, 6).await.unwrap();
        assert_eq!(next.len(), 1);
        assert!(got.iter().all(|g| g.id != next[0].id));
        // A lost task's late result is recorded, and says so.
        let late = &got[0];
        assert_eq!(
            store
                .finish_task(a, late.id, done(late.lease, 0), 7)
                .await
                .unwrap(),
            Fenced::Accepted
        );
        let t = store.task(late.id).await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Succeeded);
        assert!(t.reason.unwrap().contains("reported lost"));
    }
}

mod releases {
    use super::*;
    use crate::store::{Advance, NewRelease, Published};
    use ed25519_dalek::SigningKey;
    use tasknode_protocol::manifest::{self, Artifact, Manifest};
    use tasknode_protocol::updates::{
        Batch, RolloutState, SetRollout, UpdateOutcome, UpdateReport,
    };

    pub(super) fn manifest(version: &str, rollback: bool, sha: &str) -> Manifest {
        Manifest {
            format: manifest::FORMAT,
            channel: "stable".into(),
            version: version.into(),
            rollback,
            issued_ms: if rollback { 50 } else { 10 },
            expires_ms: rollback.then_some(1_000),
            artifacts: vec![Artifact {
                target: "x86_64-unknown-linux-musl".into(),
                url: format!("releases/{version}/tasknode-x86_64-unknown-linux-musl"),
                size: 10,
                sha256: sha.repeat(32),
            }],
        }
    }

    pub(super) fn signed(m: Manifest) -> NewRelease {
        let key = SigningKey::from_bytes(&[9; 32]);
        NewRelease {
            text: m.sign(&key).unwrap(),
            signed_by: manifest::encode_key(&key.verifying_key()),
            manifest: m,
        }
    }

    /// A store in `dir` with a classic group `etl` holding server `a`.
    async fn group_with_server(dir: &std::path::Path) -> (SqliteStore, crate::store::Server) {
        let store = SqliteStore::open(&dir.join("t.db")).unwrap();
        store
            .create_group("default", "etl", NetworkType::Classic, 1)
            .await
            .unwrap();
        let a = store
            .add_server("default", "etl", "a", None, 1)
            .await
            .unwrap();
        (store, a)
    }

    fn rollout(version: &str) -> SetRollout {
        SetRollout {
            project: "default".into(),
            group: "etl".into(),
            version: version.into(),
            batch: Batch::Percent(50),
            max_failures: 0,
        }
    }

    #[tokio::test]
    async fn a_published_version_never_changes_but_may_gain_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let first = signed(manifest("0.2.0", false, "ab"));
        let (r, p) = store.publish_release(first.clone(), 100).await.unwrap();
        assert_eq!(p, Published::New);
        assert_eq!(
            (
                r.targets.as_slice(),
                r.rollback,
                r.issued_ms,
                r.published_ms
            ),
            (
                &["x86_64-unknown-linux-musl".to_owned()][..],
                false,
                10,
                100
            )
        );
        // The same file again: nothing changes.
        let (r, p) = store.publish_release(first.clone(), 200).await.unwrap();
        assert_eq!((p, r.published_ms), (Published::Unchanged, 100));
        // Other content for the version: refused.
        let err = store
            .publish_release(signed(manifest("0.2.0", false, "cd")), 300)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "version 0.2.0 was already published with other content; release a new version"
        );
        // A rollback for other binaries: refused. For the same ones: kept beside it, and
        // handed to agents from then on.
        let err = store
            .publish_release(signed(manifest("0.2.0", true, "cd")), 300)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let rollback = signed(manifest("0.2.0", true, "ab"));
        let (r, p) = store.publish_release(rollback.clone(), 400).await.unwrap();
        assert_eq!(
            (p, r.rollback, r.issued_ms),
            (Published::Rollback, true, 50)
        );
        assert_eq!(
            store.release_manifest("0.2.0", 999).await.unwrap(),
            Some(rollback.text.clone())
        );
        assert_eq!(r.rollback_expires_ms, Some(1_000));
        // Once the rollback expired, agents get the release's own manifest again.
        assert_eq!(
            store.release_manifest("0.2.0", 1_000).await.unwrap(),
            Some(first.text.clone())
        );
        let (_, p) = store.publish_release(rollback, 500).await.unwrap();
        assert_eq!(p, Published::Unchanged);
        assert_eq!(store.release_manifest("0.9.9", 1).await.unwrap(), None);

        // A version first published by its rollback takes its release manifest later.
        let rollback = signed(manifest("0.1.0", true, "ef"));
        store.publish_release(rollback.clone(), 600).await.unwrap();
        let (r, p) = store
            .publish_release(signed(manifest("0.1.0", false, "ef")), 700)
            .await
            .unwrap();
        assert_eq!((p, r.rollback), (Published::New, true));
        assert_eq!(
            store.release_manifest("0.1.0", 1).await.unwrap(),
            Some(rollback.text)
        );

        store
            .publish_release(signed(manifest("0.10.0", false, "ab")), 800)
            .await
            .unwrap();
        let versions: Vec<String> = store
            .list_releases()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, ["0.10.0", "0.2.0", "0.1.0"], "newest first");
    }

    #[tokio::test]
    async fn setting_a_rollout_again_starts_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a) = group_with_server(dir.path()).await;
        let err = store
            .set_rollout(&rollout("0.3.0"), "x", 1)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("`tasknode-console release publish FILE`"),
            "{err}"
        );
        let err = store
            .set_rollout(
                &SetRollout {
                    group: "nope".into(),
                    ..rollout("0.3.0")
                },
                "x",
                1,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

        store
            .publish_release(signed(manifest("0.3.0", false, "ab")), 1)
            .await
            .unwrap();
        let r = store
            .set_rollout(&rollout("0.3.0"), "set", 10)
            .await
            .unwrap();
        assert_eq!(
            (r.state, r.batch, r.started_ms),
            (RolloutState::Running, Batch::Percent(50), 10)
        );
        let step = Advance {
            group_id: r.group_id,
            started_ms: 10,
            admit: vec![a.id],
            state: RolloutState::Running,
            reason: "offered".into(),
        };
        assert!(store.advance_rollout(&step, 11).await.unwrap());
        let listed = store.list_rollouts(Some("default")).await.unwrap();
        assert_eq!(listed[0].members.get(&a.id), Some(&11));
        assert_eq!(listed[0].reason, "offered");
        assert!(store.list_rollouts(Some("other")).await.unwrap().is_empty());

        let r = store
            .set_rollout(&rollout("0.3.0"), "again", 20)
            .await
            .unwrap();
        let listed = store.list_rollouts(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].members.is_empty(), "members are cleared");
        assert_eq!(listed[0].reason, "again");
        // A step decided for the rollout before changes nothing.
        assert!(!store.advance_rollout(&step, 21).await.unwrap());
        assert!(
            store.list_rollouts(None).await.unwrap()[0]
                .members
                .is_empty()
        );
        assert_eq!(r.started_ms, 20);
    }

    #[tokio::test]
    async fn only_the_latest_update_report_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a) = group_with_server(dir.path()).await;
        for (outcome, at) in [(UpdateOutcome::Started, 5), (UpdateOutcome::Failed, 6)] {
            let report = UpdateReport {
                version: "0.3.0".into(),
                outcome,
                reason: "why".into(),
            };
            store.record_update_report(a.id, &report, at).await.unwrap();
        }
        let reports = store.update_reports().await.unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].server_id, reports[0].outcome, reports[0].at_ms),
            (a.id, UpdateOutcome::Failed, 6)
        );
    }
}

mod groups {
    use super::*;
    use std::collections::HashMap;
    use tasknode_protocol::updates::{Batch, SetRollout};

    /// Rows in `table` whose `column` is `id`, read past the store's API.
    fn rows(store: &SqliteStore, table: &str, column: &str, id: i64) -> i64 {
        let conn = store.conn.lock().unwrap();
        conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn group_id(store: &SqliteStore, name: &str) -> i64 {
        let conn = store.conn.lock().unwrap();
        group_of(&conn, "default", name).unwrap().0
    }

    #[tokio::test]
    async fn a_renamed_group_keeps_its_servers_and_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store
            .create_group("default", "etl", NetworkType::Classic, 5)
            .await
            .unwrap();
        store
            .create_group("default", "bi", NetworkType::Vpc, 6)
            .await
            .unwrap();
        store
            .add_server("default", "etl", "db-1", None, 7)
            .await
            .unwrap();
        let t = store
            .submit_task("default", "etl", "true", 60, 8)
            .await
            .unwrap();

        let g = store.rename_group("default", "etl", "etl-2").await.unwrap();
        assert_eq!(
            g,
            Group {
                name: "etl-2".into(),
                project: "default".into(),
                network: NetworkType::Classic,
                servers: 1,
                created_ms: 5,
            }
        );
        let names: Vec<String> = store
            .list_groups(None)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["bi", "etl-2"]);
        let server = store
            .server_by_name("default", "db-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(server.group, "etl-2");
        assert_eq!(store.task(t.id).await.unwrap().unwrap().group, "etl-2");
        // The same name again changes nothing.
        assert_eq!(
            store
                .rename_group("default", "etl-2", "etl-2")
                .await
                .unwrap(),
            g
        );

        let err = store
            .rename_group("default", "etl-2", "bi")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Exists { kind: "resource group", name } if name == "bi"),
            "{err}"
        );
        let err = store.rename_group("default", "etl", "x").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { kind: "resource group", name } if name == "etl"),
            "{err}"
        );
        let err = store.rename_group("nope", "etl-2", "x").await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    kind: "project",
                    ..
                }
            ),
            "{err}"
        );
        // Names are unique per project: another project may use one taken here.
        store.create_project("finance", 9).await.unwrap();
        store
            .create_group("finance", "ledger", NetworkType::Classic, 9)
            .await
            .unwrap();
        let g = store.rename_group("finance", "ledger", "bi").await.unwrap();
        assert_eq!((g.name.as_str(), g.project.as_str()), ("bi", "finance"));
    }

    #[tokio::test]
    async fn a_group_with_servers_or_unfinished_tasks_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store
            .create_group("default", "etl", NetworkType::Classic, 1)
            .await
            .unwrap();
        for name in ["db-1", "db-2"] {
            store
                .add_server("default", "etl", name, None, 1)
                .await
                .unwrap();
        }
        let err = store.delete_group("default", "etl").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { field: "group", .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "group etl still has 2 servers; a group is deleted only when it is empty"
        );

        // The store takes a task for a group without servers (the API refuses one).
        store
            .create_group("default", "idle", NetworkType::Classic, 1)
            .await
            .unwrap();
        let t = store
            .submit_task("default", "idle", "true", 60, 2)
            .await
            .unwrap();
        let err = store.delete_group("default", "idle").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { field: "group", .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "group idle has 1 unfinished task (queued, assigned or running); cancel it \
             (`tasknode-console task cancel ID`) or wait for it to finish, then delete the group"
        );
        assert_eq!(store.list_groups(None).await.unwrap().len(), 2);
        assert!(store.task(t.id).await.unwrap().is_some());

        // Once it is cancelled (finished), the group goes, and the task with it.
        store.cancel_task(t.id, 3).await.unwrap();
        let deleted = store.delete_group("default", "idle").await.unwrap();
        assert_eq!(
            deleted,
            DeletedGroup {
                name: "idle".into(),
                project: "default".into(),
                tasks: vec![t.id],
            }
        );
        let err = store.delete_group("default", "idle").await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    kind: "resource group",
                    ..
                }
            ),
            "{err}"
        );
        // The deleted task was the newest; its id (and so its log file's name) is not given
        // out again.
        store
            .create_group("default", "idle", NetworkType::Classic, 4)
            .await
            .unwrap();
        let next = store
            .submit_task("default", "idle", "true", 60, 5)
            .await
            .unwrap();
        assert!(next.id > t.id, "task id {} given out again", next.id);
    }

    #[tokio::test]
    async fn deleting_a_group_takes_its_tokens_finished_tasks_and_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store
            .create_user("default", "etl", "$argon2id$x", 1)
            .await
            .unwrap();
        store
            .publish_release(
                super::releases::signed(super::releases::manifest("0.3.0", false, "ab")),
                1,
            )
            .await
            .unwrap();
        // Two groups alike; only `old` is deleted.
        let mut tasks = HashMap::new();
        for (group, token) in [("old", "aa"), ("keep", "bb")] {
            store
                .create_group("default", group, NetworkType::Classic, 1)
                .await
                .unwrap();
            store
                .create_enrollment_token("default", group, "etl", token, 1, 100)
                .await
                .unwrap();
            let mut ids = Vec::new();
            for _ in 0..2 {
                let t = store
                    .submit_task("default", group, "true", 60, 2)
                    .await
                    .unwrap();
                store.cancel_task(t.id, 3).await.unwrap();
                ids.push(t.id);
            }
            tasks.insert(group, ids);
            let rollout = SetRollout {
                project: "default".into(),
                group: group.into(),
                version: "0.3.0".into(),
                batch: Batch::Percent(50),
                max_failures: 0,
            };
            store.set_rollout(&rollout, "set", 4).await.unwrap();
        }
        let old = group_id(&store, "old");

        let deleted = store.delete_group("default", "old").await.unwrap();
        assert_eq!(deleted.tasks, tasks["old"]);
        for (table, column) in [
            ("resource_groups", "id"),
            ("tasks", "group_id"),
            ("enrollment_tokens", "group_id"),
            ("rollouts", "group_id"),
            ("rollout_members", "group_id"),
        ] {
            assert_eq!(rows(&store, table, column, old), 0, "{table} keeps rows");
        }
        {
            let conn = store.conn.lock().unwrap();
            let dangling: i64 = conn
                .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(dangling, 0);
        }
        assert!(store.enrollment_token("aa").await.unwrap().is_none());
        for id in &tasks["old"] {
            assert!(store.task(*id).await.unwrap().is_none());
        }
        // The other group lost nothing.
        assert!(store.enrollment_token("bb").await.unwrap().is_some());
        for id in &tasks["keep"] {
            assert!(store.task(*id).await.unwrap().is_some());
        }
        let rollouts = store.list_rollouts(None).await.unwrap();
        assert_eq!(
            rollouts
                .iter()
                .map(|r| r.group.as_str())
                .collect::<Vec<_>>(),
            ["keep"]
        );

        // A new group may take the name, and starts empty.
        let g = store
            .create_group("default", "old", NetworkType::Vpc, 9)
            .await
            .unwrap();
        assert_eq!((g.servers, g.network), (0, NetworkType::Vpc));
        let filter = TaskFilter {
            group: Some("old".into()),
            limit: 100,
            ..TaskFilter::default()
        };
        assert!(store.list_tasks(&filter).await.unwrap().is_empty());
        assert_eq!(store.list_rollouts(None).await.unwrap().len(), 1);
    }
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
