//! Install commands without root: one-time tokens enrolled with by the real agent (once, in
//! their group, before they expire), the refusal scripts behind spent links, and agent binaries
//! served exactly as they were hashed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tasknode_render::artifacts::stand_in_binary;
use tasknode_tests::{Agent, Console, bin, hostname, stderr};

fn first_build() -> Vec<u8> {
    stand_in_binary("0.3.1", b"first build")
}

fn console_with_agents() -> (Console, tempfile::TempDir) {
    let agents = tempfile::tempdir().unwrap();
    std::fs::write(agents.path().join("tasknode-x86_64"), first_build()).unwrap();
    let console = Console::start(&[
        "--heartbeat-interval",
        "1s",
        "--agent-dir",
        agents.path().to_str().unwrap(),
    ]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["group", "create", "bi", "--network", "classic"]);
    (console, agents)
}

fn install_command(console: &Console, group: &str, ttl: &str) -> (String, String) {
    let out = console.cli_ok(&[
        "install-command",
        "--group",
        group,
        "--user",
        "etl",
        "--ttl",
        ttl,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let url = v["url"].as_str().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap().to_owned();
    (url, token)
}

/// `tasknode enroll --token-stdin` as install.sh runs it.
fn enroll_with_token(agent: &Agent, console: &str, token: &str) -> std::process::Output {
    let mut child = Command::new(bin("tasknode"))
        .args([
            "enroll",
            "--console",
            console,
            "--token-stdin",
            "--enable-uuid",
            "false",
        ])
        .env("TASKNODE_CONFIG", agent.config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    child.wait_with_output().unwrap()
}

fn refused(url: &str) -> (String, String) {
    let res = reqwest::blocking::get(url).unwrap();
    assert_eq!(res.status().as_u16(), 200, "a refusal is still a script");
    let why = res.headers()["x-tasknode-refused"]
        .to_str()
        .unwrap()
        .to_owned();
    (why, res.text().unwrap())
}

#[test]
fn a_token_enrolls_once_in_its_group_until_it_expires() {
    let (console, _agents) = console_with_agents();
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);

    // A token of another group does not reach this server.
    let (_, other) = install_command(&console, "bi", "1h");
    let agent = Agent::new();
    let out = enroll_with_token(&agent, &console.url, &other);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in resource group bi"),
        "{}",
        stderr(&out)
    );
    // Refused enrollments do not spend a token.
    let (url, token) = install_command(&console, "etl", "1h");
    let script = reqwest::blocking::get(&url).unwrap().text().unwrap();
    assert!(
        script.contains("ENABLE_UUID='false'") && script.contains("GROUP='etl'"),
        "{script:.300}"
    );

    let out = enroll_with_token(&agent, &console.url, &token);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.config_value("node.group"), "etl");
    assert!(
        !std::fs::read_to_string(agent.config())
            .unwrap()
            .contains(&token),
        "token stored"
    );

    let again = Agent::new();
    let out = enroll_with_token(&again, &console.url, &token);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    let (why, body) = refused(&url);
    assert_eq!(why, "used");
    // Run, it says why and exits 1 (it would still uninstall, as install_sh.rs shows).
    let mut sh = std::process::Command::new("sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sh.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let ran = sh.wait_with_output().unwrap();
    assert_eq!(ran.status.code(), Some(1), "{}", stderr(&ran));
    assert!(
        stderr(&ran).contains("was used at") && stderr(&ran).contains("--uninstall"),
        "{}",
        stderr(&ran)
    );

    // Expiry.
    let (url, token) = install_command(&console, "etl", "1s");
    std::thread::sleep(Duration::from_millis(1_500));
    let out = enroll_with_token(&Agent::new(), &console.url, &token);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    assert_eq!(refused(&url).0, "expired");
    let (why, _) = refused(&format!("{}/install/tn_{}", console.url, "A".repeat(43)));
    assert_eq!(why, "unknown");

    // The CLI refuses what the console would, before sending.
    let out = console.cli(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--ttl",
        "8d",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
}

#[test]
fn served_binaries_match_the_checksum_the_script_carries() {
    let (console, agents) = console_with_agents();
    let (url, _) = install_command(&console, "etl", "1h");
    let script = reqwest::blocking::get(&url).unwrap().text().unwrap();
    let expected = hex::encode(Sha256::digest(first_build()));
    assert!(
        script.contains(&format!("AGENT_X86_64_SHA256='{expected}'")),
        "{script:.400}"
    );
    assert!(
        script.contains("AGENT_AARCH64_URL=''"),
        "no aarch64 build was given"
    );
    // The version is the binary's own, read from its bytes, not the console's.
    assert!(script.contains("AGENT_VERSION='0.3.1'"), "{script:.600}");

    // Replacing the file under a running console changes nothing it serves.
    std::fs::write(
        agents.path().join("tasknode-x86_64"),
        stand_in_binary("9.9.9", b"a different build"),
    )
    .unwrap();
    let res =
        reqwest::blocking::get(format!("{}/dist/agent/tasknode-x86_64", console.url)).unwrap();
    assert_eq!(
        res.headers()["x-checksum-sha256"].to_str().unwrap(),
        expected
    );
    assert_eq!(hex::encode(Sha256::digest(res.bytes().unwrap())), expected);
    for name in [
        "tasknode-aarch64",
        "..%2Fadmin.token",
        "tasknode-x86_64.sig",
    ] {
        let res = reqwest::blocking::get(format!("{}/dist/agent/{name}", console.url)).unwrap();
        assert_eq!(res.status().as_u16(), 404, "{name}");
    }
    // Without --agent-dir the console hands out no install command that could not install.
    let bare = Console::start(&[]);
    bare.create_user("etl");
    bare.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let out = bare.cli(&["install-command", "--group", "etl", "--user", "etl"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("--agent-dir"), "{}", stderr(&out));
}
