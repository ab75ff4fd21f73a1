//! The suite's tests of deleting users, replacing passwords, install links and the audit log.

use tasknode_protocol::NetworkType;

use crate::store::*;

use super::Harness;
use super::servers::{enrollment, facts};

/// `default` with user `etl` and group `etl` (one server `db-1`), `other` with user `ann`.
async fn setup(h: &dyn Harness) -> (Box<dyn Store>, i64) {
    let store = h.open().await;
    store.create_project("other", 1).await.unwrap();
    store
        .create_user("default", "etl", "hash-1", 1)
        .await
        .unwrap();
    store
        .create_user("other", "ann", "hash-a", 1)
        .await
        .unwrap();
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    let server = store
        .add_server("default", "etl", "db-1", None, 1)
        .await
        .unwrap();
    (store, server.id)
}

fn session_of(user: &str, project: &str) -> WebSession {
    WebSession {
        user: Some(SessionUser {
            name: user.to_owned(),
            project: project.to_owned(),
        }),
        csrf: "c".to_owned(),
        created_ms: 10,
        seen_ms: 10,
        expires_ms: 1_000_000,
    }
}

const CAPS: SessionCaps = SessionCaps {
    per_principal: 10,
    total: 100,
};

pub(super) async fn a_deleted_user_takes_its_links_and_sessions_with_it(h: &dyn Harness) {
    let (store, server) = setup(h).await;
    for (token, expires) in [("t1", 1_000), ("t2", 1_000)] {
        store
            .create_enrollment_token("default", "etl", "etl", token, 1, expires)
            .await
            .unwrap();
    }
    // One link spent: its server keeps its own credentials when the user goes.
    let spend = SpendToken {
        token_sha256: "t2".into(),
        now_ms: 5,
    };
    store
        .enroll(server, &enrollment("n1"), &facts(), Some(spend))
        .await
        .unwrap();
    store
        .create_session(&[1; 32], &session_of("etl", "default"), CAPS)
        .await
        .unwrap();
    store
        .create_session(&[2; 32], &session_of("ann", "other"), CAPS)
        .await
        .unwrap();

    // Confined to a project, another project's user is not there.
    let err = store.delete_user("etl", Some("other")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(store.login("etl").await.unwrap().is_some());

    let gone = store.delete_user("etl", Some("default")).await.unwrap();
    assert_eq!(
        (gone.project.as_str(), gone.links, gone.sessions),
        ("default", 2, 1)
    );
    assert!(store.login("etl").await.unwrap().is_none());
    assert!(store.enrollment_token("t1").await.unwrap().is_none());
    assert!(store.session(&[1; 32], 20).await.unwrap().is_none());
    assert!(store.session(&[2; 32], 20).await.unwrap().is_some());
    assert!(store.server_by_node("n1").await.unwrap().is_some());
    // The name is free again.
    store
        .create_user("default", "etl", "hash-2", 30)
        .await
        .unwrap();
    let err = store.delete_user("nobody", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

pub(super) async fn a_new_password_replaces_the_old_and_ends_the_users_sessions(h: &dyn Harness) {
    let (store, _) = setup(h).await;
    store
        .create_session(&[1; 32], &session_of("etl", "default"), CAPS)
        .await
        .unwrap();
    let err = store
        .set_password("etl", Some("other"), "hash-x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(
        store.login("etl").await.unwrap().unwrap().password_hash,
        "hash-1"
    );
    let project = store.set_password("etl", None, "hash-2").await.unwrap();
    assert_eq!(project, "default");
    assert_eq!(
        store.login("etl").await.unwrap().unwrap().password_hash,
        "hash-2"
    );
    assert!(store.session(&[1; 32], 20).await.unwrap().is_none());
}

pub(super) async fn only_unspent_unexpired_links_are_listed_and_revoked(h: &dyn Harness) {
    let (store, server) = setup(h).await;
    store
        .create_group("other", "web", NetworkType::Classic, 1)
        .await
        .unwrap();
    for (project, group, user, token, expires) in [
        ("default", "etl", "etl", "expired", 50),
        ("default", "etl", "etl", "spent", 1_000),
        ("default", "etl", "etl", "good", 1_000),
        ("other", "web", "ann", "theirs", 1_000),
    ] {
        store
            .create_enrollment_token(project, group, user, token, 1, expires)
            .await
            .unwrap();
    }
    let spend = SpendToken {
        token_sha256: "spent".into(),
        now_ms: 5,
    };
    store
        .enroll(server, &enrollment("n1"), &facts(), Some(spend))
        .await
        .unwrap();
    let now = 100;
    let all = store.install_links(None, now).await.unwrap();
    let named: Vec<(&str, &str)> = all
        .iter()
        .map(|l| (l.group.as_str(), l.user.as_str()))
        .collect();
    assert_eq!(named, [("etl", "etl"), ("web", "ann")]);
    let ours = store.install_links(Some("default"), now).await.unwrap();
    assert_eq!(ours.len(), 1);
    let (good, theirs) = (ours[0].id, all[1].id);
    assert_eq!((ours[0].created_ms, ours[0].expires_ms), (1, 1_000));

    // Another project's link, a spent one and an expired one cannot be revoked.
    let spent = store.enrollment_token("spent").await.unwrap().unwrap();
    for (id, project) in [(theirs, Some("default")), (good + 100, None)] {
        let err = store
            .revoke_install_link(id, project, now)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{id}: {err}");
    }
    assert!(spent.used.is_some());
    let revoked = store
        .revoke_install_link(good, Some("default"), now)
        .await
        .unwrap();
    assert_eq!(revoked.user, "etl");
    assert!(store.enrollment_token("good").await.unwrap().is_none());
    let err = store
        .revoke_install_link(good, None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(store.enrollment_token("theirs").await.unwrap().is_some());
}

pub(super) async fn the_audit_log_pages_newest_first_and_by_project(h: &dyn Harness) {
    let store = h.open().await;
    for i in 0..5_i64 {
        let entry = NewAuditEntry {
            actor: if i % 2 == 0 { "admin" } else { "user:etl" }.to_owned(),
            action: "task.submit",
            object: format!("task {i}"),
            project: (i != 4).then(|| if i == 3 { "other" } else { "default" }.to_owned()),
        };
        store.record_audit(&entry, 100 + i).await.unwrap();
    }
    let page = store.audit_log(None, None, 2).await.unwrap();
    let objects = |es: &[AuditEntry]| es.iter().map(|e| e.object.clone()).collect::<Vec<_>>();
    assert_eq!(objects(&page), ["task 4", "task 3"]);
    assert_eq!((page[0].at_ms, page[0].project.as_deref()), (104, None));
    let next = store.audit_log(None, Some(page[1].id), 2).await.unwrap();
    assert_eq!(objects(&next), ["task 2", "task 1"]);
    let last = store.audit_log(None, Some(next[1].id), 2).await.unwrap();
    assert_eq!(objects(&last), ["task 0"]);
    assert_eq!(last[0].actor, "admin");
    let ours = store.audit_log(Some("default"), None, 10).await.unwrap();
    assert_eq!(objects(&ours), ["task 2", "task 1", "task 0"]);
}
