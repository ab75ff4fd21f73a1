//! A throwaway root for running install.sh for real: a chroot with busybox-static (its applets
//! as the tools), dash and bash with their libraries, /proc and /dev bound in, and the release
//! files of one target OS. It shares the host's network, so a console on loopback is reachable.
//! Needs root; CI runs as root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The release files that make the sandbox look like one target OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    CentOs6,
    CentOs7,
    Alinux2,
    Alinux3,
    Debian12,
    Ubuntu22,
    /// Nothing install.sh recognizes.
    Unknown,
}

impl Os {
    pub const ALL: [Os; 7] = [
        Os::CentOs6,
        Os::CentOs7,
        Os::Alinux2,
        Os::Alinux3,
        Os::Debian12,
        Os::Ubuntu22,
        Os::Unknown,
    ];

    /// What install.sh calls it.
    pub fn family(self) -> &'static str {
        match self {
            Os::CentOs6 => "el6",
            Os::CentOs7 => "el7",
            Os::Alinux2 => "al7",
            Os::Alinux3 => "al8",
            Os::Debian12 => "debian",
            Os::Ubuntu22 => "ubuntu",
            Os::Unknown => "unknown",
        }
    }

    /// (path, contents) of its release files, as those systems ship them.
    fn files(self) -> Vec<(&'static str, &'static str)> {
        match self {
            // CentOS 6 has no os-release.
            Os::CentOs6 => vec![("etc/redhat-release", "CentOS release 6.10 (Final)\n")],
            Os::CentOs7 => vec![
                (
                    "etc/redhat-release",
                    "CentOS Linux release 7.9.2009 (Core)\n",
                ),
                (
                    "etc/os-release",
                    "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\n",
                ),
            ],
            Os::Alinux2 => vec![
                (
                    "etc/alinux-release",
                    "Alibaba Cloud Linux (Aliyun Linux) release 2.1903 LTS (Hunting Beagle)\n",
                ),
                (
                    "etc/os-release",
                    "NAME=\"Alibaba Cloud Linux (Aliyun Linux)\"\nID=\"alinux\"\nVERSION_ID=\"2.1903\"\n",
                ),
            ],
            Os::Alinux3 => vec![
                (
                    "etc/alinux-release",
                    "Alibaba Cloud Linux release 3 (Soaring Falcon)\n",
                ),
                (
                    "etc/os-release",
                    "NAME=\"Alibaba Cloud Linux\"\nID=\"alinux\"\nVERSION_ID=\"3\"\n",
                ),
            ],
            Os::Debian12 => vec![(
                "etc/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
            )],
            Os::Ubuntu22 => vec![(
                "etc/os-release",
                "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"22.04\"\n",
            )],
            Os::Unknown => vec![(
                "etc/os-release",
                "NAME=\"Plan 9\"\nID=plan9\nVERSION_ID=\"4\"\n",
            )],
        }
    }
}

/// Skips (outside CI) or fails (in CI) when not root: chroot needs it.
pub fn require_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the tests as root"
    );
    eprintln!("not root: skipped (runs as root in CI)");
    false
}

