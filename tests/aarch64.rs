//! The static aarch64 agent, end to end on an x86_64 host under qemu-user: a release built for
//! both architectures has each one's tarball, binary, RPMs, .deb, repository and manifest entry;
//! the console serves both and its install script carries both; the aarch64 agent enrolls with
//! a real console, heartbeats until available, runs a task, serves its log, and updates itself
//! to the next aarch64 release.
//!
//! Under binfmt_misc the kernel runs the aarch64 ELF through qemu, including the agent's own
//! start of its new binary and its exec. Without it the agent is started as
//! `qemu-aarch64-static AGENT`: that covers everything but the update, which
//! [`aarch64::require_binfmt`] then fails in CI and reports as not run elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tasknode_render::arch::Arch;
use tasknode_tests::releases::{EPOCH, fixture, ok};
use tasknode_tests::{
    Agent, Console, aarch64, dist_json, hostname, install_binary, static_agent, stderr,
    update_agent, wait_for, which,
};

const V2: &str = "0.2.0";

/// `tasknode-dist build` of `version` from `agents` for `targets`, signed with `keys`.
fn build(out: &Path, keys: &Path, version: &str, agents: &[&Path], targets: &str) -> Value {
    let mut args = vec![
        "build".to_owned(),
        "--out".into(),
        out.display().to_string(),
        "--version".into(),
        version.into(),
        "--targets".into(),
        targets.into(),
        "--keys".into(),
        keys.display().to_string(),
        "--source-date-epoch".into(),
        EPOCH.into(),
    ];
    for a in agents {
        args.push("--agent".into());
        args.push(a.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dist_json(&args)
}

fn version_in(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    tasknode_protocol::agent_version_in(&bytes)
        .unwrap()
        .to_owned()
}

/// The stripped aarch64 agent of the workspace's version, in `dir`.
fn aarch64_v1(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tasknode-aarch64-v1");
    install_binary(&aarch64::static_agent(), &path);
    path
}

#[test]
fn a_release_for_both_architectures_has_every_artifact_and_the_console_serves_both() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let arm = aarch64_v1(dir.path());
    let v1 = version_in(&arm);
    assert_eq!(
        v1, f.v1.0,
        "the aarch64 and x86_64 test agents are one version"
    );
    let out = dir.path().join("dist");
    let report = build(&out, &f.keys, &v1, &[&arm, &f.v1.1], "el6,el7,al7,al8,deb");

    // One tarball, binary and .deb per architecture; RPMs where the dist has the architecture.
    let rel = out.join("releases").join(&v1);
    for (arch, deb) in [("x86_64", "amd64"), ("aarch64", "arm64")] {
        let tarball = rel.join(format!("tasknode-{v1}-{arch}-linux-musl.tar.gz"));
        let listed = ok(Command::new("tar").arg("-tzf").arg(&tarball));
        assert_eq!(listed.trim(), format!("tasknode-{v1}/tasknode"));
        let binary = rel.join(format!("tasknode-{arch}-unknown-linux-musl"));
        let bytes = std::fs::read(&binary).unwrap();
        assert_eq!(Arch::of_elf(&bytes).map(Arch::uname), Some(arch));
        let debfile = rel.join(format!("tasknode_{v1}-1_{deb}.deb"));
        let fields = ok(Command::new(which("dpkg-deb"))
            .arg("-f")
            .arg(&debfile)
            .args(["Architecture", "Version"]));
        assert_eq!(fields, format!("Architecture: {deb}\nVersion: {v1}-1\n"));
        let extracted = dir.path().join(format!("deb-{deb}"));
        ok(Command::new(which("dpkg-deb"))
            .arg("-x")
            .arg(&debfile)
            .arg(&extracted));
        assert_eq!(
            std::fs::read(extracted.join("usr/bin/tasknode")).unwrap(),
            bytes,
            "the {deb} .deb carries the {arch} agent"
        );
        let agent = std::fs::read(out.join(format!("agents/tasknode-{arch}"))).unwrap();
        assert_eq!(agent, bytes, "install scripts get the {arch} agent");
    }
    for (dist, arches) in [
        ("el6", &["x86_64"][..]),
        ("el7", &["x86_64", "aarch64"][..]),
        ("al7", &["x86_64"][..]),
        ("al8", &["x86_64", "aarch64"][..]),
    ] {
        for arch in ["x86_64", "aarch64"] {
            let rpm = out.join(format!(
                "repo/{dist}/{arch}/tasknode-{v1}-1.{dist}.{arch}.rpm"
            ));
            assert_eq!(rpm.exists(), arches.contains(&arch), "{}", rpm.display());
            if !rpm.exists() {
                assert!(!out.join(format!("repo/{dist}/{arch}")).exists());
                continue;
            }
            let q = ok(Command::new("rpm")
                .args(["-qp", "--qf", "%{ARCH}"])
                .arg(&rpm));
            assert_eq!(q, arch);
            let checked = ok(Command::new("rpm").args(["-K", "--nosignature"]).arg(&rpm));
            assert!(checked.contains("digests OK"), "{checked}");
            assert!(
                out.join(format!("repo/{dist}/{arch}/repodata/repomd.xml.asc"))
                    .exists()
            );
        }
    }
    let repos: Vec<(String, String)> = report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dist"].as_str().unwrap().to_owned(),
                r["arch"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(repos.len(), 6, "{repos:?}");

    // One manifest names each architecture's binary, by its Rust target.
    let key = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let pem = std::fs::read_to_string(f.keys.join("manifest-signing.secret.pem")).unwrap();
        ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .unwrap()
            .verifying_key()
    };
    let text = std::fs::read(rel.join("manifest.stable.json")).unwrap();
    let m = tasknode_protocol::manifest::verify(&text, &[key]).unwrap();
    let targets: Vec<&str> = m.artifacts.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(
        targets,
        ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]
    );
    // SHA256SUMS covers every architecture's files, and they check.
    let sums = std::fs::read_to_string(rel.join("SHA256SUMS")).unwrap();
    for name in [
        "tasknode_".to_owned() + &v1 + "-1_arm64.deb",
        format!("tasknode-{v1}-aarch64-linux-musl.tar.gz"),
        "tasknode-aarch64-unknown-linux-musl".to_owned(),
        format!("repo/al8/aarch64/tasknode-{v1}-1.al8.aarch64.rpm"),
        format!("repo/el7/aarch64/tasknode-{v1}-1.el7.aarch64.rpm"),
    ] {
        assert!(sums.contains(&name), "{name} not in {sums}");
    }
    ok(Command::new("sha256sum")
        .args(["--quiet", "-c"])
        .arg(format!("releases/{v1}/SHA256SUMS"))
        .current_dir(&out));

    // The console serves both: the install script carries each URL and SHA-256, and the
    // files, repositories and binaries are there.
    let console = Console::start(&["--dist", out.to_str().unwrap()]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let made = console.cli_ok(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--ttl",
        "1h",
        "--json",
    ]);
    let url = serde_json::from_str::<Value>(&made).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let script = console.http().get(&url).send().unwrap().text().unwrap();
    let http = console.http();
    for arch in ["x86_64", "aarch64"] {
        let bytes = std::fs::read(out.join(format!("agents/tasknode-{arch}"))).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        let upper = arch.to_uppercase();
        assert!(
            script.contains(&format!("AGENT_{upper}_SHA256='{sha}'")),
            "{script:.900}"
        );
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("AGENT_{upper}_URL=")))
            .unwrap();
        let agent_url = line
            .split_once('=')
            .unwrap()
            .1
            .trim_matches('\'')
            .to_owned();
        let served = http.get(&agent_url).send().unwrap().bytes().unwrap();
        assert_eq!(hex::encode(Sha256::digest(&served)), sha, "{agent_url}");
        for path in [
            format!("releases/{v1}/tasknode-{arch}-unknown-linux-musl"),
            format!("repo/al8/{arch}/repodata/repomd.xml"),
        ] {
            let r = http.get(format!("{}/{path}", console.url)).send().unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }
    }

    // A later release for x86_64 alone would leave install scripts two versions: refused,
    // nothing written.
    let e = Command::new(tasknode_tests::bin("tasknode-dist"))
        .args([
            "build",
            "--out",
            out.to_str().unwrap(),
            "--version",
            &f.v2.0,
        ])
        .args(["--targets", "none", "--keys", f.keys.to_str().unwrap()])
        .arg("--agent")
        .arg(&f.v2.1)
        .args(["--source-date-epoch", EPOCH])
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(
        stderr(&e).contains("has no aarch64 agent") && stderr(&e).contains("--agent"),
        "{}",
        stderr(&e)
    );
    assert!(!out.join("releases").join(&f.v2.0).exists());
    assert_eq!(version_in(&out.join("agents/tasknode-x86_64")), v1);
}

