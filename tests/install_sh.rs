//! install.sh for real: the console's one-time command run inside a chroot sandbox (busybox,
//! dash and bash), against a real console on loopback, with the static agent it serves. The
//! server must end up available; re-runs, a spent link, uninstall and purge are checked by
//! comparing the sandbox's files before and after. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tasknode_tests::sandbox::{Os, Sandbox, require_root};
use tasknode_tests::{Console, static_agent, stderr};

const UUIDS: [&str; 3] = [
    "4c4c4544-0042-3510-8051-b4c04f333201",
    "4c4c4544-0042-3510-8051-b4c04f333202",
    "4c4c4544-0042-3510-8051-b4c04f333203",
];

/// A console serving the static agent, with user etl and a VPC group holding `uuids`.
fn console(uuids: &[&str], extra: &[&str]) -> (Console, tempfile::TempDir) {
    let agents = tempfile::tempdir().unwrap();
    let dst = agents.path().join("tasknode-x86_64");
    std::fs::copy(static_agent(), &dst).unwrap();
    // Debug info is most of a debug build; the agent downloads faster without it.
    let _ = std::process::Command::new("strip").arg(&dst).output();
    let mut flags = vec![
        "--heartbeat-interval",
        "1s",
        "--agent-dir",
        agents.path().to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    let console = Console::start(&flags);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    for uuid in uuids {
        console.cli_ok(&["server", "add", "--group", "vpc", "--name", uuid]);
    }
    (console, agents)
}

fn install_command(console: &Console) -> Value {
    let out = console.cli_ok(&[
        "install-command",
        "--group",
        "vpc",
        "--user",
        "etl",
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

/// Drops the backups and lock shadow's useradd/userdel write on any system (`/etc/passwd-`,
/// `/etc/.pwd.lock`, ...): the OS tools' own files, not the install's.
fn without_shadow_backups(files: BTreeSet<String>) -> BTreeSet<String> {
    const SHADOW: [&str; 5] = [
        "etc/.pwd.lock",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
    ];
    files
        .into_iter()
        .filter(|f| !SHADOW.contains(&f.as_str()))
        .collect()
}

fn agent_running(sb: &Sandbox) -> bool {
    sb.sh("/bin/sh", "[ -f /home/admin/tasknode/run/tasknode.pid ] && kill -0 \"$(cat /home/admin/tasknode/run/tasknode.pid)\"")
        .status
        .success()
}

#[test]
fn the_install_command_installs_under_every_shell_and_uninstalls_without_residue() {
    if !require_root() {
        return;
    }
    let (console, _agents) = console(&UUIDS, &[]);
    for (shell, uuid) in ["/bin/sh", "/usr/bin/dash", "/usr/bin/bash"]
        .iter()
        .zip(UUIDS)
    {
        let sb = Sandbox::new(Os::CentOs6);
        sb.set_uuid(uuid);
        let before = sb.files();
        let cmd = install_command(&console);
        assert_eq!(cmd["enable_uuid"], true);
        // Fetching the script does not spend the link (enrolling does): keep a copy, as an
        // operator who downloads it first would, for the uninstall below.
        let script = sb.path("/tmp/install.sh");
        let body = reqwest::blocking::get(cmd["url"].as_str().unwrap())
            .unwrap()
            .text()
            .unwrap();
        std::fs::write(&script, body).unwrap();
        // The command as printed, with the sandbox's shell at the end of the pipe.
        let wget = cmd["wget_command"]
            .as_str()
            .unwrap()
            .replace("| sh", &format!("| {shell}"));
        let out = sb.sh("/bin/sh", &wget);
        assert!(
            out.status.success(),
            "{shell}: install failed:\n{}",
            text(&out)
        );
        let said = text(&out);
        assert!(
            said.contains("os el6") && said.contains("is installed"),
            "{said}"
        );
        let listed = console.wait_status(uuid, "available", Duration::from_secs(10));
        assert_eq!(listed["group"], "vpc");
        assert!(agent_running(&sb), "{shell}: no agent running");

        // What the agent runs as and what it owns.
        let conf = sb.path("/home/admin/tasknode/conf/tasknode.conf");
        let meta = std::fs::metadata(&conf).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let passwd = std::fs::read_to_string(sb.path("/etc/passwd")).unwrap();
        let admin_uid: u32 = passwd
            .lines()
            .find_map(|l| l.strip_prefix("admin:x:"))
            .and_then(|rest| rest.split(':').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(meta.uid(), admin_uid, "the config belongs to admin");
        let pid =
            std::fs::read_to_string(sb.path("/home/admin/tasknode/run/tasknode.pid")).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line.split_whitespace().nth(1) == Some(&admin_uid.to_string()),
            "agent runs as {uid_line}"
        );

        // The link works once.
        let again = sb.sh("/bin/sh", &wget);
        assert!(!again.status.success());
        assert!(text(&again).contains("was used at"), "{}", text(&again));
        assert!(
            agent_running(&sb),
            "a refused second run must leave the install alone"
        );

        // Uninstall keeps the logs; purge leaves the sandbox as it was.
        let out = sb.sh(shell, &format!("{shell} /tmp/install.sh --uninstall"));
        assert!(out.status.success(), "{}", text(&out));
        assert!(!agent_running(&sb));
        let after: BTreeSet<String> = sb.files();
        let extra: Vec<_> = after.difference(&before).collect();
        assert!(
            extra.iter().all(|p| p.starts_with("home/admin")
                || p.starts_with("var/lib/tasknode-install")
                || p.starts_with("etc/")),
            "uninstall left {extra:?}"
        );
        assert!(
            sb.path("/home/admin/tasknode/logs/heartbeat.log").exists(),
            "uninstall must keep the logs"
        );
        let out = sb.sh(
            shell,
            &format!("{shell} /tmp/install.sh --uninstall --purge"),
        );
        assert!(out.status.success(), "{}", text(&out));
        let after = without_shadow_backups(sb.files());
        let before = without_shadow_backups(before.clone());
        assert_eq!(
            after.symmetric_difference(&before).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{shell}: purge left residue"
        );
        console.wait_status(uuid, "stopped", Duration::from_secs(10));
    }
}
