//! Self-update end to end: two real builds of the static agent (0.1.0 and 0.2.0), released by
//! `tasknode-dist`, published and rolled out by the console, and taken by agents that run
//! from their own `bin/tasknode`. Every bad release leaves the agent on a version that runs,
//! and the console says why; 30 `kill -9`s at random points of an update brick nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tasknode_protocol::manifest::{self, Manifest};
use tasknode_tests::{
    Agent, Console, build_release, dist_json, enrolled_own_binary, hostname, install_binary,
    static_agent, update_agent, wait_for,
};

const V1: &str = "0.1.0";
const V2: &str = "0.2.0";
const TARGET: &str = "x86_64-unknown-linux-musl";

/// Release keys (two sets: the trusted one and another) and a release directory with 0.1.0
/// and 0.2.0 built in it, made once for every test here.
struct Releases {
    keys: PathBuf,
    key_hex: String,
    other_keys: PathBuf,
    dist: PathBuf,
}

fn releases() -> &'static Releases {
    static R: OnceLock<Releases> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tasknode_tests::fixture_dir("releases");
        let p = |s: &str| dir.join(s);
        let generated = dist_json(&["keygen", "--out", p("keys").to_str().unwrap()]);
        // A standby key, which agents built from these keys trust as well, for a rotation.
        let next = generated["next_manifest_public_key"].as_str().unwrap();
        assert_eq!(next.len(), 64);
        assert_ne!(next, generated["manifest_public_key"].as_str().unwrap());
        dist_json(&["keygen", "--out", p("other-keys").to_str().unwrap()]);
        let v1 = p("tasknode-0.1.0");
        install_binary(&static_agent(), &v1);
        for (version, agent) in [(V1, v1), (V2, update_agent())] {
            build_release(&p("dist"), &p("keys"), version, &agent, "none");
        }
        Releases {
            keys: p("keys"),
            key_hex: generated["manifest_public_key"]
                .as_str()
                .unwrap()
                .to_owned(),
            other_keys: p("other-keys"),
            dist: p("dist"),
        }
    })
}

/// A copy of the release directory that a test may change.
fn dist_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", releases().dist.display()))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", tasknode_tests::stderr(&out));
    dir
}

fn manifest_path(dist: &Path, version: &str) -> PathBuf {
    dist.join(format!("releases/{version}/manifest.stable.json"))
}

fn signing_key(keys: &Path) -> ed25519_dalek::SigningKey {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(keys.join("manifest-signing.secret.pem")).unwrap();
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap()
}

/// Puts `binary` into `dist` as release `version` with a manifest signed by `keys`, as a
/// release built wrong (or by someone else) would be; returns the manifest's path.
fn hand_made_release(
    dist: &Path,
    version: &str,
    binary: &[u8],
    target: &str,
    keys: &Path,
) -> PathBuf {
    use sha2::Digest;
    let dir = dist.join("releases").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("tasknode-{TARGET}");
    std::fs::write(dir.join(&name), binary).unwrap();
    let m = Manifest {
        format: manifest::FORMAT,
        channel: "stable".into(),
        version: version.into(),
        rollback: false,
        issued_ms: 1,
        expires_ms: None,
        artifacts: vec![manifest::Artifact {
            target: target.into(),
            url: format!("releases/{version}/{name}"),
            size: binary.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(binary)),
        }],
    };
    let path = manifest_path(dist, version);
    std::fs::write(&path, m.sign(&signing_key(keys)).unwrap()).unwrap();
    path
}

/// A shell script that carries the agent version marker of `version` (after its first line,
/// where sh never reads it) and runs `body`.
fn script_release(version: &str, body: &str) -> Vec<u8> {
    let mut s = format!("#!/bin/sh\n{body}\nexit 70\n# ").into_bytes();
    s.extend_from_slice(tasknode_protocol::AGENT_VERSION_MARKER);
    s.extend_from_slice(version.as_bytes());
    s.extend_from_slice(b"\0\n");
    s
}

