//! The suite's tests of tasks: leases fence stale assignments, slots bound assignment.

use crate::store::*;
use tasknode_protocol::NetworkType;

use super::Harness;
use super::servers::{enrollment, facts};

use tasknode_protocol::tasks::{FinishTask, HeldTask, Outcome, TaskState};

/// A submit of `script` to `group` of the default project by the admin, under `key`.
pub(super) fn keyed<'a>(
    group: &'a str,
    script: &'a str,
    timeout_secs: u64,
    key: Option<&'a str>,
) -> NewTask<'a> {
    NewTask {
        project: "default",
        group,
        script,
        timeout_secs,
        key,
        actor: "admin",
    }
}

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
async fn store(h: &dyn Harness) -> (Box<dyn Store>, i64, i64) {
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
    (store, a.id, b.id)
}

pub(super) async fn a_stale_lease_can_neither_start_nor_finish_a_task(h: &dyn Harness) {
    let (store, a, b) = store(h).await;
    let t = store
        .submit_task("default", "etl", "true", 60, 1)
        .await
        .unwrap();
    let assigned = store.assign(a, 2, 2).await.unwrap();
    // When it was submitted comes with it (the dispatch-latency metric).
    assert_eq!(assigned.submitted_ms, [1]);
    let first = assigned.tasks;
    assert_eq!((first.len(), first[0].lease), (1, 1));
    // Server a never received it (its next poll holds nothing): queued again.
    let r = store.reconcile(a, vec![], 3).await.unwrap();
    assert_eq!(r.requeued, [t.id]);
    let second = store.assign(b, 2, 4).await.unwrap().tasks;
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

pub(super) async fn a_start_or_finish_by_node_takes_only_its_servers_current_task(h: &dyn Harness) {
    let (store, a, b) = store(h).await;
    for (server, node) in [(a, "node-a"), (b, "node-b")] {
        store
            .enroll(server, &enrollment(node), &facts(), None)
            .await
            .unwrap();
    }
    let mut wakes = store.wakes().rx;
    let t = store
        .submit_task("default", "etl", "true", 60, 1)
        .await
        .unwrap();
    let lease = store.assign(a, 2, 2).await.unwrap().tasks[0].lease;
    let state = |id| {
        let store = &store;
        async move { store.task(id).await.unwrap().unwrap().state }
    };

    // Another server's node, a stale lease, a node never enrolled: none starts it.
    for (node, l) in [("node-b", lease), ("node-a", lease + 1), ("nope", lease)] {
        assert_eq!(
            store.start_as_node(node, t.id, l, 3, 3).await.unwrap(),
            None
        );
    }
    assert_eq!(state(t.id).await, TaskState::Assigned);
    let by = store
        .start_as_node("node-a", t.id, lease, 3, 3)
        .await
        .unwrap();
    assert_eq!(
        by,
        Some(ReportedBy {
            server_id: a,
            server: "db-1".into(),
            draining: false
        })
    );
    assert_eq!(state(t.id).await, TaskState::Running);

    // Enrolled again: the old node's result is not taken, the new node's is.
    store
        .enroll(a, &enrollment("node-a2"), &facts(), None)
        .await
        .unwrap();
    let report = done(lease, 0);
    assert_eq!(
        store
            .finish_as_node("node-a", t.id, &report, 4)
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(t.id).await, TaskState::Running);
    let by = store
        .finish_as_node("node-a2", t.id, &report, 4)
        .await
        .unwrap();
    assert_eq!(by.map(|b| b.server_id), Some(a));
    assert_eq!(state(t.id).await, TaskState::Succeeded);
    // Its poll is woken: a slot is free (on PostgreSQL the wake-up may come a moment later).
    let woken = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Ok((Wake::Slot { server }, _)) = wakes.recv().await
                && server == a
            {
                return;
            }
        }
    })
    .await;
    assert!(woken.is_ok(), "no wake-up of server {a}'s poll");

    // A draining server's finish says so: the caller completes the removal.
    let t = store
        .submit_task("default", "etl", "true", 60, 5)
        .await
        .unwrap();
    let lease = store.assign(b, 2, 5).await.unwrap().tasks[0].lease;
    store
        .remove_server("default", "db-2", RemoveMode::Drain, 6)
        .await
        .unwrap();
    let by = store
        .finish_as_node("node-b", t.id, &done(lease, 1), 7)
        .await
        .unwrap();
    assert_eq!(by.map(|b| (b.server_id, b.draining)), Some((b, true)));
    assert_eq!(state(t.id).await, TaskState::Failed);
}

