//! The suite's tests of web sessions and console secrets: caps, expiry, surviving a reopen,
//! and the insert-if-absent that consoles starting together rely on, raced between two opens of
//! one database (as two console processes would hold it).

use std::sync::Arc;

use crate::store::*;

use super::Harness;

fn digest(n: u32) -> TokenDigest {
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&n.to_be_bytes());
    d
}

fn session(user: Option<&str>, at: i64) -> WebSession {
    WebSession {
        user: user.map(|name| SessionUser {
            name: name.to_owned(),
            project: "default".to_owned(),
        }),
        csrf: format!("csrf-{at}"),
        created_ms: at,
        seen_ms: at,
        expires_ms: at + 1_000_000,
    }
}

pub(super) async fn sessions_are_capped_per_principal_and_in_all(h: &dyn Harness) {
    let store = h.open().await;
    let caps = SessionCaps {
        per_principal: 3,
        total: 5,
    };
    // Five sign-ins of one user: the two least recently used are gone.
    for i in 0..5 {
        store
            .create_session(&digest(i), &session(Some("etl"), i64::from(i)), caps)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let found = store.session(&digest(i), 10).await.unwrap();
        assert_eq!(found.is_some(), i >= 2, "session {i}");
    }
    // A use counts: session 2 was used last, so 3 goes first.
    store
        .touch_session(&digest(2), 20, 2_000_000)
        .await
        .unwrap();
    store
        .create_session(&digest(5), &session(Some("etl"), 30), caps)
        .await
        .unwrap();
    assert!(store.session(&digest(2), 31).await.unwrap().is_some());
    assert!(store.session(&digest(3), 31).await.unwrap().is_none());
    // The admin and another user have their own caps, under the total.
    for i in 10..13 {
        store
            .create_session(&digest(i), &session(None, 40 + i64::from(i)), caps)
            .await
            .unwrap();
    }
    assert_eq!(h.rows("web_sessions").await, 5);
    let admin = store.session(&digest(12), 60).await.unwrap().unwrap();
    assert_eq!(admin.user, None);
    assert_eq!(admin.csrf, "csrf-52");
    let etl = store.session(&digest(5), 60).await.unwrap().unwrap();
    assert_eq!(etl.user.unwrap().name, "etl");
}

pub(super) async fn expired_sessions_are_not_found_and_are_deleted(h: &dyn Harness) {
    let store = h.open().await;
    let caps = SessionCaps {
        per_principal: 100,
        total: 100,
    };
    let mut s = session(None, 0);
    s.expires_ms = 100;
    store.create_session(&digest(1), &s, caps).await.unwrap();
    store.create_session(&digest(2), &s, caps).await.unwrap();
    assert!(store.session(&digest(1), 99).await.unwrap().is_some());
    // Found expired: deleted, even for a clock that goes back afterwards.
    assert!(store.session(&digest(1), 100).await.unwrap().is_none());
    assert!(store.session(&digest(1), 0).await.unwrap().is_none());
    // A sign-in deletes every expired session.
    store
        .create_session(&digest(3), &session(Some("etl"), 200), caps)
        .await
        .unwrap();
    assert_eq!(h.rows("web_sessions").await, 1);
    // A use never moves a session back, and sign-out is final.
    store.touch_session(&digest(3), 150, 150).await.unwrap();
    assert_eq!(
        store
            .session(&digest(3), 201)
            .await
            .unwrap()
            .unwrap()
            .seen_ms,
        200
    );
    store.delete_session(&digest(3)).await.unwrap();
    store.delete_session(&digest(3)).await.unwrap();
    assert!(store.session(&digest(3), 201).await.unwrap().is_none());
}

pub(super) async fn sessions_and_secrets_survive_reopening(h: &dyn Harness) {
    {
        let store = h.open().await;
        let caps = SessionCaps {
            per_principal: 10,
            total: 10,
        };
        store
            .create_session(&digest(1), &session(Some("etl"), 5), caps)
            .await
            .unwrap();
        store.insert_secret("k", b"v", 1).await.unwrap();
    }
    let store = h.open().await;
    assert_eq!(
        store.session(&digest(1), 6).await.unwrap(),
        Some(session(Some("etl"), 5))
    );
    assert_eq!(store.secret("k").await.unwrap().unwrap().0, b"v");
    assert_eq!(store.secret("other").await.unwrap(), None);
}

pub(super) async fn consoles_storing_a_secret_at_once_all_get_the_first_one(h: &dyn Harness) {
    // The store opened twice, as two console processes would hold it.
    let a: Arc<dyn Store> = Arc::from(h.open().await);
    let b: Arc<dyn Store> = Arc::from(h.open().await);
    for round in 0..5 {
        let name = format!("secret-{round}");
        let mut racers = tokio::task::JoinSet::new();
        for i in 0..16u8 {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let name = name.clone();
            racers.spawn(async move { store.insert_secret(&name, &[i; 8], 1).await });
        }
        let answers: Vec<Vec<u8>> = racers
            .join_all()
            .await
            .into_iter()
            .map(|r| r.unwrap().0)
            .collect();
        let first = &answers[0];
        assert!(answers.iter().all(|x| x == first), "{answers:?}");
        assert_eq!(&a.secret(&name).await.unwrap().unwrap().0, first);
        assert_eq!(&b.secret(&name).await.unwrap().unwrap().0, first);
    }
    // A later insert changes nothing; setting replaces, for every connection.
    let kept = a.secret("secret-0").await.unwrap().unwrap();
    assert_eq!(b.insert_secret("secret-0", b"late", 2).await.unwrap(), kept);
    b.set_secret("secret-0", b"new", 3).await.unwrap();
    assert_eq!(a.secret("secret-0").await.unwrap().unwrap().0, b"new");
    a.set_secret("fresh", b"f", 3).await.unwrap();
    assert_eq!(b.secret("fresh").await.unwrap().unwrap().0, b"f");
}

pub(super) async fn pruning_keeps_the_newest_of_a_prefix_only(h: &dyn Harness) {
    let store = h.open().await;
    for i in 0..5 {
        store
            .insert_secret(&format!("tls_server/{i}"), b"c", i)
            .await
            .unwrap();
    }
    // `_` is no wildcard here: "tlsXserver/" is not of the prefix.
    store.insert_secret("tlsXserver/9", b"c", 0).await.unwrap();
    store.insert_secret("tls_ca", b"ca", 0).await.unwrap();
    assert_eq!(store.prune_secrets("tls_server/", 2).await.unwrap(), 3);
    for (name, kept) in [
        ("tls_server/0", false),
        ("tls_server/2", false),
        ("tls_server/3", true),
        ("tls_server/4", true),
        ("tlsXserver/9", true),
        ("tls_ca", true),
    ] {
        assert_eq!(store.secret(name).await.unwrap().is_some(), kept, "{name}");
    }
}
