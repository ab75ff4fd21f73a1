//! A control group of its own for each booted container. With `--keep-unit --register=no`
//! systemd-nspawn leaves the container in the cgroup it was started from, and a container's
//! systemd builds its `system.slice` under that cgroup. Two containers started from the same
//! test process would share one `system.slice`: on a cgroup v1 host one container's systemd
//! removed `system.slice/systemd-update-utmp.service` while the other was starting that unit
//! ("Failed to attach to cgroup … No such file or directory", the boot left degraded). So each
//! container is started from a fresh child of this process's cgroup, in the hierarchies
//! systemd uses: `name=systemd` (cgroup v1) and the unified one (v2, or hybrid's `unified`).

use std::path::{Path, PathBuf};

/// Fresh cgroups, one per hierarchy systemd uses, named `name` under this process's own.
/// Dropping it removes them and whatever the container's systemd left inside.
pub struct OwnCgroup {
    dirs: Vec<PathBuf>,
}

impl OwnCgroup {
    pub fn create(name: &str) -> OwnCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mut dirs = Vec::new();
        for line in own.lines() {
            // "ID:CONTROLLERS:PATH"; PATH may itself hold a colon.
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(mount) = mount_point(controllers) else {
                continue;
            };
            let dir = mount.join(path.trim_start_matches('/')).join(name);
            std::fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
            dirs.push(dir);
        }
        assert!(
            !dirs.is_empty(),
            "no name=systemd or unified cgroup hierarchy is mounted under /sys/fs/cgroup:\n{own}"
        );
        OwnCgroup { dirs }
    }

    /// The `cgroup.procs` files a process writes its PID to, to move into these cgroups.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }
}

/// Where the hierarchy of a /proc/self/cgroup line is mounted, for the two systemd uses.
fn mount_point(controllers: &str) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    match controllers {
        "name=systemd" => Some(root.join("systemd")).filter(|p| p.is_dir()),
        // cgroup v2: at the root on a unified host, under `unified` on a hybrid one.
        "" if root.join("unified/cgroup.procs").exists() => Some(root.join("unified")),
        "" if root.join("cgroup.procs").exists() => Some(root.to_owned()),
        _ => None,
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        // A cgroup goes with rmdir once it holds no process and no child: deepest first.
        for dir in &self.dirs {
            let mut all = Vec::new();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(entries) = std::fs::read_dir(&d) {
                    stack.extend(
                        entries
                            .flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
                all.push(d);
            }
            all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for d in all {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}
