//! The suite's tests of liveness as consoles share it: a node is found by its id with its
//! secret digest and generation, a first load takes every enrolled node, and a write never
//! moves a node's last heartbeat back.

use crate::store::*;
use tasknode_protocol::NetworkType;

use super::Harness;
use super::servers::{enrollment, facts};

fn beat(node: &str, at_ms: i64, version: &str) -> LivenessUpdate {
    LivenessUpdate {
        node_id: node.into(),
        liveness: Liveness {
            agent_version: Some(version.into()),
            last_heartbeat_ms: Some(at_ms),
            clock_offset_ms: Some(3),
            running_tasks: 2,
            stopped: None,
            log_addr: None,
        },
    }
}

pub(super) async fn nodes_are_loaded_by_id_and_by_change_and_the_newest_heartbeat_wins(
    h: &dyn Harness,
) {
    let store = h.open().await;
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    let a = store
        .add_server("default", "etl", "a", None, 1)
        .await
        .unwrap();
    let b = store
        .add_server("default", "etl", "b", None, 1)
        .await
        .unwrap();
    store
        .add_server("default", "etl", "pending", None, 1)
        .await
        .unwrap();
    store
        .enroll(a.id, &enrollment("node-a"), &facts(), None)
        .await
        .unwrap();
    let mut eb = enrollment("node-b");
    eb.secret_sha256 = "ab".repeat(32);
    eb.enrolled_ms = 2_000;
    let generation = store.enroll(b.id, &eb, &facts(), None).await.unwrap();

    let rec = store.node_record("node-b").await.unwrap().unwrap();
    assert_eq!(
        (rec.server_id, rec.secret_sha256.as_str(), rec.generation),
        (b.id, eb.secret_sha256.as_str(), generation)
    );
    assert!(store.node_record("nope").await.unwrap().is_none());

    // Every enrolled node, on a console's first load.
    let ids = |v: NodeChanges| {
        let mut ids: Vec<String> = v.nodes.into_iter().map(|r| r.node_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(store.nodes_changed(None).await.unwrap()),
        ["node-a", "node-b"]
    );
    store
        .record_liveness(vec![beat("node-a", 3_000, "0.2.0")])
        .await
        .unwrap();
    let rec = store.node_record("node-a").await.unwrap().unwrap();
    assert_eq!(rec.liveness, beat("node-a", 3_000, "0.2.0").liveness);

    // Another console flushing an older heartbeat later does not move it back; a newer one
    // and a clean shutdown at the same heartbeat do.
    store
        .record_liveness(vec![beat("node-a", 2_900, "0.1.0")])
        .await
        .unwrap();
    let rec = store.node_record("node-a").await.unwrap().unwrap();
    assert_eq!(rec.liveness.last_heartbeat_ms, Some(3_000));
    assert_eq!(rec.liveness.agent_version.as_deref(), Some("0.2.0"));
    let mut stop = beat("node-a", 3_000, "0.2.0");
    stop.liveness.stopped = Some(Stop {
        at_ms: 3_100,
        reason: "SIGTERM".into(),
    });
    store.record_liveness(vec![stop.clone()]).await.unwrap();
    assert_eq!(
        store.node_record("node-a").await.unwrap().unwrap().liveness,
        stop.liveness
    );

    // Enrolled again: the old node id is gone, the new one has a later generation.
    let again = store
        .enroll(b.id, &enrollment("node-b2"), &facts(), None)
        .await
        .unwrap();
    assert!(again > generation);
    assert!(store.node_record("node-b").await.unwrap().is_none());
    assert_eq!(
        store
            .node_record("node-b2")
            .await
            .unwrap()
            .unwrap()
            .generation,
        again
    );
}
