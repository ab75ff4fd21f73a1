//! Agents with several console URLs, against real consoles on loopback: an agent whose first
//! console is down enrolls and works with the next; an agent whose console stops answering in
//! the middle of its tasks moves to a second console that takes over the same data, and every
//! task runs and is reported exactly once, the server never stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tasknode_tests::web::WebClient;
use tasknode_tests::{Agent, Console, bin, free_port, stderr, wait_for};

const UUID: &str = "4c4c4544-0042-3510-8051-b4c04f336401";

/// A console with `flags` and a VPC group `batch` holding [`UUID`]; returns it and the
/// password of user `ops`.
fn console_with_group(flags: &[&str]) -> (Console, String) {
    let console = Console::start(flags);
    let password = console.create_user("ops");
    console.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    console.cli_ok(&["server", "add", "--group", "batch", "--name", UUID]);
    (console, password)
}

/// The agent of [`UUID`], enrolled with `consoles` in that order, allowed to run tasks.
fn enrolled(consoles: &[&str], password: &str) -> Agent {
    let agent = Agent::with_uuid(UUID);
    let more: Vec<&str> = consoles[1..]
        .iter()
        .flat_map(|c| ["--console", c])
        .collect();
    let out = agent.enroll_with(consoles[0], "ops", password, true, &more);
    assert!(out.status.success(), "enroll failed: {}", stderr(&out));
    agent.allow_tasks();
    agent
}

/// A directory every task user may append to, where tasks record what they did.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// A task that records its start and end in `runs` around `body`.
fn recording(runs: &Path, body: &str) -> String {
    format!(
        "echo \"$TASKNODE_TASK_ID start\" >> {runs}\n{body}\necho \"$TASKNODE_TASK_ID end\" >> {runs}\n",
        runs = runs.display()
    )
}

