//! Enrollment end to end: a server is added to a group, the agent enrolls with a user's access
//! key, runs, and the console shows it available; and every way enrollment is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tasknode_tests::{Agent, Console, hostname, mode_of, stderr, wait_for};

const UUID: &str = "4C4C4544-0042-3510-8051-B4C04F333232";

fn fast_console() -> Console {
    Console::start(&["--heartbeat-interval", "1s"])
}

#[test]
fn enrolls_by_hostname_and_becomes_available() {
    let console = fast_console();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let host = hostname();
    let added = console.cli_ok(&["server", "add", "--group", "etl", "--name", &host]);
    assert!(added.contains("pending"), "{added}");
    assert_eq!(console.server(&host)["status"], "pending");

    let mut agent = Agent::new();
    agent.enroll_ok(&console.url, "etl", &password, false);

    // The config holds the node credentials, privately, and never the password.
    let config = std::fs::read_to_string(agent.config()).unwrap();
    assert_eq!(mode_of(&agent.config()), 0o600);
    assert!(!config.contains(&password), "password stored in the config");
    assert_eq!(agent.config_value("node.server_name"), host);
    let secret = agent.config_value("node.secret");
    assert!(secret.len() >= 32);

    agent.run();
    let listed = console.wait_status(&host, "available", Duration::from_secs(15));
    for field in [
        "name",
        "group",
        "network",
        "status",
        "reason",
        "last_heartbeat",
        "version",
        "max_concurrency",
    ] {
        assert!(
            listed.get(field).is_some(),
            "server list --json lacks {field}: {listed}"
        );
    }
    assert_eq!(listed["group"], "etl");
    assert_eq!(listed["network"], "classic");
    assert_eq!(listed["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(listed["max_concurrency_source"], "computed");
    let cores = listed["cpu_cores"].as_f64().unwrap();
    let memory = listed["memory_bytes"].as_u64().unwrap();
    assert_eq!(
        listed["max_concurrency"].as_u64().unwrap(),
        u64::from(tasknode_protocol::concurrency::max_concurrency(
            cores, memory
        ))
    );

    // The secret is not on the agent's command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", agent.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&secret));

    // heartbeat.log: one line per heartbeat with time, status, latency and error.
    let lines = wait_for(Duration::from_secs(10), "two heartbeats", || {
        let l = agent.heartbeat_lines();
        (l.len() >= 2).then_some(l)
    });
    for line in &lines {
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert!(rest.starts_with("status=200 latency_ms="), "{line}");
        assert!(
            rest.contains(" offset_ms=") && rest.ends_with("error=-"),
            "{line}"
        );
    }
    assert!(agent.agent_log().contains("agent started"));

    let (status, healthy) = agent.status();
    assert!(healthy, "{status:#}");
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["console_reachable"], true);
    assert_eq!(status["clock_ok"], true);
    assert_eq!(status["last_heartbeat"]["status"], 200);
    assert!(status["clock_offset_ms"].as_i64().unwrap().abs() < 1_000);
}

#[test]
fn enrolls_by_dmi_uuid_in_a_vpc_group() {
    let console = fast_console();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc-etl", "--network", "vpc"]);
    // Added in lower case; the firmware reports upper case: the same server.
    let uuid = UUID.to_ascii_lowercase();
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "vpc-etl",
        "--name",
        &uuid,
        "--max-concurrency",
        "3",
    ]);
    let mut agent = Agent::with_uuid(UUID);
    agent.enroll_ok(&console.url, "etl", &password, true);
    agent.run();
    let listed = console.wait_status(&uuid, "available", Duration::from_secs(15));
    assert_eq!(listed["network"], "vpc");
    assert_eq!(listed["max_concurrency"], 3);
    assert_eq!(listed["max_concurrency_source"], "configured");
}

#[test]
fn wrong_password_is_refused_and_nothing_is_written() {
    let console = fast_console();
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    let agent = Agent::new();
    let out = agent.enroll(&console.url, "etl", "not-the-password", false);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("user name or password is wrong"),
        "{}",
        stderr(&out)
    );
    assert!(!agent.config().exists());
    // An unknown user gets the same answer.
    let out = agent.enroll(&console.url, "nobody", "not-the-password", false);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("user name or password is wrong"));
    assert_eq!(console.server(&hostname())["status"], "pending");
}

#[test]
fn unknown_server_says_what_to_add_where() {
    let console = fast_console();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let agent = Agent::new();
    let out = agent.enroll(&console.url, "etl", &password, false);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no server with hostname {}", hostname())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "server add --project default --group GROUP --name {}",
            hostname()
        )),
        "{err}"
    );
    assert!(!agent.config().exists());
}

