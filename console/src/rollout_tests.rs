//! Tests of the rollout engine: its decisions on made-up servers, then a whole rollout over a
//! throwaway store.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use tasknode_protocol::updates::{Batch, UpdateReport};

use super::*;

const V: &str = "0.3.0";

fn rollout(batch: Batch, max_failures: u32) -> Rollout {
    Rollout {
        group_id: 1,
        project: "default".into(),
        group: "etl".into(),
        version: V.into(),
        batch,
        max_failures,
        state: RolloutState::Running,
        reason: "set".into(),
        started_ms: 0,
        members: BTreeMap::new(),
    }
}

fn server(id: i64, name: &str, status: ServerStatus) -> Facts {
    Facts {
        id,
        name: name.into(),
        running: Some("0.2.0".into()),
        last_heartbeat_ms: Some(10),
        status,
        report: None,
        as_of_ms: 10,
    }
}

fn servers(names: &[&str]) -> Vec<Facts> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| server(i as i64 + 1, n, ServerStatus::Available))
        .collect()
}

fn report(f: &mut Facts, outcome: UpdateOutcome, reason: &str, at_ms: i64) {
    f.report = Some(UpdateRecord {
        server_id: f.id,
        version: V.into(),
        outcome,
        reason: reason.into(),
        at_ms,
    });
}

/// The server heartbeats as the rollout's version at `at_ms`.
fn upgrade(f: &mut Facts, at_ms: i64) {
    f.running = Some(V.into());
    f.last_heartbeat_ms = Some(at_ms);
}

/// Takes a step as the engine does: plans it, then records it.
fn step(r: &mut Rollout, group: &[Facts]) -> Plan {
    let p = plan(r, group);
    r.members.extend(p.admit.iter().map(|&id| (id, 5)));
    r.state = p.state;
    r.reason = p.reason.clone();
    p
}

fn names_of(group: &[Facts], ids: &[i64]) -> Vec<String> {
    ids.iter()
        .map(|id| group.iter().find(|f| f.id == *id).unwrap().name.clone())
        .collect()
}

#[test]
fn a_batch_is_admitted_only_when_the_one_before_settled() {
    let mut g = servers(&["d", "b", "a", "c"]);
    let mut r = rollout(Batch::Count(2), 0);
    let p = step(&mut r, &g);
    assert_eq!(names_of(&g, &p.admit), ["a", "b"], "{}", p.reason);
    assert_eq!(p.state, RolloutState::Running);

    // Nothing moves while both are on their way, nor while one of them is.
    let p = step(&mut r, &g);
    assert!(p.admit.is_empty());
    assert!(p.reason.contains("waiting for 2 servers"), "{}", p.reason);
    upgrade(&mut g[2], 50);
    report(&mut g[1], UpdateOutcome::Started, "", 6);
    let p = step(&mut r, &g);
    assert!(p.admit.is_empty(), "{}", p.reason);
    assert!(p.reason.contains(": b"), "{}", p.reason);

    // An install its package manager updates is settled, and not a failure.
    report(&mut g[1], UpdateOutcome::Managed, "rpm", 7);
    let p = step(&mut r, &g);
    assert_eq!(names_of(&g, &p.admit), ["c", "d"]);
    assert_eq!(counts(&r, &g).admitted, 4);

    upgrade(&mut g[3], 50);
    upgrade(&mut g[0], 50);
    let p = step(&mut r, &g);
    assert_eq!(p.state, RolloutState::Done, "{}", p.reason);
    assert_eq!(p.reason, "every server was offered 0.3.0");
    let c = counts(&r, &g);
    assert_eq!((c.servers, c.admitted, c.updated, c.failed), (4, 4, 3, 0));
}

