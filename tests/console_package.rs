//! The tasknode-console packages `tasknode-dist build` makes (RPMs for el7 and al8, a .deb):
//! checked with rpm -K, rpmlint and lintian, then installed for real in a booted Debian 12
//! container under systemd (the .deb with dpkg, the el7 RPM with rpm): the service starts as
//! its own sandboxed user, the CLI creates a user, a group and a server, an upgrade to a
//! second version restarts it on the same data, and erasing it keeps the data and the user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tasknode_tests::container::{Container, Init};
use tasknode_tests::releases::{EPOCH, fixture, lintian, ok, run};
use tasknode_tests::sandbox::require_root;
use tasknode_tests::{dist_json, fixture_dir, free_port, stderr, which};

/// The highest `systemd-analyze security` exposure the unit may have (systemd 252, Debian 12).
/// docs/architecture.md and README.md give the same number.
const MAX_EXPOSURE: f64 = 1.1;

/// The static console the packages hold: TASKNODE_STATIC_CONSOLE, else the musl debug build.
fn static_console() -> PathBuf {
    let path = std::env::var_os("TASKNODE_STATIC_CONSOLE").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
            target.join("x86_64-unknown-linux-musl/debug/tasknode-console")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --target x86_64-unknown-linux-musl -p tasknode-console` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Two releases (the fixture's two versions) of el7, al8 and deb, with console packages, in
/// one directory; built once.
struct Release {
    dir: PathBuf,
    v1: String,
    v2: String,
}

fn release() -> &'static Release {
    static R: OnceLock<Release> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let dir = fixture_dir("release");
        // Stripped, as a release build is.
        let console = dir.join("tasknode-console");
        let st = Command::new("strip")
            .arg("-o")
            .arg(&console)
            .arg(static_console())
            .status()
            .unwrap();
        assert!(st.success());
        let out = dir.join("out");
        for (version, agent) in [&f.v1, &f.v2] {
            let report = dist_json(&[
                "build",
                "--out",
                out.to_str().unwrap(),
                "--version",
                version,
                "--targets",
                "el7,al8,deb",
                "--keys",
                f.keys.to_str().unwrap(),
                "--agent",
                agent.to_str().unwrap(),
                "--console",
                console.to_str().unwrap(),
                "--source-date-epoch",
                EPOCH,
            ]);
            let kinds: Vec<&str> = report["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["kind"].as_str().unwrap())
                .collect();
            assert_eq!(
                kinds.iter().filter(|k| **k == "console-rpm").count(),
                2,
                "{report}"
            );
            assert!(kinds.contains(&"console-deb"), "{report}");
        }
        Release {
            dir,
            v1: f.v1.0.clone(),
            v2: f.v2.0.clone(),
        }
    })
}

impl Release {
    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    fn rpm(&self, dist: &str, version: &str) -> PathBuf {
        self.out().join(format!(
            "repo/{dist}/x86_64/tasknode-console-{version}-1.{dist}.x86_64.rpm"
        ))
    }

    fn deb(&self, version: &str) -> PathBuf {
        self.out().join(format!(
            "releases/{version}/tasknode-console_{version}-1_amd64.deb"
        ))
    }
}

#[test]
fn console_packages_verify_lint_clean_and_hold_a_sandboxed_service() {
    let r = release();
    let db = tempfile::tempdir().unwrap();
    ok(Command::new(which("rpm"))
        .arg("--dbpath")
        .arg(db.path())
        .arg("--import")
        .arg(r.out().join("RPM-GPG-KEY-tasknode")));
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".rpmmacros"),
        format!("%_dbpath {}\n", db.path().display()),
    )
    .unwrap();
    let rpmlintrc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rpm/console.rpmlintrc");
    for d in ["el7", "al8"] {
        let rpm = r.rpm(d, &r.v1);
        let checked = ok(Command::new("rpm")
            .arg("--dbpath")
            .arg(db.path())
            .arg("-Kv")
            .arg(&rpm));
        assert!(
            checked.contains(": OK") && !checked.contains("NOKEY") && !checked.contains("BAD"),
            "{d}: {checked}"
        );
        let lint = run(Command::new(which("rpmlint"))
            .env("HOME", home.path())
            .arg("-r")
            .arg(&rpmlintrc)
            .arg(&rpm));
        let lint_text = String::from_utf8_lossy(&lint.stdout);
        assert!(
            lint.status.success() && lint_text.contains(" 0 errors"),
            "{d}: rpmlint: {lint_text}{}",
            stderr(&lint)
        );
        let files = ok(Command::new("rpm")
            .args(["-qp", "--nosignature", "--qf"])
            .arg("[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]")
            .arg(&rpm));
        for line in [
            "-rwxr-xr-x root:root  /usr/bin/tasknode-console\n",
            "-rw-r--r-- root:root  /usr/lib/systemd/system/tasknode-console.service\n",
            "-rw------- root:root cn /etc/tasknode-console/console.env\n",
            "drwx------ tasknode-console:tasknode-console  /var/lib/tasknode-console\n",
        ] {
            assert!(files.contains(line), "{d}: {line:?} in {files}");
        }
        // yum finds it in the dist's signed repository, beside the agent.
        let listed = ok(Command::new(which("dnf"))
            .args(["repoquery", "-q", "--setopt=reposdir=/dev/null"])
            .arg(format!(
                "--repofrompath=t,file://{}",
                r.out().join(format!("repo/{d}/x86_64")).display()
            ))
            .args(["--repo=t", "tasknode-console"]));
        assert!(
            listed.contains(&format!("tasknode-console-0:{}-1.{d}.x86_64", r.v2)),
            "{d}: {listed}"
        );
    }
    // el6 and al7 get no console package (rpm/targets.toml).
    assert!(!r.out().join("repo/el6").exists());

    let deb = r.deb(&r.v1);
    let lint = lintian(&deb);
    let lint_text = format!("{}{}", String::from_utf8_lossy(&lint.stdout), stderr(&lint));
    assert!(
        lint.status.success() && !lint_text.lines().any(|l| l.starts_with("E:")),
        "lintian: {lint_text}"
    );
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    assert!(
        contents.contains("-rw------- 0/0")
            && contents.contains("./etc/tasknode-console/console.env"),
        "{contents}"
    );
    let conffiles = ok(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/tasknode-console/console.env");

    // A released version never changes, so building it again must give the same bytes: the
    // console packages are as reproducible as the agent's.
    let f = fixture();
    let again = tasknode_tests::releases::dist(&[
        "build",
        "--out",
        r.out().to_str().unwrap(),
        "--version",
        &r.v1,
        "--targets",
        "el7,al8,deb",
        "--keys",
        f.keys.to_str().unwrap(),
        "--agent",
        f.v1.1.to_str().unwrap(),
        "--console",
        r.dir.join("tasknode-console").to_str().unwrap(),
        "--source-date-epoch",
        EPOCH,
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    // A console that is not static is refused, naming the flag and the fix, before anything
    // is written.
    let dynamic = r.dir.join("dynamic");
    std::fs::copy("/bin/true", &dynamic).unwrap();
    let refused = tasknode_tests::releases::dist(&[
        "build",
        "--out",
        r.dir.join("refused").to_str().unwrap(),
        "--version",
        &r.v1,
        "--targets",
        "deb",
        "--agent",
        f.v1.1.to_str().unwrap(),
        "--console",
        dynamic.to_str().unwrap(),
        "--source-date-epoch",
        EPOCH,
    ]);
    let said = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("--console")
            && said.contains("dynamically linked")
            && said.contains("--target x86_64-unknown-linux-musl"),
        "{said}"
    );
    assert!(!r.dir.join("refused").join("releases").exists());
}

#[test]
fn the_deb_runs_sandboxed_upgrades_on_its_data_and_erasing_keeps_it() {
    if !require_root() {
        return;
    }
    let r = release();
    let c = Container::boot(Init::Systemd, "console-deb");
    for v in [&r.v1, &r.v2] {
        std::fs::copy(r.deb(v), c.path(&format!("/root/console-{v}.deb"))).unwrap();
    }
    lifecycle(
        &c,
        &format!("dpkg -i /root/console-{}.deb", r.v1),
        &format!("dpkg -i /root/console-{}.deb", r.v2),
        "dpkg -r tasknode-console",
        "dpkg-query -W -f '${Version}' tasknode-console",
        (&format!("{}-1", r.v1), &format!("{}-1", r.v2)),
    );
}

#[test]
fn the_el7_rpm_runs_sandboxed_upgrades_on_its_data_and_erasing_keeps_it() {
    if !require_root() {
        return;
    }
    let r = release();
    let c = Container::boot(Init::Systemd, "console-rpm");
    std::fs::copy(
        r.out().join("RPM-GPG-KEY-tasknode"),
        c.path("/root/RPM-GPG-KEY-tasknode"),
    )
    .unwrap();
    for v in [&r.v1, &r.v2] {
        std::fs::copy(r.rpm("el7", v), c.path(&format!("/root/console-{v}.rpm"))).unwrap();
    }
    // Debian's rpm database knows none of the base packages the RPM requires: --nodeps.
    let install = |v: &str| {
        format!("rpm --checksig /root/console-{v}.rpm && rpm -U --nodeps /root/console-{v}.rpm")
    };
    c.sh_ok("rpm --import /root/RPM-GPG-KEY-tasknode");
    lifecycle(
        &c,
        &install(&r.v1),
        &install(&r.v2),
        "rpm -e --nodeps tasknode-console",
        "rpm -q --qf '%{VERSION}-%{RELEASE}' tasknode-console",
        (&format!("{}-1.el7", r.v1), &format!("{}-1.el7", r.v2)),
    );
}

/// Installs, starts, uses, upgrades and erases the console package in `c`.
fn lifecycle(
    c: &Container,
    install: &str,
    upgrade: &str,
    erase: &str,
    version_of: &str,
    (v1, v2): (&str, &str),
) {
    c.sh_ok(install);
    assert_eq!(c.sh_ok(version_of), v1);
    // Its own system user, which owns the state directory alone; the settings are root's.
    let passwd = c.sh_ok("getent passwd tasknode-console");
    let fields: Vec<&str> = passwd.split(':').collect();
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "{passwd}");
    assert_eq!(fields[5], "/var/lib/tasknode-console", "{passwd}");
    assert!(fields[6].ends_with("/nologin"), "{passwd}");
    assert_eq!(
        c.sh_ok("stat -c '%a %U' /var/lib/tasknode-console /etc/tasknode-console/console.env"),
        "700 tasknode-console\n600 root"
    );
    assert_eq!(c.sh_ok("systemctl is-enabled tasknode-console"), "enabled");

    // The operator's flags, in the config file: a free port (the container shares the host's
    // network). Upgrades must keep them.
    let port = free_port();
    c.sh_ok(&format!(
        "sed -i 's/^TASKNODE_CONSOLE_OPTIONS=.*/TASKNODE_CONSOLE_OPTIONS=--listen 127.0.0.1:{port} --heartbeat-interval 2s/' /etc/tasknode-console/console.env"
    ));
    c.sh_ok("systemctl start tasknode-console");
    let pid = running(c, port, None);

    // The process: the console user, no capabilities, no new privileges.
    let status = c.sh_ok(&format!("cat /proc/{pid}/status"));
    let uid = c.sh_ok("id -u tasknode-console");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(&uid)),
        "{status}"
    );
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(field) && l.ends_with("0000000000000000")),
            "{field}: {status}"
        );
    }
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    // Logs go to the journal.
    let journal = c.sh_ok("journalctl -u tasknode-console --no-pager -o cat");
    assert!(
        journal.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{journal}"
    );
    let exposure = exposure(c);
    eprintln!(
        "systemd-analyze security: overall exposure {exposure}\n{}",
        c.sh_ok("systemd-analyze security --no-pager tasknode-console.service | grep -v '✓'")
    );
    assert!(
        exposure <= MAX_EXPOSURE,
        "systemd-analyze security says {exposure}, above {MAX_EXPOSURE}:\n{}",
        c.sh_ok("systemd-analyze security --no-pager tasknode-console.service")
    );

    // A port below 1024 takes the documented drop-in: that one capability, no user namespace.
    let low = free_low_port();
    c.sh_ok(&format!(
        "mkdir -p /etc/systemd/system/tasknode-console.service.d \
         && printf '[Service]\\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\\nAmbientCapabilities=CAP_NET_BIND_SERVICE\\nPrivateUsers=no\\n' \
            > /etc/systemd/system/tasknode-console.service.d/low-port.conf \
         && sed -i 's/127.0.0.1:{port}/127.0.0.1:{low}/' /etc/tasknode-console/console.env \
         && systemctl daemon-reload && systemctl restart tasknode-console"
    ));
    let low_pid = running(c, low, Some(pid));
    let status = c.sh_ok(&format!("cat /proc/{low_pid}/status"));
    // CAP_NET_BIND_SERVICE is bit 10.
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000400"),
        "{status}"
    );
    c.sh_ok(&format!(
        "rm /etc/systemd/system/tasknode-console.service.d/low-port.conf \
         && sed -i 's/127.0.0.1:{low}/127.0.0.1:{port}/' /etc/tasknode-console/console.env \
         && systemctl daemon-reload && systemctl restart tasknode-console"
    ));
    let pid = running(c, port, Some(low_pid));

    // The admin CLI, as root, finds the data directory, its URL and its token.
    let user: Value =
        serde_json::from_str(&c.sh_ok("tasknode-console user create etl --json")).unwrap();
    assert_eq!(user["user_name"], "etl");
    c.sh_ok("tasknode-console group create classic --network classic");
    c.sh_ok("tasknode-console server add --group classic --name host-1");
    let before = state(c);

    // The upgrade restarts the service on the new binary, with the same data and settings.
    c.sh_ok(upgrade);
    assert_eq!(c.sh_ok(version_of), v2);
    let after_pid = running(c, port, Some(pid));
    assert_ne!(after_pid, pid);
    assert_eq!(state(c), before);
    assert!(
        c.sh_ok("cat /etc/tasknode-console/console.env")
            .contains(&format!("--listen 127.0.0.1:{port}"))
    );

    // Erasing stops the service and keeps the data and the user.
    c.sh_ok(erase);
    let active = c.sh("systemctl is-active tasknode-console");
    assert_ne!(String::from_utf8_lossy(&active.stdout).trim(), "active");
    assert!(
        !c.path("/usr/bin/tasknode-console").exists()
            && c.path("/var/lib/tasknode-console/tasknode.db").exists()
            && c.path("/var/lib/tasknode-console/admin.token").exists()
    );
    c.sh_ok("getent passwd tasknode-console");
}

/// Waits until the service is active with a main process other than `not`, answering on
/// `port`; returns that process.
fn running(c: &Container, port: u16, not: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pid = c
            .sh_ok("systemctl show -p MainPID --value tasknode-console")
            .parse::<u32>()
            .unwrap();
        let healthy = c
            .sh(&format!("curl -fsS http://127.0.0.1:{port}/healthz"))
            .status
            .success();
        if pid != 0 && Some(pid) != not && healthy {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "tasknode-console did not come up on port {port}:\n{}",
            String::from_utf8_lossy(
                &c.sh("systemctl status --no-pager tasknode-console; journalctl -u tasknode-console --no-pager | tail -30")
                    .stdout
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A port below 1024 that nothing on loopback listens on (the container shares the host's
/// network; the tests run as root).
fn free_low_port() -> u16 {
    (600..1024)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024")
}

/// The users, groups and servers the console lists.
fn state(c: &Container) -> (Value, Value, Value) {
    let list = |what: &str| -> Value {
        serde_json::from_str(&c.sh_ok(&format!("tasknode-console {what} list --json"))).unwrap()
    };
    let servers = list("server");
    assert!(
        servers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "host-1"),
        "{servers}"
    );
    (list("user"), list("group"), servers)
}

/// The overall exposure `systemd-analyze security` gives the unit.
fn exposure(c: &Container) -> f64 {
    let text = c.sh_ok("systemd-analyze security --no-pager tasknode-console.service");
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}
