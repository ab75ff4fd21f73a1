//! The privilege boundary, tried as an attacker: a task runs as `admin`, so `admin` replaces
//! the agent's binary and bin/serverctl with payloads that record their uid, and points run/,
//! logs/ and the agent's directory itself at /etc and /usr. Then root does everything root
//! does (the root-owned serverctl, the init script, a re-run of install.sh, --reinstall,
//! --uninstall, --purge), in a chroot sandbox. No payload may run as uid 0, nothing under /etc
//! and /usr may change owner, mode or content or go missing, and every refusal names the path.
//! Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use tasknode_tests::sandbox::{ACCOUNT_FILES, Os, Sandbox, require_root, tree_changes, tree_state};
use tasknode_tests::{Console, stderr};

const UUID: &str = "4c4c4544-0042-3510-8051-b4c04f3332a1";
const HOME: &str = "/home/admin/tasknode";
const ROOT_SERVERCTL: &str = "/usr/sbin/tasknode-serverctl";
const UIDS: &str = "/payload/uids";

/// How the sandbox manages the agent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// No service manager: the pid-file serverctl.
    None,
    /// /etc/init.d and update-rc.d: the SysV script.
    Sysv,
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

/// Owner, mode and content (or link target) of every entry under /etc and /usr.
fn snapshot(sb: &Sandbox) -> BTreeMap<String, String> {
    tree_state(sb.root(), &["/etc", "/usr"], &ACCOUNT_FILES)
}

/// Runs `code` as admin inside the sandbox.
fn as_admin(sb: &Sandbox, code: &str) -> std::process::Output {
    let quoted = code.replace('\'', r"'\''");
    sb.sh("/bin/sh", &format!("su -s /bin/sh admin -c '{quoted}'"))
}

/// The uids the payloads recorded, one line per run: `UID PATH ARGS`.
fn payload_runs(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path(UIDS)).unwrap_or_default()
}

fn assert_no_root_payload(sb: &Sandbox, what: &str) {
    let runs = payload_runs(sb);
    assert!(
        !runs.lines().any(|l| l.starts_with("0 ")),
        "{what}: a payload ran as root:\n{runs}"
    );
}

/// What admin plants before a root action.
#[derive(Clone, Copy, Debug)]
enum Plant {
    /// bin/tasknode and bin/serverctl replaced by payloads.
    Payloads,
    /// Payloads, and run/ -> /etc, logs/ -> /usr.
    Links,
    /// The agent's directory itself -> /etc.
    AgentDir,
}

fn plant(sb: &Sandbox, how: Plant) {
    let payloads = format!(
        "for f in {HOME}/bin/tasknode {HOME}/bin/serverctl; do rm -f \"$f\" && cp /payload/payload.sh \"$f\" && chmod 755 \"$f\" || exit 1; done"
    );
    let code = match how {
        Plant::Payloads => payloads,
        Plant::Links => format!(
            "{payloads}; cd {HOME} && rm -rf run.real logs.real && mv run run.real && mv logs logs.real && ln -s /etc run && ln -s /usr logs"
        ),
        Plant::AgentDir => {
            "cd /home/admin && mv tasknode tasknode.real && ln -s /etc tasknode".to_owned()
        }
    };
    let out = as_admin(sb, &code);
    assert!(out.status.success(), "planting {how:?}: {}", text(&out));
}

/// Undoes [`plant`]'s links (the payloads stay until something reinstalls the binary).
fn unplant(sb: &Sandbox, how: Plant) {
    let code = match how {
        Plant::Payloads => return,
        Plant::Links => format!("cd {HOME} && rm run logs && mv run.real run && mv logs.real logs"),
        Plant::AgentDir => "cd /home/admin && rm tasknode && mv tasknode.real tasknode".to_owned(),
    };
    let out = as_admin(sb, &code);
    assert!(out.status.success(), "{}", text(&out));
}

