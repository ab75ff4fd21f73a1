//! `tasknode doctor` against a real console and agent: all green on a healthy server, and each
//! thing operators trip on reported as a failure with its fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tasknode_tests::{
    Agent, Console, bin, enrolled_classic, hostname, root_without_service_manager, run_serverctl,
    serverctl_wrapper,
};

fn doctor(agent: &Agent, root: &Path, json: bool) -> Output {
    let mut cmd = Command::new(bin("tasknode"));
    cmd.arg("doctor")
        .env("TASKNODE_CONFIG", agent.config())
        .env("TASKNODE_ROOT", root);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn checks(out: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["checks"].as_array().unwrap().clone()
}

fn check<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {all:#?}"))
}

#[test]
fn doctor_passes_a_healthy_server_and_names_each_failure_with_its_fix() {
    let (mut console, agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    // A fixed log port, so doctor can probe it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    agent.set_config("logs", "listen", format!("127.0.0.1:{port}").into());
    let root = root_without_service_manager(agent.dir.path());
    let wrapper = serverctl_wrapper(agent.dir.path(), &bin("tasknode"), &agent.config());
    let serverctl = |action: &str| run_serverctl(&wrapper, &root, action);
    assert!(serverctl("start").status.success());
    console.wait_status(&hostname(), "available", Duration::from_secs(20));

    // Healthy: every check passes, and the text says so.
    let out = doctor(&agent, &root, false);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for name in [
        "config",
        "hostname",
        "console",
        "server",
        "clock",
        "log service",
        "service",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(name)),
            "{name} not ok:\n{text}"
        );
    }
    assert!(text.contains("all checks passed"));
    let out = doctor(&agent, &root, true);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["healthy"], true);

    // The config readable by others.
    std::fs::set_permissions(agent.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = doctor(&agent, &root, true);
    assert_eq!(out.status.code(), Some(1));
    let all = checks(&out);
    assert_eq!(check(&all, "config")["verdict"], "fail");
    assert!(
        check(&all, "config")["fix"]
            .as_str()
            .unwrap()
            .contains("chmod 600")
    );
    std::fs::set_permissions(agent.config(), std::fs::Permissions::from_mode(0o600)).unwrap();

    // The agent stopped: the service and its log port.
    assert!(serverctl("stop").status.success());
    let all = checks(&doctor(&agent, &root, true));
    assert_eq!(check(&all, "service")["verdict"], "fail");
    assert_eq!(check(&all, "service")["fix"], "serverctl start");
    assert_eq!(check(&all, "log service")["verdict"], "fail");

    // The console away.
    console.kill();
    let all = checks(&doctor(&agent, &root, true));
    let c = check(&all, "console");
    assert_eq!(c["verdict"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("cannot reach the console"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().contains("reachable"), "{c}");

    // A console whose clock is 5 minutes off.
    drop(console);
    let skewed = Console::start(&["--clock-offset", "300"]);
    let mut doc: toml::Table =
        toml::from_str(&std::fs::read_to_string(agent.config()).unwrap()).unwrap();
    doc.insert("console_url".into(), skewed.url.clone().into());
    std::fs::write(agent.config(), toml::to_string(&doc).unwrap()).unwrap();
    let all = checks(&doctor(&agent, &root, true));
    // The node is unknown to that console; the clock is still measured from its answer.
    let console_check = check(&all, "console");
    assert_eq!(console_check["verdict"], "fail");
    assert!(
        console_check["fix"]
            .as_str()
            .unwrap()
            .contains("enroll again"),
        "{console_check}"
    );
    let clock = check(&all, "clock");
    assert_eq!(clock["verdict"], "fail", "{clock}");
    assert!(clock["fix"].as_str().unwrap().contains("chronyc makestep"));
}
