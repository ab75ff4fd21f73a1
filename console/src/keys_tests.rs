//! The admin token and the log-token key: created once, moved in from an older console's
//! files, and the same for consoles that start together on one database.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;
use crate::store::SqliteStore;

#[tokio::test]
async fn a_new_admin_token_is_written_once_and_kept_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let path = dir.path().join("admin.token");
    let first = admin_token(&store, &path, 1).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(auth::digests_equal(&first, &auth::digest(token.trim())));
    // Without the file the store still knows it; the file is not made again.
    std::fs::remove_file(&path).unwrap();
    let again = admin_token(&store, &path, 2).await.unwrap();
    assert_eq!(first, again);
    assert!(!path.exists());
    // A file with another token does not replace the stored one.
    std::fs::write(&path, format!("{}\n", auth::generate_secret())).unwrap();
    assert_eq!(admin_token(&store, &path, 3).await.unwrap(), first);
}

#[tokio::test]
async fn an_older_consoles_files_are_moved_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let token_path = dir.path().join("admin.token");
    let key_path = dir.path().join("log-token.key");
    let token = auth::generate_secret();
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let old_key = auth::generate_log_key();
    std::fs::write(&key_path, hex::encode(old_key.to_bytes())).unwrap();

    let digest = admin_token(&store, &token_path, 1).await.unwrap();
    assert!(auth::digests_equal(&digest, &auth::digest(&token)));
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "a loosened token file is tightened");
    let key = log_key(&store, &key_path, 1).await.unwrap();
    assert_eq!(key.to_bytes(), old_key.to_bytes());

    // Once moved, the files are not needed.
    std::fs::remove_file(&token_path).unwrap();
    std::fs::remove_file(&key_path).unwrap();
    assert_eq!(admin_token(&store, &token_path, 2).await.unwrap(), digest);
    assert_eq!(
        log_key(&store, &key_path, 2).await.unwrap().to_bytes(),
        old_key.to_bytes()
    );
}

#[tokio::test]
async fn a_damaged_key_file_is_named_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let key_path = dir.path().join("log-token.key");
    std::fs::write(&key_path, "nonsense").unwrap();
    let err = log_key(&store, &key_path, 1).await.unwrap_err();
    assert!(format!("{err:#}").contains("log-token.key"), "{err:#}");
    assert!(
        store
            .secret(secret_names::LOG_TOKEN_KEY)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn consoles_starting_together_agree_on_the_token_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    // Two consoles, each with its own data directory, on one database.
    let stores = [
        Arc::new(SqliteStore::open(&db).unwrap()),
        Arc::new(SqliteStore::open(&db).unwrap()),
    ];
    let homes = [dir.path().join("a"), dir.path().join("b")];
    for h in &homes {
        std::fs::create_dir(h).unwrap();
    }
    let mut racers = tokio::task::JoinSet::new();
    for (store, home) in stores.iter().zip(&homes) {
        let (store, home) = (Arc::clone(store), home.clone());
        racers.spawn(async move {
            let token = admin_token(store.as_ref(), &home.join("admin.token"), 1)
                .await
                .unwrap();
            let key = log_key(store.as_ref(), &home.join("log-token.key"), 1)
                .await
                .unwrap();
            (token, key.to_bytes())
        });
    }
    let got = racers.join_all().await;
    assert_eq!(got[0], got[1]);
    // Exactly one token file is left, and it holds the token both accept.
    let files: Vec<_> = homes
        .iter()
        .map(|h| h.join("admin.token"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let token = std::fs::read_to_string(&files[0]).unwrap();
    assert!(auth::digests_equal(&got[0].0, &auth::digest(token.trim())));
}

#[tokio::test]
async fn a_new_admin_token_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let path = dir.path().join("admin.token");
    let old = admin_token(&store, &path, 1).await.unwrap();
    let new = new_admin_token(&store, &path, 2).await.unwrap();
    assert_ne!(old, new);
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(auth::digests_equal(&new, &auth::digest(token.trim())));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The next start keeps the new one.
    assert_eq!(admin_token(&store, &path, 3).await.unwrap(), new);
}
