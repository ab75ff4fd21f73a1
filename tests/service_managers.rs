//! install.sh under a real service manager: the console's one-time command run inside a booted
//! Debian 12 container (systemd-nspawn) whose PID 1 is systemd, or SysV init with insserv and
//! update-rc.d, against a real console on loopback. The service must be enabled and started by
//! that manager, restarted by `serverctl`, brought back after a crash (systemd) and after a
//! reboot, and gone without residue after uninstall and purge. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use tasknode_tests::container::{
    Container, Init, classic_tls_console, install, install_command, installed_under_systemd,
};
use tasknode_tests::sandbox::{
    ACCOUNT_FILES, require_root, tree_changes, tree_state, without_shadow_backups,
};
use tasknode_tests::{Console, build_release, dist_json, static_agent, wait_for};

/// root's serverctl (root-owned): what operators and root-run scripts use.
const SERVERCTL: &str = "/usr/sbin/tasknode-serverctl";
/// The agent user's own serverctl, which hands over to [`SERVERCTL`] when root runs it.
const ADMIN_SERVERCTL: &str = "/home/admin/tasknode/bin/serverctl";

/// The agent's pid in the container, from its pid file, if that process is alive.
fn pidfile_pid(c: &Container) -> Option<u32> {
    let out =
        c.sh("p=$(cat /home/admin/tasknode/run/tasknode.pid) && kill -0 \"$p\" && echo \"$p\"");
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The main pid systemd has for the unit, if it is active.
fn main_pid(c: &Container) -> Option<u32> {
    let show = c.sh_ok("systemctl show -p ActiveState -p MainPID tasknode");
    let active = show.lines().any(|l| l == "ActiveState=active");
    let pid = show
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p != 0);
    pid.filter(|_| active)
}

/// Sets `[table] key = value` in the agent config at `path` in the container.
fn set_config(c: &Container, path: &str, table: &str, key: &str, value: toml::Value) {
    tasknode_tests::set_config_value(&c.path(path), table, key, value);
}

/// The containers share the host's network, so agents whose task logs a test reads serve them
/// on a loopback port of their own rather than on 8000, which only one of them can have.
fn private_log_port(c: &Container, config: &str) {
    set_config(c, config, "logs", "listen", "127.0.0.1:0".into());
}

fn user_of(c: &Container, pid: u32) -> String {
    c.sh_ok(&format!("ps -o user= -p {pid}"))
}

