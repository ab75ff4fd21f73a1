//! The suite's tests of servers, enrollment and enrollment tokens, and of how server names are
//! shared between projects (a name is bound to a project only by enrolling).

use crate::store::*;
use tasknode_protocol::NetworkType;
use tasknode_protocol::wire::HostFacts;

use super::Harness;

pub(crate) fn facts() -> HostFacts {
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

pub(crate) fn enrollment(node_id: &str) -> Enrollment {
    Enrollment {
        node_id: node_id.into(),
        secret_sha256: "00".repeat(32),
        enrolled_ms: 7,
        cpu_cores: 4.0,
        memory_bytes: 8 << 30,
    }
}

pub(super) async fn a_server_is_in_at_most_one_group(h: &dyn Harness) {
    let store = h.open().await;
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

pub(super) async fn servers_are_found_by_id_and_unknown_ids_are_skipped(h: &dyn Harness) {
    let store = h.open().await;
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    let a = store
        .add_server("default", "etl", "db-1", None, 2)
        .await
        .unwrap();
    let b = store
        .add_server("default", "etl", "db-2", None, 2)
        .await
        .unwrap();
    store
        .add_server("default", "etl", "db-3", None, 2)
        .await
        .unwrap();
    let mut found: Vec<String> = store
        .servers_by_id(&[b.id, a.id + b.id + 1000, a.id])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    found.sort();
    assert_eq!(found, ["db-1", "db-2"]);
    assert!(store.servers_by_id(&[]).await.unwrap().is_empty());
}

pub(super) async fn a_token_is_spent_once_with_its_enrollment_and_not_after_expiry(
    h: &dyn Harness,
) {
    let store = h.open().await;
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

async fn two_projects(store: &dyn Store) {
    store.create_project("red", 1).await.unwrap();
    store.create_project("blue", 1).await.unwrap();
    for p in ["red", "blue"] {
        for g in ["etl", "bi"] {
            store
                .create_group(p, g, NetworkType::Classic, 1)
                .await
                .unwrap();
        }
    }
}

pub(super) async fn pending_names_do_not_block_other_projects_and_the_first_enrollment_wins(
    h: &dyn Harness,
) {
    let store = h.open().await;
    two_projects(&*store).await;
    let red = store
        .add_server("red", "etl", "db-1", None, 2)
        .await
        .unwrap();
    let blue = store
        .add_server("blue", "etl", "db-1", None, 2)
        .await
        .unwrap();
    assert_ne!(red.id, blue.id);

    // Inside one project a name is still in one group, and the refusal names only that
    // project's group.
    let err = store
        .add_server("blue", "bi", "db-1", None, 3)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ServerTaken { group, project, .. } if group == "etl" && project == "blue"),
        "{err}"
    );
    assert!(!err.to_string().contains("red"), "{err}");

    // Each project sees its own server only.
    let seen = |p: &'static str| {
        let store = &store;
        async move {
            store
                .list_servers(&ServerFilter {
                    project: Some(p.into()),
                    group: None,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(seen("red").await.len(), 1);
    assert_eq!(seen("blue").await[0].id, blue.id);
    assert_eq!(
        store
            .server_by_name("red", "db-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        red.id
    );
    assert!(
        store
            .server_by_name("default", "db-1")
            .await
            .unwrap()
            .is_none()
    );

    // Blue enrolls first and keeps the name; red's enrollment is refused without naming blue.
    let g1 = store
        .enroll(blue.id, &enrollment("nb"), &facts(), None)
        .await
        .unwrap();
    let err = store
        .enroll(red.id, &enrollment("nr"), &facts(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EnrolledElsewhere), "{err}");
    let text = err.to_string();
    assert!(text.contains("enrolled elsewhere"), "{text}");
    assert!(!text.contains("blue") && !text.contains("etl"), "{text}");
    assert!(
        store
            .server_by_name("red", "db-1")
            .await
            .unwrap()
            .unwrap()
            .enrollment
            .is_none()
    );
    // Red may still add the name elsewhere in red (its pending entry stays pending), and
    // blue re-enrolls as often as it likes, each time with a newer generation.
    let g2 = store
        .enroll(blue.id, &enrollment("nb2"), &facts(), None)
        .await
        .unwrap();
    assert!(g2 > g1, "{g1} then {g2}");
    assert_eq!(
        store.server_by_node("nb2").await.unwrap().unwrap().project,
        "blue"
    );
    assert!(store.server_by_node("nb").await.unwrap().is_none());
}

pub(super) async fn a_refused_enrollment_leaves_its_token_unspent(h: &dyn Harness) {
    let store = h.open().await;
    two_projects(&*store).await;
    store.create_user("red", "ann", "hash", 1).await.unwrap();
    let red = store
        .add_server("red", "etl", "db-1", None, 2)
        .await
        .unwrap();
    let blue = store
        .add_server("blue", "etl", "db-1", None, 2)
        .await
        .unwrap();
    store
        .create_enrollment_token("red", "etl", "ann", "tok", 1, 1_000)
        .await
        .unwrap();
    store
        .enroll(blue.id, &enrollment("nb"), &facts(), None)
        .await
        .unwrap();
    let spend = SpendToken {
        token_sha256: "tok".into(),
        now_ms: 5,
    };
    let err = store
        .enroll(red.id, &enrollment("nr"), &facts(), Some(spend))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::EnrolledElsewhere), "{err}");
    assert_eq!(
        store.enrollment_token("tok").await.unwrap().unwrap().used,
        None
    );
}
