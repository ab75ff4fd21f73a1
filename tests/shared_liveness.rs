//! Two real consoles on one throwaway PostgreSQL, with real agents: an agent enrolled through
//! one console heartbeats to the other at once and both list it the same; enrolled again
//! through the first, its old credentials are refused by the second within the refresh bound;
//! and the engine lease (rollouts, the stopped-server sweep) moves to the surviving console
//! when its holder is killed with SIGKILL, and a rollout in its batches goes on there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use tasknode_tests::postgres::SharedDatabase;
use tasknode_tests::{
    Agent, Console, SHARED_LIVENESS, build_release, dist_json, hostname, install_binary,
    static_agent, update_agent, wait_for,
};

/// Two consoles on `db`, heartbeats a second apart, flushed every second, with `extra` flags.
fn two_consoles(db: &SharedDatabase, extra: &[&str]) -> (Console, Console) {
    let args: Vec<&str> = SHARED_LIVENESS.iter().chain(extra).copied().collect();
    let mut consoles = db.consoles(2, &args);
    let b = consoles.pop().unwrap();
    (consoles.pop().unwrap(), b)
}

/// Points the agent's heartbeats at `url` alone, as an operator editing its config would.
fn talk_to(agent: &Agent, url: &str) {
    let text = std::fs::read_to_string(agent.config()).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    doc.insert("console_url".into(), url.into());
    doc.remove("more_console_urls");
    std::fs::write(agent.config(), toml::to_string(&doc).unwrap()).unwrap();
}

fn statuses(agent: &Agent) -> Vec<String> {
    agent
        .heartbeat_lines()
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("status=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_agent_enrolled_through_one_console_is_known_to_the_other() {
    let db = SharedDatabase::new();
    let (a, b) = two_consoles(&db, &[]);
    let host = hostname();
    let password = a.create_user("etl");
    a.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    a.cli_ok(&["server", "add", "--group", "etl", "--name", &host]);

    let mut agent = Agent::new();
    agent.enroll_ok(&a.url, "etl", &password, false);
    talk_to(&agent, &b.url);
    agent.run();
    // B never saw the enrollment; its first answer is already 200.
    wait_for(Duration::from_secs(10), "a first heartbeat", || {
        statuses(&agent).first().cloned()
    });
    assert_eq!(
        statuses(&agent)[0],
        "status=200",
        "{:?}",
        agent.heartbeat_lines()
    );
    b.wait_status(&host, "available", Duration::from_secs(10));
    // A hears of it only through the store, and says the same.
    a.wait_status(&host, "available", Duration::from_secs(10));
    // For a while, both consoles agree at every look (never degraded or stopped on A).
    for _ in 0..8 {
        let (sa, sb) = (a.server(&host), b.server(&host));
        assert_eq!(sa["status"], "available", "{sa:#}");
        assert_eq!(sb["status"], "available", "{sb:#}");
        assert_eq!(sa["version"], sb["version"]);
        std::thread::sleep(Duration::from_millis(500));
    }

    // Enrolled again through A: B refuses the old secret within the refresh bound (one
    // refresh of a second, plus a heartbeat interval to notice).
    let again = Agent::new();
    let before = statuses(&agent).len();
    let enrolled = Instant::now();
    again.enroll_ok(&a.url, "etl", &password, false);
    wait_for(
        Duration::from_secs(10),
        "the old secret refused by B",
        || {
            statuses(&agent)[before..]
                .iter()
                .any(|s| s == "status=401")
                .then_some(())
        },
    );
    let took = enrolled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "old secret accepted for {took:?}"
    );
    agent.kill();

    // The new agent heartbeats to B at once.
    let mut again = again;
    talk_to(&again, &b.url);
    again.run();
    wait_for(
        Duration::from_secs(10),
        "the new agent's first heartbeat",
        || statuses(&again).first().cloned(),
    );
    assert_eq!(
        statuses(&again)[0],
        "status=200",
        "{:?}",
        again.heartbeat_lines()
    );
    a.wait_status(&host, "available", Duration::from_secs(10));
}

