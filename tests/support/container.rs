//! A booted Debian 12 system for running install.sh under a real service manager: a root built
//! once with debootstrap (cached under target/containers), copied for each test and booted with
//! systemd-nspawn, so PID 1 is systemd or SysV init (sysvinit-core, with insserv and
//! update-rc.d). It shares the host's network, so a console on loopback is reachable; commands
//! run inside with nsenter. Needs root, systemd-container and debootstrap (scripts/test.sh
//! installs both) and Debian's archive (TASKNODE_DEBIAN_MIRROR, else deb.debian.org).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cgroup::OwnCgroup;
use crate::{Console, wait_for};

/// Which init the container boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Systemd,
    Sysv,
}

impl Init {
    fn name(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Sysv => "sysv",
        }
    }

    /// What debootstrap adds to its minimal base: the init, what install.sh is run with, and
    /// (with systemd) rpm for the el7 package.
    fn packages(self) -> &'static str {
        match self {
            Init::Systemd => "systemd,systemd-sysv,dbus,curl,ca-certificates,procps,rpm",
            Init::Sysv => "sysvinit-core,curl,ca-certificates,procps",
        }
    }
}

/// The cached root for `init`, built with debootstrap on first use. Its name carries a hash of
/// the package list, so a changed list makes a new root.
fn image(init: Init) -> PathBuf {
    use sha2::Digest;
    // One debootstrap at a time in this process: tests booting the same image wait for it.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/containers
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    let packages = hex::encode(sha2::Sha256::digest(init.packages()));
    let image =
        target
            .join("containers")
            .join(format!("bookworm-{}-{}", init.name(), &packages[..12]));
    if image.join("etc/os-release").exists() {
        unmount_under(&image);
        return image;
    }
    let mirror = std::env::var("TASKNODE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    let building = image.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).unwrap();
    let out = Command::new(crate::which("debootstrap"))
        .args([
            "--variant=minbase",
            &format!("--include={}", init.packages()),
            "bookworm",
        ])
        .arg(&building)
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap of a Debian 12 root from {mirror} failed (set TASKNODE_DEBIAN_MIRROR to another mirror):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    unmount_under(&building);
    // Another test binary may have finished the same image first; either copy will do.
    if std::fs::rename(&building, &image).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(image.join("etc/os-release").exists());
    image
}

/// Unmounts whatever is mounted at or under `dir`, deepest first, and checks nothing is left.
/// debootstrap mounts /proc and /sys in the root it builds and has been seen to leave /proc
/// mounted there; a copy of that root would then read the host's /proc, whose kcore alone
/// fills any disk.
fn unmount_under(dir: &Path) {
    let mounted = || -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut points: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points
    };
    for point in mounted() {
        let out = Command::new("umount")
            .arg("-l")
            .arg(&point)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umount {}: {}",
            point.display(),
            crate::stderr(&out)
        );
    }
    let left = mounted();
    assert!(left.is_empty(), "still mounted in the image: {left:?}");
}

/// A booted container. Dropping it powers it off.
pub struct Container {
    dir: tempfile::TempDir,
    init: Init,
    hostname: String,
    nspawn: Option<Child>,
    /// The cgroups the container runs in, its own (see the cgroup module).
    cgroup: Option<OwnCgroup>,
    /// The container's PID 1, as the host numbers it.
    leader: i32,
}

impl Container {
    /// Boots a fresh copy of the `init` image, named `hostname` (which resolves in its
    /// /etc/hosts), and waits until the boot is done.
    pub fn boot(init: Init, hostname: &str) -> Container {
        let image = image(init);
        let dir = tempfile::Builder::new()
            .prefix("tasknode-container")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let out = Command::new("cp")
            // Never into a file system mounted in the image (see `unmount_under`).
            .args(["-a", "--reflink=auto", "--one-file-system"])
            .arg(&image)
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        std::fs::write(root.join("etc/hostname"), format!("{hostname}\n")).unwrap();
        std::fs::write(
            root.join("etc/hosts"),
            format!("127.0.0.1 localhost\n127.0.1.1 {hostname}\n"),
        )
        .unwrap();
        let mut container = Container {
            dir,
            init,
            hostname: hostname.to_owned(),
            nspawn: None,
            cgroup: None,
            leader: 0,
        };
        container.start();
        container
    }