#[test]
fn it_halts_when_more_agents_fail_than_allowed_and_stays_halted() {
    let mut g = servers(&["a", "b", "c", "d"]);
    let mut r = rollout(Batch::Count(2), 1);
    step(&mut r, &g);
    report(&mut g[1], UpdateOutcome::Failed, "sha256 mismatch", 20);
    let p = step(&mut r, &g);
    assert_eq!(p.state, RolloutState::Running, "one failure is allowed");
    assert!(p.admit.is_empty(), "a is still on its way");

    report(
        &mut g[0],
        UpdateOutcome::Failed,
        "health check timed out",
        30,
    );
    let p = step(&mut r, &g);
    assert_eq!(p.state, RolloutState::Halted);
    assert_eq!(
        p.reason,
        "2 agents failed to update to 0.3.0 (first: b: sha256 mismatch); fix them and set the rollout again, or roll back with `tasknode-console release pin`"
    );
    assert_eq!(counts(&r, &g).failed, 2);

    // Halted, nothing more is admitted, even when the failures are fixed.
    upgrade(&mut g[0], 50);
    upgrade(&mut g[1], 50);
    let p = step(&mut r, &g);
    assert_eq!((p.state, p.admit.len()), (RolloutState::Halted, 0));
    assert_eq!(
        counts(&r, &g).failed,
        0,
        "a server that runs it did not fail"
    );

    // A failure reported for another version does not count.
    let mut g = servers(&["a"]);
    let mut r = rollout(Batch::All, 0);
    step(&mut r, &g);
    report(&mut g[0], UpdateOutcome::Failed, "x", 1);
    g[0].report.as_mut().unwrap().version = "0.2.5".into();
    assert_eq!(step(&mut r, &g).state, RolloutState::Running);
}

#[test]
fn a_failure_from_before_the_rollout_does_not_count_again() {
    let mut g = servers(&["a", "b"]);
    // Both reported before this rollout admitted them (at 5): a failure, a managed install.
    report(&mut g[0], UpdateOutcome::Failed, "sha256 mismatch", 1);
    report(&mut g[1], UpdateOutcome::Managed, "rpm", 1);
    let mut r = rollout(Batch::All, 0);
    step(&mut r, &g);
    let p = step(&mut r, &g);
    assert_eq!(p.state, RolloutState::Running, "{}", p.reason);
    assert!(
        p.reason.ends_with("waiting for 1 server to update: a"),
        "{}",
        p.reason
    );
    let v = update_view(&r, &g[0]);
    assert_eq!(v.state, "offered");
    assert!(
        v.reason.contains("failed to update to 0.3.0 at"),
        "{}",
        v.reason
    );
    assert_eq!(update_view(&r, &g[1]).state, "managed");

    // The agent tries again and fails again: now it counts.
    report(&mut g[0], UpdateOutcome::Failed, "sha256 mismatch", 8);
    assert_eq!(step(&mut r, &g).state, RolloutState::Halted);
}

#[test]
fn a_version_on_trial_is_not_kept_until_the_agent_says_so() {
    let mut g = servers(&["a", "b"]);
    let mut r = rollout(Batch::Count(1), 0);
    step(&mut r, &g);
    // The trial of the new version heartbeats as that version.
    report(&mut g[0], UpdateOutcome::Started, "", 6);
    upgrade(&mut g[0], 7);
    let p = step(&mut r, &g);
    assert!(p.admit.is_empty(), "a is on trial: {}", p.reason);
    assert_eq!(update_view(&r, &g[0]).state, "updating");
    assert_eq!(counts(&r, &g).updated, 0);

    // It gave the version up: its last heartbeats as 0.3.0 were the trial's.
    report(
        &mut g[0],
        UpdateOutcome::Failed,
        "health check timed out",
        8,
    );
    assert_eq!(update_view(&r, &g[0]).state, "failed");
    assert_eq!(step(&mut r, &g).state, RolloutState::Halted);

    // A `started` report never followed by `updated` stops counting after a while.
    let mut g = servers(&["a"]);
    let mut r = rollout(Batch::All, 0);
    step(&mut r, &g);
    report(&mut g[0], UpdateOutcome::Started, "", 6);
    upgrade(&mut g[0], 7);
    assert_eq!(step(&mut r, &g).state, RolloutState::Running);
    g[0].as_of_ms = 6 + UPDATE_SETTLES_MS;
    assert_eq!(update_view(&r, &g[0]).state, "current");
    step(&mut r, &g);
    assert_eq!(step(&mut r, &g).state, RolloutState::Done);
}

