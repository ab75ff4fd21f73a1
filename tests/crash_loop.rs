//! A release that passes its trial and then dies at every start is put back after a few starts,
//! however it is restarted: by hand (plain processes on the host) or by systemd's
//! `Restart=always` in a booted Debian container. The release is a real build of the agent,
//! 0.3.0, made with `TASKNODE_TEST_EXIT_AFTER_SECS` so that `tasknode run` exits 1 a few
//! seconds after it starts (its trial, `run --trial`, is untouched); scripts/test.sh builds it.
//! The previous version reports the failure and the rollout halts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tasknode_tests::container::{classic_tls_console, installed_under_systemd};
use tasknode_tests::sandbox::require_root;
use tasknode_tests::{
    Console, build_release, dist_json, enrolled_own_binary, hostname, install_binary, static_agent,
    wait_for,
};

const CRASHING: &str = "0.3.0";

/// The agent built as 0.3.0 that exits 1 a few seconds after `run` starts
/// (TASKNODE_CRASH_AGENT, else target/update-test/; built by scripts/test.sh).
fn crash_agent() -> PathBuf {
    let path = std::env::var_os("TASKNODE_CRASH_AGENT").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
            target.join("update-test/tasknode-0.3.0-exits")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `TASKNODE_VERSION=0.3.0 TASKNODE_TEST_EXIT_AFTER_SECS=3 cargo build --target x86_64-unknown-linux-musl -p tasknode` and strip it there (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Release keys and a release directory holding 0.1.0 (the static agent) and the crashing
/// 0.3.0; returns the manifest public key.
fn releases(dir: &Path) -> String {
    let keys = dir.join("keys");
    let generated = dist_json(&["keygen", "--out", keys.to_str().unwrap()]);
    let v1 = dir.join("tasknode-0.1.0");
    install_binary(&static_agent(), &v1);
    build_release(&dir.join("dist"), &keys, "0.1.0", &v1, "none");
    build_release(&dir.join("dist"), &keys, CRASHING, &crash_agent(), "none");
    generated["manifest_public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Publishes the crashing release and rolls it out to `group` one server at a time, halting
/// at the first failure.
fn roll_out_crashing(console: &Console, dist: &Path, group: &str) {
    let manifest = dist.join(format!("releases/{CRASHING}/manifest.stable.json"));
    console.cli_ok(&["release", "publish", manifest.to_str().unwrap()]);
    console.cli_ok(&[
        "release",
        "rollout",
        "--group",
        group,
        "--version",
        CRASHING,
        "--batch",
        "1",
        "--max-failures",
        "0",
    ]);
}

/// Waits for the rollout of `group` to halt; returns it.
fn wait_halted(console: &Console, group: &str, timeout: Duration) -> Value {
    wait_for(timeout, "the rollout to halt", || {
        let list: Value =
            serde_json::from_str(&console.cli_ok(&["release", "list", "--json"])).unwrap();
        list["rollouts"]
            .as_array()?
            .iter()
            .find(|r| r["group"] == group && r["state"] == "halted")
            .cloned()
    })
}

fn runs(binary: &Path) -> String {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Started again by hand each time it dies: the fourth start puts 0.1.0 back and runs it.
#[test]
fn a_release_that_dies_after_its_trial_is_put_back_after_three_starts() {
    let dir = tempfile::tempdir().unwrap();
    let key = releases(dir.path());
    let dist = dir.path().join("dist");
    let (console, mut agent) = enrolled_own_binary(&dist);
    agent.set_config("update", "trusted_keys", vec![key].into());
    // Probation needs 10 heartbeats a second apart: the crashing build dies before.
    agent.set_config("update", "health_heartbeats", 10.into());
    agent.set_config("update", "health_timeout_secs", 300.into());
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(30));
    let record = agent.exe().with_file_name(".tasknode.update");

    roll_out_crashing(&console, &dist, "etl");
    // It passes its trial, is swapped in, and dies; started again, it dies again, three times.
    for start in 1..=3 {
        wait_for(
            Duration::from_secs(90),
            &format!("start {start} of {CRASHING} to die"),
            || (!agent.is_running()).then_some(()),
        );
        assert_eq!(runs(&agent.exe()), format!("tasknode {CRASHING}"));
        let state: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(state["starts"], start, "{state:#}");
        agent.kill();
        agent.run();
    }
    // The fourth start put 0.1.0 back and runs it; it told the console, and the rollout halted.
    let halted = wait_halted(&console, "etl", Duration::from_secs(60));
    assert_eq!(halted["failed"], 1, "{halted:#}");
    let reason = halted["reason"].as_str().unwrap();
    assert!(reason.contains("started 3 times"), "{halted:#}");
    assert_eq!(runs(&agent.exe()), "tasknode 0.1.0");
    let listed = console.wait_server(
        &hostname(),
        "available on 0.1.0, the update failed",
        Duration::from_secs(30),
        |s| {
            s["status"] == "available"
                && s["version"] == "0.1.0"
                && s["update"]["state"] == "failed"
        },
    );
    assert!(
        listed["update"]["reason"]
            .as_str()
            .unwrap()
            .contains("version 0.1.0 was put back"),
        "{listed:#}"
    );
    // It stays up: no later start of 0.3.0.
    std::thread::sleep(Duration::from_secs(6));
    assert!(agent.is_running());
    assert_eq!(runs(&agent.exe()), "tasknode 0.1.0");
    let state: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(state["phase"], "failed", "{state:#}");
    assert_eq!(state["reported"], true, "{state:#}");
}

/// Under systemd with `Restart=always`: systemd starts the dying release again and again; its
/// fourth start runs 0.1.0 instead, and the unit stays up on it.
#[test]
fn under_systemd_a_release_that_keeps_dying_is_put_back_and_the_unit_stays_up() {
    if !require_root() {
        return;
    }
    let host = "tn-crashloop";
    let dir = tempfile::tempdir().unwrap();
    let key = releases(dir.path());
    let dist = dir.path().join("dist");
    let (console, _agents) = classic_tls_console(host, &["--dist", dist.to_str().unwrap()]);
    let c = installed_under_systemd(&console, host);
    console.wait_status(host, "available", Duration::from_secs(15));
    let conf = c.path("/home/admin/tasknode/conf/tasknode.conf");
    let set = |table: &str, k: &str, v: toml::Value| {
        tasknode_tests::set_config_value(&conf, table, k, v);
    };
    set("update", "trusted_keys", vec![key].into());
    set("update", "health_heartbeats", 10.into());
    set("update", "health_timeout_secs", 300.into());
    set("logs", "listen", "127.0.0.1:0".into());
    c.sh_ok("/home/admin/tasknode/bin/serverctl restart");
    console.wait_status(host, "available", Duration::from_secs(15));

    roll_out_crashing(&console, &dist, "classic");
    let halted = wait_halted(&console, "classic", Duration::from_secs(180));
    assert!(
        halted["reason"]
            .as_str()
            .unwrap()
            .contains("started 3 times"),
        "{halted:#}\nagent.log:\n{}",
        std::fs::read_to_string(c.path("/home/admin/tasknode/logs/agent.log")).unwrap_or_default()
    );
    console.wait_server(host, "available on 0.1.0", Duration::from_secs(30), |s| {
        s["status"] == "available" && s["version"] == "0.1.0"
    });
    assert_eq!(
        c.sh_ok("/home/admin/tasknode/bin/tasknode --version"),
        "tasknode 0.1.0"
    );
    // The exec that swapped it in was its first start; systemd restarted it three times, and
    // the last of those runs 0.1.0, which stays up.
    std::thread::sleep(Duration::from_secs(8));
    let show = c.sh_ok("systemctl show -p ActiveState -p SubState -p NRestarts tasknode");
    let mut lines: Vec<&str> = show.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["ActiveState=active", "NRestarts=3", "SubState=running"],
        "{show}"
    );
}