/// A console serving `dist`, with a classic group `etl` holding this host, and an agent
/// running its own copy of 0.1.0 there, trusting the release key, with short health checks.
fn updating(dist: &Path) -> (Console, Agent) {
    let (console, mut agent) = enrolled_own_binary(dist);
    agent.allow_tasks();
    agent.set_config(
        "update",
        "trusted_keys",
        toml::Value::Array(vec![releases().key_hex.clone().into()]),
    );
    agent.set_config("update", "health_heartbeats", 2.into());
    agent.set_config("update", "health_timeout_secs", 10.into());
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(30));
    (console, agent)
}

fn publish(console: &Console, manifest: &Path) {
    console.cli_ok(&["release", "publish", manifest.to_str().unwrap()]);
}

fn pin(console: &Console, version: &str) {
    console.cli_ok(&["release", "pin", "--group", "etl", "--version", version]);
}

/// Waits until the console shows this host's update in `state`; returns the listing.
fn wait_update(console: &Console, state: &str, timeout: Duration) -> Value {
    console.wait_server(&hostname(), &format!("to be {state}"), timeout, |s| {
        s["update"]["state"] == state
    })
}

fn version_of(binary: &Path) -> Option<String> {
    let bytes = std::fs::read(binary).ok()?;
    tasknode_protocol::agent_version_in(&bytes).map(str::to_owned)
}

