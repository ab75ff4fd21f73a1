//! Tests of what only the PostgreSQL store has: its migrations (from an empty database, by two
//! consoles at once; a newer schema refused), its password handling, and consoles competing
//! for the same rows: a task is handed out once, a server never gets more tasks than its slots,
//! a token is spent once, enrollments of one server take generations in commit order; a change
//! on one console wakes the other (once), also after its listening connection was killed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tasknode_pgtest::Cluster;
use tasknode_protocol::NetworkType;

use super::{PostgresStore, Roots, redact};
use crate::store::suite::Postgres;
use crate::store::suite::servers::{enrollment, facts};
use crate::store::*;

#[tokio::test]
async fn two_consoles_migrating_an_empty_database_at_once_migrate_it_once() {
    let h = Postgres::new();
    let (a, b) = tokio::join!(h.connect(), h.connect());
    let (a, b) = (a.unwrap(), b.unwrap());
    // One row: the newest version, written once.
    assert_eq!(
        h.psql("SELECT string_agg(version::text, ',') FROM schema_version"),
        super::MIGRATIONS.last().map(|m| m.0).unwrap().to_string()
    );
    let names = |p: Vec<Project>| p.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(a.list_projects().await.unwrap()), ["default"]);
    assert_eq!(names(b.list_projects().await.unwrap()), ["default"]);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let h = Postgres::new();
    drop(h.connect().await.unwrap());
    h.psql("UPDATE schema_version SET version = 99");
    let err = h.connect().await.err().unwrap();
    let known = super::MIGRATIONS.last().map_or(0, |m| m.0);
    assert!(
        matches!(err, StoreError::TooNew { found: 99, known: k, .. } if k == known),
        "{err}"
    );
    assert!(
        err.to_string().contains("run a newer tasknode-console"),
        "{err}"
    );
}

#[tokio::test]
async fn a_password_goes_beside_the_url_never_in_it_or_in_a_message() {
    let h = Postgres::new();
    let with_password = h.db.url.replacen(
        "postgres@",
        &format!("postgres:{}@", Cluster::shared().password()),
        1,
    );
    let err = PostgresStore::connect(&with_password, None, Roots::System)
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("carries a password"), "{text}");
    assert!(!text.contains(Cluster::shared().password()), "{text}");
    // Without the password, the server refuses (it asks for SCRAM over TCP).
    assert!(
        PostgresStore::connect(&h.db.url, None, Roots::System)
            .await
            .is_err()
    );
    assert!(
        PostgresStore::connect(&h.db.url, Some("wrong"), Roots::System)
            .await
            .is_err()
    );
    assert_eq!(
        redact("postgres://ann:s3cret@db:5432/x?sslmode=disable"),
        "postgres://ann:***@db:5432/x?sslmode=disable"
    );
    assert_eq!(redact("postgres://ann@db/x"), "postgres://ann@db/x");
}

