//! `tasknode-console migrate --to postgres://…` with the real binaries: a SQLite console with
//! projects, users, groups, an enrolled agent and tasks run moves into a throwaway PostgreSQL
//! database, and a console started on that database serves the same state (the admin token
//! still works, the agent heartbeats to it once pointed there, a new task's id is above every
//! old one); a running console's data directory is refused, so is a second migration into the
//! now non-empty database, and bad flags are named.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tasknode_pgtest::Cluster;
use tasknode_tests::{Console, bin, enrolled_classic, hostname, stderr};

fn migrate(data: &Path, args: &[&str]) -> Output {
    Command::new(bin("tasknode-console"))
        .arg("migrate")
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("TASKNODE_DATABASE_PASSWORD")
        .output()
        .unwrap()
}

fn json_of(console: &Console, args: &[&str]) -> Value {
    serde_json::from_str(&console.cli_ok(args)).unwrap()
}

/// The servers as listed, without what depends on the time of the listing.
fn lasting(servers: Vec<Value>) -> Vec<Value> {
    servers
        .into_iter()
        .map(|mut s| {
            let o = s.as_object_mut().unwrap();
            for k in ["status", "reason", "last_heartbeat"] {
                o.remove(k);
            }
            s
        })
        .collect()
}

fn count(cluster: &Cluster, db: &str, table: &str) -> String {
    cluster
        .psql(db, &format!("SELECT count(*) FROM {table}"))
        .unwrap()
}

