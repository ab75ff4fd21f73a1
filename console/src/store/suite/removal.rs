//! The suite's tests of removing a server from its group (refused, drained or forced) and of
//! moving it to another group of its project.

use crate::store::*;
use tasknode_protocol::NetworkType;
use tasknode_protocol::tasks::{FinishTask, HeldTask, Outcome, TaskState};

use super::Harness;
use super::servers::{enrollment, facts};

fn done(lease: i64) -> FinishTask {
    FinishTask {
        lease,
        outcome: Outcome::Exited { code: 0 },
        started_ms: Some(10),
        finished_ms: 20,
        log_bytes: 0,
    }
}

fn conflict(err: StoreError) -> String {
    match err {
        StoreError::Conflict { message, .. } => message,
        other => panic!("not a conflict: {other}"),
    }
}

pub(super) async fn a_busy_server_is_removed_only_by_drain_or_force(h: &dyn Harness) {
    let store = h.open().await;
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
    store
        .enroll(a.id, &enrollment("node-a"), &facts(), None)
        .await
        .unwrap();
    let t1 = store
        .submit_task("default", "etl", "true", 60, 2)
        .await
        .unwrap();
    let t2 = store
        .submit_task("default", "etl", "true", 60, 2)
        .await
        .unwrap();
    assert_eq!(store.assign(a.id, 2, 3).await.unwrap().tasks.len(), 2);
    store.start_task(a.id, t1.id, 1, 4, 4).await.unwrap();

    // Refused while it holds tasks, naming both ways out; nothing changes.
    let msg = conflict(
        store
            .remove_server("default", "db-1", RemoveMode::Refuse, 5)
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("drain") && msg.contains("force"), "{msg}");
    assert!(
        store
            .server_by_name("default", "db-1")
            .await
            .unwrap()
            .is_some()
    );

    // Draining: it keeps what it holds and takes nothing new; db-2 does.
    let removal = store
        .remove_server("default", "db-1", RemoveMode::Drain, 6)
        .await
        .unwrap();
    let Removal::Draining { server, holding } = removal else {
        panic!("not draining: {removal:?}");
    };
    assert_eq!((server.draining_ms, holding), (Some(6), vec![t1.id, t2.id]));
    let t3 = store
        .submit_task("default", "etl", "true", 60, 7)
        .await
        .unwrap();
    assert!(store.assign(a.id, 2, 8).await.unwrap().tasks.is_empty());
    // A look of the draining server squares what it holds and takes nothing either.
    let held = vec![
        HeldTask {
            id: t1.id,
            lease: 1,
        },
        HeldTask {
            id: t2.id,
            lease: 1,
        },
    ];
    let (r, got) = store.look(a.id, held, Some(4), 8).await.unwrap();
    assert_eq!(
        (r, got.tasks.len(), got.full),
        (Reconciled::default(), 0, false)
    );
    assert_eq!(store.assign(b.id, 2, 8).await.unwrap().tasks[0].id, t3.id);
    let msg = conflict(
        store
            .remove_server("default", "db-1", RemoveMode::Refuse, 9)
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("draining"), "{msg}");

    // Once its tasks finished, asking again removes it; its tasks keep its name, and its node
    // is kept as removed (its credentials no longer authenticate).
    store.start_task(a.id, t2.id, 1, 10, 10).await.unwrap();
    for t in [t1.id, t2.id] {
        store.finish_task(a.id, t, done(1), 11).await.unwrap();
    }
    let removal = store
        .remove_server("default", "db-1", RemoveMode::Drain, 12)
        .await
        .unwrap();
    assert!(
        matches!(&removal, Removal::Removed { cancelled, requeued, stranded: 0, .. } if cancelled.is_empty() && requeued.is_empty()),
        "{removal:?}"
    );
    assert!(
        store
            .server_by_name("default", "db-1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.server_by_node("node-a").await.unwrap().is_none());
    assert!(store.node_record("node-a").await.unwrap().is_none());
    let t1 = store.task(t1.id).await.unwrap().unwrap();
    assert_eq!(
        (t1.state, t1.server.as_deref()),
        (TaskState::Succeeded, Some("db-1"))
    );
    let removed = store.removed_nodes_since(None).await.unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(
        (
            &*removed[0].node_id,
            &*removed[0].server_name,
            &*removed[0].project,
            removed[0].removed_ms
        ),
        ("node-a", "db-1", "default", 12)
    );
    assert_eq!(removed[0].secret_sha256, "00".repeat(32));
    assert!(
        store
            .removed_nodes_since(Some(13))
            .await
            .unwrap()
            .is_empty()
    );

    // The last server, running t3 and holding t4: forced, t3 is cancelled with a reason and
    // t4 queued again, left with no server.
    store.start_task(b.id, t3.id, 1, 13, 13).await.unwrap();
    let t4 = store
        .submit_task("default", "etl", "true", 60, 14)
        .await
        .unwrap();
    assert_eq!(store.assign(b.id, 2, 15).await.unwrap().tasks[0].id, t4.id);
    let removal = store
        .remove_server("default", "db-2", RemoveMode::Force, 16)
        .await
        .unwrap();
    let Removal::Removed {
        cancelled,
        requeued,
        stranded,
        ..
    } = removal
    else {
        panic!("not removed: {removal:?}");
    };
    assert_eq!(
        (cancelled, requeued, stranded),
        (vec![t3.id], vec![t4.id], 1)
    );
    let t3 = store.task(t3.id).await.unwrap().unwrap();
    assert_eq!(t3.state, TaskState::Cancelled);
    assert!(
        t3.reason.as_deref().unwrap_or_default().contains("force"),
        "{t3:?}"
    );
    assert_eq!(t3.server.as_deref(), Some("db-2"));
    let t4 = store.task(t4.id).await.unwrap().unwrap();
    assert_eq!((t4.state, t4.server), (TaskState::Queued, None));
    // A pending server never enrolled leaves no node behind.
    assert_eq!(store.removed_nodes_since(None).await.unwrap().len(), 1);

    // The group that had servers is deleted once its queue is empty.
    store.cancel_task(t4.id, 17).await.unwrap();
    let deleted = store.delete_group("default", "etl").await.unwrap();
    assert_eq!(deleted.tasks.len(), 4);
    assert_eq!(h.dangling_references().await, 0);
}

pub(super) async fn an_idle_last_server_is_refused_while_its_group_has_queued_tasks(
    h: &dyn Harness,
) {
    let store = h.open().await;
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    store
        .add_server("default", "etl", "db-1", None, 1)
        .await
        .unwrap();
    let t = store
        .submit_task("default", "etl", "true", 60, 2)
        .await
        .unwrap();
    let msg = conflict(
        store
            .remove_server("default", "db-1", RemoveMode::Refuse, 3)
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("last server") && msg.contains("queued"),
        "{msg}"
    );
    // Drained, it holds nothing: it goes at once, and the task stays queued for the group.
    let removal = store
        .remove_server("default", "db-1", RemoveMode::Drain, 4)
        .await
        .unwrap();
    assert!(
        matches!(removal, Removal::Removed { stranded: 1, .. }),
        "{removal:?}"
    );
    let t = store.task(t.id).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Queued);
    let err = store
        .remove_server("default", "db-1", RemoveMode::Force, 5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "server", .. }),
        "{err}"
    );
}