pub(super) async fn assignment_stops_at_max_concurrency_and_a_lost_task_is_not_run_again(
    h: &dyn Harness,
) {
    let (store, a, _) = store(h).await;
    for _ in 0..3 {
        store
            .submit_task("default", "etl", "true", 60, 1)
            .await
            .unwrap();
    }
    let got = store.assign(a, 2, 2).await.unwrap().tasks;
    assert_eq!(got.len(), 2);
    assert!(store.assign(a, 2, 3).await.unwrap().tasks.is_empty());
    for g in &got {
        store.start_task(a, g.id, g.lease, 4, 4).await.unwrap();
    }
    assert_eq!(store.busy_servers().await.unwrap(), [a]);
    // Under a lease another console holds, the sweep's step changes nothing.
    assert!(
        store
            .acquire_lease("engine", "other", 0, 100)
            .await
            .unwrap()
    );
    let fence = Fence {
        name: "engine".into(),
        holder: "this".into(),
    };
    let r = store
        .abandon_server_tasks(a, "server db-1 stopped", 5, Some(&fence))
        .await
        .unwrap();
    assert!(r.lost.is_empty() && r.requeued.is_empty());
    assert_eq!(store.busy_servers().await.unwrap(), [a]);
    let r = store
        .abandon_server_tasks(a, "server db-1 stopped", 5, None)
        .await
        .unwrap();
    assert_eq!(r.lost.len(), 2);
    // Lost tasks are not queued again: only the third one is handed out.
    let next = store.assign(a, 2, 6).await.unwrap().tasks;
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

pub(super) async fn a_look_squares_what_the_agent_holds_then_fills_its_free_slots(h: &dyn Harness) {
    let (store, a, b) = store(h).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let t = store
            .submit_task("default", "etl", "true", 60, 1)
            .await
            .unwrap();
        // A submit answers the task as it is stored.
        assert_eq!(Some(&t), store.task(t.id).await.unwrap().as_ref());
        ids.push(t.id);
    }
    for (project, group) in [("default", "nope"), ("nope", "etl")] {
        let err = store
            .submit_task(project, group, "true", 60, 1)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    }
    let (r, got) = store.look(a, vec![], Some(2), 2).await.unwrap();
    assert_eq!(r, Reconciled::default());
    let first: Vec<(i64, i64)> = got.tasks.iter().map(|t| (t.id, t.lease)).collect();
    assert_eq!(first, [(ids[0], 1), (ids[1], 1)]);
    assert_eq!((got.submitted_ms, got.full), (vec![1, 1], true));
    // The agent holds only the first: the second goes back to the queue, and the slot it
    // frees takes the oldest queued task, which is that one again, under a new lease.
    let held = vec![HeldTask {
        id: ids[0],
        lease: 1,
    }];
    let (r, got) = store.look(a, held, Some(2), 3).await.unwrap();
    assert_eq!(
        (r.requeued, r.lost, r.cancel),
        (vec![ids[1]], vec![], vec![])
    );
    let again: Vec<(i64, i64)> = got.tasks.iter().map(|t| (t.id, t.lease)).collect();
    assert_eq!((again, got.full), (vec![(ids[1], 2)], true));
    // Without `take` nothing is handed out; a cancelled task and one the store does not know
    // are to be killed, and the stale lease of a task is too.
    store.cancel_task(ids[0], 4).await.unwrap();
    let held = vec![
        HeldTask {
            id: ids[0],
            lease: 1,
        },
        HeldTask {
            id: ids[1],
            lease: 1,
        },
        HeldTask { id: 999, lease: 1 },
    ];
    let (r, got) = store.look(a, held, None, 5).await.unwrap();
    assert_eq!(r.cancel, [ids[0], ids[1], 999]);
    assert_eq!(r.requeued, [ids[1]]);
    assert!(got.tasks.is_empty() && !got.full);
    // Another server's look takes what is queued, the third task among it.
    let (_, got) = store.look(b, vec![], Some(2), 6).await.unwrap();
    let theirs: Vec<(i64, i64)> = got.tasks.iter().map(|t| (t.id, t.lease)).collect();
    assert_eq!(theirs, [(ids[1], 3), (ids[2], 1)]);
    // A running task its agent no longer holds is lost, not run again; the slot it frees
    // finds the queue empty.
    assert_eq!(
        store.start_task(b, ids[2], 1, 7, 7).await.unwrap(),
        Fenced::Accepted
    );
    let held = vec![HeldTask {
        id: ids[1],
        lease: 3,
    }];
    let (r, got) = store.look(b, held, Some(2), 8).await.unwrap();
    assert_eq!(
        (r.requeued, r.lost, r.cancel),
        (vec![], vec![ids[2]], vec![])
    );
    assert!(got.tasks.is_empty() && !got.full);
    let lost = store.task(ids[2]).await.unwrap().unwrap();
    assert_eq!((lost.state, lost.finished_ms), (TaskState::Lost, Some(8)));
    assert!(lost.reason.unwrap().contains("no longer runs it"));
}