#[test]
fn a_sqlite_console_moves_to_postgres_and_a_console_there_serves_the_same_state() {
    let cluster = Cluster::shared();
    let db = cluster.database();
    let secrets = tempfile::tempdir().unwrap();
    let pw = Cluster::shared()
        .password_file(secrets.path())
        .unwrap()
        .display()
        .to_string();
    let to = [
        "--to",
        db.url.as_str(),
        "--database-password-file",
        pw.as_str(),
    ];

    let (mut console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    agent.run();
    let host = hostname();
    console.wait_status(&host, "available", Duration::from_secs(30));
    console.cli_ok(&["project", "create", "finance"]);
    console.create_user("reporter");
    console.cli_ok(&["user", "create", "bob", "--project", "finance"]);
    console.cli_ok(&[
        "group",
        "create",
        "bi",
        "--network",
        "vpc",
        "--project",
        "finance",
    ]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "bi",
        "--project",
        "finance",
        "--name",
        "c0ffee00-1111-2222-3333-444455556666",
    ]);
    let ok = console.submit_script("etl", "echo moved\n");
    let failed = console.submit_script("etl", "exit 3\n");
    console.wait_task(ok, &["succeeded"], Duration::from_secs(30));
    console.wait_task(failed, &["failed"], Duration::from_secs(30));
    // Stopped, the agent no longer changes what is listed.
    assert!(agent.stop());
    let servers = lasting(console.servers());
    let tasks = json_of(&console, &["task", "list", "--json"]);
    let groups = json_of(&console, &["group", "list", "--json"]);
    let users = json_of(&console, &["user", "list", "--json"]);
    let projects = json_of(&console, &["project", "list", "--json"]);
    assert_eq!(tasks.as_array().unwrap().len(), 2, "{tasks:#}");

    // While the console runs, its data directory is refused, and PostgreSQL is not touched.
    let out = migrate(&console.data(), &to);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("stop the console first"), "{err}");
    assert!(
        err.contains("another tasknode-console is already serving"),
        "{err}"
    );
    assert_eq!(
        cluster
            .psql(
                &db.name,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .unwrap(),
        "0"
    );

    console.stop();
    let out = migrate(&console.data(), &[&to[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["migrated"], true);
    let tables = report["tables"].as_array().unwrap();
    // Every table, then the task logs VPC servers pushed (none here: the tasks ran on a
    // classic server, which keeps its logs).
    assert_eq!(tables.len(), 15, "{report:#}");
    assert_eq!(tables[14]["table"], "task_logs", "{report:#}");
    for t in tables {
        assert_eq!(t["same"], true, "{t}");
        assert_eq!(t["sqlite_rows"], t["postgres_rows"], "{t}");
        assert_eq!(t["sqlite_sha256"], t["postgres_sha256"], "{t}");
    }
    let rows = |name: &str| {
        tables.iter().find(|t| t["table"] == name).unwrap()["postgres_rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("tasks"), 2);
    assert_eq!(rows("servers"), 2);
    assert_eq!(rows("users"), 3);
    assert!(
        rows("console_secrets") >= 2,
        "the admin token and the log-token key"
    );
    let next_task = report["next_ids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["table"] == "tasks")
        .unwrap()["next_id"]
        .as_i64()
        .unwrap();
    assert_eq!(next_task, failed + 1, "{report:#}");
    assert!(
        stderr(&out).contains("Start the consoles with --database"),
        "{}",
        stderr(&out)
    );

    // A console on the database, in a data directory of its own: it finds the admin token's
    // digest there and makes no token of its own; the old token file works against it.
    let pg = Console::start(&[
        "--database",
        &db.url,
        "--database-password-file",
        &pw,
        "--heartbeat-interval",
        "1s",
    ]);
    assert!(!pg.data().join("admin.token").exists(), "{}", pg.log_text());
    std::fs::copy(
        console.data().join("admin.token"),
        pg.data().join("admin.token"),
    )
    .unwrap();
    assert_eq!(lasting(pg.servers()), servers);
    assert_eq!(json_of(&pg, &["task", "list", "--json"]), tasks);
    assert_eq!(json_of(&pg, &["group", "list", "--json"]), groups);
    assert_eq!(json_of(&pg, &["user", "list", "--json"]), users);
    assert_eq!(json_of(&pg, &["project", "list", "--json"]), projects);

    // The agent, pointed at the new console, heartbeats and runs a task there with its old
    // enrollment; the task's id is above every id the SQLite console gave out.
    let config = agent.config();
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    doc.insert("console_url".into(), pg.url.clone().into());
    std::fs::write(&config, toml::to_string(&doc).unwrap()).unwrap();
    let before = pg.server(&host)["last_heartbeat"].clone();
    agent.run();
    pg.wait_server(
        &host,
        "to heartbeat to the new console",
        Duration::from_secs(30),
        |s| s["status"] == "available" && s["last_heartbeat"] != before,
    );
    let new = pg.submit_script("etl", "echo on postgres\n");
    assert!(new > failed, "task {new} after {failed}");
    pg.wait_task(new, &["succeeded"], Duration::from_secs(30));
    assert_eq!(
        pg.cli_ok(&["task", "log", &new.to_string()]),
        "on postgres\n"
    );

    // Without --json the same report is a table, one line per table.
    let other = cluster.database();
    let out = migrate(
        &console.data(),
        &["--to", &other.url, "--database-password-file", &pw],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("TABLE"), "{text}");
    let line = text.lines().find(|l| l.starts_with("tasks ")).unwrap();
    assert!(line.ends_with("same"), "{text}");
    assert!(
        text.contains(&format!("next tasks id: {next_task}")),
        "{text}"
    );

    // A second migration into the database is refused, naming what is there; nothing changes.
    let tasks_there = count(cluster, &db.name, "tasks");
    let out = migrate(&console.data(), &to);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("already holds state"), "{err}");
    assert!(err.contains("servers: 2 rows"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(count(cluster, &db.name, "tasks"), tasks_there);
    assert_eq!(count(cluster, &db.name, "servers"), "2");
}

#[test]
fn bad_flags_are_named_and_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    // No database in the directory: refused, and nothing is created there.
    let out = migrate(data.path(), &["--to", "postgres://postgres@127.0.0.1:1/x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--data"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no tasknode.db"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);

    std::fs::write(data.path().join("tasknode.db"), "").unwrap();
    let out = migrate(data.path(), &["--to", "mysql://db/x"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--to mysql://db/x"), "{err}");
    assert!(err.contains("postgres://USER@HOST:PORT/DATABASE"), "{err}");

    let out = migrate(
        data.path(),
        &["--to", "postgres://ann:hunter2@127.0.0.1:1/x"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--database-password-file"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(std::fs::read(data.path().join("tasknode.db")).unwrap(), b"");

    let help = Command::new(bin("tasknode-console"))
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for what in ["DATA/task-logs", "--database", "transaction", "checksum"] {
        assert!(help.contains(what), "{what}: {help}");
    }
}