/// A sandbox with the agent installed by an access-key install.sh (kept at /tmp/key.sh for
/// re-runs), the payload at /payload/payload.sh and a record file every user can append to.
fn installed(init: Init) -> (Console, tempfile::TempDir, Sandbox) {
    let agents = tasknode_tests::agent_dir();
    let console = Console::start(&[
        "--heartbeat-interval",
        "1s",
        "--agent-dir",
        agents.path().to_str().unwrap(),
    ]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    console.cli_ok(&["server", "add", "--group", "vpc", "--name", UUID]);
    let sb = Sandbox::new(Os::Debian12);
    sb.set_uuid(UUID);
    sb.add_program("curl");
    if init == Init::Sysv {
        std::fs::create_dir_all(sb.path("/etc/init.d")).unwrap();
        // Registering the script for runlevels is update-rc.d's job; here it only has to exist.
        std::fs::write(sb.path("/usr/sbin/update-rc.d"), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            sb.path("/usr/sbin/update-rc.d"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    let out = std::process::Command::new(tasknode_tests::bin("tasknode-dist"))
        .args(["render", "install-sh", "--console", &console.url])
        .args([
            "--user-name",
            "etl",
            "--group",
            "vpc",
            "--enable-uuid",
            "true",
        ])
        .arg("--password-file")
        .arg(&pw)
        .arg("--agent-dir")
        .arg(agents.path())
        .arg("--out")
        .arg(sb.path("/tmp/key.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    std::fs::create_dir_all(sb.path("/payload")).unwrap();
    std::fs::set_permissions(sb.path("/payload"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        sb.path("/payload/payload.sh"),
        format!("#!/bin/sh\necho \"$(id -u) $0 $*\" >>{UIDS}\nexit 0\n"),
    )
    .unwrap();
    std::fs::write(sb.path(UIDS), "").unwrap();
    std::fs::set_permissions(sb.path(UIDS), std::fs::Permissions::from_mode(0o666)).unwrap();

    let out = sb.sh("/bin/sh", "sh /tmp/key.sh");
    assert!(out.status.success(), "install: {}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "init {}",
            match init {
                Init::None => "none",
                Init::Sysv => "sysv",
            }
        )),
        "{said}"
    );
    assert!(
        said.contains(ROOT_SERVERCTL),
        "the summary names root's serverctl: {said}"
    );
    console.wait_status(UUID, "available", Duration::from_secs(15));
    (console, agents, sb)
}

/// Every root action root takes on the agent's service, as root runs them.
fn service_actions(init: Init) -> Vec<String> {
    let mut actions: Vec<String> = ["status", "stop", "start", "restart", "stop"]
        .iter()
        .map(|a| format!("{ROOT_SERVERCTL} {a}"))
        .collect();
    if init == Init::Sysv {
        for a in ["start", "status", "restart", "stop"] {
            actions.push(format!("/etc/init.d/tasknode {a}"));
        }
        // bin/serverctl as root hands over to root's own entry point at once... unless admin
        // replaced it, which is why root uses the root-owned path: not run here.
    }
    actions
}

fn attack(init: Init) {
    let (console, _agents, sb) = installed(init);
    let baseline = snapshot(&sb);
    let root_files = [ROOT_SERVERCTL, "/etc/init.d/tasknode"];

    // 1. Payloads in place of the binary and bin/serverctl: root's service actions run them
    // only as admin (they do run: the test would otherwise prove nothing).
    plant(&sb, Plant::Payloads);
    for action in service_actions(init) {
        let out = sb.sh("/bin/sh", &action);
        assert_no_root_payload(&sb, &action);
        assert_eq!(
            tree_changes(&baseline, &snapshot(&sb), &[]),
            Vec::<String>::new(),
            "{action}: {}",
            text(&out)
        );
    }
    let runs = payload_runs(&sb);
    assert!(
        runs.lines()
            .any(|l| l.starts_with(&format!("{} ", admin_uid(&sb)))),
        "the payloads never ran (as admin), so this proved nothing:\n{runs}"
    );

    // A re-run repairs: the real binary is back, the agent runs, nothing of root's changed.
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh");
    assert!(out.status.success(), "re-run: {}", text(&out));
    assert_no_root_payload(&sb, "re-run");
    assert!(
        !std::fs::read(sb.path(&format!("{HOME}/bin/tasknode")))
            .unwrap()
            .starts_with(b"#!")
    );
    assert_eq!(
        tree_changes(&baseline, &snapshot(&sb), &[]),
        Vec::<String>::new()
    );
    console.wait_status(UUID, "available", Duration::from_secs(15));

    // --reinstall over payloads: the old (planted) files are set aside and stopped as admin.
    plant(&sb, Plant::Payloads);
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh --reinstall");
    assert!(out.status.success(), "--reinstall: {}", text(&out));
    assert_no_root_payload(&sb, "--reinstall");
    assert_eq!(
        tree_changes(&baseline, &snapshot(&sb), &[]),
        Vec::<String>::new()
    );
    console.wait_status(UUID, "available", Duration::from_secs(15));

    // 2. and 3. Links to /etc and /usr: every root action either acts as admin (who cannot
    // write there) or refuses, naming the link (logs/ is checked before run/).
    for (how, named) in [
        (Plant::Links, format!("{HOME}/logs is not a directory")),
        (Plant::AgentDir, format!("{HOME} is not a directory")),
    ] {
        plant(&sb, how);
        for action in service_actions(init) {
            let out = sb.sh("/bin/sh", &action);
            assert_no_root_payload(&sb, &format!("{how:?}: {action}"));
            assert_eq!(
                tree_changes(&baseline, &snapshot(&sb), &[]),
                Vec::<String>::new(),
                "{how:?}: {action}: {}",
                text(&out)
            );
        }
        for args in ["", "--reinstall", "--uninstall", "--uninstall --purge"] {
            let out = sb.sh("/bin/sh", &format!("sh /tmp/key.sh {args}"));
            let said = text(&out);
            assert!(
                !out.status.success(),
                "{how:?}: install.sh {args} went ahead:\n{said}"
            );
            assert!(
                said.contains(&named),
                "{how:?}: install.sh {args} must name {named}:\n{said}"
            );
            assert_no_root_payload(&sb, &format!("{how:?}: install.sh {args}"));
            assert_eq!(
                tree_changes(&baseline, &snapshot(&sb), &[]),
                Vec::<String>::new(),
                "{how:?}: install.sh {args}:\n{said}"
            );
        }
        unplant(&sb, how);
    }

    // 4. Uninstall and purge over payloads: the payloads run as admin only, and only root's own
    // files go from /etc and /usr.
    let out = sb.sh("/bin/sh", &format!("{ROOT_SERVERCTL} stop"));
    assert!(out.status.success() || init == Init::Sysv, "{}", text(&out));
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh");
    assert!(out.status.success(), "re-run: {}", text(&out));
    let out = sb.sh("/bin/sh", &format!("{ROOT_SERVERCTL} stop"));
    assert!(out.status.success(), "{}", text(&out));
    plant(&sb, Plant::Payloads);
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh --uninstall");
    assert!(out.status.success(), "--uninstall: {}", text(&out));
    assert_no_root_payload(&sb, "--uninstall");
    assert_eq!(
        tree_changes(&baseline, &snapshot(&sb), &root_files),
        Vec::<String>::new()
    );
    for f in root_files {
        assert!(!sb.path(f).exists(), "--uninstall left {f}");
    }
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh --uninstall --purge");
    assert!(out.status.success(), "--purge: {}", text(&out));
    assert_no_root_payload(&sb, "--purge");
    assert_eq!(
        tree_changes(&baseline, &snapshot(&sb), &root_files),
        Vec::<String>::new()
    );
    assert!(
        !sb.path("/home/admin").exists(),
        "purge removes the home it created"
    );
    assert!(
        !std::fs::read_to_string(sb.path("/etc/passwd"))
            .unwrap()
            .contains("admin:"),
        "purge removes the user it created"
    );
}

fn admin_uid(sb: &Sandbox) -> u32 {
    std::fs::metadata(sb.path("/home/admin")).unwrap().uid()
}

#[test]
fn root_never_runs_or_follows_what_admin_planted_without_a_service_manager() {
    if !require_root() {
        return;
    }
    attack(Init::None);
}

#[test]
fn root_never_runs_or_follows_what_admin_planted_under_the_sysv_script() {
    if !require_root() {
        return;
    }
    attack(Init::Sysv);
}

#[test]
fn bin_serverctl_as_root_hands_over_to_roots_entry_point() {
    if !require_root() {
        return;
    }
    // The real bin/serverctl, run by root: it must not run the agent's binary as root.
    let (_console, _agents, sb) = installed(Init::None);
    let out = as_admin(
        &sb,
        &format!(
            "rm {HOME}/bin/tasknode && cp /payload/payload.sh {HOME}/bin/tasknode && chmod 755 {HOME}/bin/tasknode"
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.sh("/bin/sh", &format!("{HOME}/bin/serverctl status"));
    assert_no_root_payload(&sb, "bin/serverctl status");
    assert!(
        payload_runs(&sb).lines().count() == 1,
        "root's entry point ran the agent's serverctl as admin: {}\n{}",
        payload_runs(&sb),
        text(&out)
    );
}

#[test]
fn the_agent_as_root_refuses_directories_another_user_can_change() {
    if !require_root() {
        return;
    }
    // An agent enrolled by root whose log directory's parent another user (a task's user) owns:
    // that user could put links there, so root must not write through it.
    let console = Console::start(&[]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "etl",
        "--name",
        &tasknode_tests::hostname(),
    ]);
    let agent = tasknode_tests::Agent::new();
    agent.enroll_ok(&console.url, "etl", &password, false);
    let home = agent.logs().parent().unwrap().to_owned();
    std::os::unix::fs::chown(&home, Some(4242), None).unwrap();
    let mut child = std::process::Command::new(tasknode_tests::bin("tasknode"))
        .arg("run")
        .env("TASKNODE_CONFIG", agent.config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // An agent that does not refuse keeps running: kill it and say so.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the agent ran as root over uid 4242's directory");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the agent ran as root over uid 4242's directory"
    );
    let said = stderr(&out);
    assert!(
        said.contains("refusing to run as root") && said.contains(&home.display().to_string()),
        "{said}"
    );
    assert!(
        !agent.logs().join("agent.log").exists(),
        "it wrote there anyway"
    );
}
