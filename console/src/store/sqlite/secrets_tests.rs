//! The SQLite store keeps its database private: it holds private keys.

use std::os::unix::fs::PermissionsExt;

use super::super::StoreError;
use super::SqliteStore;

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
