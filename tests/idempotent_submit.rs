//! A submit whose answer is lost makes one task, not two. A real console on loopback behind a
//! TCP relay that, for the first connection, passes the request on and drops the console's
//! answer (what a client sees when the console dies right after the commit): `task submit`
//! sends it again under its idempotency key and gets the task the first one made. The API's
//! 201/200 answers, a key reused for another script, and bad keys, over HTTP and the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use serde_json::{Value, json};
use tasknode_tests::{Console, admin_cli, stderr};

const UUID: &str = "4c4c4544-0042-3510-8051-b4c04f33a001";

/// A console with a vpc group `etl` holding one (never enrolled) server: enough to submit to.
fn console() -> Console {
    let console = Console::start(&[]);
    console.cli_ok(&["group", "create", "etl", "--network", "vpc"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", UUID]);
    console
}

/// `task submit --group etl --script SCRIPT --json [--idempotency-key KEY]` at `url`.
fn submit(url: &str, console: &Console, script: &Path, key: Option<&str>) -> Output {
    let mut args = vec!["task", "submit", "--group", "etl", "--json", "--script"];
    args.push(script.to_str().unwrap());
    args.extend(key.iter().flat_map(|k| ["--idempotency-key", k]));
    admin_cli(url, &console.data(), &args)
}

fn tasks(console: &Console) -> Vec<Value> {
    serde_json::from_str(&console.cli_ok(&["task", "list", "--json"])).unwrap()
}

/// A relay on a loopback port to `upstream`. The first connection's request goes through, and
/// the console's answer is read and thrown away: the client's connection is closed once the
/// answer has begun. Later connections are relayed both ways. Counts connections.
struct LossyRelay {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl LossyRelay {
    fn start(upstream: u16) -> LossyRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&connections);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                thread::spawn(move || relay(client, upstream, first));
            }
        });
        LossyRelay { url, connections }
    }
}

fn relay(client: TcpStream, upstream: u16, lose_answer: bool) {
    let console = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
    let (mut from_client, mut to_console) =
        (client.try_clone().unwrap(), console.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_console);
        let _ = to_console.shutdown(Shutdown::Write);
    });
    let (mut from_console, mut to_client) = (console, client);
    if lose_answer {
        // The console answered: the task is committed. The client hears nothing of it.
        let mut first = [0u8; 1];
        let _ = from_console.read(&mut first);
        let _ = to_client.shutdown(Shutdown::Both);
        return;
    }
    let _ = std::io::copy(&mut from_console, &mut to_client);
    let _ = to_client.flush();
    let _ = to_client.shutdown(Shutdown::Both);
}

#[test]
fn a_submit_whose_answer_was_lost_is_sent_again_and_makes_one_task() {
    let console = console();
    let relay = LossyRelay::start(console.port);
    let script = console.dir.path().join("job.sh");
    std::fs::write(&script, "echo once\n").unwrap();

    // No --idempotency-key: the command makes one of its own and keeps it for its retries.
    let out = submit(&relay.url, &console, &script, None);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("sending the submit again") && said.contains("same idempotency key"),
        "{said}"
    );
    assert_eq!(relay.connections.load(Ordering::SeqCst), 2);
    let answered: Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = tasks(&console);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["id"], answered["id"]);
    assert_eq!(answered["state"], "queued");
}

#[test]
fn a_key_answers_the_task_it_made_and_refuses_another_script() {
    let console = console();
    let http = console.http();
    let post = |body: Value| {
        let res = http
            .post(console.api("/tasks"))
            .bearer_auth(console.token())
            .json(&body)
            .send()
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().unwrap())
    };
    let body =
        json!({"project": "default", "group": "etl", "script": "true", "idempotency_key": "run-7"});

    // 201 for the submit that made the task, 200 and the same task for each one after.
    let (status, first) = post(body.clone());
    assert_eq!(status, 201, "{first:#}");
    for _ in 0..2 {
        let (status, again) = post(body.clone());
        assert_eq!(status, 200, "{again:#}");
        assert_eq!(again["id"], first["id"]);
    }
    // The CLI with the same key: the same task.
    let script = console.dir.path().join("true.sh");
    std::fs::write(&script, "true").unwrap();
    let out = submit(&console.url, &console, &script, Some("run-7"));
    assert!(out.status.success(), "{}", stderr(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["id"], first["id"]);
    assert_eq!(tasks(&console).len(), 1);

    // The key with another script or timeout: refused, naming the field and the task.
    let id = first["id"].as_i64().unwrap();
    for other in [
        json!({"project": "default", "group": "etl", "script": "false", "idempotency_key": "run-7"}),
        json!({"project": "default", "group": "etl", "script": "true", "timeout_secs": 5, "idempotency_key": "run-7"}),
    ] {
        let (status, refused) = post(other);
        assert_eq!(status, 409, "{refused:#}");
        assert_eq!(refused["error"]["field"], "idempotency_key", "{refused:#}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("task {id}")), "{message}");
    }
    let other = console.dir.path().join("false.sh");
    std::fs::write(&other, "false").unwrap();
    let out = submit(&console.url, &console, &other, Some("run-7"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("idempotency_key"), "{}", stderr(&out));

    // Bad keys are refused before anything is stored.
    for bad in ["", "has space", "a/b", &"k".repeat(129)] {
        let (status, refused) = post(
            json!({"project": "default", "group": "etl", "script": "true", "idempotency_key": bad}),
        );
        assert_eq!(status, 400, "{bad:?}: {refused:#}");
        assert_eq!(refused["error"]["field"], "idempotency_key");
        let out = submit(&console.url, &console, &script, Some(bad));
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("--idempotency-key"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(tasks(&console).len(), 1);
}