/// Runs `binary --version`: proof the file is a whole, runnable agent.
fn runs(binary: &Path) -> String {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not run: {}",
        binary.display(),
        tasknode_tests::stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn bin_dir_files(agent: &Agent) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(agent.exe().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_agent_moves_to_a_new_version_without_killing_its_task_and_rolls_back_when_told() {
    let dist = dist_copy();
    let (console, mut agent) = updating(dist.path());
    let pid = agent.pid();

    // A task that runs while the update arrives: the update waits for it.
    let id = console.submit_script("etl", "sleep 3; echo survived\n");
    console.wait_task(id, &["running"], Duration::from_secs(20));

    publish(&console, &manifest_path(dist.path(), V2));
    pin(&console, V2);
    let listed = wait_update(&console, "current", Duration::from_secs(60));
    assert_eq!(listed["version"], V2);
    assert_eq!(listed["status"], "available");
    // The rollout's progress, as the metrics show it.
    let m = console.metrics();
    let current = [("group", "etl"), ("version", V2), ("state", "current")];
    assert_eq!(
        tasknode_tests::metric(&m, "tasknode_rollout_servers", &current),
        Some(1.0),
        "{m}"
    );

    let t = console.task(id);
    assert_eq!(t["state"], "succeeded", "{t:#}");
    let log = console.cli_ok(&["task", "log", &id.to_string()]);
    assert!(log.contains("survived"), "{log}");

    // Same process (the new binary was exec'd), the old one kept beside it, nothing else.
    assert!(agent.is_running());
    assert_eq!(agent.pid(), pid);
    assert_eq!(runs(&agent.exe()), format!("tasknode {V2}"));
    let prev = agent.exe().with_file_name("tasknode.prev");
    assert_eq!(version_of(&prev).as_deref(), Some(V1));
    assert_eq!(bin_dir_files(&agent), ["tasknode", "tasknode.prev"]);
    let log = agent.agent_log();
    assert!(
        log.contains("the update waits for running tasks to end"),
        "{log}"
    );
    assert!(log.contains("update done"), "{log}");

    // Work is taken again as soon as probation ends. The new version's first poll asked for
    // none and would hold for 25 s; it gives way to one that takes this task at once.
    let after = console.submit_script("etl", "echo after\n");
    console.wait_task(after, &["succeeded"], Duration::from_secs(10));

    // Back to 0.1.0: refused as a downgrade until a signed rollback is published.
    publish(&console, &manifest_path(dist.path(), V1));
    let refused = console.cli(&["release", "pin", "--group", "etl", "--version", V1]);
    assert!(!refused.status.success());
    assert!(
        tasknode_tests::stderr(&refused).contains("tasknode-dist rollback"),
        "{}",
        tasknode_tests::stderr(&refused)
    );
    let signed = dist_json(&[
        "rollback",
        "--out",
        dist.path().to_str().unwrap(),
        "--keys",
        releases().keys.to_str().unwrap(),
        "--version",
        V1,
    ]);
    publish(&console, Path::new(signed["path"].as_str().unwrap()));
    pin(&console, V1);
    let listed = wait_update(&console, "current", Duration::from_secs(60));
    assert_eq!(listed["version"], V1);
    assert_eq!(runs(&agent.exe()), format!("tasknode {V1}"));
    assert_eq!(agent.pid(), pid);
}

/// One bad release: the agent keeps running `V1` from an unchanged binary, leaves no file
/// behind, and the console shows the update failed with a reason containing `why`.
fn refused(console: &Console, agent: &mut Agent, version: &str, why: &str) {
    let before = std::fs::read(agent.exe()).unwrap();
    pin(console, version);
    let listed = wait_update(console, "failed", Duration::from_secs(60));
    let reason = listed["update"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "reason {reason:?} lacks {why:?}");
    assert_eq!(listed["version"], V1);
    assert!(agent.is_running());
    assert_eq!(std::fs::read(agent.exe()).unwrap(), before);
    wait_for(
        Duration::from_secs(10),
        "only the binary and the failure record",
        || (bin_dir_files(agent) == [".tasknode.update", "tasknode"]).then_some(()),
    );
    console.wait_status(&hostname(), "available", Duration::from_secs(10));
}

#[test]
fn a_tampered_or_truncated_binary_is_refused() {
    let dist = dist_copy();
    let (console, mut agent) = updating(dist.path());
    publish(&console, &manifest_path(dist.path(), V1));
    publish(&console, &manifest_path(dist.path(), V2));
    let binary = dist.path().join(format!("releases/{V2}/tasknode-{TARGET}"));
    let mut bytes = std::fs::read(&binary).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&binary, &bytes).unwrap();
    refused(&console, &mut agent, V2, "was changed or damaged");

    // The same release cut short; retried at once once the console asks again.
    std::fs::write(&binary, &bytes[..middle]).unwrap();
    agent.kill();
    std::fs::remove_file(agent.exe().with_file_name(".tasknode.update")).unwrap();
    console.cli_ok(&["release", "pin", "--group", "etl", "--version", V1]);
    agent.run();
    refused(
        &console,
        &mut agent,
        V2,
        &format!("ended after {middle} of"),
    );
}

#[test]
fn manifests_that_are_unsigned_untrusted_or_for_another_target_are_refused() {
    let dist = dist_copy();
    // Without its public key the console publishes what it is given: the agent must refuse.
    std::fs::remove_file(dist.path().join("manifest-signing.public.pem")).unwrap();
    let (console, mut agent) = updating(dist.path());
    let v2 = std::fs::read(update_agent()).unwrap();

    hand_made_release(dist.path(), "0.3.0", &v2, TARGET, &releases().other_keys);
    publish(&console, &manifest_path(dist.path(), "0.3.0"));
    refused(&console, &mut agent, "0.3.0", "does not trust");

    let path = hand_made_release(dist.path(), "0.4.0", &v2, TARGET, &releases().keys);
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    envelope["signature"] = "".into();
    std::fs::write(&path, envelope.to_string()).unwrap();
    publish(&console, &path);
    refused(&console, &mut agent, "0.4.0", "unsigned");

    hand_made_release(
        dist.path(),
        "0.5.0",
        &v2,
        "aarch64-unknown-linux-musl",
        &releases().keys,
    );
    publish(&console, &manifest_path(dist.path(), "0.5.0"));
    refused(
        &console,
        &mut agent,
        "0.5.0",
        "no binary for this agent's target",
    );

    // A downgrade the console would refuse to pin, asked for by hand.
    hand_made_release(dist.path(), "0.0.9", &v2, TARGET, &releases().keys);
    publish(&console, &manifest_path(dist.path(), "0.0.9"));
    let out = std::process::Command::new(agent.exe())
        .args(["update", "--check", "--version", "0.0.9", "--json"])
        .env("TASKNODE_CONFIG", agent.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("not a signed rollback"),
        "{report:#}"
    );
}

#[test]
fn the_console_refuses_a_release_it_cannot_verify() {
    let dist = dist_copy();
    let console = Console::start(&["--dist", dist.path().to_str().unwrap()]);
    let v2 = std::fs::read(update_agent()).unwrap();
    let path = hand_made_release(dist.path(), "0.3.0", &v2, TARGET, &releases().other_keys);
    let out = console.cli(&["release", "publish", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        tasknode_tests::stderr(&out).contains("signature"),
        "{}",
        tasknode_tests::stderr(&out)
    );
    let listed = console.cli_ok(&["release", "list", "--json"]);
    assert!(!listed.contains("0.3.0"), "{listed}");
}

#[test]
fn a_version_that_crashes_or_cannot_heartbeat_is_never_kept() {
    let dist = dist_copy();
    let (console, mut agent) = updating(dist.path());
    let crash = script_release("0.3.0", "echo 'tasknode 0.3.0: cannot start' >&2");
    hand_made_release(dist.path(), "0.3.0", &crash, TARGET, &releases().keys);
    publish(&console, &manifest_path(dist.path(), "0.3.0"));
    refused(&console, &mut agent, "0.3.0", "cannot start");

    let hang = script_release("0.4.0", "exec sleep 600");
    hand_made_release(dist.path(), "0.4.0", &hang, TARGET, &releases().keys);
    publish(&console, &manifest_path(dist.path(), "0.4.0"));
    refused(
        &console,
        &mut agent,
        "0.4.0",
        "did not get 2 heartbeats answered",
    );
}

#[test]
fn a_new_version_that_cannot_heartbeat_after_the_swap_is_rolled_back() {
    let dist = dist_copy();
    let (mut console, mut agent) = updating(dist.path());
    publish(&console, &manifest_path(dist.path(), V2));
    pin(&console, V2);
    // By hand on a stopped agent: download, verify, trial, swap.
    agent.stop();
    let out = std::process::Command::new(agent.exe())
        .args(["update", "--json"])
        .env("TASKNODE_CONFIG", agent.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", tasknode_tests::stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["updated_to"], V2, "{report:#}");
    assert_eq!(runs(&agent.exe()), format!("tasknode {V2}"));

    // The console is gone when the new version starts: probation fails, 0.1.0 comes back.
    console.kill();
    agent.set_config("update", "health_timeout_secs", 3.into());
    agent.run();
    wait_for(
        Duration::from_secs(30),
        "the previous version put back",
        || (version_of(&agent.exe()).as_deref() == Some(V1)).then_some(()),
    );
    assert!(agent.is_running());
    console.restart();
    // The report and the next heartbeat race: until 0.1.0's first heartbeat is answered, the
    // console lists the version it last heard from, 0.2.0 on its trial.
    let listed = console.wait_server(
        &hostname(),
        "to be failed and run 0.1.0",
        Duration::from_secs(30),
        |s| s["update"]["state"] == "failed" && s["version"] == V1,
    );
    let reason = listed["update"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("heartbeats answered within 3 s"),
        "{reason}"
    );
    assert!(reason.contains("was put back"), "{reason}");
}

#[test]
fn a_full_disk_or_a_console_dying_mid_download_leaves_the_agent_as_it_was() {
    if !rustix::process::geteuid().is_root() {
        panic!("this test mounts a small tmpfs and must run as root (CI does)");
    }
    let dist = dist_copy();
    let (mut console, mut agent) = updating(dist.path());
    agent.set_config("update", "retry_after_secs", 1.into());
    // The agent's bin/ on a file system with room for one binary only.
    agent.kill();
    let bin_dir = agent.exe().parent().unwrap().to_owned();
    let v1 = std::fs::read(agent.exe()).unwrap();
    let size_kib = v1.len() / 1024 + 1024;
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
        .arg(&bin_dir)
        .output()
        .unwrap();
    assert!(mount.status.success(), "{}", tasknode_tests::stderr(&mount));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let _unmount = Unmount(bin_dir.clone());
    std::fs::write(agent.exe(), &v1).unwrap();
    std::fs::set_permissions(
        agent.exe(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(30));
    publish(&console, &manifest_path(dist.path(), V1));
    publish(&console, &manifest_path(dist.path(), V2));
    refused(&console, &mut agent, V2, "make room on the file system");

    // Room again; the console dies while the agent downloads.
    agent.kill();
    let _ = std::process::Command::new("umount").arg(&bin_dir).status();
    std::fs::write(agent.exe(), &v1).unwrap();
    std::fs::set_permissions(
        agent.exe(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let _ = std::fs::remove_file(bin_dir.join(".tasknode.update"));
    console.cli_ok(&["release", "pin", "--group", "etl", "--version", V1]);
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(30));
    pin(&console, V2);
    wait_for(Duration::from_secs(30), "the download to start", || {
        agent
            .agent_log()
            .contains("downloading the new version")
            .then_some(())
    });
    console.kill();
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.is_running());
    assert_eq!(runs(&agent.exe()), format!("tasknode {V1}"));
    console.restart();
    // Once the console is back the update is tried again and goes through.
    let listed = wait_update(&console, "current", Duration::from_secs(90));
    assert_eq!(listed["version"], V2);
}

#[test]
fn thirty_kills_at_random_points_of_an_update_brick_nothing() {
    use rand::Rng;
    let dist = dist_copy();
    let (console, mut agent) = updating(dist.path());
    publish(&console, &manifest_path(dist.path(), V2));
    pin(&console, V2);
    wait_update(&console, "current", Duration::from_secs(60));
    let v1 = static_agent();
    let bin_dir = agent.exe().parent().unwrap().to_owned();
    let mut rng = rand::thread_rng();
    let mut killed_on = std::collections::BTreeMap::<String, u32>::new();
    for trial in 0..30 {
        // Back to 0.1.0, with nothing of the last update left.
        agent.kill();
        for f in ["tasknode.prev", ".tasknode.update"] {
            let _ = std::fs::remove_file(bin_dir.join(f));
        }
        install_binary(&v1, &agent.exe());
        agent.run();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..4000)));
        agent.kill();
        // Whatever the moment, the binary in place is a whole agent of one of the versions.
        let version = runs(&agent.exe());
        assert!(
            version == format!("tasknode {V1}") || version == format!("tasknode {V2}"),
            "trial {trial}: {version}"
        );
        *killed_on.entry(version).or_default() += 1;
        // And started again, it finishes the update.
        agent.run();
        wait_for(Duration::from_secs(60), "the update to finish", || {
            (version_of(&agent.exe()).as_deref() == Some(V2)
                && !bin_dir.join(".tasknode.update").exists()
                && console.server(&hostname())["version"] == V2)
                .then_some(())
        });
        assert_eq!(runs(&agent.exe()), format!("tasknode {V2}"));
        assert_eq!(bin_dir_files(&agent), ["tasknode", "tasknode.prev"]);
    }
    eprintln!("binary in place when killed: {killed_on:?}");
}

/// Three VPC agents: a rollout of a release that cannot start halts after its first batch and
/// offers it to nobody else; a rollout of a good one moves all three, two at a time.
#[test]
fn a_staged_rollout_halts_on_a_failure_and_completes_in_batches() {
    let dist = dist_copy();
    let console = Console::start(&[
        "--dist",
        dist.path().to_str().unwrap(),
        "--heartbeat-interval",
        "1s",
    ]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "fleet", "--network", "vpc"]);
    let mut agents = Vec::new();
    for i in 1..=3 {
        let uuid = format!("4c4c4544-0000-4000-8000-00000000000{i}");
        console.cli_ok(&["server", "add", "--group", "fleet", "--name", &uuid]);
        let mut agent = Agent::with_uuid(&uuid).with_own_binary(&static_agent());
        agent.enroll_ok(&console.url, "etl", &password, true);
        agent.set_config(
            "update",
            "trusted_keys",
            toml::Value::Array(vec![releases().key_hex.clone().into()]),
        );
        agent.set_config("update", "health_heartbeats", 2.into());
        agent.run();
        console.wait_status(&uuid, "available", Duration::from_secs(30));
        agents.push((uuid, agent));
    }
    let crash = script_release("0.3.0", "echo 'tasknode 0.3.0: cannot start' >&2");
    hand_made_release(dist.path(), "0.3.0", &crash, TARGET, &releases().keys);
    publish(&console, &manifest_path(dist.path(), "0.3.0"));
    publish(&console, &manifest_path(dist.path(), V2));

    let rollout = |version: &str, batch: &str| {
        console.cli_ok(&[
            "release",
            "rollout",
            "--group",
            "fleet",
            "--version",
            version,
            "--batch",
            batch,
            "--max-failures",
            "0",
        ]);
    };
    let fleet = |console: &Console| -> Value {
        let list: Value =
            serde_json::from_str(&console.cli_ok(&["release", "list", "--json"])).unwrap();
        list["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == "fleet")
            .cloned()
            .unwrap_or(Value::Null)
    };

    rollout("0.3.0", "1");
    let halted = wait_for(Duration::from_secs(60), "the rollout to halt", || {
        let r = fleet(&console);
        (r["state"] == "halted").then_some(r)
    });
    assert_eq!(halted["admitted"], 1, "{halted:#}");
    assert_eq!(halted["failed"], 1, "{halted:#}");
    assert!(
        halted["reason"].as_str().unwrap().contains("cannot start"),
        "{halted:#}"
    );
    let states: Vec<String> = agents
        .iter()
        .map(|(uuid, _)| {
            console.server(uuid)["update"]["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, ["failed", "waiting", "waiting"], "{states:?}");
    for (uuid, agent) in &mut agents {
        assert!(agent.is_running(), "{uuid}");
        assert_eq!(runs(&agent.exe()), format!("tasknode {V1}"));
    }

    rollout(V2, "2");
    let done = wait_for(Duration::from_secs(120), "the rollout to finish", || {
        let r = fleet(&console);
        (r["state"] == "done" && r["updated"] == 3).then_some(r)
    });
    assert_eq!(done["servers"], 3, "{done:#}");
    for (uuid, agent) in &agents {
        let s = console.server(uuid);
        assert_eq!(s["version"], V2, "{s:#}");
        assert_eq!(s["update"]["state"], "current", "{s:#}");
        assert_eq!(runs(&agent.exe()), format!("tasknode {V2}"));
    }
}

/// An agent installed from a package never replaces its own files: the console shows the
/// package manager's command instead.
#[test]
fn a_packaged_agent_reports_that_its_package_manager_updates_it() {
    let dist = dist_copy();
    let (console, mut agent) = updating(dist.path());
    agent.kill();
    let text = std::fs::read_to_string(agent.config()).unwrap();
    let text = text.replace("install_method = \"manual\"", "install_method = \"rpm\"");
    assert!(text.contains("install_method = \"rpm\""), "{text}");
    std::fs::write(agent.config(), text).unwrap();
    agent.run();
    let before = std::fs::read(agent.exe()).unwrap();
    publish(&console, &manifest_path(dist.path(), V2));
    pin(&console, V2);
    let listed = wait_update(&console, "managed", Duration::from_secs(30));
    let reason = listed["update"]["reason"].as_str().unwrap();
    assert!(reason.contains("yum update tasknode"), "{reason}");
    assert_eq!(listed["version"], V1);
    assert_eq!(std::fs::read(agent.exe()).unwrap(), before);
}