#[test]
fn the_engine_lease_moves_to_the_other_console_when_its_holder_is_killed() {
    let db = SharedDatabase::new();
    let (a, b) = two_consoles(&db, &[]);
    let first = wait_for(Duration::from_secs(10), "a lease holder", || {
        db.engine_holder_pid()
    });
    let (mut holder, other) = if first == a.pid() { (a, b) } else { (b, a) };
    assert_eq!(first, holder.pid(), "the holder is one of the two consoles");
    // Held, not passed back and forth.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(db.engine_holder_pid(), Some(first));

    holder.kill();
    let killed = Instant::now();
    let next = wait_for(Duration::from_secs(15), "the lease taken over", || {
        db.engine_holder_pid().filter(|&p| p != first)
    });
    assert_eq!(next, other.pid());
    // Not before the killed holder's lease ran out (5 s after its last renewal, which came at
    // most a second before the kill), and soon after.
    let took = killed.elapsed();
    assert!(took >= Duration::from_secs(3), "taken over after {took:?}");
    assert!(took < Duration::from_secs(10), "taken over after {took:?}");
    assert!(other.log_text().contains("took the engine lease"));
}

/// The rollout of `group` as `release list --json` shows it.
fn rollout_of(console: &Console, group: &str) -> Value {
    let list: Value =
        serde_json::from_str(&console.cli_ok(&["release", "list", "--json"])).unwrap();
    list["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == group)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_rollout_goes_on_after_the_console_running_it_is_killed() {
    // Releases 0.1.0 (what the agents run) and 0.2.0, signed with fresh keys.
    let releases = tempfile::tempdir().unwrap();
    let p = |s: &str| releases.path().join(s);
    let keys = dist_json(&["keygen", "--out", p("keys").to_str().unwrap()]);
    let key_hex = keys["manifest_public_key"].as_str().unwrap().to_owned();
    install_binary(&static_agent(), &p("tasknode-0.1.0"));
    build_release(
        &p("dist"),
        &p("keys"),
        "0.1.0",
        &p("tasknode-0.1.0"),
        "none",
    );
    build_release(&p("dist"), &p("keys"), "0.2.0", &update_agent(), "none");

    let db = SharedDatabase::new();
    let dist = p("dist");
    let (a, b) = two_consoles(&db, &["--dist", dist.to_str().unwrap()]);
    let first = wait_for(Duration::from_secs(10), "a lease holder", || {
        db.engine_holder_pid()
    });
    let (mut holder, other) = if first == a.pid() { (a, b) } else { (b, a) };

    // Three agents, all talking to the console that does not run the engine.
    let password = other.create_user("etl");
    other.cli_ok(&["group", "create", "fleet", "--network", "vpc"]);
    let mut agents = Vec::new();
    for i in 1..=3 {
        let uuid = format!("4c4c4544-0000-4000-8000-00000000001{i}");
        other.cli_ok(&["server", "add", "--group", "fleet", "--name", &uuid]);
        let mut agent = Agent::with_uuid(&uuid).with_own_binary(&static_agent());
        agent.enroll_ok(&other.url, "etl", &password, true);
        agent.set_config(
            "update",
            "trusted_keys",
            toml::Value::Array(vec![key_hex.clone().into()]),
        );
        agent.set_config("update", "health_heartbeats", 2.into());
        agent.run();
        other.wait_status(&uuid, "available", Duration::from_secs(30));
        agents.push(agent);
    }
    other.cli_ok(&[
        "release",
        "publish",
        dist.join("releases/0.2.0/manifest.stable.json")
            .to_str()
            .unwrap(),
    ]);
    other.cli_ok(&[
        "release",
        "rollout",
        "--group",
        "fleet",
        "--version",
        "0.2.0",
        "--batch",
        "1",
        "--max-failures",
        "0",
    ]);
    // The holder admits the first batch; then it dies.
    let started = wait_for(Duration::from_secs(30), "the first batch", || {
        let r = rollout_of(&other, "fleet");
        (r["admitted"].as_u64() >= Some(1)).then_some(r)
    });
    holder.kill();
    assert!(started["admitted"].as_u64() < Some(3), "{started:#}");

    let done = wait_for(Duration::from_secs(120), "the rollout to finish", || {
        let r = rollout_of(&other, "fleet");
        (r["state"] == "done" && r["updated"] == 3).then_some(r)
    });
    assert_eq!(done["admitted"], 3, "{done:#}");
    assert!(other.log_text().contains("took the engine lease"));
    for agent in &mut agents {
        assert!(agent.is_running());
    }
}
