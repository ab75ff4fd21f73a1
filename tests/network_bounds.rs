//! The console against hostile network peers, with the real binary on loopback: connections
//! that never finish a request head, bodies that trickle, more connections than the cap, and
//! arbitrary agent bodies from an enrolled node. No test here measures speed: each asserts that
//! something happens (a close, an answer) before a generous deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tasknode_tests::Console;

/// Far beyond the 10 s the console gives a request head: closing later than this is a failure.
const GENEROUS: Duration = Duration::from_secs(30);

fn connect(console: &Console) -> TcpStream {
    TcpStream::connect(("127.0.0.1", console.port)).unwrap()
}

/// Whether the peer closed `s` (EOF or reset) before `deadline`; bytes it sends are skipped.
fn closed_before(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
}

/// Sends one keep-alive GET of the health endpoint on `s` and reads its whole answer; returns
/// the status line.
fn health(s: &mut TcpStream, timeout: Duration) -> Option<String> {
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: console\r\n\r\n")
        .ok()?;
    read_answer(s, timeout)
}

/// Reads one HTTP answer (head and Content-Length body) within `timeout`; its status line.
fn read_answer(s: &mut TcpStream, timeout: Duration) -> Option<String> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while got.len() < end + 4 + len {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                got.extend_from_slice(&buf[..n]);
            }
            return head.lines().next().map(str::to_owned);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn connections_that_never_finish_a_request_head_are_closed_while_others_are_served() {
    let console = Console::start(&[]);
    let start = Instant::now();
    let mut half: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = connect(&console);
            // Half a head; every fourth sends nothing at all.
            if i % 4 != 0 {
                s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: con")
                    .unwrap();
            }
            s
        })
        .collect();
    // One that trickles its head a byte a second never finishes in time either.
    let mut trickle = connect(&console);
    let trickler = std::thread::spawn(move || {
        for b in b"GET /api/v1/health HTTP/1.1\r\nHost: console\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if trickle.write_all(&[*b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
            if start.elapsed() > GENEROUS {
                return false;
            }
        }
        false
    });
    // Meanwhile a normal request is answered.
    let mut normal = connect(&console);
    assert_eq!(
        health(&mut normal, GENEROUS).as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let deadline = start + GENEROUS;
    for (i, s) in half.iter_mut().enumerate() {
        assert!(
            closed_before(s, deadline),
            "half-open connection {i} still open after {:?}",
            start.elapsed()
        );
    }
    assert!(
        trickler.join().unwrap(),
        "the trickling head was not cut off"
    );
    // The console goes on serving.
    let mut after = connect(&console);
    assert_eq!(
        health(&mut after, GENEROUS).as_deref(),
        Some("HTTP/1.1 200 OK")
    );
}