/// A console serving `dist` (heartbeats a second apart), a classic group `etl` with this host,
/// and the aarch64 agent `binary` enrolled there from its own bin/tasknode, run through binfmt
/// or, without it, through qemu directly.
fn enrolled_aarch64(dist: Option<&Path>, binary: &Path) -> (Console, Agent) {
    let mut flags = vec!["--heartbeat-interval", "1s"];
    if let Some(d) = dist {
        flags.extend(["--dist", d.to_str().unwrap()]);
    }
    let console = Console::start(&flags);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    let mut agent = Agent::new().with_own_binary(binary);
    if !aarch64::binfmt_runs_aarch64() {
        agent = agent.under_emulator(&aarch64::qemu());
    }
    agent.enroll_ok(&console.url, "etl", &password, false);
    agent.allow_tasks();
    (console, agent)
}

/// The port the agent's log service said it listens on.
fn log_port(agent: &Agent) -> u16 {
    wait_for(Duration::from_secs(30), "the log service to listen", || {
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

#[test]
fn the_aarch64_agent_under_qemu_enrolls_heartbeats_runs_a_task_and_serves_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let arm = aarch64_v1(dir.path());
    let version = aarch64::command(&arm).arg("--version").output().unwrap();
    assert!(version.status.success(), "{}", stderr(&version));
    let (console, mut agent) = enrolled_aarch64(None, &arm);
    agent.run();
    let listed = console.wait_status(&hostname(), "available", Duration::from_secs(60));
    assert_eq!(listed["version"], version_in(&arm));
    // The process is qemu running the aarch64 agent, whether binfmt or this test started it.
    let exe = std::fs::read_link(format!("/proc/{}/exe", agent.pid())).unwrap();
    assert!(exe.ends_with("qemu-aarch64-static"), "{}", exe.display());

    // A task runs (the host's /bin/sh, started by the emulated agent), and its log comes from
    // the agent's log service while it runs.
    let port = log_port(&agent);
    assert_ne!(port, 0);
    let id = console.submit_script("etl", "echo from-aarch64\nsleep 2\necho done\n");
    console.wait_task(id, &["running"], Duration::from_secs(30));
    let log = console.cli_ok(&["task", "log", &id.to_string(), "--follow"]);
    assert_eq!(log, "from-aarch64\ndone\n");
    let done = console.wait_task(id, &["succeeded"], Duration::from_secs(30));
    assert_eq!(done["exit_code"], 0, "{done}");
    let raw = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(raw.is_ok(), "the log port listens");
    assert!(agent.stop(), "the agent stops cleanly");
}

#[test]
fn the_aarch64_agent_under_qemu_updates_itself_to_the_next_aarch64_release() {
    if !aarch64::require_binfmt() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let generated = dist_json(&["keygen", "--out", keys.to_str().unwrap()]);
    let dist = dir.path().join("dist");
    let arm = aarch64_v1(dir.path());
    let v1 = version_in(&arm);
    let v2_agent = dir.path().join("tasknode-aarch64-v2");
    install_binary(&aarch64::update_agent(), &v2_agent);
    assert_eq!(version_in(&v2_agent), V2);
    // Both releases for both architectures: the agent must take its own target's binary.
    let x86_v1 = dir.path().join("tasknode-x86_64-v1");
    install_binary(&static_agent(), &x86_v1);
    assert_eq!(version_in(&x86_v1), v1);
    build(&dist, &keys, &v1, &[&x86_v1, &arm], "none");
    build(&dist, &keys, V2, &[&update_agent(), &v2_agent], "none");

    let (console, mut agent) = enrolled_aarch64(Some(&dist), &arm);
    agent.set_config(
        "update",
        "trusted_keys",
        toml::Value::Array(vec![
            generated["manifest_public_key"]
                .clone()
                .as_str()
                .unwrap()
                .into(),
        ]),
    );
    agent.set_config("update", "health_heartbeats", 2.into());
    agent.set_config("update", "health_timeout_secs", 30.into());
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(60));
    let pid = agent.pid();

    let manifest = dist.join(format!("releases/{V2}/manifest.stable.json"));
    console.cli_ok(&["release", "publish", manifest.to_str().unwrap()]);
    console.cli_ok(&["release", "pin", "--group", "etl", "--version", V2]);
    let listed = console.wait_server(
        &hostname(),
        "to be current",
        Duration::from_secs(120),
        |s| s["update"]["state"] == "current",
    );
    assert_eq!(listed["version"], V2);
    // The same process (exec keeps the pid) now runs the new aarch64 binary.
    assert_eq!(agent.pid(), pid);
    assert!(agent.is_running());
    assert_eq!(version_in(&agent.exe()), V2);
    let bytes = std::fs::read(agent.exe()).unwrap();
    assert_eq!(Arch::of_elf(&bytes), Some(Arch::Aarch64));
    assert_eq!(
        bytes,
        std::fs::read(dist.join(format!("releases/{V2}/tasknode-aarch64-unknown-linux-musl")))
            .unwrap(),
        "the agent took the aarch64 binary of the release"
    );
    let out = Command::new(agent.exe()).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tasknode {V2}")
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.ends_with("qemu-aarch64-static"),
        "the kernel runs the agent through qemu: {}",
        exe.display()
    );
    // And it still works: a task after the update.
    let id = console.submit_script("etl", "echo after-update\n");
    let done = console.wait_task(id, &["succeeded"], Duration::from_secs(60));
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(
        console.cli_ok(&["task", "log", &id.to_string()]),
        "after-update\n"
    );
}