    fn start(&mut self) {
        crate::which("systemd-nspawn");
        // nspawn keeps its mount propagation directory under /run/systemd/nspawn and will only
        // remove it from a tmpfs. This host's /run may be on disk, so the container gets a
        // tmpfs there in a mount namespace of its own; the host's mounts are not touched.
        // It also moves into cgroups of its own before nspawn starts (see the cgroup module).
        let script = "root=$1 machine=$2 && shift 2 \
            && for procs; do echo $$ > \"$procs\" || exit; done \
            && mkdir -p /run/systemd/nspawn \
            && mount -t tmpfs tmpfs /run/systemd/nspawn \
            && exec systemd-nspawn --quiet --register=no --keep-unit --boot \
               --console=read-only --directory=\"$root\" --machine=\"$machine\"";
        // A reboot's old cgroups go before the new ones take their name.
        self.cgroup = None;
        let dir_name = self.dir.path().file_name().unwrap().to_string_lossy();
        let cgroup = OwnCgroup::create(&dir_name);
        let log = std::fs::File::create(self.dir.path().join("console.log")).unwrap();
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(self.root())
            .arg(&self.hostname)
            .args(cgroup.procs_files())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let nspawn = child.id() as i32;
        self.nspawn = Some(child);
        self.cgroup = Some(cgroup);
        // nspawn forks a helper before the init, so wait for the child that is the init.
        let init = match self.init {
            Init::Systemd => "systemd",
            Init::Sysv => "init",
        };
        self.leader = wait_for(Duration::from_secs(30), "the container's init", || {
            self.check_alive();
            child_of(nspawn).filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == init)
            })
        });
        self.wait_booted();
    }

    fn check_alive(&mut self) {
        if let Some(child) = self.nspawn.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("systemd-nspawn exited ({status}):\n{}", self.console_log());
        }
    }

    /// What the container's console printed: the boot and shutdown messages.
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    fn wait_booted(&mut self) {
        match self.init {
            Init::Systemd => {
                // Until systemd listens, systemctl answers "offline".
                let state = self.poll("systemd to start", |c| {
                    let out = c.sh("systemctl is-system-running --wait");
                    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    (!state.is_empty() && state != "offline").then_some(state)
                });
                assert_eq!(
                    state,
                    "running",
                    "systemd did not boot cleanly:\n{}",
                    text(
                        &self.sh(
                            "systemctl --failed --no-pager; journalctl -b --no-pager | tail -50"
                        )
                    )
                );
            }
            Init::Sysv => {
                // Runlevel 2 is entered, then its rc script runs; the boot is done when it ends.
                // The bracket keeps pgrep from matching this shell's own command line.
                self.poll("SysV init to finish runlevel 2", |c| {
                    let out = c.sh("runlevel; pgrep -f '[/]etc/init.d/rc [0-6S]' || echo rc-done");
                    let said = String::from_utf8_lossy(&out.stdout).into_owned();
                    (said.contains("N 2") && said.contains("rc-done")).then_some(())
                });
            }
        }
    }

    /// Polls `probe` every 200 ms until it answers, for up to 60 s; panics with the console's
    /// messages if that runs out or the container dies.
    fn poll<T>(&mut self, what: &str, mut probe: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(answer) = probe(self) {
                return answer;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.console_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The container's root directory, seen from the host.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the container, seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// Runs `script` with the container's /bin/sh, in all its namespaces, as root, with a
    /// clean environment.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["--target", &self.leader.to_string(), "--all", "--"])
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
                "/bin/sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `script` and returns its standard output, trimmed; panics if it fails.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "`{script}` failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Shuts the system down through its init and boots it again from the same root.
    pub fn reboot(&mut self) {
        self.power_off();
        self.start();
    }

    fn power_off(&mut self) {
        assert!(
            self.shut_down(),
            "the container did not power off in 30 s:\n{}",
            self.console_log()
        );
    }

    /// Powers the system off through its init; kills it if that takes over 30 s. Says whether
    /// it went down cleanly.
    fn shut_down(&mut self) -> bool {
        let Some(mut child) = self.nspawn.take() else {
            return true;
        };
        let _ = self.sh("poweroff");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // nspawn ends the container when it is killed.
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Every file and directory of the root, relative to it, but for what the running system
    /// keeps for itself: the journal, systemd's state and its services' private /var/tmp, and
    /// the kernel log SysV's boot saves and rotates.
    pub fn files(&self) -> BTreeSet<String> {
        const OWN: [&str; 6] = [
            "var/log/dmesg",
            "var/log/journal/",
            "var/lib/systemd/",
            "var/log/wtmp",
            "var/log/btmp",
            "var/tmp/systemd-private-",
        ];
        let root = self.root();
        let mut files = BTreeSet::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if OWN
                    .iter()
                    .any(|o| format!("{rel}/").starts_with(o) || rel.starts_with(o))
                {
                    continue;
                }
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path);
                }
                files.insert(rel);
            }
        }
        files
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("container console:\n{}", self.console_log());
        }
        self.shut_down();
    }
}

/// A console over TLS (heartbeats a second apart) serving the static agent from an agent
/// directory of its own (returned with it), started with `extra` flags as well, with a user
/// `etl` and a classic group `classic` holding the server `host`.
pub fn classic_tls_console(host: &str, extra: &[&str]) -> (Console, tempfile::TempDir) {
    let (console, agents) = crate::console_serving_agent(&[&["--tls"], extra].concat());
    console.cli_ok(&["group", "create", "classic", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "classic", "--name", host]);
    (console, agents)
}

/// A fresh one-time install command of group `classic` for user `etl`, as printed, with
/// `args` passed to the script.
pub fn install_command(console: &Console, args: &str) -> String {
    let out = console.cli_ok(&[
        "install-command",
        "--group",
        "classic",
        "--user",
        "etl",
        "--json",
    ]);
    let cmd: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cmd["enable_uuid"], false);
    let printed = cmd["command"].as_str().unwrap().to_owned();
    if args.is_empty() {
        return printed;
    }
    let head = printed.strip_suffix(" | sh").unwrap();
    format!("{head} | sh -s -- {args}")
}

/// Runs the install command in the container and returns what it said; panics if it failed.
pub fn install(c: &Container, command: &str) -> String {
    let out = c.sh(command);
    let said = text(&out);
    assert!(out.status.success(), "`{command}` failed:\n{said}");
    said
}

/// A container `host` booted under systemd, with the agent installed by the console's install
/// command (which enrolls it; the caller waits for it to be available).
pub fn installed_under_systemd(console: &Console, host: &str) -> Container {
    let c = Container::boot(Init::Systemd, host);
    install(&c, &install_command(console, ""));
    c
}

/// The pid of a child of `parent`, if it has one.
fn child_of(parent: i32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(pid) = entry.ok()?.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
