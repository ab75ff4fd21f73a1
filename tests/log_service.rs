//! The log service of a classic server (port 8000 in production, a loopback port here): the
//! console reads task logs through it; anyone else, any token the console did not sign for
//! that node, file and minute, and any path outside the log directory is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tasknode_protocol::logtoken::{self, Grant};
use tasknode_tests::{Agent, Console, enrolled_classic, hostname, stderr, wait_for};

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The console's log key, read from its database.
fn console_key(console: &Console) -> SigningKey {
    let conn = rusqlite::Connection::open_with_flags(
        console.data().join("tasknode.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT value FROM console_secrets WHERE name = 'log_token_key'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    SigningKey::from_bytes(&bytes.try_into().unwrap())
}

/// The port the agent's log service said it listens on.
fn log_port(agent: &Agent) -> u16 {
    wait_for(Duration::from_secs(10), "the log service to listen", || {
        agent
            .agent_log()
            .lines()
            .rev()
            .find(|l| l.contains("log service listening"))
            .and_then(|l| l.split(" port=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
    })
}

fn token(key: &SigningKey, node: &str, path: &str, exp_ms: i64) -> String {
    logtoken::sign(
        key,
        &Grant {
            node: node.to_owned(),
            path: path.to_owned(),
            exp_ms,
        },
    )
}

/// A raw HTTP/1.1 GET, so that the path reaches the agent exactly as written (no client
/// normalizes `..` away). Returns the status and the body.
fn raw_get(port: u16, path: &str, bearer: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

#[test]
fn the_log_service_serves_the_console_and_refuses_everyone_else() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let node = agent.config_value("node.id");
    let port = log_port(&agent);
    let key = console_key(&console);

    // The console reads a task's log through the service, live and when it is done.
    let id = console.submit_script("etl", "echo first\nsleep 2\necho second\n");
    let path = format!("tasks/{id}.log");
    let url = format!("http://127.0.0.1:{port}/logs/{path}");
    let http = reqwest::blocking::Client::new();
    let good = token(&key, &node, &path, unix_ms() + 60_000);
    wait_for(Duration::from_secs(10), "the first line", || {
        let r = http.get(&url).bearer_auth(&good).send().unwrap();
        (r.status() == 200 && r.text().unwrap() == "first\n").then_some(())
    });
    // Follow: a range starting at the end waits for the log to grow.
    let t0 = std::time::Instant::now();
    let r = http
        .get(format!("{url}?follow=true"))
        .bearer_auth(&good)
        .header("Range", "bytes=6-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 6-12/13");
    assert_eq!(r.text().unwrap(), "second\n");
    assert!(
        t0.elapsed() > Duration::from_millis(500),
        "follow answered before the log grew"
    );
    let out = console.cli_ok(&["task", "log", &id.to_string(), "--follow"]);
    assert_eq!(out, "first\nsecond\n");
    let shown = console.task(id);
    assert_eq!(shown["log_bytes"], 13);
    // A range past the end.
    let r = http
        .get(&url)
        .bearer_auth(&good)
        .header("Range", "bytes=13-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */13");
    // heartbeat.log, with a token for it.
    let hb = token(&key, &node, "heartbeat.log", unix_ms() + 60_000);
    let r = http
        .get(format!("http://127.0.0.1:{port}/logs/heartbeat.log"))
        .bearer_auth(&hb)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("status=200"));

    // Tokens: none, junk, another key, expired, another file, another node.
    let other_key = SigningKey::from_bytes(&[7; 32]);
    let refused = [
        ("", "send the console's log token"),
        ("junk", "malformed"),
        (
            &token(&other_key, &node, &path, unix_ms() + 60_000)[..],
            "does not verify",
        ),
        (&token(&key, &node, &path, unix_ms() - 1_000)[..], "expired"),
        (&hb[..], "not this path"),
        (
            &token(&key, "another-node", &path, unix_ms() + 60_000)[..],
            "not this one",
        ),
    ];
    for (bearer, why) in refused {
        let mut req = http.get(&url);
        if !bearer.is_empty() {
            req = req.bearer_auth(bearer);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401, "{why}");
        assert!(r.text().unwrap().contains(why), "{why}");
    }

    // Nothing outside the log directory, however the path is spelled; the config (which
    // holds the node secret) least of all.
    let secret = agent.config_value("node.secret");
    for p in [
        "/logs/../conf/tasknode.conf",
        "/logs/tasks/../../conf/tasknode.conf",
        "/logs/tasks/..%2F..%2Fconf%2Ftasknode.conf",
        "/logs/tasks/%2e%2e%2fheartbeat.log",
        "/logs/agent.log",
        "/logs/tasks/1.log.1",
        "/conf/tasknode.conf",
    ] {
        let name = p.trim_start_matches("/logs/");
        let (status, body) = raw_get(port, p, &token(&key, &node, name, unix_ms() + 60_000));
        assert!(status == 404 || status == 400, "{p}: HTTP {status}");
        assert!(!body.contains(&secret), "{p} leaked the config");
    }

    // Another address: the agent allows only what its config says, and closes a connection
    // from any other at once, unanswered.
    agent.stop();
    agent.set_config(
        "logs",
        "allow",
        toml::Value::Array(vec!["10.9.9.9/32".into()]),
    );
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let port = log_port_after(&agent, port);
    let r = http
        .get(format!("http://127.0.0.1:{port}/logs/{path}"))
        .bearer_auth(token(&key, &node, &path, unix_ms() + 60_000))
        .send();
    assert!(
        r.is_err(),
        "an address outside the allow list was answered: {r:?}"
    );
    let out = console.cli(&["task", "log", &id.to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("log service") && stderr(&out).contains("did not answer"),
        "{}",
        stderr(&out)
    );
    let log = agent.agent_log();
    assert!(
        log.contains("not in [logs] allow, closed before reading a byte"),
        "{log}"
    );
}

/// The port of a restarted agent's log service (a new one: the old line stays in agent.log).
fn log_port_after(agent: &Agent, old: u16) -> u16 {
    wait_for(Duration::from_secs(10), "the restarted log service", || {
        let p = log_port(agent);
        (p != old).then_some(p)
    })
}

/// Connects to the log service from `ip` (another loopback address than the console's).
fn connect_from(ip: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap()
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Reads `stream` to its end: what the agent sent before it closed the connection. Panics
/// when the connection is still open after a minute (the head timeout is 10 s).
fn until_closed(mut stream: TcpStream, what: &str) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("{what}: still open after 60 s ({e})"),
    }
}

#[test]
fn half_open_connections_and_outsiders_are_closed_and_never_shut_the_console_out() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let port = log_port(&agent);
    let id = console.submit_script("etl", "echo from the task\n");
    console.wait_task(id, &["succeeded"], Duration::from_secs(30));

    // An address outside the allow list (it holds the console's, 127.0.0.1) is closed at
    // accept: it gets nothing before sending a byte, and no answer to a whole request either
    // (a service that read first would answer 403).
    let outsider = connect_from("127.0.0.2", port);
    assert!(until_closed(outsider, "an outsider that sent nothing").is_empty());
    let mut outsider = connect_from("127.0.0.2", port);
    std::thread::sleep(Duration::from_millis(500));
    let _ = outsider.write_all(b"GET /logs/heartbeat.log HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = until_closed(outsider, "an outsider that sent a request");
    assert!(
        answer.is_empty(),
        "an outsider got an answer: {}",
        String::from_utf8_lossy(&answer)
    );

    // A request that announces a body (never sent) is answered 413 at once and closed: the
    // service reads no body.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"GET /logs/heartbeat.log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n",
    )
    .unwrap();
    let answer = String::from_utf8_lossy(&until_closed(s, "a request with a body")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("reads no request body"), "{answer}");

    // A flood from the console's own address: four times the connection cap, each holding
    // half a request head.
    let flood: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /logs/heartbeat.log HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            s
        })
        .collect();
    // The console reads the task's log while the flood holds its sockets.
    let out = console.cli_ok(&["task", "log", &id.to_string()]);
    assert_eq!(out, "from the task\n");
    // Every socket of the flood is closed, none answered.
    for (i, s) in flood.into_iter().enumerate() {
        let got = until_closed(s, &format!("half-open connection {i}"));
        assert!(
            !String::from_utf8_lossy(&got).contains("200 OK"),
            "half-open connection {i} was answered"
        );
    }
    // And the console reads it again once the flood is gone.
    let out = console.cli_ok(&["task", "log", &id.to_string()]);
    assert_eq!(out, "from the task\n");
    assert!(
        agent
            .agent_log()
            .contains("not in [logs] allow, closed before reading a byte"),
        "{}",
        agent.agent_log()
    );
}