/// Drops the backups and lock shadow's useradd/userdel write on any system (`/etc/passwd-`,
/// `/etc/.pwd.lock`, ...): the OS tools' own files, not the install's.
pub fn without_shadow_backups(files: BTreeSet<String>) -> BTreeSet<String> {
    const SHADOW: [&str; 7] = [
        "etc/.pwd.lock",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/subuid-",
        "etc/subgid-",
    ];
    files
        .into_iter()
        .filter(|f| !SHADOW.contains(&f.as_str()))
        .collect()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Sandbox {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl Sandbox {
    /// A new root that looks like `os`, with this host's name resolving in /etc/hosts.
    pub fn new(os: Os) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("tasknode-sandbox")
            .tempdir()
            .unwrap();
        let mut sb = Sandbox {
            dir,
            mounts: Vec::new(),
        };
        let r = sb.root().to_owned();
        for d in [
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "etc",
            "tmp",
            "proc",
            "dev",
            "home",
            "root",
            "var/lib",
            "run",
            "sys/class/dmi/id",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        run_ok(Command::new("chmod").arg("1777").arg(r.join("tmp")));
        let busybox = crate::which("busybox");
        std::fs::copy(&busybox, r.join("bin/busybox")).unwrap();
        // A test thread forking while the copy was open for writing leaves the child holding
        // it until it execs: running the copy meanwhile fails with ETXTBSY. Runs again then.
        for attempt in 1.. {
            let out = Command::new("chroot")
                .arg(&r)
                .args(["/bin/busybox", "--install", "-s", "/bin"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                break;
            }
            assert!(
                attempt < 20 && stderr.contains("Text file busy"),
                "busybox --install in the sandbox: {stderr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The shells install.sh must work under, and shadow's user tools, which every target
        // has (Debian's busybox has no adduser).
        for program in ["dash", "bash", "useradd", "userdel"] {
            copy_with_libs(&crate::which(program), &r);
        }
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        std::fs::write(r.join("etc/gshadow"), "root:*::\n").unwrap();
        let host = crate::hostname();
        std::fs::write(
            r.join("etc/hosts"),
            format!("127.0.0.1 localhost\n127.0.0.1 {host}\n"),
        )
        .unwrap();
        for (path, text) in os.files() {
            std::fs::write(r.join(path), text).unwrap();
        }
        for (what, target) in [("/proc", "proc"), ("/dev", "dev")] {
            run_ok(
                Command::new("mount")
                    .args(["--bind", what])
                    .arg(r.join(target)),
            );
            sb.mounts.push(r.join(target));
        }
        sb
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the sandbox, on the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// Gives the sandbox a DMI product UUID.
    pub fn set_uuid(&self, uuid: &str) {
        std::fs::write(
            self.path("/sys/class/dmi/id/product_uuid"),
            format!("{uuid}\n"),
        )
        .unwrap();
    }

    /// Copies this host's `program` (with its libraries) into the sandbox's /usr/bin, where it
    /// comes before busybox's applets on PATH.
    pub fn add_program(&self, program: &str) {
        let path = crate::which(program);
        copy_with_libs(&path, self.root());
        let inside = self.root().join(path.strip_prefix("/").unwrap());
        let dst = self.path(&format!("/usr/bin/{program}"));
        if inside != dst {
            std::fs::copy(&inside, &dst).unwrap();
        }
    }

    /// Runs `sh -c COMMAND` inside with `shell` (e.g. `["/bin/sh"]`, `["/usr/bin/bash"]`) and a
    /// clean environment.
    pub fn sh(&self, shell: &str, command: &str) -> Output {
        Command::new("chroot")
            .arg(self.root())
            .args([shell, "-c", command])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("TASKNODE_WAIT_AVAILABLE", "30")
            .output()
            .unwrap()
    }

    /// Processes running inside this sandbox (their root is it) whose command line has every
    /// word of `words`. The sandbox shares the host's /proc, so `ps` inside would also count
    /// other sandboxes' processes.
    pub fn processes(&self, words: &[&str]) -> usize {
        let root = std::fs::canonicalize(self.root()).unwrap();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .chars()
                    .all(|c| c.is_ascii_digit())
            })
            .filter(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == root))
            .filter(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let args: Vec<String> = cmdline
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                words
                    .iter()
                    .all(|w| args.iter().any(|a| a == w || a.ends_with(&format!("/{w}"))))
            })
            .count()
    }

    /// Every path in the sandbox but the mounts and /tmp, for before/after comparisons.
    pub fn files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let skip: Vec<PathBuf> = ["proc", "dev", "tmp"]
            .iter()
            .map(|d| self.path(d))
            .collect();
        let mut stack = vec![self.root().to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if skip.contains(&path) {
                    continue;
                }
                let rel = path
                    .strip_prefix(self.root())
                    .unwrap()
                    .display()
                    .to_string();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                out.insert(rel);
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Anything the test left running in here goes first, then the mounts.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for p in /proc/[0-9]*; do [ \"$(readlink $p/root)\" = '{}' ] && kill -9 ${{p#/proc/}}; done",
                self.root().display()
            ))
            .output();
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
    }
}

/// Owner, group, mode and content (a SHA-256, or a link's target) of every entry under each of
/// `dirs` (paths inside `root`), keyed by path relative to `root`, but for `skip`: for showing
/// that root changed nothing it should not have.
pub fn tree_state(
    root: &Path,
    dirs: &[&str],
    skip: &[&str],
) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack: Vec<PathBuf> = dirs
        .iter()
        .map(|d| root.join(d.trim_start_matches('/')))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if skip.contains(&rel.as_str()) {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if m.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if m.is_file() {
                hex::encode(sha2::Sha256::digest(
                    std::fs::read(&path).unwrap_or_default(),
                ))
            } else {
                "special".to_owned()
            };
            out.insert(
                rel,
                format!("{}:{} {:o} {what}", m.uid(), m.gid(), m.mode()),
            );
        }
    }
    out
}

/// The entries that differ between two [`tree_state`]s, but for `allowed` (absolute paths).
pub fn tree_changes(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
    allowed: &[&str],
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            !allowed
                .iter()
                .any(|a| k.as_str() == a.trim_start_matches('/'))
        })
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect()
}

/// The account files useradd and userdel change on purpose (and their backups and lock).
pub const ACCOUNT_FILES: [&str; 13] = [
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/gshadow",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/.pwd.lock",
    "etc/subuid",
    "etc/subgid",
    "etc/subuid-",
    "etc/subgid-",
];

/// Copies a dynamically linked program into `root` with the libraries `ldd` names.
fn copy_with_libs(program: &Path, root: &Path) {
    let out = Command::new("ldd").arg(program).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = vec![program.to_owned()];
    for line in text.lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            files.push(p);
        }
    }
    for f in files {
        let real = std::fs::canonicalize(&f).unwrap();
        let dst = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&real, &dst).unwrap();
    }
}