#[test]
fn stopped_servers_do_not_hold_a_rollout_up() {
    let mut g = vec![
        server(1, "a", ServerStatus::Stopped),
        server(2, "b", ServerStatus::Available),
        server(3, "c", ServerStatus::Degraded),
        server(4, "d", ServerStatus::Pending),
    ];
    let mut r = rollout(Batch::Count(1), 0);
    // Available servers first, then by name.
    let p = step(&mut r, &g);
    assert_eq!(names_of(&g, &p.admit), ["b"]);
    assert!(step(&mut r, &g).admit.is_empty(), "b is on its way");

    // b stops before updating: it no longer holds the rollout up.
    g[1].status = ServerStatus::Stopped;
    let p = step(&mut r, &g);
    assert_eq!(names_of(&g, &p.admit), ["a"]);
    let p = step(&mut r, &g);
    assert_eq!(names_of(&g, &p.admit), ["c"]);
    // A degraded server is still reachable: it is waited for.
    assert!(step(&mut r, &g).admit.is_empty());
    g[2].status = ServerStatus::ClockSkew;
    let p = step(&mut r, &g);
    assert_eq!(names_of(&g, &p.admit), ["d"]);
    assert_eq!(step(&mut r, &g).state, RolloutState::Done);
}

#[test]
fn a_done_rollout_covers_servers_added_later() {
    let mut g = servers(&["a", "b"]);
    let mut r = rollout(Batch::Count(1), 0);
    step(&mut r, &g);
    let mut want = HashMap::new();
    desired(&r, &g, &mut want);
    assert_eq!(want.len(), 1, "only the admitted server moves: {want:?}");
    assert_eq!(want.get(&1).map(String::as_str), Some(V));

    upgrade(&mut g[0], 50);
    step(&mut r, &g);
    upgrade(&mut g[1], 50);
    assert_eq!(step(&mut r, &g).state, RolloutState::Done);

    g.push(server(9, "late", ServerStatus::Pending));
    assert_eq!(step(&mut r, &g).admit, Vec::<i64>::new(), "done stays done");
    let mut want = HashMap::new();
    desired(&r, &g, &mut want);
    assert_eq!(want.get(&9).map(String::as_str), Some(V));
    assert_eq!(update_view(&r, &g[2]).state, "offered");

    // A group without servers is done at once.
    let mut empty = rollout(Batch::Percent(10), 0);
    assert_eq!(step(&mut empty, &[]).state, RolloutState::Done);
}