#[test]
fn install_sh_on_an_aarch64_host_installs_the_aarch64_agent_the_console_serves() {
    if !tasknode_tests::sandbox::require_root() || !aarch64::require_binfmt() {
        return;
    }
    use tasknode_tests::sandbox::{Os, Sandbox};
    // The console serves both architectures' agents.
    let agents = tempfile::tempdir().unwrap();
    install_binary(&static_agent(), &agents.path().join("tasknode-x86_64"));
    let arm = agents.path().join("tasknode-aarch64");
    install_binary(&aarch64::static_agent(), &arm);
    let console = Console::start(&[
        "--heartbeat-interval",
        "1s",
        "--agent-dir",
        agents.path().to_str().unwrap(),
    ]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    let uuid = "4c4c4544-0042-3510-8051-b4c04f3332a6";
    console.cli_ok(&["server", "add", "--group", "vpc", "--name", uuid]);

    // A host whose `uname -m` says aarch64; the kernel runs the aarch64 agent through qemu
    // (binfmt_misc's F flag opened qemu already, so it runs inside the chroot too).
    let sb = Sandbox::new(Os::Alinux3);
    sb.set_uuid(uuid);
    sb.add_program("curl");
    let uname = sb.path("/usr/bin/uname");
    std::fs::write(
        &uname,
        "#!/bin/sh\n[ \"$1\" = -m ] && { echo aarch64; exit 0; }\nexec /bin/busybox uname \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();
    let made = console.cli_ok(&[
        "install-command",
        "--group",
        "vpc",
        "--user",
        "etl",
        "--json",
    ]);
    let cmd: Value = serde_json::from_str(&made).unwrap();
    // Under dash: Debian's busybox ash runs its own applets (uname too) before PATH.
    let head = cmd["command"]
        .as_str()
        .unwrap()
        .strip_suffix(" | sh")
        .unwrap();
    let out = sb.sh("/usr/bin/dash", &format!("{head} | /usr/bin/dash"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "install failed:\n{said}");
    assert!(said.contains("arch aarch64"), "{said}");
    console.wait_status(uuid, "available", Duration::from_secs(60));
    let installed = std::fs::read(sb.path("/home/admin/tasknode/bin/tasknode")).unwrap();
    assert_eq!(
        installed,
        std::fs::read(&arm).unwrap(),
        "install.sh took the aarch64 agent"
    );
    let out = sb.sh(
        "/usr/bin/dash",
        &format!("{head} | /usr/bin/dash -s -- --uninstall --purge"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!sb.path("/home/admin/tasknode/bin/tasknode").exists());
}