#[test]
fn a_body_that_trickles_is_cut_off_with_408() {
    let console = Console::start(&["--body-timeout", "3s"]);
    let mut s = connect(&console);
    s.write_all(
        b"POST /api/v1/enroll HTTP/1.1\r\nHost: console\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    let start = Instant::now();
    let mut writer = s.try_clone().unwrap();
    std::thread::spawn(move || {
        while writer.write_all(b" ").is_ok() && start.elapsed() < GENEROUS {
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    assert_eq!(
        read_answer(&mut s, GENEROUS).as_deref(),
        Some("HTTP/1.1 408 Request Timeout")
    );
    assert!(
        closed_before(&mut s, start + GENEROUS),
        "the connection stayed open"
    );
}

#[test]
fn the_connection_cap_holds_and_the_console_recovers() {
    let cap = 20;
    let console = Console::start(&["--max-connections", &cap.to_string()]);
    // `cap` kept-alive connections, each answered once: the console holds them all.
    let mut held: Vec<TcpStream> = (0..cap)
        .map(|_| {
            let mut s = connect(&console);
            assert_eq!(health(&mut s, GENEROUS).as_deref(), Some("HTTP/1.1 200 OK"));
            s
        })
        .collect();
    // One more is not served while they are open: it waits, unread.
    let mut extra = connect(&console);
    assert_eq!(
        health(&mut extra, Duration::from_secs(2)),
        None,
        "connection {} was served beyond the cap of {cap}",
        cap + 1
    );
    // One closes: the waiting one is served.
    drop(held.pop());
    assert_eq!(
        read_answer(&mut extra, GENEROUS).as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    drop(held);
    // And the console serves new connections again.
    for _ in 0..cap {
        let mut s = connect(&console);
        assert_eq!(health(&mut s, GENEROUS).as_deref(), Some("HTTP/1.1 200 OK"));
    }
}

/// A hostile value for a number field.
fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(-1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(253_402_300_800_000_i64)),
        any::<i64>().prop_map(|n| json!(n)),
    ]
}

#[test]
fn hostile_agent_bodies_over_loopback_leave_every_view_answering() {
    let console = Console::start(&[]);
    console.cli_ok(&["group", "create", "etl", "--network", "vpc"]);
    let uuid = "4c4c4544-0042-3510-8051-b4c04f333231";
    console.cli_ok(&["server", "add", "--group", "etl", "--name", uuid]);
    let password = console.create_user("ops");
    let http = console.http();
    let enroll = json!({
        "user_name": "ops", "password": password,
        "identity": {"kind": "uuid", "value": uuid},
        "facts": {"hostname": "h", "cpu_cores": 2.0, "memory_bytes": 1u64 << 30, "os": "o",
                  "arch": "x86_64", "kernel": "k", "agent_version": "0.1.0"}
    });
    let res: Value = http
        .post(console.api("/enroll"))
        .json(&enroll)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let node = res["node_id"].as_str().unwrap().to_owned();
    let secret = res["node_secret"].as_str().unwrap().to_owned();
    let task = console.submit_script("etl", "true");

    let bodies = prop_oneof![
        (int(), int()).prop_map(|(lease, at)| ("start", json!({"lease": lease, "at_ms": at}))),
        (int(), int(), int(), int()).prop_map(|(code, s, f, b)| (
            "finish",
            json!({"lease": 1, "outcome": {"type": "exited", "code": code},
                   "started_ms": s, "finished_ms": f, "log_bytes": b})
        )),
        (int(), int(), int()).prop_map(|(o, r, f)| (
            "heartbeat",
            json!({"agent_version": "0.1.0", "clock_offset_ms": o, "running_tasks": r, "free_slots": f})
        )),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&bodies, |(endpoint, body)| {
            let path = match endpoint {
                "heartbeat" => format!("/nodes/{node}/heartbeat"),
                other => format!("/nodes/{node}/tasks/{task}/{other}"),
            };
            let res = http
                .post(console.api(&path))
                .bearer_auth(&secret)
                .json(&body)
                .send()
                .expect("the console dropped the connection");
            assert!(
                !res.status().is_server_error(),
                "{path} {body} answered {}",
                res.status()
            );
            for view in [
                "/tasks".to_owned(),
                format!("/tasks/{task}"),
                "/servers".to_owned(),
                "/groups".to_owned(),
            ] {
                let res = http
                    .get(console.api(&view))
                    .bearer_auth(console.token())
                    .send()
                    .expect("a view dropped the connection");
                assert!(
                    res.status().is_success(),
                    "GET {view} answered {} after {path} {body}",
                    res.status()
                );
            }
            Ok(())
        })
        .unwrap();
    // The CLI's task list reads the same answers.
    console.cli_ok(&["task", "list"]);
}

#[test]
fn tls_handshakes_that_never_finish_are_closed_while_others_are_served() {
    let console = Console::start(&["--tls"]);
    let start = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut s = connect(&console);
            // Half a ClientHello record; every other sends nothing at all.
            if i % 2 == 0 {
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                    .unwrap();
            }
            s
        })
        .collect();
    let res = console.http().get(console.api("/health")).send().unwrap();
    assert_eq!(res.status().as_u16(), 200);
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(
            closed_before(s, start + GENEROUS),
            "stalled TLS connection {i} still open after {:?}",
            start.elapsed()
        );
    }
}
