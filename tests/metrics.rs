//! `GET /metrics` of a real console with a real agent that ran a task, checked by Prometheus'
//! own linter (`promtool check metrics`, Debian's prometheus package) and read back: servers
//! by state, tasks by state, queue depth, heartbeats, dispatch latency, store latency. Rollout
//! progress is read in tests/self_update.rs, where a rollout runs. The agent's own endpoint,
//! off by default, likewise.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tasknode_tests::{enrolled_classic, free_port, hostname, metric, which};

/// `promtool check metrics` on `text`: it lints names, types, help and units, and exits
/// non-zero on any problem.
fn promtool_passes(text: &str) {
    let mut promtool = Command::new(which("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_count_what_happened() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    // A second server, added and never enrolled.
    console.cli_ok(&["server", "add", "--group", "etl", "--name", "db-never"]);
    let id = console.submit_script("etl", "true\n");
    console.wait_task(id, &["succeeded"], Duration::from_secs(20));

    // Only the admin token reads them: they show every project.
    let http = console.http();
    let url = format!("{}/metrics", console.url);
    assert_eq!(http.get(&url).send().unwrap().status(), 401);
    let r = http.get(&url).bearer_auth("not-the-token").send().unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(&url).bearer_auth(console.token()).send().unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = console.metrics();

    promtool_passes(&text);

    let group = [("project", "default"), ("group", "etl")];
    let servers = |state: &str| {
        let labels = [group[0], group[1], ("state", state)];
        metric(&text, "tasknode_servers", &labels)
    };
    assert_eq!(servers("available"), Some(1.0), "{text}");
    assert_eq!(servers("pending"), Some(1.0), "{text}");
    assert_eq!(servers("stopped"), Some(0.0), "{text}");
    let succeeded = [group[0], group[1], ("state", "succeeded")];
    assert_eq!(metric(&text, "tasknode_tasks", &succeeded), Some(1.0));
    assert_eq!(metric(&text, "tasknode_queue_depth", &group), Some(0.0));
    assert_eq!(metric(&text, "tasknode_store_up", &[]), Some(1.0));
    assert_eq!(
        metric(&text, "tasknode_dispatch_seconds_count", &[]),
        Some(1.0)
    );
    for op in ["look", "submit", "ping"] {
        let n = metric(&text, "tasknode_store_seconds_count", &[("op", op)]).unwrap();
        assert!(n >= 1.0, "{op}: {text}");
    }
    // Heartbeats keep coming: the counter moves between scrapes.
    let before = metric(&text, "tasknode_heartbeats_total", &[]).unwrap();
    assert!(before >= 1.0, "{text}");
    std::thread::sleep(Duration::from_millis(2500));
    let after = metric(&console.metrics(), "tasknode_heartbeats_total", &[]).unwrap();
    assert!(after > before, "{before} -> {after}");

    // Queued work shows as queue depth once the only agent stops taking it.
    assert!(agent.stop());
    let id = console.submit_script("etl", "true\n");
    let text = console.metrics();
    assert_eq!(
        metric(&text, "tasknode_queue_depth", &group),
        Some(1.0),
        "{text}"
    );
    let queued = [group[0], group[1], ("state", "queued")];
    assert_eq!(metric(&text, "tasknode_tasks", &queued), Some(1.0));
    console.cli_ok(&["task", "cancel", &id.to_string()]);
}

#[test]
fn the_agent_serves_metrics_only_when_asked_and_only_to_allowed_addresses() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    // Off by default: the config enroll wrote has no [metrics] table.
    let config = std::fs::read_to_string(agent.config()).unwrap();
    assert!(!config.contains("[metrics]"), "{config}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    agent.set_config("metrics", "listen", listen.as_str().into());
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let url = format!("http://{listen}/metrics");
    let scrape = || reqwest::blocking::get(&url).and_then(|r| r.text());
    let text = tasknode_tests::wait_for(Duration::from_secs(10), "two answered heartbeats", || {
        let text = scrape().ok()?;
        let answered = [("result", "answered")];
        (metric(&text, "tasknode_agent_heartbeats_total", &answered)? >= 2.0).then_some(text)
    });
    promtool_passes(&text);
    assert_eq!(
        metric(&text, "tasknode_agent_running_tasks", &[]),
        Some(0.0)
    );
    assert_eq!(metric(&text, "tasknode_agent_clock_skewed", &[]), Some(0.0));
    let offset = metric(&text, "tasknode_agent_clock_offset_seconds", &[]).unwrap();
    assert!(offset.abs() < 5.0, "{text}");
    let last = metric(
        &text,
        "tasknode_agent_last_answered_heartbeat_timestamp_seconds",
        &[],
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 10.0, "{last} vs {now}");
    let max = metric(&text, "tasknode_agent_max_concurrency", &[]).unwrap();
    let listed = console.server(&hostname());
    assert_eq!(Some(max), listed["max_concurrency"].as_f64(), "{listed}");

    // A scraper the allow list does not name is closed at accept.
    assert!(agent.stop());
    agent.set_config(
        "metrics",
        "allow",
        toml::Value::Array(vec!["192.0.2.1".into()]),
    );
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    tasknode_tests::wait_for(Duration::from_secs(10), "the agent to listen again", || {
        std::net::TcpStream::connect(&listen).ok()
    });
    assert!(
        scrape().is_err(),
        "a peer outside [metrics] allow was answered"
    );
}
