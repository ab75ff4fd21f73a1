//! `serverctl` without a service manager: the pid-file path started, queried, restarted and
//! stopped for real, through the rendered bin/serverctl wrapper, with the console watching.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tasknode_tests::{
    Agent, Console, bin, enrolled_classic, hostname, root_without_service_manager, run_serverctl,
    serverctl_wrapper, stderr, wait_for,
};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn serverctl_manages_the_agent_through_a_pid_file() {
    let (console, agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    let root = root_without_service_manager(agent.dir.path());

    let wrapper = serverctl_wrapper(agent.dir.path(), &bin("tasknode"), &agent.config());
    let serverctl = |action: &str| run_serverctl(&wrapper, &root, action);
    let pid_file = agent.dir.path().join("tasknode/run/tasknode.pid");
    let pid = || {
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };

    let out = serverctl("status");
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("stopped (managed by pidfile)"),
        "{}",
        stdout(&out)
    );

    let out = serverctl("start");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let first = pid();
    console.wait_status(&hostname(), "available", Duration::from_secs(15));
    let out = serverctl("status");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!("running (pid {first})")),
        "{}",
        stdout(&out)
    );

    let out = serverctl("start");
    assert!(out.status.success());
    assert!(stdout(&out).contains("already running"));
    assert_eq!(pid(), first, "a second start must not start a second agent");

    let out = serverctl("restart");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let second = pid();
    assert_ne!(first, second);
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "the old agent is still there"
    );
    wait_for(
        Duration::from_secs(15),
        "the restarted agent to heartbeat",
        || (console.server(&hostname())["status"] == "available").then_some(()),
    );

    let out = serverctl("stop");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("waiting up to"),
        "stop says what it waits for: {}",
        stdout(&out)
    );
    assert!(!pid_file.exists());
    assert!(!Path::new(&format!("/proc/{second}")).exists());
    let stopped = console.wait_status(&hostname(), "stopped", Duration::from_secs(5));
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("shut down cleanly")
    );
    assert_eq!(serverctl("status").status.code(), Some(3));
    // The agent's own output went to logs/agent.out.
    assert!(agent.logs().join("agent.out").exists());
}

#[test]
fn as_root_serverctl_refuses_without_the_agent_user() {
    if !rustix::process::geteuid().is_root() {
        // The rule only exists for root. CI runs as root, so there this never skips.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the tests as root"
        );
        eprintln!("not root: skipped (runs as root in CI)");
        return;
    }
    let agent = Agent::new();
    let console = Console::start(&[]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    agent.enroll_ok(&console.url, "etl", &password, false);
    let root = agent.dir.path().join("empty-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let out = Command::new(bin("tasknode"))
        .args(["serverctl", "start"])
        .env("TASKNODE_CONFIG", agent.config())
        .env("TASKNODE_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing to run the agent as root"),
        "{}",
        stderr(&out)
    );
    assert!(!agent.dir.path().join("tasknode/run/tasknode.pid").exists());
}

/// serverctl keeps the pid file the config records, and a config from before it was recorded
/// (no `pid_file`, no `work_dir`) keeps the one its install method always had: a manual
/// install's, beside its `conf` directory. (Which work directory such a config gets, per
/// method, is agent/src/config.rs's unit test.)
#[test]
fn serverctl_keeps_the_pid_file_the_config_records_and_old_configs_keep_theirs() {
    let (console, agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    let root = root_without_service_manager(agent.dir.path());
    let wrapper = serverctl_wrapper(agent.dir.path(), &bin("tasknode"), &agent.config());
    let serverctl = |action: &str| run_serverctl(&wrapper, &root, action);
    let text = std::fs::read_to_string(agent.config()).unwrap();
    let layout_pid = agent.dir.path().join("tasknode/run/tasknode.pid");
    let work = agent.dir.path().join("tasknode/work");
    assert!(
        text.contains(&format!("pid_file = \"{}\"\n", layout_pid.display()))
            && text.contains(&format!("work_dir = \"{}\"\n", work.display())),
        "enroll records where the pid file and the tasks' work go: {text}"
    );

    let recorded = agent.dir.path().join("elsewhere/agent.pid");
    std::fs::write(
        agent.config(),
        text.replace(
            &format!("pid_file = \"{}\"", layout_pid.display()),
            &format!("pid_file = \"{}\"", recorded.display()),
        ),
    )
    .unwrap();
    let out = serverctl("start");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(recorded.is_file() && !layout_pid.exists());
    console.wait_status(&hostname(), "available", Duration::from_secs(15));
    assert_eq!(serverctl("status").status.code(), Some(0));
    assert!(serverctl("stop").status.success());
    assert!(!recorded.exists());

    let old: String = text
        .lines()
        .filter(|l| !l.starts_with("pid_file =") && !l.starts_with("work_dir ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(agent.config(), old).unwrap();
    let out = serverctl("start");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(layout_pid.is_file(), "an old config keeps its pid file");
    let out = serverctl("status");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(serverctl("stop").status.success());
    assert!(!layout_pid.exists());
}