#[test]
fn a_server_of_another_project_is_not_found() {
    let console = fast_console();
    console.cli_ok(&["project", "create", "finance"]);
    let password = console.create_user("etl");
    console.cli_ok(&[
        "group",
        "create",
        "fin",
        "--network",
        "classic",
        "--project",
        "finance",
    ]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "fin",
        "--project",
        "finance",
        "--name",
        &hostname(),
    ]);
    let out = Agent::new().enroll(&console.url, "etl", &password, false);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("project default"), "{}", stderr(&out));
}

#[test]
fn identity_kind_must_match_the_groups_network() {
    let console = fast_console();
    let password = console.create_user("etl");
    // A UUID is also a well-formed host name, so it can sit in a classic group by mistake.
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "etl",
        "--name",
        &UUID.to_ascii_lowercase(),
    ]);
    let out = Agent::with_uuid(UUID).enroll(&console.url, "etl", &password, true);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("classic group etl") && err.contains("--enable-uuid false"),
        "{err}"
    );
}

#[test]
fn placeholder_and_malformed_uuids_are_refused_before_asking_the_console() {
    // Port 9 on loopback: nothing listens, so any request would end in "unreachable" (4).
    for (uuid, says) in [
        ("00000000-0000-0000-0000-000000000000", "placeholder"),
        ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "placeholder"),
        ("Not Settable", "not a UUID"),
        ("4c4c4544-0042-3510-8051", "not a UUID"),
    ] {
        let agent = Agent::with_uuid(uuid);
        let out = agent.enroll("http://127.0.0.1:9", "etl", "some-password", true);
        assert_eq!(out.status.code(), Some(1), "{uuid}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{uuid}: {}", stderr(&out));
        assert!(!agent.config().exists());
    }
}

#[test]
fn passwords_are_never_taken_from_the_command_line() {
    let agent = Agent::new();
    let out = std::process::Command::new(tasknode_tests::bin("tasknode"))
        .args([
            "enroll",
            "--console",
            "http://127.0.0.1:9",
            "--user-name",
            "etl",
        ])
        .args(["--password", "hunter2hunter2", "--enable-uuid", "false"])
        .env("TASKNODE_CONFIG", agent.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("hunter2"),
        "the refusal echoes the password"
    );

    let out = std::process::Command::new(tasknode_tests::bin("tasknode"))
        .args([
            "enroll",
            "--console",
            "http://127.0.0.1:9",
            "--user-name",
            "etl",
            "--enable-uuid",
            "false",
        ])
        .env("TASKNODE_CONFIG", agent.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--password-file"), "{}", stderr(&out));
    assert!(!agent.config().exists());
}

#[test]
fn console_unreachable_is_exit_four() {
    let agent = Agent::new();
    let out = agent.enroll("http://127.0.0.1:9", "etl", "some-password", false);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the console"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_of_an_agent_that_never_enrolled() {
    let agent = Agent::new();
    let (report, healthy) = agent.status();
    assert!(!healthy);
    assert_eq!(report["enrolled"], false);
    assert!(
        report["config_error"]
            .as_str()
            .unwrap()
            .contains("tasknode enroll")
    );
}

#[test]
fn enrolling_again_retires_the_old_secret() {
    let console = fast_console();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    let agent = Agent::new();
    agent.enroll_ok(&console.url, "etl", &password, false);
    let (old_id, old_secret) = (
        agent.config_value("node.id"),
        agent.config_value("node.secret"),
    );
    agent.enroll_ok(&console.url, "etl", &password, false);
    let (new_id, new_secret) = (
        agent.config_value("node.id"),
        agent.config_value("node.secret"),
    );
    assert_ne!(old_id, new_id);

    let http = reqwest::blocking::Client::new();
    let beat = |id: &str, secret: &str| {
        http.post(console.api(&format!("/nodes/{id}/heartbeat")))
            .bearer_auth(secret)
            .json(
                &serde_json::json!({"agent_version": "0.1.0", "running_tasks": 0, "free_slots": 1}),
            )
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(beat(&old_id, &old_secret), 401);
    assert_eq!(beat(&new_id, &new_secret), 200);
    assert_eq!(
        console.servers().len(),
        1,
        "enrolling again must not duplicate the server"
    );
}

#[test]
fn bad_console_urls_are_refused_naming_the_flag() {
    let agent = Agent::new();
    for bad in [
        "ftp://127.0.0.1:9",
        "127.0.0.1:9",
        "http://u:p@127.0.0.1:9",
        "http://127.0.0.1:9/?$(id)",
    ] {
        let out = agent.enroll(bad, "etl", "some-password", false);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--console") && err.contains("is not a console URL"),
            "{bad}: {err}"
        );
        assert!(!agent.config().exists());
    }
    let out = std::process::Command::new(tasknode_tests::bin("tasknode-console"))
        .args(["server", "list", "--console", "ftp://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--console"), "{}", stderr(&out));
}