fn lines_of(runs: &Path, line: &str) -> usize {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

fn log_of(console: &Console, id: i64) -> String {
    console.cli_ok(&["task", "log", &id.to_string()])
}

#[test]
fn an_agent_whose_first_console_is_down_enrolls_and_works_with_the_next() {
    let (console, password) = console_with_group(&["--heartbeat-interval", "1s"]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut agent = enrolled(&[&dead, &console.url], &password);
    // Both are kept, the first where agents have always looked for it.
    assert_eq!(agent.config_value("console_url"), dead);
    let config = std::fs::read_to_string(agent.config()).unwrap();
    assert!(
        config.contains(&format!("more_console_urls = [\"{}\"]", console.url)),
        "{config}"
    );

    agent.run();
    console.wait_status(UUID, "available", Duration::from_secs(20));
    let id = console.submit_script("batch", "echo hello from the second console\n");
    let t = console.wait_task(id, &["succeeded"], Duration::from_secs(30));
    assert_eq!(t["exit_code"], 0);
    assert_eq!(log_of(&console, id), "hello from the second console\n");

    let (status, healthy) = agent.status();
    assert!(healthy, "{status:#}");
    assert_eq!(status["console_url"], console.url.as_str(), "{status:#}");
    let consoles = status["consoles"].as_array().unwrap();
    assert_eq!(consoles.len(), 2, "{status:#}");
    assert_eq!(consoles[0]["url"], dead.as_str());
    assert_eq!(consoles[0]["in_use"], false);
    assert!(
        consoles[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{status:#}"
    );
    assert_eq!(consoles[1]["url"], console.url.as_str());
    assert_eq!(consoles[1]["in_use"], true);
    assert!(consoles[1]["last_error"].is_null(), "{status:#}");

    // heartbeat.log names the console of each heartbeat.
    let lines = agent.heartbeat_lines();
    let last = lines.last().unwrap();
    assert!(
        last.contains(&format!(" console={} error=-", console.url)),
        "{lines:#?}"
    );

    // doctor: the console in use answers; the other one is a warning with its fix.
    let out = std::process::Command::new(bin("tasknode"))
        .args(["doctor", "--json"])
        .env("TASKNODE_CONFIG", agent.config())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let named =
        |name: &str| -> Vec<&Value> { checks.iter().filter(|c| c["name"] == name).collect() };
    let console_check = named("console");
    assert_eq!(console_check.len(), 1, "{report:#}");
    assert_eq!(console_check[0]["verdict"], "ok", "{report:#}");
    assert!(
        console_check[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} answers in", console.url)),
        "{report:#}"
    );
    let other = named("other console");
    assert_eq!(other.len(), 1, "{report:#}");
    assert_eq!(other[0]["verdict"], "warn");
    assert!(
        other[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{dead}: cannot reach")),
        "{report:#}"
    );
}

#[test]
fn the_agent_moves_to_a_second_console_on_the_same_data_and_every_result_arrives_once() {
    let (mut console, password) =
        console_with_group(&["--heartbeat-interval", "1s", "--stopped-after", "60s"]);
    let a = console.url.clone();
    let b_port = free_port();
    let b = format!("http://127.0.0.1:{b_port}");
    let mut agent = enrolled(&[&a, &b], &password);
    agent.run();
    console.wait_status(UUID, "available", Duration::from_secs(20));

    let shared = shared_dir();
    let runs = shared.path().join("runs");
    let long = console.submit_script("batch", &recording(&runs, "echo long\nsleep 12\necho done"));
    console.wait_task(long, &["running"], Duration::from_secs(20));
    let short = console.submit_script("batch", &recording(&runs, "echo short\nsleep 1"));
    console.wait_task(short, &["running"], Duration::from_secs(20));

    // Console A stops answering: the short task ends while no console takes its result.
    let pid = rustix::process::Pid::from_raw(console.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::Stop).unwrap();
    wait_for(Duration::from_secs(20), "the short task to end", || {
        (lines_of(&runs, &format!("{short} end")) == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lines_of(&runs, &format!("{long} end")),
        0,
        "the long task still runs"
    );
    // A dies; B takes over its data on another port.
    console.kill();
    console.restart_at(&format!("127.0.0.1:{b_port}"));
    assert_eq!(console.url, b);

    // Until both results are in, the server is never stopped.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let server = console.server(UUID);
        let status = server["status"].as_str().unwrap_or("-").to_owned();
        assert_ne!(status, "stopped", "{server:#}");
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        let done = [long, short]
            .iter()
            .all(|id| console.task(*id)["state"] == "succeeded");
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks not done: {:#} {:#}; server states {seen:?}; console log: {}",
            console.task(long),
            console.task(short),
            console.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each ran once, and each result and log arrived once.
    for id in [long, short] {
        assert_eq!(lines_of(&runs, &format!("{id} start")), 1, "task {id}");
        assert_eq!(lines_of(&runs, &format!("{id} end")), 1, "task {id}");
        assert_eq!(console.task(id)["exit_code"], 0);
    }
    assert_eq!(log_of(&console, short), "short\n");
    assert_eq!(log_of(&console, long), "long\ndone\n");
    console.wait_status(UUID, "available", Duration::from_secs(10));

    // heartbeat.log records the switch; status names B in use and A with its error.
    let lines = agent.heartbeat_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!(" switch from={a} to={b} error=\""))),
        "{lines:#?}"
    );
    let (status, _) = agent.status();
    assert_eq!(status["console_url"], b.as_str(), "{status:#}");
    let consoles: &Vec<Value> = status["consoles"].as_array().unwrap();
    assert_eq!(consoles[0]["url"], a.as_str());
    assert!(consoles[0]["last_error"].is_string(), "{status:#}");
    assert!(agent.is_running());
}

/// `serve --agent-url` refuses what an agent could not use, naming the flag, and starts
/// nothing.
#[test]
fn bad_agent_urls_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, says) in [
        (
            vec!["--agent-url", "ftp://x"],
            "must start with http:// or https://",
        ),
        (vec!["--agent-url", "http://u:p@x:1"], "credentials"),
        (vec!["--agent-url", "http://x:1/?a=b"], "'?'"),
        (
            vec!["--tls", "--agent-url", "http://x:1"],
            "give a https:// URL",
        ),
        (
            vec!["--public-url", "http://c:1", "--agent-url", "https://x:1"],
            "give a http:// URL",
        ),
    ] {
        let out = std::process::Command::new(bin("tasknode-console"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .args(&flags)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(
            err.contains("--agent-url") && err.contains(says),
            "{flags:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("data/console.url").exists(),
        "a refused serve listened"
    );
}

/// The install page's package instructions enroll with every agent URL, in order.
#[test]
fn the_install_page_names_every_agent_url() {
    let dist = tempfile::tempdir().unwrap();
    for d in ["repo", "agents"] {
        std::fs::create_dir(dist.path().join(d)).unwrap();
    }
    std::fs::write(
        dist.path().join("agents/tasknode-x86_64"),
        tasknode_render::artifacts::stand_in_binary("0.1.0", b"x"),
    )
    .unwrap();
    let port = free_port();
    let live = format!("http://127.0.0.1:{port}");
    let spare = format!("http://localhost:{}", free_port());
    let console = Console::start_at(
        &format!("127.0.0.1:{port}"),
        &[
            "--dist",
            dist.path().to_str().unwrap(),
            "--agent-url",
            &live,
            "--agent-url",
            &spare,
        ],
    );
    let password = console.create_user("ops");
    console.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    let session =
        WebClient::new(&console.url, "127.0.0.1".parse().unwrap()).sign_in("ops", &password);
    let (status, page) = session.get("/ui/groups/default/batch/install");
    assert_eq!(status, 200, "{page}");
    let page = page.replace("&#x2f;", "/");
    assert!(
        page.contains(&format!("--console {live} --console {spare} --user-name")),
        "{page}"
    );
}