/// As admin (every task's user), replaces bin/tasknode and bin/serverctl with payloads that
/// record their uid in /payload/uids, and with `links` also points logs/ and run/ at /usr and
/// /etc. Then root does what root does: its serverctl, the SysV script (`sysv`), a reboot (the
/// service manager at boot) and, with links, an install re-run, which must refuse naming the
/// link. No payload may run as root and nothing under /etc and /usr may change. Finally the
/// links go and a re-run through a fresh link repairs the install.
fn admin_cannot_reach_root(c: &mut Container, console: &Console, sysv: bool, links: bool) {
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str, m: u32| {
            std::fs::set_permissions(c.path(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        std::fs::create_dir_all(c.path("/payload")).unwrap();
        mode("/payload", 0o777);
        std::fs::write(c.path("/payload/uids"), "").unwrap();
        mode("/payload/uids", 0o666);
        std::fs::write(
            c.path("/payload/payload.sh"),
            "#!/bin/sh\necho \"$(id -u) $0 $*\" >>/payload/uids\nexit 0\n",
        )
        .unwrap();
        mode("/payload/payload.sh", 0o755);
    }
    let home = "/home/admin/tasknode";
    let mut plant = format!(
        "for f in {home}/bin/tasknode {home}/bin/serverctl; do rm -f \"$f\" && cp /payload/payload.sh \"$f\" || exit 1; done"
    );
    if links {
        plant.push_str(&format!(
            " && cd {home} && mv logs logs.real && mv run run.real && ln -s /usr logs && ln -s /etc run"
        ));
    }
    c.sh_ok(&format!("su -s /bin/sh admin -c '{plant}'"));
    let skip: Vec<&str> = ACCOUNT_FILES.to_vec();
    let before = tree_state(&c.root(), &["/etc", "/usr"], &skip);
    let mut actions: Vec<String> = ["status", "stop", "start", "restart"]
        .iter()
        .map(|a| format!("{SERVERCTL} {a}"))
        .collect();
    if sysv {
        actions.extend(["status", "restart"].map(|a| format!("/etc/init.d/tasknode {a}")));
    }
    for action in &actions {
        let out = c.sh(action);
        assert_eq!(
            tree_changes(
                &before,
                &tree_state(&c.root(), &["/etc", "/usr"], &skip),
                &[]
            ),
            Vec::<String>::new(),
            "{action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if links {
        let out = c.sh(&install_command(console, ""));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "a re-run went ahead over links:\n{said}"
        );
        assert!(
            said.contains(&format!("{home}/logs is not a directory")),
            "{said}"
        );
        assert_eq!(
            tree_changes(
                &before,
                &tree_state(&c.root(), &["/etc", "/usr"], &skip),
                &[]
            ),
            Vec::<String>::new(),
            "{said}"
        );
    }
    // At boot the service manager starts the agent (here: the payload) as admin only.
    c.reboot();
    let runs = std::fs::read_to_string(c.path("/payload/uids")).unwrap();
    assert!(
        !runs.lines().any(|l| l.starts_with("0 ")),
        "a payload ran as root:\n{runs}"
    );
    // Under SysV with logs/ pointing at /usr the agent's output cannot be opened, so the shell
    // (as admin) never starts the binary: there, nothing running is the right answer.
    if !(sysv && links) {
        assert!(
            !runs.is_empty(),
            "no payload ran at all, so this proved nothing"
        );
    }
    if links {
        c.sh_ok(&format!(
            "su -s /bin/sh admin -c 'cd {home} && rm logs run && mv logs.real logs && mv run.real run'"
        ));
    }
    install(c, &install_command(console, ""));
    std::fs::remove_dir_all(c.path("/payload")).unwrap();
}

/// Uninstall keeps the logs and the user; purge leaves the root as it was before the install.
fn uninstall_and_purge(
    c: &Container,
    console: &Console,
    hostname: &str,
    before: &BTreeSet<String>,
) {
    let said = install(c, &install_command(console, "--uninstall"));
    assert!(said.contains("kept the logs"), "{said}");
    assert!(
        c.sh("pgrep -u admin").stdout.is_empty(),
        "an agent process outlived the uninstall"
    );
    console.wait_status(hostname, "stopped", Duration::from_secs(15));
    // What uninstall keeps: the logs and work directories under admin's home, the note that the
    // install made that user, and the user itself in /etc.
    let left: Vec<_> = c
        .files()
        .difference(before)
        .filter(|f| {
            !(f.starts_with("home/admin")
                || f.starts_with("var/lib/tasknode-install")
                || f.starts_with("etc/"))
        })
        .cloned()
        .collect();
    assert!(left.is_empty(), "uninstall left {left:?}");

    install(c, &install_command(console, "--uninstall --purge"));
    let after = unnumbered(without_shadow_backups(c.files()));
    let before = unnumbered(without_shadow_backups(before.clone()));
    assert_eq!(
        after.symmetric_difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "purge left residue (or removed what it did not install)"
    );
}

/// rc links without their order numbers (`etc/rc0.d/K01sendsigs` -> `etc/rc0.d/Ksendsigs`):
/// insserv renumbers the other services' links when one is added or removed, keeping their
/// order.
fn unnumbered(files: BTreeSet<String>) -> BTreeSet<String> {
    files
        .into_iter()
        .map(|f| {
            let Some((dir, name)) = f.split_once('/').and_then(|(etc, rest)| {
                let (dir, name) = rest.split_once('/')?;
                (etc == "etc" && dir.starts_with("rc") && dir.ends_with(".d"))
                    .then_some((dir, name))
            }) else {
                return f;
            };
            let mut chars = name.chars();
            match (chars.next(), chars.next(), chars.next()) {
                (Some(kind @ ('S' | 'K')), Some(a), Some(b))
                    if a.is_ascii_digit() && b.is_ascii_digit() =>
                {
                    format!("etc/{dir}/{kind}{}", &name[3..])
                }
                _ => f,
            }
        })
        .collect()
}

#[test]
fn under_systemd_the_unit_is_enabled_restarted_after_a_crash_and_started_at_boot() {
    if !require_root() {
        return;
    }
    let hostname = "tn-systemd";
    let (console, _agents) = classic_tls_console(hostname, &[]);
    let mut c = Container::boot(Init::Systemd, hostname);
    let before = c.files();

    let said = install(&c, &install_command(&console, ""));
    assert!(
        said.contains("os debian") && said.contains("starting the agent (systemd)"),
        "{said}"
    );
    console.wait_status(hostname, "available", Duration::from_secs(15));
    assert_eq!(c.sh_ok("systemctl is-enabled tasknode"), "enabled");
    assert!(
        c.path("/etc/systemd/system/multi-user.target.wants/tasknode.service")
            .is_symlink(),
        "enabled for multi-user.target"
    );
    // The unit is Type=notify: `systemctl restart` returned and the unit is active, so the
    // agent told systemd it was ready.
    let pid = main_pid(&c).expect("the unit is active with a main pid");
    assert_eq!(user_of(&c, pid), "admin");
    assert_eq!(c.sh_ok("systemctl show -p Type --value tasknode"), "notify");

    // serverctl goes through systemd.
    let status = c.sh_ok(&format!("{SERVERCTL} status"));
    assert!(
        status.contains(&format!(
            "tasknode is running (pid {pid}), managed by systemd"
        )),
        "{status}"
    );
    c.sh_ok(&format!("{SERVERCTL} restart"));
    let restarted = main_pid(&c).expect("active after serverctl restart");
    assert_ne!(restarted, pid, "serverctl restart started a new agent");
    c.sh_ok(&format!("{SERVERCTL} stop"));
    assert_eq!(
        c.sh_ok("systemctl show -p ActiveState --value tasknode"),
        "inactive"
    );
    console.wait_status(hostname, "stopped", Duration::from_secs(15));
    c.sh_ok(&format!("{SERVERCTL} start"));
    console.wait_status(hostname, "available", Duration::from_secs(15));

    // A crash: systemd starts the agent again (Restart=always, RestartSec=5).
    let pid = main_pid(&c).unwrap();
    c.sh_ok(&format!("kill -KILL {pid}"));
    let again = wait_for(
        Duration::from_secs(30),
        "systemd to restart the agent",
        || main_pid(&c).filter(|p| *p != pid),
    );
    assert_eq!(user_of(&c, again), "admin");
    assert_eq!(c.sh_ok("systemctl show -p NRestarts --value tasknode"), "1");
    console.wait_status(hostname, "available", Duration::from_secs(15));

    // A reboot: the enabled unit starts with the system, and stops cleanly with it.
    c.reboot();
    let booted = main_pid(&c).expect("the agent started at boot");
    assert_eq!(user_of(&c, booted), "admin");
    console.wait_status(hostname, "available", Duration::from_secs(15));
    let servers = console.servers();
    assert_eq!(servers.len(), 1, "{servers:?}");

    // bin/serverctl run by root hands over to root's own entry point.
    let status = c.sh_ok(&format!("{ADMIN_SERVERCTL} status"));
    assert!(status.contains("managed by systemd"), "{status}");

    // What a task (admin) plants never runs as root nor reaches /etc or /usr.
    admin_cannot_reach_root(&mut c, &console, false, false);
    admin_cannot_reach_root(&mut c, &console, false, true);
    console.wait_status(hostname, "available", Duration::from_secs(15));

    // --reinstall: the same identity enrolled again, one unit, one server.
    let said = install(&c, &install_command(&console, "--reinstall"));
    assert!(said.contains("starting the agent (systemd)"), "{said}");
    let pid = main_pid(&c).expect("active after --reinstall");
    assert_eq!(user_of(&c, pid), "admin");
    assert_eq!(
        c.sh_ok("systemctl list-unit-files --no-legend 'tasknode*' | wc -l"),
        "1"
    );
    assert_eq!(console.servers().len(), 1);
    console.wait_status(hostname, "available", Duration::from_secs(15));

    uninstall_and_purge(&c, &console, hostname, &before);
    assert_eq!(
        c.sh_ok("systemctl show -p LoadState --value tasknode"),
        "not-found",
        "systemd still knows the unit"
    );
}

#[test]
fn under_sysv_init_the_script_is_registered_with_update_rc_d_and_started_at_boot() {
    if !require_root() {
        return;
    }
    let hostname = "tn-sysv";
    let (console, _agents) = classic_tls_console(hostname, &[]);
    let mut c = Container::boot(Init::Sysv, hostname);
    // This host already has the user admin: the install reuses it, and a purge leaves it and
    // its home as they were.
    c.sh_ok("useradd --create-home --shell /bin/sh admin");
    let before = c.files();

    let said = install(&c, &install_command(&console, ""));
    assert!(
        said.contains("os debian") && said.contains("starting the agent (sysv)"),
        "{said}"
    );
    console.wait_status(hostname, "available", Duration::from_secs(15));
    let pid = pidfile_pid(&c).expect("the agent runs");
    assert_eq!(user_of(&c, pid), "admin");
    // update-rc.d read the script's LSB header: started in 2-5, stopped in 0, 1 and 6.
    for level in 2..=5 {
        assert!(
            !c.sh_ok(&format!(
                "ls /etc/rc{level}.d | grep '^S..tasknode$' || true"
            ))
            .is_empty(),
            "no start link in rc{level}.d"
        );
    }
    for level in [0, 1, 6] {
        assert!(
            !c.sh_ok(&format!(
                "ls /etc/rc{level}.d | grep '^K..tasknode$' || true"
            ))
            .is_empty(),
            "no stop link in rc{level}.d"
        );
    }
    let status = c.sh_ok("/etc/init.d/tasknode status");
    assert!(status.contains("is running"), "{status}");

    // serverctl goes through the init script.
    let status = c.sh_ok(&format!("{SERVERCTL} status"));
    assert!(
        status.contains(&format!("tasknode (pid {pid}) is running")),
        "{status}"
    );
    let status = c.sh_ok(&format!("{ADMIN_SERVERCTL} status"));
    assert!(status.contains("is running"), "{status}");
    c.sh_ok(&format!("{SERVERCTL} restart"));
    let restarted = pidfile_pid(&c).expect("running after serverctl restart");
    assert_ne!(restarted, pid);
    console.wait_status(hostname, "available", Duration::from_secs(15));

    // A reboot: rc 0 stops the agent, rc 2 starts it again.
    c.reboot();
    let booted = pidfile_pid(&c).expect("the agent started at boot");
    assert_ne!(booted, restarted);
    assert_eq!(user_of(&c, booted), "admin");
    console.wait_status(hostname, "available", Duration::from_secs(15));

    // What a task (admin) plants never runs as root nor reaches /etc or /usr, at boot included.
    admin_cannot_reach_root(&mut c, &console, true, false);
    admin_cannot_reach_root(&mut c, &console, true, true);
    console.wait_status(hostname, "available", Duration::from_secs(15));

    // --reinstall: enrolled again, one script, one server.
    install(&c, &install_command(&console, "--reinstall"));
    assert!(pidfile_pid(&c).is_some());
    assert_eq!(console.servers().len(), 1);
    console.wait_status(hostname, "available", Duration::from_secs(15));

    uninstall_and_purge(&c, &console, hostname, &before);
    assert!(
        c.sh_ok("ls /etc/rc?.d | grep tasknode || true").is_empty(),
        "rc links left behind"
    );
}

#[test]
fn under_systemd_a_self_update_keeps_the_main_pid_and_a_restart_lets_the_running_task_finish() {
    if !require_root() {
        return;
    }
    let hostname = "tn-update";
    // A release 0.1.0 served by the console (its agents/ is what install.sh downloads), with
    // the release keys built into the agent.
    let dir = tempfile::tempdir().unwrap();
    let (keys, dist) = (dir.path().join("keys"), dir.path().join("dist"));
    let generated = dist_json(&["keygen", "--out", keys.to_str().unwrap()]);
    let v1 = dir.path().join("tasknode-0.1.0");
    tasknode_tests::install_binary(&static_agent(), &v1);
    build_release(&dist, &keys, "0.1.0", &v1, "none");
    let console = Console::start(&[
        "--tls",
        "--heartbeat-interval",
        "1s",
        "--dist",
        dist.to_str().unwrap(),
    ]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "classic", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "classic", "--name", hostname]);
    let c = installed_under_systemd(&console, hostname);
    let listed = console.wait_status(hostname, "available", Duration::from_secs(15));
    assert_eq!(listed["version"], "0.1.0");
    // The agent trusts the release key from its config (a debug build has no key built in),
    // and is restarted through systemd to read it; its log service gets a port of its own.
    let conf = "/home/admin/tasknode/conf/tasknode.conf";
    let key = generated["manifest_public_key"].as_str().unwrap();
    set_config(&c, conf, "update", "trusted_keys", vec![key].into());
    private_log_port(&c, conf);
    c.sh_ok(&format!("{SERVERCTL} restart"));
    console.wait_status(hostname, "available", Duration::from_secs(15));
    let pid = main_pid(&c).unwrap();

    // 0.2.0 released, published and pinned for the group: the agent takes it in place.
    build_release(
        &dist,
        &keys,
        "0.2.0",
        &tasknode_tests::update_agent(),
        "none",
    );
    let manifest = dist.join("releases/0.2.0/manifest.stable.json");
    console.cli_ok(&["release", "publish", manifest.to_str().unwrap()]);
    console.cli_ok(&["release", "pin", "--group", "classic", "--version", "0.2.0"]);
    let listed = console.wait_server(hostname, "to take 0.2.0", Duration::from_secs(90), |s| {
        s["update"]["state"] == "current"
    });
    assert_eq!(listed["version"], "0.2.0");
    assert_eq!(listed["status"], "available");

    // The new binary was exec'd by the same process: systemd saw no stop, no failure and no
    // restart, and still has the agent as the unit's main pid.
    let show =
        c.sh_ok("systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts tasknode");
    assert_eq!(
        show.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "ActiveState=active",
            "SubState=running",
            &*format!("MainPID={pid}"),
            "NRestarts=0",
        ]),
        "{show}"
    );
    assert_eq!(user_of(&c, pid), "admin");
    assert_eq!(
        c.sh_ok("/home/admin/tasknode/bin/tasknode --version"),
        "tasknode 0.2.0"
    );

    // A restart through systemd waits for the running task (the agent drains on SIGTERM, and
    // the unit gives it 90 s), then runs 0.2.0.
    let id = console.submit_script("classic", "sleep 3; echo survived\n");
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        console.wait_task(id, &["running"], Duration::from_secs(20))
    }));
    if ran.is_err() {
        panic!(
            "the task never ran; agent.log:\n{}",
            std::fs::read_to_string(c.path("/home/admin/tasknode/logs/agent.log"))
                .unwrap_or_default(),
        );
    }
    c.sh_ok(&format!("{SERVERCTL} restart"));
    let t = console.task(id);
    assert_eq!(t["state"], "succeeded", "{t:#}");
    assert!(
        console
            .cli_ok(&["task", "log", &id.to_string()])
            .contains("survived")
    );
    let restarted = main_pid(&c).expect("active after serverctl restart");
    assert_ne!(restarted, pid);
    assert_eq!(
        c.sh_ok("systemctl show -p Result -p NRestarts tasknode"),
        "Result=success\nNRestarts=0"
    );
    console.wait_server(
        hostname,
        "available on 0.2.0 after a restart",
        Duration::from_secs(15),
        |s| s["status"] == "available" && s["version"] == "0.2.0",
    );
}

