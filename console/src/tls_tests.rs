//! The console CA in the store: created once, moved in from an older console's DATA/tls/,
//! shared by consoles starting together, and a server certificate per set of names.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::store::SqliteStore;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_ca_is_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let tls = dir.path().join("tls");
    let n = names(&["localhost", "127.0.0.1"]);
    let first = ConsoleTls::load_or_create(&store, &tls, &n, 1)
        .await
        .unwrap();
    let second = ConsoleTls::load_or_create(&store, &tls, &n, 2)
        .await
        .unwrap();
    assert_eq!(first.ca_pem, second.ca_pem);
    assert_eq!(first.ca_sha256().len(), 64);
    // The same names get the same certificate again.
    assert_eq!(first.server_pem, second.server_pem);
    // The certificate is exported for the admin commands; the key stays in the store.
    assert_eq!(fs::read_to_string(&first.ca_path).unwrap(), first.ca_pem);
    assert_eq!(mode(&first.ca_path), 0o644);
    assert_eq!(mode(&tls), 0o700);
    assert!(!tls.join("ca.key").exists());
    // Without the exported file the CA is the same, and the file comes back.
    fs::remove_dir_all(&tls).unwrap();
    let third = ConsoleTls::load_or_create(&store, &tls, &n, 3)
        .await
        .unwrap();
    assert_eq!(third.ca_pem, first.ca_pem);
    assert_eq!(fs::read_to_string(&third.ca_path).unwrap(), first.ca_pem);
}

#[tokio::test]
async fn other_names_get_their_own_certificate_from_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let tls = dir.path().join("tls");
    let a = ConsoleTls::load_or_create(&store, &tls, &names(&["a.example", "localhost"]), 1)
        .await
        .unwrap();
    let b = ConsoleTls::load_or_create(&store, &tls, &names(&["b.example", "localhost"]), 2)
        .await
        .unwrap();
    assert_eq!(a.ca_pem, b.ca_pem);
    assert_ne!(a.server_pem, b.server_pem);
    // Order does not matter; a's certificate is served to it again after b's start.
    let a2 = ConsoleTls::load_or_create(&store, &tls, &names(&["localhost", "a.example"]), 3)
        .await
        .unwrap();
    assert_eq!(a.server_pem, a2.server_pem);
    // A bad name is refused, naming the flag.
    let err = ConsoleTls::load_or_create(&store, &tls, &names(&["bücher.example"]), 4)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("--tls-name"), "{err:#}");
}

#[tokio::test]
async fn an_older_consoles_ca_is_moved_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    fs::create_dir(&tls).unwrap();
    let old = new_ca().unwrap();
    fs::write(tls.join("ca.pem"), &old.cert_pem).unwrap();
    fs::write(tls.join("ca.key"), &old.key_pem).unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let n = names(&["localhost"]);
    let loaded = ConsoleTls::load_or_create(&store, &tls, &n, 1)
        .await
        .unwrap();
    assert_eq!(loaded.ca_pem, old.cert_pem);
    fs::remove_file(tls.join("ca.pem")).unwrap();
    fs::remove_file(tls.join("ca.key")).unwrap();
    let again = ConsoleTls::load_or_create(&store, &tls, &n, 2)
        .await
        .unwrap();
    assert_eq!(again.ca_pem, old.cert_pem);
}

#[tokio::test]
async fn a_damaged_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let tls = dir.path().join("tls");
    fs::create_dir(&tls).unwrap();
    fs::write(tls.join("ca.key"), "not a key").unwrap();
    let err = ConsoleTls::load_or_create(&store, &tls, &names(&["localhost"]), 1)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("ca.key is not a PEM private key"));
    assert!(store.secret(secret_names::TLS_CA).await.unwrap().is_none());
}

#[tokio::test]
async fn a_certificate_without_its_key_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let tls = dir.path().join("tls");
    fs::create_dir(&tls).unwrap();
    let old = new_ca().unwrap();
    fs::write(tls.join("ca.pem"), &old.cert_pem).unwrap();
    let err = ConsoleTls::load_or_create(&store, &tls, &names(&["localhost"]), 1)
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("exists without its key"),
        "{err:#}"
    );
    assert_eq!(
        fs::read_to_string(tls.join("ca.pem")).unwrap(),
        old.cert_pem
    );
    assert!(store.secret(secret_names::TLS_CA).await.unwrap().is_none());
}

#[tokio::test]
async fn consoles_starting_together_get_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let a = std::sync::Arc::new(SqliteStore::open(&db).unwrap());
    let b = std::sync::Arc::new(SqliteStore::open(&db).unwrap());
    let (ta, tb) = (dir.path().join("a"), dir.path().join("b"));
    let n = names(&["localhost"]);
    let (ra, rb) = tokio::join!(
        ConsoleTls::load_or_create(a.as_ref(), &ta, &n, 1),
        ConsoleTls::load_or_create(b.as_ref(), &tb, &n, 1),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.ca_pem, rb.ca_pem);
    assert_eq!(ra.server_pem, rb.server_pem);
}
