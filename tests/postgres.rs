//! The real console binary on PostgreSQL (`serve --database postgres://…`), against a throwaway
//! cluster from Debian's binaries: it serves, the admin commands create what they create in the
//! database (not in a SQLite file), the state outlives a restart, a second console on the same
//! database sees it, and a password on the command line is refused.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use tasknode_pgtest::Cluster;
use tasknode_tests::{Console, bin};

/// A password file only its owner reads, in `dir`.
fn password_file(dir: &std::path::Path) -> String {
    let path = dir.join("db-password");
    std::fs::write(&path, format!("{}\n", Cluster::shared().password())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

#[test]
fn a_console_on_postgres_serves_and_keeps_its_state_there() {
    let cluster = Cluster::shared();
    let db = cluster.database();
    let secrets = tempfile::tempdir().unwrap();
    let pw = password_file(secrets.path());
    let args = [
        "--database",
        db.url.as_str(),
        "--database-password-file",
        pw.as_str(),
    ];
    let mut console = Console::start(&args);
    let health = console
        .http()
        .get(format!("{}/api/v1/health", console.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);

    console.cli_ok(&["project", "create", "finance"]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", "db-1"]);
    // It is in PostgreSQL, and the data directory holds no SQLite database.
    assert_eq!(
        cluster
            .psql(&db.name, "SELECT s.name || ' ' || g.name FROM servers s JOIN resource_groups g ON g.id = s.group_id")
            .unwrap(),
        "db-1 etl"
    );
    assert_eq!(
        cluster
            .psql(&db.name, "SELECT name FROM projects ORDER BY name")
            .unwrap(),
        "default\nfinance"
    );
    assert!(!console.data().join("tasknode.db").exists());

    // A restart finds it; so does a second console on the same database.
    console.stop();
    console.restart();
    assert!(console.cli_ok(&["server", "list"]).contains("db-1"));
    let other = Console::start(&args);
    // The database keeps only the admin token's digest: the second console's CLI uses the
    // first one's token file.
    std::fs::copy(
        console.data().join("admin.token"),
        other.data().join("admin.token"),
    )
    .unwrap();
    assert!(other.cli_ok(&["server", "list"]).contains("db-1"));
    other.cli_ok(&["group", "create", "bi", "--network", "vpc"]);
    assert!(console.cli_ok(&["group", "list"]).contains("bi"));
}

#[test]
fn the_password_may_come_from_the_environment() {
    let cluster = Cluster::shared();
    let db = cluster.database();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("tasknode-console"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .arg("--data")
        .arg(data.path())
        .env("TASKNODE_DATABASE_PASSWORD", cluster.password())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("http://127.0.0.1:"), "{line:?}");
    // The schema was made (at whatever version this console knows).
    let version: i64 = cluster
        .psql(&db.name, "SELECT version FROM schema_version")
        .unwrap()
        .parse()
        .unwrap();
    assert!(version >= 3, "schema version {version}");
}

#[test]
fn a_password_in_the_database_url_is_refused_and_not_repeated() {
    let cluster = Cluster::shared();
    let db = cluster.database();
    let url = db
        .url
        .replacen("postgres@", &format!("postgres:{}@", cluster.password()), 1);
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tasknode-console"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &url])
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--database-password-file"), "{stderr}");
    assert!(!stderr.contains(cluster.password()), "{stderr}");
    // The schema was never touched.
    assert_eq!(
        cluster
            .psql(
                &db.name,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .unwrap(),
        "0"
    );

    // A password file others may read is refused too, before the database is reached.
    let pw = password_file(data.path());
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(bin("tasknode-console"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .args(["--database-password-file", &pw])
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
