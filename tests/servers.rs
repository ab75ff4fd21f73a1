//! Removing and moving servers end to end, with a real console and real agents on loopback:
//! a busy server's removal is refused, drained (it takes no new tasks and goes when its task
//! finishes) or forced (its running task is cancelled and killed); the removed agent logs once
//! how to enroll again and stops knocking, while its node secret opens nothing; a moved
//! server runs its new group's tasks; a group that had servers is deleted once they are gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tasknode_tests::{Agent, Console, stderr, wait_for};

const U1: &str = "4c4c4544-0042-3510-8051-b4c04f335311";
const U2: &str = "4c4c4544-0042-3510-8051-b4c04f335312";
const REMOVED_LINE: &str = "this server was removed from the console";

/// A console (1 s heartbeats) with vpc group `batch` holding `uuids` (max concurrency 2), each
/// with its agent enrolled, allowed to run tasks, running and available.
fn console_with(uuids: &[&str]) -> (Console, Vec<Agent>) {
    let console = Console::start(&["--heartbeat-interval", "1s"]);
    let password = console.create_user("ops");
    console.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    let mut agents = Vec::new();
    for uuid in uuids {
        console.cli_ok(&[
            "server",
            "add",
            "--group",
            "batch",
            "--name",
            uuid,
            "--max-concurrency",
            "2",
        ]);
        let mut agent = Agent::with_uuid(uuid);
        agent.enroll_ok(&console.url, "ops", &password, true);
        agent.allow_tasks();
        agent.run();
        agents.push(agent);
    }
    for uuid in uuids {
        console.wait_status(uuid, "available", Duration::from_secs(20));
    }
    (console, agents)
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap()
}

/// Waits until the agent logged its removal, and checks it did so once.
fn wait_removed_logged(agent: &Agent) {
    wait_for(
        Duration::from_secs(20),
        "the agent to log its removal",
        || agent.agent_log().contains(REMOVED_LINE).then_some(()),
    );
    let log = agent.agent_log();
    assert_eq!(log.matches(REMOVED_LINE).count(), 1, "{log}");
    assert!(log.contains("install command"), "{log}");
}

/// The agent stays up, idle, and sends nothing more: its heartbeat.log does not grow over
/// several heartbeat intervals.
fn assert_stopped_knocking(agent: &mut Agent) {
    let before = agent.heartbeat_lines();
    assert!(
        before.last().is_some_and(|l| l.contains("410")),
        "the last heartbeat is the console's 410: {before:?}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(agent.heartbeat_lines(), before);
    assert!(
        agent.is_running(),
        "the removed agent idles rather than exits"
    );
}

/// A heartbeat of node `node` with `secret`, as an agent sends it.
fn beat(console: &Console, node: &str, secret: &str) -> reqwest::blocking::Response {
    console
        .http()
        .post(console.api(&format!("/nodes/{node}/heartbeat")))
        .bearer_auth(secret)
        .json(&json!({"agent_version": "0.1.0", "running_tasks": 0, "free_slots": 2}))
        .send()
        .unwrap()
}

#[test]
fn a_busy_server_is_refused_then_drained_and_its_agent_stops_knocking() {
    let (mut console, mut agents) = console_with(&[U1]);
    let running = console.submit_script("batch", "sleep 4\necho drained\n");
    console.wait_task(running, &["running"], Duration::from_secs(15));

    // Refused while it runs a task, naming both ways out; nothing changes.
    let out = console.cli(&["server", "remove", "--name", U1]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("holds 1 task") && err.contains("drain") && err.contains("force"),
        "{err}"
    );
    assert_eq!(console.server(U1)["status"], "available");

    // Drain without waiting: it keeps its task, takes no new one.
    let r = json_of(&console.cli_ok(&[
        "server",
        "remove",
        "--name",
        U1,
        "--drain",
        "--no-wait",
        "--json",
    ]));
    assert_eq!(
        (r["state"].clone(), r["holding"].clone()),
        (json!("draining"), json!([running]))
    );
    assert!(
        console.server(U1)["reason"]
            .as_str()
            .unwrap()
            .starts_with("draining"),
    );
    let queued = console.submit_script("batch", "echo never here\n");

    // Drain and wait: it is removed once its task finished; the queued one stays queued for
    // the group.
    let out = console.cli_ok(&["server", "remove", "--name", U1, "--drain"]);
    assert!(
        out.contains(&format!("server {U1} was removed from group batch")),
        "{out}"
    );
    // Whoever completed the drain (this command or the agent's last task report), the
    // console's log says the group's queued task has no server left.
    let log = console.log_text();
    assert!(
        log.contains("server removed") && log.contains("stranded=1"),
        "{log}"
    );
    let t = console.task(running);
    assert_eq!(
        (t["state"].clone(), t["server"].clone()),
        (json!("succeeded"), json!(U1))
    );
    assert_eq!(console.task(queued)["state"], "queued");
    assert!(console.servers().is_empty());

    // Its agent is told, logs once how to enroll again, and stops knocking.
    wait_removed_logged(&agents[0]);
    assert_stopped_knocking(&mut agents[0]);

    // Its node secret opens nothing: the console says "removed" to that secret only.
    let node = agents[0].config_value("node.id");
    let secret = agents[0].config_value("node.secret");
    let res = beat(&console, &node, &secret);
    assert_eq!(res.status().as_u16(), 410);
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "server_removed");
    assert_eq!(
        beat(&console, &node, "not-its-secret").status().as_u16(),
        401
    );

    // A console restarted still knows it (from the store).
    console.stop();
    console.restart();
    assert_eq!(beat(&console, &node, &secret).status().as_u16(), 410);

    // Stopped, the idle agent exits cleanly.
    assert!(agents[0].stop());

    // Enrolled again as its log says (added to a group, then enrolled anew): a new node,
    // which takes the task that waited in the group's queue.
    console.cli_ok(&["server", "add", "--group", "batch", "--name", U1]);
    let password = console.create_user("ops2");
    agents[0].enroll_ok(&console.url, "ops2", &password, true);
    assert_ne!(agents[0].config_value("node.id"), node);
    agents[0].run();
    let t = console.wait_task(queued, &["succeeded"], Duration::from_secs(20));
    assert_eq!(t["server"], U1);
    assert_eq!(beat(&console, &node, &secret).status().as_u16(), 410);

    // The group that had servers is deleted once they are gone.
    console.cli_ok(&["server", "remove", "--name", U1]);
    let out = console.cli_ok(&["group", "delete", "--group", "batch"]);
    assert!(out.contains("deleted resource group batch"), "{out}");
}

