//! `serve --tls`: the console's own CA, trusted alone by the admin CLI, the agent and the
//! commands and scripts the console hands out. Real processes on loopback and real curl/wget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tasknode_render::artifacts::stand_in_binary;
use tasknode_tests::{Agent, Console, bin, hostname, stderr, which};

fn agents_dir() -> tempfile::TempDir {
    let agents = tempfile::tempdir().unwrap();
    std::fs::write(
        agents.path().join("tasknode-x86_64"),
        stand_in_binary("0.2.0", b"agent"),
    )
    .unwrap();
    agents
}

/// Runs `command` under sh with `dir` standing in for /var/lib/tasknode-install and the final
/// `| sh` replaced by a redirection to DIR/install.sh, so that it can run unprivileged.
fn run_printed(command: &str, dir: &std::path::Path) -> std::process::Output {
    let command = command
        .strip_suffix(" | sh")
        .unwrap_or_else(|| panic!("{command} does not end in | sh"))
        .replace("/var/lib/tasknode-install", dir.to_str().unwrap());
    let command = format!("{command} > {}/install.sh", dir.display());
    Command::new("sh")
        .args(["-c", &command])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn agents_trust_the_pinned_console_ca_and_nothing_else() {
    let console = Console::start(&["--tls", "--heartbeat-interval", "1s"]);
    assert!(
        console.url.starts_with("https://127.0.0.1:"),
        "{}",
        console.url
    );
    // The admin CLI reaches it, trusting DATA/tls/ca.pem.
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    {
        // The CA key is in the database, which no one else can read; not in a file of its own.
        use std::os::unix::fs::PermissionsExt;
        assert!(!console.data().join("tls/ca.key").exists());
        let mode = |p: &str| {
            let path = console.data().join(p);
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode("tasknode.db"), 0o600);
        assert_eq!(mode(""), 0o700);
    }
    let ca = console.ca();
    let ca = ca.to_str().unwrap();

    // The system's CAs do not vouch for it: unreachable, saying why, at once (a handshake
    // that failed is not asked again), nothing written.
    let agent = Agent::new();
    let started = std::time::Instant::now();
    let out = agent.enroll(&console.url, "etl", &password, false);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("asking again"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!agent.config().exists());

    // Another console's CA is not this one's.
    let other = Console::start(&["--tls"]);
    let other_ca = other.ca();
    let out = agent.enroll_with(
        &console.url,
        "etl",
        &password,
        false,
        &["--console-ca", other_ca.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!agent.config().exists());

    // A file that holds no certificate is named.
    let junk = agent.dir.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = agent.enroll_with(
        &console.url,
        "etl",
        &password,
        false,
        &["--console-ca", junk.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("console CA") && stderr(&out).contains("junk.pem"),
        "{}",
        stderr(&out)
    );

    // The console's CA: enrolled, pinned in the config, available over HTTPS.
    let mut agent = agent;
    let out = agent.enroll_with(&console.url, "etl", &password, false, &["--console-ca", ca]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.config_value("console_ca"), ca);
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(10));
    let (status, healthy) = agent.status();
    assert!(healthy, "{status:#}");
    assert!(agent.stop());
}

#[test]
fn a_certificate_the_admin_cli_does_not_trust_is_named_at_once_and_not_asked_again() {
    let console = Console::start(&["--tls"]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", "db1"]);
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "true\n").unwrap();
    // A data directory without the console's CA: the system's CAs do not vouch for it.
    let elsewhere = tempfile::tempdir().unwrap();
    let token = console.data().join("admin.token");
    let submit = [
        "task",
        "submit",
        "--group",
        "etl",
        "--script",
        script.path().to_str().unwrap(),
    ];
    let token_flag = ["--token-file", token.to_str().unwrap()];
    let started = std::time::Instant::now();
    let out = tasknode_tests::admin_cli(
        &console.url,
        elsewhere.path(),
        &[&token_flag[..], &submit[..]].concat(),
    );
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let ca = elsewhere.path().join("tls/ca.pem");
    assert!(
        err.contains("TLS handshake")
            && err.to_lowercase().contains("certificate")
            && err.contains(&format!("{} (not found)", ca.display()))
            && err.contains("--data"),
        "{err}"
    );
    // Sent once: a submit is sent again only when no console answered.
    assert!(!err.contains("sending the submit again"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    // Nothing was submitted; with the console's data directory the same command works.
    let listed: Value = serde_json::from_str(&console.cli_ok(&["task", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    console.cli_ok(&submit);
}

#[test]
fn install_commands_check_the_ca_before_trusting_it() {
    which("curl");
    which("sha256sum");
    which("wget");
    let agents = agents_dir();
    let console = Console::start(&["--tls", "--agent-dir", agents.path().to_str().unwrap()]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let out = console.cli_ok(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--json",
    ]);
    let cmd: Value = serde_json::from_str(&out).unwrap();
    let pem = std::fs::read(console.ca()).unwrap();
    assert_eq!(cmd["ca_sha256"], hex::encode(Sha256::digest(&pem)));
    assert_eq!(cmd["ca_url"], format!("{}/ca.pem", console.url));
    let served = console
        .http()
        .get(format!("{}/ca.pem", console.url))
        .send()
        .unwrap();
    assert_eq!(served.bytes().unwrap().as_ref(), pem.as_slice());

    // The token reaches curl and wget on standard input only.
    let url = cmd["url"].as_str().unwrap();
    let command = cmd["command"].as_str().unwrap();
    assert!(
        command.contains(&format!("echo 'url = \"{url}\"' | curl -fsSL --cacert ")),
        "{command}"
    );
    assert_eq!(command.matches(url).count(), 1, "{command}");

    // Run for real (unprivileged: another directory, and the script kept instead of run).
    let dir = tempfile::tempdir().unwrap();
    let out = run_printed(command, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let script = std::fs::read_to_string(dir.path().join("install.sh")).unwrap();
    assert!(script.starts_with("#!/bin/sh"), "{script:.200}");
    let pem_text = String::from_utf8(pem.clone()).unwrap();
    assert!(
        script.contains(&format!("CONSOLE_CA='{pem_text}'")),
        "the script carries the CA: {script:.800}"
    );
    assert!(script.contains("AGENT_VERSION='0.2.0'"));

    // A CA that is not the one the command names: nothing is fetched with it.
    let dir = tempfile::tempdir().unwrap();
    let sha = cmd["ca_sha256"].as_str().unwrap();
    let tampered = command.replace(sha, &"0".repeat(64));
    let out = run_printed(&tampered, dir.path());
    assert!(!out.status.success());
    assert!(!dir.path().join("install.sh").exists());

    // The same with GNU wget.
    let dir = tempfile::tempdir().unwrap();
    let out = run_printed(cmd["wget_command"].as_str().unwrap(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let script = std::fs::read_to_string(dir.path().join("install.sh")).unwrap();
    assert!(script.contains("CONSOLE_CA='-----BEGIN CERTIFICATE-----"));
}

#[test]
fn plain_http_consoles_have_no_ca_and_tls_wants_an_https_public_url() {
    which("curl");
    let agents = agents_dir();
    let console = Console::start(&["--agent-dir", agents.path().to_str().unwrap()]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let res = reqwest::blocking::get(format!("{}/ca.pem", console.url)).unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let out = console.cli_ok(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--json",
    ]);
    let cmd: Value = serde_json::from_str(&out).unwrap();
    assert!(cmd.get("ca_sha256").is_none(), "{cmd:#}");
    let dir = tempfile::tempdir().unwrap();
    let out = run_printed(cmd["command"].as_str().unwrap(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let script = std::fs::read_to_string(dir.path().join("install.sh")).unwrap();
    assert!(script.contains("CONSOLE_CA=''"), "{script:.400}");

    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tasknode-console"))
        .args(["serve", "--tls", "--listen", "127.0.0.1:0", "--public-url"])
        .arg("http://console.example.com:8080")
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--public-url") && stderr(&out).contains("https://"),
        "{}",
        stderr(&out)
    );
}