/// A package format under test: how it is built and driven on the host.
struct Package {
    /// `--targets` of `tasknode-dist build`.
    target: &'static str,
    /// Where `build` puts version `V`'s package, relative to its `--out`.
    path: fn(&str) -> String,
    /// The shell command that installs (and upgrades to) the package at `{}`.
    install: &'static str,
    /// The shell command that removes it.
    remove: &'static str,
    /// The shell command that lists the paths the installed package owns.
    owns: &'static str,
    /// Besides the user in /etc: what the package manager keeps after removing the package.
    kept: fn(&str) -> bool,
}

const DEB: Package = Package {
    target: "deb",
    path: |v| format!("releases/{v}/tasknode_{v}-1_amd64.deb"),
    install: "dpkg -i {}",
    remove: "dpkg --purge tasknode",
    owns: "dpkg -L tasknode",
    // dpkg's records and log; a purge removes the logs and /var/lib/tasknode.
    kept: |f| f.starts_with("var/lib/dpkg/") || f == "var/log/dpkg.log",
};

// rpm on a Debian root: its database lists none of the el7 package's requirements (systemd,
// shadow-utils, /bin/sh), which the root has as Debian packages, so they are not checked. The
// scriptlets run as on el7, against the booted systemd.
const EL7: Package = Package {
    target: "el7",
    path: |v| format!("repo/el7/x86_64/tasknode-{v}-1.el7.x86_64.rpm"),
    install: "rpm --checksig {} && rpm -U --nodeps {}",
    remove: "rpm -e --nodeps tasknode",
    owns: "rpm -ql tasknode",
    // The rpm database (Debian's rpm keeps it in ~/.rpmdb), and what the agent wrote, which no
    // package owns: rpm leaves the logs and the tasks' working directories, as on el7.
    kept: |f| {
        f.starts_with("root/.rpmdb")
            || f.starts_with("var/log/tasknode")
            || f.starts_with("var/lib/tasknode")
    },
};