pub(super) async fn a_moved_server_keeps_its_identity_within_its_project_and_network(
    h: &dyn Harness,
) {
    let store = h.open().await;
    for (group, network) in [
        ("etl", NetworkType::Classic),
        ("bi", NetworkType::Classic),
        ("lake", NetworkType::Vpc),
    ] {
        store
            .create_group("default", group, network, 1)
            .await
            .unwrap();
    }
    store.create_project("finance", 1).await.unwrap();
    store
        .create_group("finance", "ledger", NetworkType::Classic, 1)
        .await
        .unwrap();
    let a = store
        .add_server("default", "etl", "db-1", None, 1)
        .await
        .unwrap();
    store
        .enroll(a.id, &enrollment("node-a"), &facts(), None)
        .await
        .unwrap();
    let etl_task = store
        .submit_task("default", "etl", "true", 60, 2)
        .await
        .unwrap();

    let moved = store.move_server("default", "db-1", "bi").await.unwrap();
    assert_eq!((moved.id, &*moved.group), (a.id, "bi"));
    assert_eq!(
        moved.enrollment.as_ref().map(|e| &*e.node_id),
        Some("node-a")
    );
    assert_eq!(
        store
            .server_by_node("node-a")
            .await
            .unwrap()
            .map(|s| s.group),
        Some("bi".to_owned())
    );
    // Its new group's tasks go to it; its old group's do not.
    let bi_task = store
        .submit_task("default", "bi", "true", 60, 3)
        .await
        .unwrap();
    let got: Vec<i64> = store
        .assign(a.id, 4, 4)
        .await
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(got, [bi_task.id]);
    assert_eq!(
        store.task(etl_task.id).await.unwrap().unwrap().state,
        TaskState::Queued
    );

    // Refused: the group it is in, a group of another network type, another project's group
    // (not found in this project), another project's server (not found there).
    let msg = conflict(
        store
            .move_server("default", "db-1", "bi")
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("already"), "{msg}");
    let msg = conflict(
        store
            .move_server("default", "db-1", "lake")
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("DMI UUID") && msg.contains("hostname"),
        "{msg}"
    );
    let err = store
        .move_server("default", "db-1", "ledger")
        .await
        .unwrap_err();
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
    for err in [
        store
            .move_server("finance", "db-1", "ledger")
            .await
            .unwrap_err(),
        store
            .remove_server("finance", "db-1", RemoveMode::Force, 5)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::NotFound { kind: "server", .. }),
            "{err}"
        );
    }
    assert_eq!(
        store
            .server_by_name("default", "db-1")
            .await
            .unwrap()
            .map(|s| s.group),
        Some("bi".to_owned())
    );

    // The group it left is empty: once its queue is, it is deleted.
    store.cancel_task(etl_task.id, 6).await.unwrap();
    store.delete_group("default", "etl").await.unwrap();
    assert_eq!(h.dangling_references().await, 0);
}
