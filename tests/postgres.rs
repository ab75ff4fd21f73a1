//! The real console binary on PostgreSQL (`serve --database postgres://…`), against a throwaway
//! cluster from Debian's binaries: it serves, the admin commands create what they create in the
//! database (not in a SQLite file), the state outlives a restart, a second console on the same
//! database sees it, and a password on the command line is refused. A task submitted on one
//! console reaches an agent long-polling another at once (LISTEN/NOTIFY), also after the
//! listening connection was killed. The log a VPC server pushed to one console is read whole
//! through another, also once the first is gone. While the database hangs, `/healthz` answers
//! 503 within its 1 s budget, and 200 again once it is back.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use std::time::Duration;
use tasknode_pgtest::Cluster;

use serde_json::Value;
use tasknode_tests::postgres::SharedDatabase;
use tasknode_tests::{Agent, Console, bin, hostname, wait_for};

#[test]
fn a_console_on_postgres_serves_and_keeps_its_state_there() {
    let cluster = Cluster::shared();
    let db = cluster.database();
    let secrets = tempfile::tempdir().unwrap();
    let pw = Cluster::shared()
        .password_file(secrets.path())
        .unwrap()
        .display()
        .to_string();
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
    // The admin token is the database's: the second console writes none of its own, and its
    // host's admin commands use the token the first console wrote.
    assert!(!other.data().join("admin.token").exists());
    let refused = other.cli(&["server", "list"]);
    assert!(!refused.status.success());
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
    let version: i64 = cluster
        .psql(&db.name, "SELECT version FROM schema_version")
        .unwrap()
        .parse()
        .unwrap();
    assert!(version >= 1, "the console migrated the database: {version}");
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
    let pw = Cluster::shared()
        .password_file(data.path())
        .unwrap()
        .display()
        .to_string();
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

/// How long the agent's long poll waits for work (agent/src/tasks/mod.rs).
const AGENT_POLL_WAIT_MS: i64 = 25_000;

/// Runs a task on `on` (the console the agent polls) and waits for it to end, then submits one
/// on `other` and returns both as they ended. The agent's poll that waits when the second is
/// submitted began after the first was handed out, so without a wake-up the second would start
/// no sooner than a full poll wait after the first did.
fn one_here_then_one_there(on: &Console, other: &Console) -> (Value, Value) {
    let first = on.submit_script("etl", "true");
    let first = on.wait_task(first, &["succeeded"], Duration::from_secs(60));
    // The finish of the first woke the poll already; let that look end.
    std::thread::sleep(Duration::from_secs(1));
    let second = other.submit_script("etl", "true");
    let second = other.wait_task(second, &["succeeded"], Duration::from_secs(60));
    (first, second)
}

fn assert_started_before_the_poll_timed_out(first: &Value, second: &Value, log: &str) {
    let gap = second["started_ms"].as_i64().unwrap() - first["started_ms"].as_i64().unwrap();
    assert!(
        gap < AGENT_POLL_WAIT_MS - 5_000,
        "the task submitted on the other console started {gap} ms after the first, as if the agent's poll had waited out its {AGENT_POLL_WAIT_MS} ms; console log:\n{log}"
    );
}

#[test]
fn a_task_submitted_on_one_console_wakes_an_agents_poll_on_another_also_after_its_listener_died() {
    let cluster = Cluster::shared();
    let shared = SharedDatabase::new();
    let db = &shared.db;
    let mut consoles = shared.consoles(2, &["--heartbeat-interval", "1s"]);
    let (b, a) = (consoles.pop().unwrap(), consoles.pop().unwrap());
    let password = a.create_user("etl");
    a.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    a.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    // The agent talks to console B only.
    let mut agent = Agent::new();
    agent.enroll_ok(&b.url, "etl", &password, false);
    agent.allow_tasks();
    agent.run();
    b.wait_status(&hostname(), "available", Duration::from_secs(20));
    let listeners = || {
        cluster
            .psql(
                &db.name,
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'tasknode-console-listen' AND datname = current_database()",
            )
            .unwrap()
    };
    wait_for(Duration::from_secs(20), "both consoles to listen", || {
        (listeners() == "2").then_some(())
    });

    let (first, second) = one_here_then_one_there(&b, &a);
    assert_started_before_the_poll_timed_out(&first, &second, &b.log_text());

    // The listening connections die; the consoles connect again, and a submit on A still
    // reaches the agent on B at once.
    let killed = cluster
        .psql(
            &db.name,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'tasknode-console-listen' AND datname = current_database()",
        )
        .unwrap();
    assert_eq!(killed, "2");
    wait_for(
        Duration::from_secs(20),
        "both consoles to listen again",
        || (listeners() == "2").then_some(()),
    );
    let (first, second) = one_here_then_one_there(&b, &a);
    assert_started_before_the_poll_timed_out(&first, &second, &b.log_text());
    agent.stop();
}

#[test]
fn the_log_a_vpc_server_pushed_to_one_console_is_read_through_another() {
    let shared = SharedDatabase::new();
    let mut consoles = shared.consoles(2, &["--heartbeat-interval", "1s"]);
    let (b, mut a) = (consoles.pop().unwrap(), consoles.pop().unwrap());
    let uuid = "4c4c4544-0042-3510-8051-b4c04f33530a";
    let password = a.create_user("etl");
    a.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    a.cli_ok(&["server", "add", "--group", "batch", "--name", uuid]);
    // The agent talks to console A only, so its log is pushed there.
    let mut agent = Agent::with_uuid(uuid);
    agent.enroll_ok(&a.url, "etl", &password, true);
    agent.allow_tasks();
    agent.run();
    a.wait_status(uuid, "available", Duration::from_secs(20));
    // About 2.7 MB: several pushes of at most 1 MiB each.
    let id = a.submit_script("batch", "seq 1 400000");
    let done = a.wait_task(id, &["succeeded"], Duration::from_secs(60));
    let want: String = (1..=400_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(done["log_bytes"].as_u64().unwrap(), want.len() as u64);
    let read_on_b = || b.cli_ok(&["task", "log", &id.to_string()]);
    wait_for(
        Duration::from_secs(20),
        "the whole log through console B",
        || (read_on_b() == want).then_some(()),
    );
    let chunks = shared.psql(&format!(
        "SELECT count(*) FROM task_log_chunks WHERE task_id = {id}"
    ));
    assert!(chunks.parse::<u32>().unwrap() >= 3, "{chunks} chunks");
    // Console A is gone; B still shows the log and its size.
    agent.stop();
    a.kill();
    assert_eq!(read_on_b(), want);
    let shown: Value =
        serde_json::from_str(&b.cli_ok(&["task", "show", &id.to_string(), "--json"])).unwrap();
    assert_eq!(shown["log_bytes"].as_u64().unwrap(), want.len() as u64);
}

/// Sends `signal` to every backend serving `db` but the one asking.
fn signal_backends(db: &SharedDatabase, signal: &str) -> Vec<String> {
    let pids: Vec<String> = db
        .psql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !pids.is_empty() {
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .unwrap();
        assert!(st.success(), "kill -{signal} {pids:?}");
    }
    pids
}

#[test]
fn healthz_answers_503_while_the_database_hangs_and_200_once_it_is_back() {
    let db = SharedDatabase::new();
    let console = db.consoles(1, &[]).remove(0);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let healthz = || {
        let r = http.get(format!("{}/healthz", console.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(healthz(), (200, "ok\n".to_owned()));

    // Every connection the console holds to its database stops answering, as when the
    // database host freezes or the network drops its packets.
    struct Resume<'a>(&'a SharedDatabase);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            signal_backends(self.0, "CONT");
        }
    }
    let stopped = signal_backends(&db, "STOP");
    assert!(!stopped.is_empty(), "the console holds no connection");
    let resume = Resume(&db);
    // Answered while the database is still stopped: the check gives the store 1 s, it does
    // not wait for the database to come back.
    assert_eq!(healthz(), (503, "unavailable\n".to_owned()));

    drop(resume);
    wait_for(
        Duration::from_secs(20),
        "/healthz to answer 200 again",
        || (healthz().0 == 200).then_some(()),
    );
}