/// A package's life under systemd: installed (the unit enabled, not started), enrolled by
/// root as the package says, started, running a task, upgraded to 0.2.0 (the running agent
/// restarted on it), removed (stopped, the unit gone) with nothing left but what `kept`
/// allows and the user.
fn package_under_systemd(package: &Package, hostname: &str) {
    let console = Console::start(&["--heartbeat-interval", "1s"]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "classic", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "classic", "--name", hostname]);
    // Packages of 0.1.0 and of the upgrade to 0.2.0, signed where the format is.
    let dir = tempfile::tempdir().unwrap();
    let (out, keys) = (dir.path().join("dist"), dir.path().join("keys"));
    dist_json(&["keygen", "--out", keys.to_str().unwrap()]);
    let v1 = dir.path().join("tasknode-0.1.0");
    tasknode_tests::install_binary(&static_agent(), &v1);
    for (version, agent) in [("0.1.0", v1), ("0.2.0", tasknode_tests::update_agent())] {
        build_release(&out, &keys, version, &agent, package.target);
    }

    let c = Container::boot(Init::Systemd, hostname);
    let mut files = Vec::new();
    for version in ["0.1.0", "0.2.0"] {
        let built = out.join((package.path)(version));
        let inside = format!("/root/{}", built.file_name().unwrap().to_string_lossy());
        std::fs::copy(&built, c.path(&inside)).unwrap();
        files.push(inside);
    }
    std::fs::copy(
        keys.join("RPM-GPG-KEY-tasknode"),
        c.path("/root/RPM-GPG-KEY-tasknode"),
    )
    .unwrap();
    std::fs::write(c.path("/root/password"), format!("{password}\n")).unwrap();
    let before = c.files();
    if package.target != "deb" {
        c.sh_ok("rpm --import /root/RPM-GPG-KEY-tasknode");
    }
    let install = |file: &str| c.sh_ok(&package.install.replace("{}", file));

    install(&files[0]);
    assert_eq!(c.sh_ok("systemctl is-enabled tasknode"), "enabled");
    assert_eq!(
        c.sh_ok("systemctl show -p ActiveState --value tasknode"),
        "inactive",
        "not started before it is enrolled"
    );

    // Enrolled by root, then started: the agent, running as admin, must still read its config.
    c.sh_ok(&format!(
        "tasknode enroll --config /etc/tasknode/tasknode.conf --console {} --user-name etl \
         --password-stdin --enable-uuid false < /root/password",
        console.url
    ));
    assert_eq!(
        c.sh_ok("stat -c '%U %a' /etc/tasknode/tasknode.conf"),
        "admin 600",
        "the config after enrolling as root"
    );
    private_log_port(&c, "/etc/tasknode/tasknode.conf");
    c.sh_ok("systemctl start tasknode");
    let pid = main_pid(&c).expect("active after systemctl start");
    assert_eq!(user_of(&c, pid), "admin");
    let listed = console.wait_status(hostname, "available", Duration::from_secs(15));
    assert_eq!(listed["version"], "0.1.0");
    let method = if package.target == "deb" {
        "deb"
    } else {
        "rpm"
    };
    let conf = std::fs::read_to_string(c.path("/etc/tasknode/tasknode.conf")).unwrap();
    assert!(
        conf.contains(&format!("install_method = \"{method}\"")),
        "{conf}"
    );
    // A task runs as admin in a working directory under /var/lib/tasknode.
    let id = console.submit_script("classic", "id -un; pwd\n");
    console.wait_task(id, &["succeeded"], Duration::from_secs(20));
    let log = console.cli_ok(&["task", "log", &id.to_string()]);
    assert!(log.starts_with("admin\n/var/lib/tasknode/work/"), "{log}");

    // A task (admin) plants links in the directories the package gave it: the upgrade and the
    // removal below follow none of them. Only the package's own files change in /etc and /usr.
    c.sh_ok(
        "su -s /bin/sh admin -c 'ln -s /etc/hosts /var/log/tasknode/planted-hosts \
         && ln -s /etc /var/log/tasknode/planted-etc && ln -s /usr /var/lib/tasknode/planted-usr \
         && ln -s /etc/shadow /var/lib/tasknode/planted-shadow'",
    );
    let skip: Vec<&str> = ACCOUNT_FILES.to_vec();
    let state = || tree_state(&c.root(), &["/etc", "/usr"], &skip);
    // What the package owns is its own to change: its files, and the directories it brings
    // (a shell's completion directory the host lacked), which it removes with it.
    let owned: Vec<String> = c
        .sh_ok(package.owns)
        .lines()
        .map(|l| l.trim_start_matches('/').to_owned())
        // Not /usr, /usr/share or /etc themselves, which every package lists.
        .filter(|p| p.matches('/').count() >= 2)
        .collect();
    let not_the_package = |before: &std::collections::BTreeMap<String, String>| -> Vec<String> {
        tree_changes(before, &state(), &[])
            .into_iter()
            .filter(|change| {
                let path = change.split(':').next().unwrap_or("");
                !path.contains("tasknode") && !owned.iter().any(|o| o == path)
            })
            .collect()
    };
    let planted = state();

    // Upgraded: the running agent is restarted on the new version.
    install(&files[1]);
    assert_eq!(
        not_the_package(&planted),
        Vec::<String>::new(),
        "the upgrade changed /etc or /usr beyond the package"
    );
    let upgraded = main_pid(&c).expect("active after the upgrade");
    assert_ne!(upgraded, pid);
    console.wait_server(
        hostname,
        "available on 0.2.0",
        Duration::from_secs(15),
        |s| s["status"] == "available" && s["version"] == "0.2.0",
    );
    assert_eq!(c.sh_ok("systemctl is-enabled tasknode"), "enabled");

    // Removed: stopped, disabled, gone; the console sees the agent stop.
    c.sh_ok(package.remove);
    assert_eq!(
        c.sh_ok("systemctl show -p LoadState --value tasknode"),
        "not-found"
    );
    assert!(c.sh("pgrep -u admin").stdout.is_empty());
    console.wait_status(hostname, "stopped", Duration::from_secs(15));
    assert_eq!(
        not_the_package(&planted),
        Vec::<String>::new(),
        "removing the package changed /etc or /usr beyond the package"
    );
    assert_eq!(c.sh_ok("stat -c %U /etc/shadow"), "root");
    let left: Vec<_> = c
        .files()
        .difference(&before)
        .filter(|f| !f.starts_with("etc/") && !(package.kept)(f))
        .cloned()
        .collect();
    assert!(left.is_empty(), "removing the package left {left:?}");
}

#[test]
fn under_systemd_the_deb_is_enabled_started_after_enrolling_upgraded_and_purged() {
    if !require_root() {
        return;
    }
    package_under_systemd(&DEB, "tn-deb");
}

#[test]
fn under_systemd_the_el7_rpm_is_enabled_started_after_enrolling_upgraded_and_erased() {
    if !require_root() {
        return;
    }
    package_under_systemd(&EL7, "tn-rpm");
}