pub(super) async fn tasks_are_counted_per_group_and_state(h: &dyn Harness) {
    let (store, a, _) = store(h).await;
    store
        .create_group("default", "web", NetworkType::Classic, 1)
        .await
        .unwrap();
    store
        .add_server("default", "web", "web-1", None, 1)
        .await
        .unwrap();
    assert_eq!(store.task_counts().await.unwrap(), []);
    for group in ["etl", "etl", "etl", "web"] {
        store
            .submit_task("default", group, "true", 60, 1)
            .await
            .unwrap();
    }
    let taken = store.assign(a, 1, 2).await.unwrap().tasks;
    assert_eq!(taken.len(), 1);
    let count = |group: &str, state: TaskState, count: i64| TaskCount {
        project: "default".to_owned(),
        group: group.to_owned(),
        state,
        count,
    };
    let mut counts = store.task_counts().await.unwrap();
    counts.sort_by_key(|c| (c.group.clone(), c.state.as_str()));
    assert_eq!(
        counts,
        [
            count("etl", TaskState::Assigned, 1),
            count("etl", TaskState::Queued, 2),
            count("web", TaskState::Queued, 1),
        ]
    );
}

pub(super) async fn a_key_makes_one_task_however_often_and_wherever_it_is_submitted(
    h: &dyn Harness,
) {
    let (first, _, _) = store(h).await;
    first
        .create_group("default", "other", NetworkType::Classic, 1)
        .await
        .unwrap();
    first
        .add_server("default", "other", "other-1", None, 1)
        .await
        .unwrap();
    // Two consoles on one database, sixteen submits of one key at once.
    let a: std::sync::Arc<dyn Store> = std::sync::Arc::from(first);
    let b: std::sync::Arc<dyn Store> = std::sync::Arc::from(h.open().await);
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = std::sync::Arc::clone(if i % 2 == 0 { &a } else { &b });
        racers.spawn(async move {
            store
                .submit_task_once(&keyed("etl", "echo once", 60, Some("run-1")), i)
                .await
        });
    }
    let answers: Vec<Submitted> = racers
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(answers.iter().filter(|s| s.created).count(), 1);
    let id = answers[0].task.id;
    assert!(answers.iter().all(|s| s.task.id == id), "{answers:?}");
    assert_eq!(h.rows("tasks").await, 1);
    // One audit entry, written with the task; the fifteen answered with it wrote none.
    let audited: Vec<_> = a
        .audit_log(None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.object, e.project))
        .collect();
    assert_eq!(
        audited,
        [(
            "admin".to_owned(),
            "task.submit".to_owned(),
            format!("task {id} in group etl"),
            Some("default".to_owned())
        )]
    );

    // Sent again later, after the task moved on: the same task as it is now, nothing new.
    let server = a
        .add_server("default", "etl", "db-3", Some(3), 1)
        .await
        .unwrap();
    let _ = a.assign(server.id, 4, 30).await.unwrap();
    let again = b
        .submit_task_once(&keyed("etl", "echo once", 60, Some("run-1")), 40)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!((again.task.id, again.task.state), (id, TaskState::Assigned));
    assert_eq!(h.rows("tasks").await, 1);

    // The key with another script or timeout is refused, naming the field and the task.
    for (script, timeout) in [("echo twice", 60), ("echo once", 61)] {
        let refused = a
            .submit_task_once(&keyed("etl", script, timeout, Some("run-1")), 50)
            .await
            .unwrap_err();
        match refused {
            StoreError::Conflict { field, message } => {
                assert_eq!(field, "idempotency_key");
                assert!(message.contains(&format!("task {id}")), "{message}");
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(h.rows("tasks").await, 1);

    // A key names a submit within its group; without a key every submit is a task.
    let elsewhere = a
        .submit_task_once(&keyed("other", "echo once", 60, Some("run-1")), 60)
        .await
        .unwrap();
    assert!(elsewhere.created && elsewhere.task.id != id);
    for _ in 0..2 {
        assert!(
            b.submit_task_once(&keyed("etl", "echo once", 60, None), 70)
                .await
                .unwrap()
                .created
        );
    }
    assert_eq!(h.rows("tasks").await, 4);
    // A missing group is told as such, key or not.
    assert!(matches!(
        a.submit_task_once(&keyed("nope", "true", 60, Some("run-1")), 80)
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));
    // An entry for each task made, none for a repeat or a refusal.
    assert_eq!(a.audit_log(None, None, 100).await.unwrap().len(), 4);
}
