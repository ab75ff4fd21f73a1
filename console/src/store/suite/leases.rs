//! The suite's tests of leases: one holder at a time, taken over only once expired, given up
//! at once on release, and a rollout step fenced by a lease its console no longer holds
//! changes nothing.

use std::sync::Arc;

use crate::store::*;
use tasknode_protocol::updates::RolloutState;

use super::Harness;
use super::releases::{group_with_server, manifest, rollout, signed};

pub(super) async fn a_lease_has_one_holder_until_it_expires_or_is_given_up(h: &dyn Harness) {
    let store = h.open().await;
    assert!(
        store
            .acquire_lease("engine", "a", 1_000, 5_000)
            .await
            .unwrap()
    );
    // b cannot take it while it runs; a renews it.
    assert!(
        !store
            .acquire_lease("engine", "b", 5_999, 5_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .acquire_lease("engine", "a", 3_000, 5_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("engine", "b", 7_999, 5_000)
            .await
            .unwrap()
    );
    // Another lease is another row.
    assert!(
        store
            .acquire_lease("other", "b", 7_999, 5_000)
            .await
            .unwrap()
    );
    // a stopped renewing: once expired, b takes it, and a cannot renew it any more.
    assert!(
        store
            .acquire_lease("engine", "b", 8_000, 5_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire_lease("engine", "a", 8_001, 5_000)
            .await
            .unwrap()
    );
    // Releasing a lease one does not hold does nothing; the holder's release frees it at once.
    store.release_lease("engine", "a").await.unwrap();
    assert!(
        !store
            .acquire_lease("engine", "c", 8_002, 5_000)
            .await
            .unwrap()
    );
    store.release_lease("engine", "b").await.unwrap();
    assert!(
        store
            .acquire_lease("engine", "c", 8_003, 5_000)
            .await
            .unwrap()
    );
    assert_eq!(h.rows("leases").await, 2);

    // Many consoles trying at once on fresh leases: exactly one of them holds each.
    let store: Arc<dyn Store> = Arc::from(h.open().await);
    let mut tries = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&store);
        tries.push(tokio::spawn(async move {
            s.acquire_lease("race", &format!("console-{i}"), 10_000, 5_000)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tries {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

pub(super) async fn a_step_fenced_by_a_lapsed_lease_changes_nothing(h: &dyn Harness) {
    let (store, a) = group_with_server(h).await;
    store
        .publish_release(signed(manifest("0.3.0", false, "ab")), 1)
        .await
        .unwrap();
    let r = store
        .set_rollout(&rollout("0.3.0"), "set", 10)
        .await
        .unwrap();
    assert!(
        store
            .acquire_lease("engine", "a", 100, 5_000)
            .await
            .unwrap()
    );
    let step = |holder: &str| Advance {
        group_id: r.group_id,
        started_ms: 10,
        admit: vec![a.id],
        state: RolloutState::Running,
        reason: format!("offered by {holder}"),
        fence: Some(Fence {
            name: "engine".into(),
            holder: holder.into(),
        }),
    };
    // Not the holder; the holder after its lease ran out.
    assert!(!store.advance_rollout(&step("b"), 200).await.unwrap());
    assert!(!store.advance_rollout(&step("a"), 5_100).await.unwrap());
    let listed = store.list_rollouts(None).await.unwrap();
    assert!(listed[0].members.is_empty());
    assert_eq!(listed[0].reason, "set");
    // b took it over: its step applies.
    assert!(
        store
            .acquire_lease("engine", "b", 5_100, 5_000)
            .await
            .unwrap()
    );
    assert!(store.advance_rollout(&step("b"), 5_200).await.unwrap());
    let listed = store.list_rollouts(None).await.unwrap();
    assert_eq!(listed[0].members.get(&a.id), Some(&5_200));
    assert_eq!(listed[0].reason, "offered by b");
}
