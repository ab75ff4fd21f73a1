//! The suite's tests of projects, users and resource groups, and of state surviving a reopen.

use crate::store::*;
use tasknode_protocol::NetworkType;

use super::Harness;
use super::releases::{manifest, signed};
use super::servers::facts;
use super::tasks::keyed;

pub(super) async fn state_survives_reopening_and_migrations_run_once(h: &dyn Harness) {
    {
        let store = h.open().await;
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
                    log_addr: None,
                },
            }])
            .await
            .unwrap();
    }
    let store = h.open().await;
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

use std::collections::HashMap;
use tasknode_protocol::updates::{Batch, SetRollout};

/// The id of group `name` of the default project, from its rollout.
async fn group_id(store: &dyn Store, name: &str) -> i64 {
    let rollouts = store.list_rollouts(Some("default")).await.unwrap();
    rollouts.iter().find(|r| r.group == name).unwrap().group_id
}

pub(super) async fn a_renamed_group_keeps_its_servers_and_tasks(h: &dyn Harness) {
    let store = h.open().await;
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

pub(super) async fn a_group_with_servers_or_unfinished_tasks_is_not_deleted(h: &dyn Harness) {
    let store = h.open().await;
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
    // A group is found with its servers counted; a missing one, or one in a missing project,
    // is NotFound.
    let g = store.group("default", "etl").await.unwrap();
    assert_eq!(
        (g.name.as_str(), g.network, g.servers),
        ("etl", NetworkType::Classic, 2)
    );
    assert!(matches!(
        store.group("default", "nope").await,
        Err(StoreError::NotFound {
            kind: "resource group",
            ..
        })
    ));
    assert!(matches!(
        store.group("nope", "etl").await,
        Err(StoreError::NotFound { .. })
    ));
    let err = store.delete_group("default", "etl").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { field: "group", .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "group etl still has 2 servers; a group is deleted only when it is empty"
    );

    // A group without servers takes no task, with or without a key: nothing would run it.
    store
        .create_group("default", "idle", NetworkType::Classic, 1)
        .await
        .unwrap();
    for key in [None, Some("k-1")] {
        let err = store
            .submit_task_once(&keyed("idle", "true", 60, key), 2)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { field: "group", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("has no servers"), "{err}");
    }
    // A task it took while it had a server stays after the server is gone; a submit sent
    // again under the task's key is still answered with it.
    store
        .add_server("default", "idle", "idle-1", None, 2)
        .await
        .unwrap();
    let t = store
        .submit_task_once(&keyed("idle", "true", 60, Some("k-1")), 2)
        .await
        .unwrap()
        .task;
    store
        .remove_server("default", "idle-1", RemoveMode::Force, 2)
        .await
        .unwrap();
    let again = store
        .submit_task_once(&keyed("idle", "true", 60, Some("k-1")), 2)
        .await
        .unwrap();
    assert_eq!((again.task.id, again.created), (t.id, false));
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
    store
        .add_server("default", "idle", "idle-2", None, 4)
        .await
        .unwrap();
    let next = store
        .submit_task("default", "idle", "true", 60, 5)
        .await
        .unwrap();
    assert!(next.id > t.id, "task id {} given out again", next.id);
}

pub(super) async fn deleting_a_group_takes_its_tokens_finished_tasks_and_rollout(h: &dyn Harness) {
    let store = h.open().await;
    store
        .create_user("default", "etl", "$argon2id$x", 1)
        .await
        .unwrap();
    store
        .publish_release(signed(manifest("0.3.0", false, "ab")), 1)
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
        let server = format!("{group}-1");
        store
            .add_server("default", group, &server, None, 2)
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
        // A group is deleted only when it has no servers.
        store
            .remove_server("default", &server, RemoveMode::Refuse, 4)
            .await
            .unwrap();
    }
    let old = group_id(&*store, "old").await;

    let deleted = store.delete_group("default", "old").await.unwrap();
    assert_eq!(deleted.tasks, tasks["old"]);
    for (table, column) in [
        ("resource_groups", "id"),
        ("tasks", "group_id"),
        ("enrollment_tokens", "group_id"),
        ("rollouts", "group_id"),
        ("rollout_members", "group_id"),
    ] {
        assert_eq!(h.count(table, column, old).await, 0, "{table} keeps rows");
    }
    assert_eq!(h.dangling_references().await, 0);
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
