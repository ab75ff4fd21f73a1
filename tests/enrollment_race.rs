//! Enrollment is one decision: concurrent re-enrollments of one server, round after round,
//! end with exactly one working secret, the one the database holds, before and after a
//! console restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tasknode_tests::{Console, bin, install_binary};

const ROUNDS: usize = 300;
const AT_ONCE: usize = 4;
const HOST: &str = "race-1.example";

/// One enrollment's answer: node id and secret.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    secret: String,
}

fn enroll_body(token: &str) -> Value {
    json!({
        "enrollment_token": token,
        "identity": { "kind": "hostname", "value": HOST },
        "facts": {
            "hostname": HOST, "cpu_cores": 2.0, "memory_bytes": 4_294_967_296u64,
            "os": "test", "arch": "x86_64", "kernel": "6.1", "agent_version": "0.1.0"
        }
    })
}

/// Whether `node`'s secret is taken for a heartbeat (200) or refused (401).
fn heartbeat_works(http: &Client, console: &Console, node: &Node) -> bool {
    let res = http
        .post(console.api(&format!("/nodes/{}/heartbeat", node.id)))
        .bearer_auth(&node.secret)
        .json(&json!({ "agent_version": "0.1.0", "running_tasks": 0, "free_slots": 1 }))
        .send()
        .unwrap();
    match res.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("heartbeat answered {other}: {}", res.text().unwrap()),
    }
}

/// The node id and secret digest the database holds for the server.
fn in_database(data: &Path) -> (String, String) {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("tasknode.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT node_id, secret_sha256 FROM servers WHERE name = ?1",
        [HOST],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Exactly one of `nodes` works, and it is the database's; returns it.
fn the_one_that_works(http: &Client, console: &Console, nodes: &[Node], round: usize) -> Node {
    let working: Vec<&Node> = nodes
        .iter()
        .filter(|n| heartbeat_works(http, console, n))
        .collect();
    assert_eq!(
        working.len(),
        1,
        "round {round}: {} of {} secrets work",
        working.len(),
        nodes.len()
    );
    let (node_id, digest) = in_database(&console.data());
    let winner = working[0].clone();
    assert_eq!(
        node_id, winner.id,
        "round {round}: memory and database disagree"
    );
    assert_eq!(
        digest,
        hex::encode(Sha256::digest(winner.secret.as_bytes()))
    );
    winner
}

#[test]
fn concurrent_re_enrollments_leave_one_secret_in_memory_and_in_the_database() {
    // Install commands need an agent binary to serve; any build of the agent will do.
    let agents = tempfile::tempdir().unwrap();
    install_binary(&bin("tasknode"), &agents.path().join("tasknode-x86_64"));
    let mut console = Console::start(&["--agent-dir", agents.path().to_str().unwrap()]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", HOST]);
    let http = Arc::new(Client::new());
    let admin = console.token();

    let mut all = Vec::new();
    for round in 0..ROUNDS {
        let tokens: Vec<String> = (0..AT_ONCE)
            .map(|_| {
                let res: Value = http
                    .post(console.api("/install-commands"))
                    .bearer_auth(&admin)
                    .json(&json!({ "project": "default", "group": "etl", "user_name": "etl" }))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                let url = res["url"].as_str().unwrap();
                url.rsplit('/').next().unwrap().to_owned()
            })
            .collect();
        // Every enrollment of the round is sent at once, from a thread of its own.
        let barrier = Arc::new(std::sync::Barrier::new(AT_ONCE));
        let url = console.api("/enroll");
        let threads: Vec<_> = tokens
            .into_iter()
            .map(|token| {
                let (http, barrier, url) = (Arc::clone(&http), Arc::clone(&barrier), url.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let res = http.post(&url).json(&enroll_body(&token)).send().unwrap();
                    let status = res.status();
                    let v: Value = res.json().unwrap();
                    assert_eq!(status, 200, "{v}");
                    Node {
                        id: v["node_id"].as_str().unwrap().to_owned(),
                        secret: v["node_secret"].as_str().unwrap().to_owned(),
                    }
                })
            })
            .collect();
        let nodes: Vec<Node> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        the_one_that_works(&http, &console, &nodes, round);
        all.extend(nodes);
    }

    // After a restart, the map is loaded from the database: still exactly one of every secret
    // handed out works, the database's.
    let before = the_one_that_works(&http, &console, &all, ROUNDS);
    console.stop();
    console.restart();
    let after = the_one_that_works(&http, &console, &all, ROUNDS + 1);
    assert_eq!(before.id, after.id);
}