#[test]
fn percent_batches_round_up_and_all_takes_everyone() {
    let g = servers(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
    let mut r = rollout(Batch::Percent(25), 0);
    assert_eq!(step(&mut r, &g).admit.len(), 3);
    let mut r = rollout(Batch::Percent(1), 0);
    assert_eq!(step(&mut r, &g).admit.len(), 1);
    let mut r = rollout(Batch::All, 0);
    assert_eq!(step(&mut r, &g).admit.len(), 10);
    let mut r = rollout(Batch::Count(50), 0);
    assert_eq!(step(&mut r, &g).admit.len(), 10);
}

#[test]
fn each_server_says_where_it_stands() {
    let mut g = servers(&["a", "b", "c"]);
    let mut r = rollout(Batch::Count(2), 0);
    step(&mut r, &g);
    let state = |r: &Rollout, f: &Facts| update_view(r, f).state;
    assert_eq!(state(&r, &g[0]), "offered");
    assert_eq!(state(&r, &g[2]), "waiting");
    report(&mut g[0], UpdateOutcome::Started, "", 9);
    assert_eq!(state(&r, &g[0]), "updating");
    report(&mut g[0], UpdateOutcome::Failed, "download failed: 404", 10);
    let v = update_view(&r, &g[0]);
    assert_eq!(
        (
            v.state.as_str(),
            v.reason.as_str(),
            v.desired_version.as_str()
        ),
        ("failed", "download failed: 404", V)
    );
    report(&mut g[1], UpdateOutcome::Managed, "deb", 11);
    assert_eq!(
        update_view(&r, &g[1]).reason,
        "installed by a .deb; run `apt-get install --only-upgrade tasknode` on the server"
    );
    report(&mut g[1], UpdateOutcome::Managed, "rpm", 11);
    assert_eq!(
        update_view(&r, &g[1]).reason,
        "installed by rpm; run `yum update tasknode` on the server"
    );
    upgrade(&mut g[0], 50);
    assert_eq!(state(&r, &g[0]), "current");

    r.state = RolloutState::Halted;
    r.reason = "1 agent failed".into();
    let v = update_view(&r, &g[2]);
    assert_eq!(v.state, "waiting");
    assert!(v.reason.contains("halted"), "{}", v.reason);
}

mod engine {
    use super::*;
    use crate::auth;
    use crate::store::{Enrollment, NewRelease, SqliteStore};
    use ed25519_dalek::SigningKey;
    use tasknode_protocol::NetworkType;
    use tasknode_protocol::manifest::{self, Artifact, Manifest};
    use tasknode_protocol::wire::{HeartbeatRequest, HostFacts};

    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn signed(version: &str) -> NewRelease {
        let m = Manifest {
            format: manifest::FORMAT,
            channel: "stable".into(),
            version: version.into(),
            rollback: false,
            issued_ms: 1,
            expires_ms: None,
            artifacts: vec![Artifact {
                target: "x86_64-unknown-linux-musl".into(),
                url: format!("releases/{version}/tasknode-x86_64-unknown-linux-musl"),
                size: 10,
                sha256: "ab".repeat(32),
            }],
        };
        let key = SigningKey::from_bytes(&[7; 32]);
        NewRelease {
            text: m.sign(&key).unwrap(),
            signed_by: manifest::encode_key(&key.verifying_key()),
            manifest: m,
        }
    }

    fn beat(version: &str) -> HeartbeatRequest {
        HeartbeatRequest {
            agent_version: version.into(),
            clock_offset_ms: Some(0),
            running_tasks: 0,
            free_slots: 1,
            log_port: None,
        }
    }

    #[tokio::test]
    async fn a_rollout_moves_batch_by_batch_as_agents_update() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let live = Arc::new(LivenessMap::default());
        let clock = Clock::default();
        store
            .create_group("default", "etl", NetworkType::Classic, 0)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for name in ["b", "a"] {
            let s = store
                .add_server("default", "etl", name, None, 0)
                .await
                .unwrap();
            let e = Enrollment {
                node_id: format!("node-{name}"),
                secret_sha256: hex::encode(auth::digest("s")),
                enrolled_ms: clock.now_ms() - 1000,
                cpu_cores: 1.0,
                memory_bytes: 1 << 30,
            };
            let facts = HostFacts {
                hostname: name.into(),
                cpu_cores: 1.0,
                memory_bytes: 1 << 30,
                os: "x".into(),
                arch: "x86_64".into(),
                kernel: "k".into(),
                agent_version: "0.2.0".into(),
            };
            let generation = store.enroll(s.id, &e, &facts, None).await.unwrap();
            live.enroll(
                s.id,
                generation,
                &e.node_id,
                auth::digest("s"),
                Default::default(),
            );
            assert!(live.heartbeat(&e.node_id, &beat("0.2.0"), LOOPBACK, clock.now_ms()));
            ids.push(s.id);
        }
        let (b, a) = (ids[0], ids[1]);
        let engine = RolloutEngine::new(
            Arc::clone(&store),
            Arc::clone(&live),
            clock,
            Thresholds::default(),
        );
        let req = SetRollout {
            project: "default".into(),
            group: "etl".into(),
            version: V.into(),
            batch: Batch::Count(1),
            max_failures: 0,
        };
        let err = engine.set(&req).await.unwrap_err();
        assert!(matches!(err, StoreError::NotPublished { .. }), "{err}");
        store.publish_release(signed(V), 1).await.unwrap();

        let view = engine.set(&req).await.unwrap();
        assert_eq!((view.admitted, view.servers), (1, 2), "{}", view.reason);
        assert_eq!(engine.desired_version(a).as_deref(), Some(V));
        assert_eq!(engine.desired_version(b), None);

        // Agent a updates; the next tick offers the version to b.
        assert!(live.heartbeat("node-a", &beat(V), LOOPBACK, clock.now_ms()));
        engine.tick().await.unwrap();
        assert_eq!(engine.desired_version(b).as_deref(), Some(V));

        store
            .record_update_report(
                b,
                &UpdateReport {
                    version: V.into(),
                    outcome: UpdateOutcome::Failed,
                    reason: "sha256 mismatch".into(),
                },
                clock.now_ms(),
            )
            .await
            .unwrap();
        let snap = engine.tick().await.unwrap();
        let view = &snap.views()[0];
        assert_eq!(view.state, RolloutState::Halted, "{}", view.reason);
        assert!(
            view.reason.starts_with(
                "1 agent failed to update to 0.3.0 (first: b: sha256 mismatch); fix it"
            ),
            "{}",
            view.reason
        );
        assert_eq!((view.updated, view.failed), (1, 1));
        assert_eq!(snap.update_views()[&b].state, "failed");
        assert_eq!(snap.update_views()[&a].state, "current");
        // Halted, the servers offered the version keep it.
        assert_eq!(engine.desired_version(b).as_deref(), Some(V));

        // Setting it again starts over: members cleared, b (available) offered first.
        let again = engine
            .set(&SetRollout {
                max_failures: 1,
                ..req.clone()
            })
            .await
            .unwrap();
        assert_eq!(again.state, RolloutState::Running, "{}", again.reason);
        // A heartbeat counts against a failure report only when it comes after it, and the
        // clock counts milliseconds: this one must not share the report's.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        assert!(live.heartbeat("node-b", &beat(V), LOOPBACK, clock.now_ms()));
        // One tick admits b, which runs the version already; the next one finds no one left.
        engine.tick().await.unwrap();
        let snap = engine.tick().await.unwrap();
        let view = &snap.views()[0];
        assert_eq!(view.state, RolloutState::Done, "{}", view.reason);
        assert_eq!((view.admitted, view.updated), (2, 2));
    }

    #[tokio::test]
    async fn only_the_console_holding_the_lease_advances_a_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let live = Arc::new(LivenessMap::default());
        let clock = Clock::default();
        store
            .create_group("default", "etl", NetworkType::Classic, 0)
            .await
            .unwrap();
        store
            .add_server("default", "etl", "a", None, 0)
            .await
            .unwrap();
        store.publish_release(signed(V), 1).await.unwrap();
        // Another console holds the lease.
        assert!(
            store
                .acquire_lease(crate::lease::NAME, "other", clock.now_ms(), 60_000)
                .await
                .unwrap()
        );
        let lease = Arc::new(crate::lease::Lease::new(
            Arc::clone(&store),
            clock,
            "this".into(),
        ));
        assert!(!lease.renew().await);
        let engine = RolloutEngine::new(
            Arc::clone(&store),
            Arc::clone(&live),
            clock,
            Thresholds::default(),
        )
        .with_lease(Arc::clone(&lease));
        let req = SetRollout {
            project: "default".into(),
            group: "etl".into(),
            version: V.into(),
            batch: Batch::Count(1),
            max_failures: 0,
        };
        // Set here, it waits for the holder: no step is written.
        let view = engine.set(&req).await.unwrap();
        assert_eq!(view.admitted, 0, "{}", view.reason);
        engine.tick().await.unwrap();
        assert!(
            store.list_rollouts(None).await.unwrap()[0]
                .members
                .is_empty()
        );
        // The holder gives it up; this console takes it and advances.
        store
            .release_lease(crate::lease::NAME, "other")
            .await
            .unwrap();
        assert!(lease.renew().await);
        let snap = engine.tick().await.unwrap();
        assert_eq!(snap.views()[0].admitted, 1, "{}", snap.views()[0].reason);
    }
}