/// Two consoles on one database with a group of `servers` servers of `slots` slots each.
async fn two_consoles(
    servers: usize,
    slots: u32,
) -> (Postgres, Arc<PostgresStore>, Arc<PostgresStore>, Vec<i64>) {
    let h = Postgres::new();
    let a = Arc::new(h.connect().await.unwrap());
    let b = Arc::new(h.connect().await.unwrap());
    a.create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..servers {
        let s = a
            .add_server("default", "etl", &format!("db-{i}"), Some(slots), 1)
            .await
            .unwrap();
        ids.push(s.id);
    }
    (h, a, b, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consoles_competing_hand_each_task_to_one_server_within_its_slots() {
    let (_h, a, b, servers) = two_consoles(12, 3).await;
    let mut submitted = BTreeSet::new();
    for _ in 0..30 {
        let t = a
            .submit_task("default", "etl", "true", 60, 2)
            .await
            .unwrap();
        submitted.insert(t.id);
    }
    // Every server polls both consoles at once, three times over.
    let mut polls = Vec::new();
    for round in 0..3 {
        for &server in &servers {
            for store in [&a, &b] {
                let store = Arc::clone(store);
                polls.push(tokio::spawn(async move {
                    let got = store.assign(server, 3, 10 + round).await.unwrap().tasks;
                    (server, got)
                }));
            }
        }
    }
    let mut holder: HashMap<i64, i64> = HashMap::new();
    let mut per_server: HashMap<i64, usize> = HashMap::new();
    for p in polls {
        let (server, got) = p.await.unwrap();
        for t in got {
            assert_eq!(t.lease, 1, "task {} handed out again", t.id);
            if let Some(other) = holder.insert(t.id, server) {
                panic!("task {} handed to servers {other} and {server}", t.id);
            }
            *per_server.entry(server).or_default() += 1;
        }
    }
    assert_eq!(holder.keys().copied().collect::<BTreeSet<_>>(), submitted);
    assert!(per_server.values().all(|&n| n <= 3), "{per_server:?}");
    let queued = a
        .list_tasks(&TaskFilter {
            state: Some(tasknode_protocol::tasks::TaskState::Queued),
            limit: 100,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert!(queued.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_raced_by_two_consoles_is_spent_once() {
    let (_h, a, b, servers) = two_consoles(2, 1).await;
    a.create_user("default", "ann", "hash", 1).await.unwrap();
    a.create_enrollment_token("default", "etl", "ann", "tok", 1, 1_000)
        .await
        .unwrap();
    let spend = || {
        Some(SpendToken {
            token_sha256: "tok".into(),
            now_ms: 5,
        })
    };
    let (e0, e1, f) = (enrollment("n0"), enrollment("n1"), facts());
    let (x, y) = tokio::join!(
        a.enroll(servers[0], &e0, &f, spend()),
        b.enroll(servers[1], &e1, &f, spend()),
    );
    let oks = [&x, &y].iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "{x:?} {y:?}");
    let err = if x.is_err() { x } else { y };
    assert!(matches!(err, Err(StoreError::TokenSpent)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrollments_of_one_server_take_generations_in_commit_order() {
    let (_h, a, b, servers) = two_consoles(1, 1).await;
    let server = servers[0];
    let mut runs = Vec::new();
    for i in 0..10 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        runs.push(tokio::spawn(async move {
            let node = format!("node-{i}");
            let g = store
                .enroll(server, &enrollment(&node), &facts(), None)
                .await
                .unwrap();
            (g, node)
        }));
    }
    let mut got = Vec::new();
    for r in runs {
        got.push(r.await.unwrap());
    }
    got.sort();
    let generations: Vec<u64> = got.iter().map(|(g, _)| *g).collect();
    assert_eq!(generations, (1..=10).collect::<Vec<u64>>());
    // The last to commit is the enrollment that stands.
    let last = &got[9].1;
    let s = a.server_by_name("default", "db-0").await.unwrap().unwrap();
    assert_eq!(&s.enrollment.unwrap().node_id, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projects_enrolling_one_name_on_two_consoles_bind_it_to_one() {
    let h = Postgres::new();
    let a = h.connect().await.unwrap();
    let b = h.connect().await.unwrap();
    let mut ids = Vec::new();
    for p in ["red", "blue"] {
        a.create_project(p, 1).await.unwrap();
        a.create_group(p, "etl", NetworkType::Classic, 1)
            .await
            .unwrap();
        ids.push(a.add_server(p, "etl", "db-1", None, 1).await.unwrap().id);
    }
    let (er, eb, f) = (enrollment("nr"), enrollment("nb"), facts());
    let (x, y) = tokio::join!(
        a.enroll(ids[0], &er, &f, None),
        b.enroll(ids[1], &eb, &f, None),
    );
    assert_eq!(
        [&x, &y].iter().filter(|r| r.is_ok()).count(),
        1,
        "{x:?} {y:?}"
    );
    let err = if x.is_err() { x } else { y };
    assert!(matches!(err, Err(StoreError::EnrolledElsewhere)), "{err:?}");
    assert_eq!(
        h.psql("SELECT count(*) FROM servers WHERE node_id IS NOT NULL"),
        "1"
    );
}

/// The next wake-up `feed` hears, within a few seconds.
async fn next_wake(feed: &mut WakeFeed) -> (Wake, Origin) {
    tokio::time::timeout(std::time::Duration::from_secs(10), feed.rx.recv())
        .await
        .expect("a wake-up arrives")
        .unwrap()
}

async fn nothing_more(feed: &mut WakeFeed) {
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), feed.rx.recv()).await;
    assert!(more.is_err(), "{more:?}");
}

fn pass_on(feed: &WakeFeed, wake: Wake) {
    feed.pass_on
        .as_ref()
        .expect("PostgreSQL passes wake-ups on")
        .send(wake)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_wakes_its_own_console_and_what_it_passes_on_reaches_the_other_once() {
    use Origin::{Elsewhere, Here};
    let (h, a, b, servers) = two_consoles(1, 1).await;
    let server = servers[0];
    let group = b
        .server_by_name("default", "db-0")
        .await
        .unwrap()
        .unwrap()
        .group_id;
    let mut at_a = a.wakes();
    let mut at_b = b.wakes();
    // Listening: every poll looks once, for what was sent before.
    assert_eq!(next_wake(&mut at_a).await, (Wake::All, Here));
    assert_eq!(next_wake(&mut at_b).await, (Wake::All, Here));

    // A submit wakes the submitting console's polls only, until it passes the work on.
    let t = a
        .submit_task("default", "etl", "true", 60, 2)
        .await
        .unwrap();
    let work = Wake::Work { group, tasks: 1 };
    assert_eq!(next_wake(&mut at_a).await, (work, Here));
    nothing_more(&mut at_b).await;
    pass_on(&at_a, work);
    assert_eq!(next_wake(&mut at_b).await, (work, Elsewhere));
    nothing_more(&mut at_a).await;
    // What is passed on together arrives whole: work for one group summed.
    for _ in 0..3 {
        pass_on(&at_a, work);
    }
    let mut arrived = 0;
    while arrived < 3 {
        match next_wake(&mut at_b).await {
            (Wake::Work { group: g, tasks }, Elsewhere) if g == group => arrived += tasks,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(arrived, 3);
    nothing_more(&mut at_b).await;

    // B's own changes reach B, and A only when B passes them on.
    assert_eq!(b.assign(server, 1, 3).await.unwrap().tasks.len(), 1);
    b.reconcile(server, vec![], 4).await.unwrap();
    assert_eq!(next_wake(&mut at_b).await, (work, Here));
    nothing_more(&mut at_a).await;
    let given = b.assign(server, 1, 5).await.unwrap().tasks;
    assert_eq!(
        b.start_task(server, t.id, given[0].lease, 5, 5)
            .await
            .unwrap(),
        Fenced::Accepted
    );
    a.cancel_task(t.id, 6).await.unwrap();
    assert_eq!(next_wake(&mut at_a).await, (Wake::Server { server }, Here));
    pass_on(&at_a, Wake::Server { server });
    assert_eq!(
        next_wake(&mut at_b).await,
        (Wake::Server { server }, Elsewhere)
    );
    let done = tasknode_protocol::tasks::FinishTask {
        lease: given[0].lease,
        outcome: tasknode_protocol::tasks::Outcome::Cancelled,
        started_ms: Some(5),
        finished_ms: 7,
        log_bytes: 0,
    };
    assert_eq!(
        b.finish_task(server, t.id, done, 7).await.unwrap(),
        Fenced::Accepted
    );
    assert_eq!(next_wake(&mut at_b).await, (Wake::Slot { server }, Here));

    // The listening connection is killed: B connects again and wakes every poll once.
    let killed = h.psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = '{}' AND datname = current_database()",
        super::wakes::LISTENER_NAME
    ));
    assert_eq!(killed, "2");
    assert_eq!(next_wake(&mut at_b).await, (Wake::All, Here));
    assert_eq!(next_wake(&mut at_a).await, (Wake::All, Here));
    pass_on(&at_a, work);
    assert_eq!(next_wake(&mut at_b).await, (work, Elsewhere));
    // A rolled-back change wakes no one: a submit to a missing group.
    assert!(
        a.submit_task("default", "nope", "true", 60, 8)
            .await
            .is_err()
    );
    nothing_more(&mut at_a).await;
    nothing_more(&mut at_b).await;
}

fn beat(node: &str, at_ms: i64) -> LivenessUpdate {
    LivenessUpdate {
        node_id: node.into(),
        liveness: Liveness {
            agent_version: Some("0.1.0".into()),
            last_heartbeat_ms: Some(at_ms),
            ..Liveness::default()
        },
    }
}

fn beats(changes: &NodeChanges) -> Vec<(String, Option<i64>)> {
    let mut v: Vec<_> = changes
        .nodes
        .iter()
        .map(|r| (r.node_id.clone(), r.liveness.last_heartbeat_ms))
        .collect();
    v.sort();
    v
}

/// Loads until a load finds nothing (the cluster is shared with other tests, whose running
/// transactions may keep a load reaching back a little): where the next load starts.
async fn settled(store: &PostgresStore, mut at: ChangeCursor) -> ChangeCursor {
    for _ in 0..100 {
        let c = store.nodes_changed(Some(at)).await.unwrap();
        if c.nodes.is_empty() {
            return c.next;
        }
        at = c.next;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("every load found the same nodes again");
}

/// Servers x and y in group etl, enrolled as node-x and node-y.
async fn enroll_x_and_y(store: &PostgresStore) {
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    for (name, node) in [("x", "node-x"), ("y", "node-y")] {
        let s = store
            .add_server("default", "etl", name, None, 1)
            .await
            .unwrap();
        store
            .enroll(s.id, &enrollment(node), &facts(), None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_console_loads_only_what_others_wrote_since_its_last_load() {
    let h = Postgres::new();
    let (a, b) = (h.connect().await.unwrap(), h.connect().await.unwrap());
    enroll_x_and_y(&a).await;
    // The first load takes every node; then loads settle to nothing.
    let first = a.nodes_changed(None).await.unwrap();
    assert_eq!(
        beats(&first),
        [("node-x".into(), None), ("node-y".into(), None)]
    );
    let mut at_a = settled(&a, first.next).await;
    let mut at_b = settled(&b, b.nodes_changed(None).await.unwrap().next).await;

    // What a wrote, a does not load back; b loads it, and not again.
    a.record_liveness(vec![beat("node-x", 1_000)])
        .await
        .unwrap();
    let own = a.nodes_changed(Some(at_a)).await.unwrap();
    assert!(
        !beats(&own).contains(&("node-x".into(), Some(1_000))),
        "a console loaded back its own write: {:?}",
        beats(&own)
    );
    let seen = b.nodes_changed(Some(at_b)).await.unwrap();
    assert!(beats(&seen).contains(&("node-x".into(), Some(1_000))));
    at_b = settled(&b, seen.next).await;

    // A row a wrote and b wrote over comes back to a.
    b.record_liveness(vec![beat("node-x", 2_000)])
        .await
        .unwrap();
    let back = a.nodes_changed(Some(own.next)).await.unwrap();
    assert!(beats(&back).contains(&("node-x".into(), Some(2_000))));
    at_a = settled(&a, back.next).await;

    // A write whose transaction was running while a load looked is found by the load after
    // its commit, though a load in between began after it.
    let mut c = b.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "WITH w AS (UPDATE servers SET last_heartbeat_ms = 3000 WHERE node_id = 'node-y'
                    RETURNING id)
         INSERT INTO node_changes (writer, server_ids) SELECT $1, array_agg(id) FROM w",
        &[&b.writer()],
    )
    .await
    .unwrap();
    let during = a.nodes_changed(Some(at_a)).await.unwrap();
    b.record_liveness(vec![beat("node-x", 2_500)])
        .await
        .unwrap();
    let later = a.nodes_changed(Some(during.next)).await.unwrap();
    assert!(beats(&later).contains(&("node-x".into(), Some(2_500))));
    assert!(!beats(&later).contains(&("node-y".into(), Some(3_000))));
    tx.commit().await.unwrap();
    let committed = a.nodes_changed(Some(later.next)).await.unwrap();
    assert!(
        beats(&committed).contains(&("node-y".into(), Some(3_000))),
        "{:?}",
        beats(&committed)
    );
    drop(c);
    assert!(
        b.nodes_changed(Some(at_b))
            .await
            .unwrap()
            .nodes
            .iter()
            .all(|n| n.node_id != "node-y"),
        "b wrote node-y last"
    );

    // An enrollment is news to every console, the one it went through too.
    let y = a
        .list_servers(&ServerFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == "y")
        .unwrap();
    let quiet = settled(&a, committed.next).await;
    a.enroll(y.id, &enrollment("node-y2"), &facts(), None)
        .await
        .unwrap();
    let enrolled = a.nodes_changed(Some(quiet)).await.unwrap();
    assert!(
        enrolled.nodes.iter().any(|n| n.node_id == "node-y2"),
        "{:?}",
        beats(&enrolled)
    );
}

#[tokio::test]
async fn a_load_reaching_back_before_the_pruned_changes_reads_every_server() {
    let h = Postgres::new();
    let (a, b) = (h.connect().await.unwrap(), h.connect().await.unwrap());
    enroll_x_and_y(&a).await;
    let at_a = settled(&a, a.nodes_changed(None).await.unwrap().next).await;
    b.record_liveness(vec![beat("node-x", 1_000)])
        .await
        .unwrap();
    // A load finds what b wrote, and its changes alone.
    let seen = a.nodes_changed(Some(at_a)).await.unwrap();
    assert_eq!(beats(&seen), [("node-x".into(), Some(1_000))]);

    // b's change ages past what is kept; b's next load prunes it.
    let c = b.client().await.unwrap();
    c.execute(
        "UPDATE node_changes SET at = now() - interval '1 hour'",
        &[],
    )
    .await
    .unwrap();
    b.nodes_changed(None).await.unwrap();
    let left: i64 = c
        .query_one("SELECT COUNT(*) FROM node_changes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "aged changes were kept");

    // A load from before the pruned change cannot tell what it lost: it reads every server.
    let again = a.nodes_changed(Some(at_a)).await.unwrap();
    assert_eq!(
        beats(&again),
        [("node-x".into(), Some(1_000)), ("node-y".into(), None)]
    );
    // A load from after it reads changes again, and finds none.
    let after = settled(&a, again.next).await;
    assert!(a.nodes_changed(Some(after)).await.unwrap().nodes.is_empty());
}

#[tokio::test]
async fn a_classic_servers_log_address_reaches_every_console_until_it_enrolls_again() {
    let h = Postgres::new();
    let (a, b) = (h.connect().await.unwrap(), h.connect().await.unwrap());
    a.create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    let s = a.add_server("default", "etl", "x", None, 1).await.unwrap();
    a.enroll(s.id, &enrollment("node-x"), &facts(), None)
        .await
        .unwrap();
    let at: std::net::SocketAddr = "192.0.2.7:8000".parse().unwrap();
    let mut update = beat("node-x", 1_000);
    update.liveness.log_addr = Some(at);
    a.record_liveness(vec![update]).await.unwrap();

    // The other console finds it by node, by change and in the server list.
    let rec = b.node_record("node-x").await.unwrap().unwrap();
    assert_eq!(rec.liveness.log_addr, Some(at));
    let changed = b.nodes_changed(None).await.unwrap();
    let rec = changed
        .nodes
        .iter()
        .find(|n| n.node_id == "node-x")
        .unwrap();
    assert_eq!(rec.liveness.log_addr, Some(at));
    let listed = b.list_servers(&ServerFilter::default()).await.unwrap();
    assert_eq!(listed[0].liveness.log_addr, Some(at));

    // A new agent on the server has not said where its log service is.
    a.enroll(s.id, &enrollment("node-x2"), &facts(), None)
        .await
        .unwrap();
    let rec = b.node_record("node-x2").await.unwrap().unwrap();
    assert_eq!(rec.liveness.log_addr, None);
}
