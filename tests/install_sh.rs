//! install.sh for real: the console's one-time command run inside a chroot sandbox (busybox,
//! dash and bash), against a real console on loopback, with the static agent it serves. The
//! server must end up available; re-runs, a spent link, uninstall and purge are checked by
//! comparing the sandbox's files before and after. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tasknode_tests::sandbox::{Os, Sandbox, require_root, without_shadow_backups};
use tasknode_tests::{Console, agent_dir, free_port, stderr, which};

const UUIDS: [&str; 3] = [
    "4c4c4544-0042-3510-8051-b4c04f333201",
    "4c4c4544-0042-3510-8051-b4c04f333202",
    "4c4c4544-0042-3510-8051-b4c04f333203",
];

/// A console serving the static agent, with user etl and a VPC group holding `uuids`.
fn console(uuids: &[&str], extra: &[&str]) -> (Console, tempfile::TempDir) {
    let (console, agents) = tasknode_tests::console_serving_agent(extra);
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

/// How a printed install command fetches the script.
#[derive(Clone, Copy, Debug)]
enum Fetch {
    /// `command`: curl.
    Curl,
    /// `wget_command`: GNU wget.
    Wget,
}

/// Runs the install command `cmd` printed, as an operator pastes it into `shell`, inside `sb`
/// with the script piped to that shell (given `args`). The fetching program is copied in first.
fn run_command(
    sb: &Sandbox,
    cmd: &Value,
    fetch: Fetch,
    shell: &str,
    args: &str,
) -> std::process::Output {
    let (key, program) = match fetch {
        Fetch::Curl => ("command", "curl"),
        Fetch::Wget => ("wget_command", "wget"),
    };
    sb.add_program(program);
    let printed = cmd[key].as_str().unwrap();
    let head = printed
        .strip_suffix(" | sh")
        .unwrap_or_else(|| panic!("{printed} does not end in | sh"));
    let pipe = if args.is_empty() {
        format!("{head} | {shell}")
    } else {
        format!("{head} | {shell} -s -- {args}")
    };
    sb.sh(shell, &pipe)
}

/// [`run_command`] with a terminal, as an operator's ssh session gives one: the pipeline runs
/// under util-linux `script` on a pseudo-terminal, and `typed` is what the operator types at
/// it (while the script itself still arrives through the pipe).
fn run_command_on_a_terminal(
    sb: &Sandbox,
    cmd: &Value,
    shell: &str,
    args: &str,
    typed: &str,
) -> std::process::Output {
    use std::io::Write;
    sb.add_program("curl");
    let printed = cmd["command"].as_str().unwrap();
    let head = printed.strip_suffix(" | sh").unwrap();
    let pipe = format!("{head} | {shell} -s -- {args}");
    let quoted = format!("'{}'", pipe.replace('\'', "'\\''"));
    let inner = format!("chroot {} {shell} -c {quoted}", sb.root().display());
    let mut child = std::process::Command::new(which("script"))
        .args(["-qec", &inner, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open until the pipeline ends: an end of input would reach it as ^D.
    let mut keyboard = child.stdin.take().unwrap();
    keyboard.write_all(typed.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(keyboard);
    out
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
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
    // Over HTTPS with the console's own CA, which the command checks and everything after
    // it trusts alone.
    let (console, _agents) = console(&UUIDS, &["--tls"]);
    // Debian's busybox ash runs its own applets before PATH, so its `wget` is always
    // busybox's: GNU wget is driven from dash.
    let shells = [
        ("/bin/sh", Fetch::Curl),
        ("/usr/bin/dash", Fetch::Wget),
        ("/usr/bin/bash", Fetch::Curl),
    ];
    for ((shell, fetch), uuid) in shells.iter().zip(UUIDS) {
        let sb = Sandbox::new(Os::CentOs6);
        sb.set_uuid(uuid);
        sb.add_program(match fetch {
            Fetch::Curl => "curl",
            Fetch::Wget => "wget",
        });
        let before = sb.files();
        let cmd = install_command(&console);
        assert_eq!(cmd["enable_uuid"], true);
        // The command as printed, with the sandbox's shell at the end of the pipe.
        let out = run_command(&sb, &cmd, *fetch, shell, "");
        assert!(
            out.status.success(),
            "{shell} ({fetch:?}): install failed:\n{}",
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

        assert!(
            said.contains(&format!(
                "fetch with {}",
                match fetch {
                    Fetch::Curl => "curl",
                    Fetch::Wget => "wget",
                }
            )),
            "{said}"
        );
        // The agent pins the console's CA.
        let ca =
            std::fs::read_to_string(sb.path("/home/admin/tasknode/conf/console-ca.pem")).unwrap();
        assert_eq!(ca, std::fs::read_to_string(console.ca()).unwrap());
        let conf_text =
            std::fs::read_to_string(sb.path("/home/admin/tasknode/conf/tasknode.conf")).unwrap();
        assert!(
            conf_text.contains("console_ca = \"/home/admin/tasknode/conf/console-ca.pem\""),
            "{conf_text}"
        );
        // It records where the pid file and the tasks' work go: nothing guesses them later.
        assert!(
            conf_text.contains("pid_file = \"/home/admin/tasknode/run/tasknode.pid\"\n")
                && conf_text.contains("work_dir = \"/home/admin/tasknode/work\"\n"),
            "{conf_text}"
        );

        // The link works once.
        let again = run_command(&sb, &cmd, *fetch, shell, "");
        assert!(!again.status.success());
        assert!(text(&again).contains("was used at"), "{}", text(&again));
        assert!(
            agent_running(&sb),
            "a refused second run must leave the install alone"
        );

        // The spent link still uninstalls. Uninstall keeps the logs; purge leaves the sandbox
        // as it was. Asked to, by option (dash) or on the terminal (busybox ash), it removes
        // the server from the console too (with the node's own credentials); without a
        // terminal to ask on (bash), it leaves it there.
        let remove = *shell != "/usr/bin/bash";
        let out = match *shell {
            "/usr/bin/dash" => run_command(
                &sb,
                &cmd,
                *fetch,
                shell,
                "--uninstall --remove-from-console",
            ),
            "/bin/sh" => {
                let out = run_command_on_a_terminal(&sb, &cmd, shell, "--uninstall", "y\n");
                assert!(
                    text(&out)
                        .contains("Remove this server from its group on the console too? [y/N]"),
                    "{}",
                    text(&out)
                );
                out
            }
            _ => run_command(&sb, &cmd, *fetch, shell, "--uninstall"),
        };
        assert!(out.status.success(), "{}", text(&out));
        assert!(!agent_running(&sb));
        if remove {
            assert!(
                text(&out).contains(&format!("server {uuid} was removed from group vpc")),
                "{}",
                text(&out)
            );
            assert!(!console.servers().iter().any(|s| s["name"] == uuid));
        } else {
            assert!(
                text(&out).contains("stays in its group on the console"),
                "{}",
                text(&out)
            );
        }
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
        let out = run_command(&sb, &cmd, *fetch, shell, "--uninstall --purge");
        assert!(out.status.success(), "{}", text(&out));
        let after = without_shadow_backups(sb.files());
        let before = without_shadow_backups(before.clone());
        assert_eq!(
            after.symmetric_difference(&before).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{shell}: purge left residue"
        );
        if !remove {
            console.wait_status(uuid, "stopped", Duration::from_secs(10));
        }
    }
}

/// A control plane with two URLs for agents (`serve --agent-url` twice, over HTTPS with the
/// console's CA): the install command writes both into the agent config, in order, under
/// dash and busybox ash, and the agent works with the first.
#[test]
fn the_install_command_writes_every_agent_url_into_the_config() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let live = format!("https://127.0.0.1:{port}");
    let spare = format!("https://localhost:{}", free_port());
    let agents = agent_dir();
    let console = Console::start_at(
        &format!("127.0.0.1:{port}"),
        &[
            "--heartbeat-interval",
            "1s",
            "--agent-dir",
            agents.path().to_str().unwrap(),
            "--tls",
            "--agent-url",
            &live,
            "--agent-url",
            &spare,
        ],
    );
    assert_eq!(console.url, live);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    for (shell, uuid) in [("/usr/bin/dash", UUIDS[0]), ("/bin/sh", UUIDS[1])] {
        console.cli_ok(&["server", "add", "--group", "vpc", "--name", uuid]);
        let sb = Sandbox::new(Os::CentOs6);
        sb.set_uuid(uuid);
        let cmd = install_command(&console);
        let out = run_command(&sb, &cmd, Fetch::Curl, shell, "");
        assert!(
            out.status.success(),
            "{shell}: install failed:\n{}",
            text(&out)
        );
        console.wait_status(uuid, "available", Duration::from_secs(10));
        let conf_text =
            std::fs::read_to_string(sb.path("/home/admin/tasknode/conf/tasknode.conf")).unwrap();
        assert!(
            conf_text.contains(&format!("console_url = \"{live}\"\n"))
                && conf_text.contains(&format!("more_console_urls = [\"{spare}\"]\n")),
            "{shell}: {conf_text}"
        );
        let out = run_command(&sb, &cmd, Fetch::Curl, shell, "--uninstall --purge");
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// install.sh rendered offline with an access key (`tasknode-dist render install-sh`).
fn access_key_script(
    console_url: &str,
    agents: &std::path::Path,
    user: &str,
    password: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let pw = dir.join("password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    let out_file = dir.join("install-key.sh");
    let out = std::process::Command::new(tasknode_tests::bin("tasknode-dist"))
        .args([
            "render",
            "install-sh",
            "--console",
            console_url,
            "--user-name",
            user,
            "--group",
            "vpc",
        ])
        .args(["--enable-uuid", "true", "--password-file"])
        .arg(&pw)
        .arg("--agent-dir")
        .arg(agents)
        .arg("--out")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "render install-sh: {}", stderr(&out));
    out_file
}

#[test]
fn os_detection_for_every_target_family() {
    if !require_root() {
        return;
    }
    let agents = tempfile::tempdir().unwrap();
    std::fs::write(
        agents.path().join("tasknode-x86_64"),
        tasknode_render::artifacts::stand_in_binary("0.1.0", b"not run"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: every run stops at the console check, after detection.
    let script = access_key_script(
        "http://127.0.0.1:9",
        agents.path(),
        "etl",
        "correct-horse",
        dir.path(),
    );
    for os in Os::ALL {
        let sb = Sandbox::new(os);
        std::fs::copy(&script, sb.path("/tmp/install.sh")).unwrap();
        let out = sb.sh("/bin/sh", "sh /tmp/install.sh");
        if os == Os::Unknown {
            assert_eq!(out.status.code(), Some(11), "{}", text(&out));
            assert!(text(&out).contains("--force-os"), "{}", text(&out));
            let out = sb.sh("/bin/sh", "sh /tmp/install.sh --force-os");
            assert_eq!(out.status.code(), Some(14), "{}", text(&out));
            assert!(text(&out).contains("os unknown"), "{}", text(&out));
            continue;
        }
        assert_eq!(out.status.code(), Some(14), "{os:?}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("os {},", os.family())),
            "{os:?}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("cannot reach the console"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn preflight_refusals_change_nothing_and_fix_hosts_repairs() {
    if !require_root() {
        return;
    }
    // A console whose clock is 5 minutes ahead: the install stops before changing anything.
    let (skewed, _a) = console(&UUIDS[..1], &["--clock-offset", "300"]);
    let sb = Sandbox::new(Os::CentOs7);
    sb.set_uuid(UUIDS[0]);
    sb.add_program("curl");
    let before = sb.files();
    let cmd = install_command(&skewed);
    let out = run_command(&sb, &cmd, Fetch::Curl, "/bin/sh", "");
    assert_eq!(out.status.code(), Some(15), "{}", text(&out));
    assert!(
        text(&out).contains("s off the console's") && text(&out).contains("chronyc makestep"),
        "{}",
        text(&out)
    );
    assert_eq!(sb.files(), before);
    drop(skewed);

    // A host name that does not resolve: refused with the fix, then repaired by --fix-hosts.
    let (console, _agents) = console(&UUIDS[..1], &[]);
    std::fs::write(sb.path("/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let cmd = install_command(&console);
    let out = run_command(&sb, &cmd, Fetch::Curl, "/bin/sh", "");
    assert_eq!(out.status.code(), Some(16), "{}", text(&out));
    assert!(text(&out).contains("--fix-hosts"), "{}", text(&out));
    let out = run_command(&sb, &cmd, Fetch::Curl, "/bin/sh", "--fix-hosts");
    assert!(out.status.success(), "{}", text(&out));
    let hosts = std::fs::read_to_string(sb.path("/etc/hosts")).unwrap();
    assert!(
        hosts
            .lines()
            .any(|l| l.ends_with(&format!(" {}", tasknode_tests::hostname()))),
        "{hosts}"
    );
    let backups = std::fs::read_dir(sb.path("/etc")).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("hosts.tasknode-bak.")
    });
    assert_eq!(backups.count(), 1, "--fix-hosts keeps one backup");
    console.wait_status(UUIDS[0], "available", Duration::from_secs(10));

    // busybox wget checks no certificate: with a console CA to pin and no curl, the script
    // stops and changes nothing.
    let (tls, _a) = self::console(&UUIDS[1..2], &["--tls"]);
    let sb = Sandbox::new(Os::CentOs7);
    sb.set_uuid(UUIDS[1]);
    let cmd = install_command(&tls);
    let body = tls
        .http()
        .get(cmd["url"].as_str().unwrap())
        .send()
        .unwrap()
        .text()
        .unwrap();
    std::fs::write(sb.path("/tmp/install.sh"), body).unwrap();
    let before = sb.files();
    let out = sb.sh("/bin/sh", "sh /tmp/install.sh");
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(
        text(&out).contains("busybox wget cannot check the console's certificate"),
        "{}",
        text(&out)
    );
    assert_eq!(sb.files(), before);
}

#[test]
fn a_refused_enrollment_rolls_back_everything_it_did() {
    if !require_root() {
        return;
    }
    // The sandbox's UUID was never added to the group: the console refuses the enrollment
    // after the user, directories and binary are in place.
    let (console, _agents) = console(&UUIDS[..1], &[]);
    let sb = Sandbox::new(Os::Alinux3);
    sb.set_uuid("4c4c4544-0042-3510-8051-b4c04f3332ff");
    sb.add_program("curl");
    let before = sb.files();
    let cmd = install_command(&console);
    let out = run_command(&sb, &cmd, Fetch::Curl, "/usr/bin/dash", "");
    assert_eq!(out.status.code(), Some(18), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("rolling back") && said.contains("server add"),
        "{said}"
    );
    assert_eq!(
        without_shadow_backups(sb.files()),
        without_shadow_backups(before)
    );
    assert!(
        !std::fs::read_to_string(sb.path("/etc/passwd"))
            .unwrap()
            .contains("admin:")
    );
}

#[test]
fn reruns_repair_reinstall_enrolls_again_and_hostile_values_stay_data() {
    if !require_root() {
        return;
    }
    let (console, agents) = console(&UUIDS[..1], &[]);
    let sb = Sandbox::new(Os::CentOs7);
    sb.set_uuid(UUIDS[0]);
    let cmd = install_command(&console);
    let out = run_command(&sb, &cmd, Fetch::Curl, "/usr/bin/bash", "");
    assert!(out.status.success(), "{}", text(&out));
    console.wait_status(UUIDS[0], "available", Duration::from_secs(10));
    let conf = sb.path("/home/admin/tasknode/conf/tasknode.conf");
    let node_of = |c: &std::path::Path| {
        let t = std::fs::read_to_string(c).unwrap();
        t.lines()
            .find(|l| l.starts_with("id = "))
            .unwrap()
            .to_owned()
    };
    let first_node = node_of(&conf);

    // The same install again, with an access key: verified and kept, nothing duplicated.
    let dir = tempfile::tempdir().unwrap();
    let key_user: Value =
        serde_json::from_str(&console.cli_ok(&["user", "create", "ops", "--json"])).unwrap();
    let key_password = key_user["password"].as_str().unwrap();
    let script = access_key_script(&console.url, agents.path(), "ops", key_password, dir.path());
    std::fs::copy(&script, sb.path("/tmp/key.sh")).unwrap();
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already enrolled"), "{}", text(&out));
    assert_eq!(node_of(&conf), first_node, "a re-run must not enroll again");
    assert_eq!(console.servers().len(), 1);
    assert_eq!(sb.processes(&["tasknode", "run"]), 1, "one agent, not two");

    // --reinstall: a new enrollment of the same identity, logs kept.
    let log = sb.path("/home/admin/tasknode/logs/heartbeat.log");
    let lines_before = std::fs::read_to_string(&log).unwrap().lines().count();
    let out = sb.sh("/bin/sh", "sh /tmp/key.sh --reinstall");
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(node_of(&conf), first_node, "--reinstall enrolls again");
    assert!(
        std::fs::read_to_string(&log).unwrap().lines().count() >= lines_before,
        "logs kept"
    );
    console.wait_status(UUIDS[0], "available", Duration::from_secs(10));
    assert!(agent_running(&sb));

    // A password full of shell syntax is data: the wrong password is refused by the console,
    // nothing in it runs, and the existing install is left as it was.
    let canary = "/tmp/canary";
    let hostile = format!("x'; touch {canary}; '$(touch {canary})`touch {canary}`\u{1F600}");
    let script = access_key_script(&console.url, agents.path(), "ops", &hostile, dir.path());
    std::fs::copy(&script, sb.path("/tmp/hostile.sh")).unwrap();
    let out = sb.sh("/bin/sh", "sh /tmp/hostile.sh --reinstall");
    assert_eq!(out.status.code(), Some(18), "{}", text(&out));
    assert!(!sb.path(canary).exists(), "a rendered value ran");
    assert!(
        agent_running(&sb),
        "the failed reinstall must put the old install back"
    );
    console.wait_status(UUIDS[0], "available", Duration::from_secs(15));

    // Values that cannot be made safe are refused when rendering, naming what is wrong.
    for (flag, value) in [
        ("--user-name", "etl;reboot"),
        ("--group", "$(id)"),
        ("--group", &"g".repeat(4096)),
    ] {
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "correct-horse\n").unwrap();
        let mut args = vec![
            "render",
            "install-sh",
            "--console",
            &console.url,
            "--enable-uuid",
            "true",
        ];
        let (user, group) = if flag == "--user-name" {
            (value, "vpc")
        } else {
            ("etl", value)
        };
        args.extend(["--user-name", user, "--group", group]);
        let out = std::process::Command::new(tasknode_tests::bin("tasknode-dist"))
            .args(&args)
            .arg("--password-file")
            .arg(&pw)
            .arg("--agent-dir")
            .arg(agents.path())
            .arg("--out")
            .arg(dir.path().join("refused.sh"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value:.20} rendered");
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
        assert!(!dir.path().join("refused.sh").exists());
    }
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", "p".repeat(4096))).unwrap();
    let out = std::process::Command::new(tasknode_tests::bin("tasknode-dist"))
        .args([
            "render",
            "install-sh",
            "--console",
            &console.url,
            "--enable-uuid",
            "true",
            "--user-name",
            "etl",
            "--group",
            "vpc",
        ])
        .arg("--password-file")
        .arg(&pw)
        .arg("--agent-dir")
        .arg(agents.path())
        .arg("--out")
        .arg(dir.path().join("refused.sh"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("password"), "{}", stderr(&out));
}

#[test]
fn the_sysv_script_starts_queries_and_stops_the_agent_in_the_sandbox() {
    if !require_root() {
        return;
    }
    let (console, _agents) = console(&UUIDS[..1], &[]);
    let sb = Sandbox::new(Os::CentOs6);
    sb.set_uuid(UUIDS[0]);
    let cmd = install_command(&console);
    let out = run_command(&sb, &cmd, Fetch::Curl, "/bin/sh", "");
    assert!(out.status.success(), "{}", text(&out));
    let out = sb.sh("/bin/sh", "/home/admin/tasknode/bin/serverctl stop");
    assert!(out.status.success(), "{}", text(&out));

    let init = tasknode_render::render::init(
        &tasknode_render::Templates::embedded().unwrap(),
        &tasknode_render::Layout::script(),
    )
    .unwrap();
    std::fs::create_dir_all(sb.path("/etc/init.d")).unwrap();
    std::fs::write(sb.path("/etc/init.d/tasknode"), init).unwrap();
    for shell in ["/bin/sh", "/usr/bin/dash", "/usr/bin/bash"] {
        let run = |action: &str| sb.sh(shell, &format!("{shell} /etc/init.d/tasknode {action}"));
        let out = run("start");
        assert!(out.status.success(), "{shell} start: {}", text(&out));
        console.wait_status(UUIDS[0], "available", Duration::from_secs(10));
        let out = run("status");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("is running"));
        assert!(agent_running(&sb));
        let out = run("stop");
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(run("status").status.code(), Some(3));
        console.wait_status(UUIDS[0], "stopped", Duration::from_secs(5));
    }
}
