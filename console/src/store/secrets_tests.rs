//! Tests of web sessions and console secrets in the SQLite store: caps, expiry, and the
//! insert-if-absent that consoles starting together rely on, raced over two connections to one
//! database file (as two console processes would hold them).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::super::secrets::{
    SecretStore, SessionCaps, SessionStore, SessionUser, TokenDigest, WebSession,
};
use super::super::{SqliteStore, StoreError};

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

async fn count(store: &SqliteStore) -> i64 {
    store
        .call(|c| {
            c.query_row("SELECT count(*) FROM web_sessions", [], |r| r.get(0))
                .map_err(super::sql("counting"))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_are_capped_per_principal_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
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
    assert_eq!(count(&store).await, 5);
    let admin = store.session(&digest(12), 60).await.unwrap().unwrap();
    assert_eq!(admin.user, None);
    assert_eq!(admin.csrf, "csrf-52");
    let etl = store.session(&digest(5), 60).await.unwrap().unwrap();
    assert_eq!(etl.user.unwrap().name, "etl");
}

#[tokio::test]
async fn expired_sessions_are_not_found_and_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
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
    assert_eq!(count(&store).await, 1);
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

#[tokio::test]
async fn sessions_and_secrets_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let store = SqliteStore::open(&path).unwrap();
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
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.session(&digest(1), 6).await.unwrap(),
        Some(session(Some("etl"), 5))
    );
    assert_eq!(store.secret("k").await.unwrap().unwrap().0, b"v");
    assert_eq!(store.secret("other").await.unwrap(), None);
}

#[tokio::test]
async fn consoles_storing_a_secret_at_once_all_get_the_first_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    // Two connections to one file, as two console processes would have.
    let a = Arc::new(SqliteStore::open(&path).unwrap());
    let b = Arc::new(SqliteStore::open(&path).unwrap());
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

#[tokio::test]
async fn pruning_keeps_the_newest_of_a_prefix_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
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

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_database_and_its_directory_are_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("tasknode.db");
    drop(SqliteStore::open(&db).unwrap());
    for suffix in ["", "-wal", "-shm"] {
        let p = data.join(format!("tasknode.db{suffix}"));
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    for suffix in ["-wal", "-shm"] {
        let p = data.join(format!("tasknode.db{suffix}"));
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    drop(store);

    // A shared directory (sticky, like /tmp) is refused, not changed.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = SqliteStore::open(&shared.join("tasknode.db"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, StoreError::Private { .. }) && err.to_string().contains("--data"),
        "{err}"
    );
    assert_eq!(mode(&shared), 0o1777);
}