#[test]
fn a_moved_server_runs_its_new_groups_tasks_and_a_forced_removal_kills_the_running_one() {
    let (console, mut agents) = console_with(&[U1, U2]);
    console.cli_ok(&["group", "create", "nightly", "--network", "vpc"]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);

    // Moved within its project and network type: same enrollment, new group's tasks.
    let moved =
        json_of(&console.cli_ok(&["server", "move", "--name", U2, "--to", "nightly", "--json"]));
    assert_eq!(moved["group"], "nightly");
    assert_eq!(moved["status"], "available");
    let id = console.submit_script("nightly", "echo moved\n");
    // Well within the 25 s its old long poll would have waited.
    let t = console.wait_task(id, &["succeeded"], Duration::from_secs(10));
    assert_eq!(t["server"], U2);
    assert_eq!(console.cli_ok(&["task", "log", &id.to_string()]), "moved\n");

    // Refused: another network type (a vpc server is known by its UUID), a group of another
    // project, a server of another project; each says why and changes nothing.
    console.cli_ok(&["project", "create", "finance"]);
    console.cli_ok(&[
        "group",
        "create",
        "ledger",
        "--network",
        "vpc",
        "--project",
        "finance",
    ]);
    let refusals: [(&[&str], &str); 3] = [
        (&["server", "move", "--name", U2, "--to", "etl"], "DMI UUID"),
        (
            &["server", "move", "--name", U2, "--to", "ledger"],
            "no resource group named \"ledger\"",
        ),
        (
            &[
                "server",
                "remove",
                "--name",
                U2,
                "--project",
                "finance",
                "--force",
            ],
            &format!("there is no server \"{U2}\" in project \"finance\""),
        ),
    ];
    for (args, expect) in refusals {
        let out = console.cli(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(console.server(U2)["group"], "nightly");

    // An enrolled agent's secret is not the admin's: it removes nothing.
    let secret = agents[1].config_value("node.secret");
    let res = console
        .http()
        .post(console.api("/servers/remove"))
        .bearer_auth(&secret)
        .json(&json!({"project": "default", "name": U1, "mode": "force"}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(console.server(U1)["group"], "batch");

    // Forced: its running task is cancelled with a reason, and its agent kills it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let pid_file = dir.path().join("pid");
    let id = console.submit_script(
        "batch",
        &format!("echo $$ > {}\nexec sleep 60\n", pid_file.display()),
    );
    console.wait_task(id, &["running"], Duration::from_secs(15));
    let pid: i32 = wait_for(Duration::from_secs(10), "the task's pid", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let out = console.cli_ok(&["server", "remove", "--name", U1, "--force"]);
    assert!(
        out.contains(&format!("running task {id} cancelled")),
        "{out}"
    );
    let t = console.task(id);
    assert_eq!(t["state"], "cancelled");
    assert!(t["reason"].as_str().unwrap().contains("with force"), "{t}");
    wait_removed_logged(&agents[0]);
    wait_for(
        Duration::from_secs(20),
        "the cancelled task's process to end",
        || (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
    );
    assert_stopped_knocking(&mut agents[0]);

    // batch had servers; it is empty now and is deleted. The moved server runs on.
    let out = console.cli_ok(&["group", "delete", "--group", "batch"]);
    assert!(out.contains("deleted resource group batch"), "{out}");
    assert_eq!(console.server(U2)["status"], "available");

    // The audit log has the move, the removal and the group's deletion, newest first.
    let audit = json_of(&console.cli_ok(&["audit", "--json"]));
    let server_changes: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["object"].as_str().unwrap()))
        .filter(|(a, _)| a.starts_with("server.") && *a != "server.add" || *a == "group.delete")
        .collect();
    assert_eq!(
        server_changes,
        [
            ("group.delete", "group batch"),
            (
                "server.remove",
                format!("server {U1} in group batch (force)").as_str()
            ),
            (
                "server.move",
                format!("server {U2} to group nightly").as_str()
            ),
        ]
    );
}

/// Two consoles, a and b, on one throwaway PostgreSQL (kept alive by the first value), and
/// server U1 of group batch enrolled through b, whose agent runs tasks and talks to b.
fn agent_on_b_of_two_consoles() -> (
    tasknode_tests::postgres::SharedDatabase,
    Console,
    Console,
    Agent,
) {
    let db = tasknode_tests::postgres::SharedDatabase::new();
    let mut consoles = db.consoles(
        2,
        &["--heartbeat-interval", "1s", "--persist-interval", "1s"],
    );
    let b = consoles.pop().unwrap();
    let a = consoles.pop().unwrap();
    let password = a.create_user("ops");
    a.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    a.cli_ok(&["server", "add", "--group", "batch", "--name", U1]);
    let mut agent = Agent::with_uuid(U1);
    agent.enroll_ok(&b.url, "ops", &password, true);
    agent.allow_tasks();
    agent.run();
    b.wait_status(U1, "available", Duration::from_secs(20));
    (db, a, b, agent)
}

/// Two consoles on one throwaway PostgreSQL: a server removed through one is answered
/// "removed" by the other, which its agent talks to, within the liveness refresh.
#[test]
fn a_server_removed_through_one_console_is_refused_by_the_other() {
    let (_db, a, b, mut agent) = agent_on_b_of_two_consoles();
    a.wait_status(U1, "available", Duration::from_secs(20));

    let out = a.cli_ok(&["server", "remove", "--name", U1]);
    assert!(out.contains("was removed from group batch"), "{out}");
    wait_removed_logged(&agent);
    assert_stopped_knocking(&mut agent);
    let node = agent.config_value("node.id");
    let secret = agent.config_value("node.secret");
    for console in [&a, &b] {
        assert_eq!(beat(console, &node, &secret).status().as_u16(), 410);
    }
}

#[test]
fn a_server_moved_through_one_console_takes_its_new_groups_work_through_the_other() {
    let (_db, a, _b, _agent) = agent_on_b_of_two_consoles();
    a.cli_ok(&["group", "create", "nightly", "--network", "vpc"]);
    // Its poll waits on console b for the old group's work.
    let first = a.submit_script("batch", "true\n");
    a.wait_task(first, &["succeeded"], Duration::from_secs(20));

    // Moved through a, it takes the new group's task through b well within the 25 s its old
    // poll on b would have waited: a's move ends that poll on b.
    a.cli_ok(&["server", "move", "--name", U1, "--to", "nightly"]);
    let id = a.submit_script("nightly", "echo moved\n");
    let t = a.wait_task(id, &["succeeded"], Duration::from_secs(10));
    assert_eq!(t["server"], U1);
}
