//! The static aarch64 agents the qemu-user tests run (built by scripts/test.sh), and how this
//! host runs them: through binfmt_misc when qemu-aarch64 is registered there, else by starting
//! qemu-aarch64-static directly, which cannot follow the agent's own exec of a new binary.

use std::path::{Path, PathBuf};

use tasknode_render::arch::Arch;

use crate::which;

/// The aarch64 agent of the workspace's version (TASKNODE_STATIC_AGENT_AARCH64, else
/// target/update-test/tasknode-aarch64), stripped.
pub fn static_agent() -> PathBuf {
    built(
        "TASKNODE_STATIC_AGENT_AARCH64",
        "tasknode-aarch64",
        "cargo build --target aarch64-unknown-linux-musl -p tasknode",
    )
}

/// The aarch64 agent built as version 0.2.0 (TASKNODE_UPDATE_AGENT_AARCH64, else
/// target/update-test/tasknode-0.2.0-aarch64): the release the qemu agent updates itself to.
pub fn update_agent() -> PathBuf {
    built(
        "TASKNODE_UPDATE_AGENT_AARCH64",
        "tasknode-0.2.0-aarch64",
        "TASKNODE_VERSION=0.2.0 cargo build --target aarch64-unknown-linux-musl -p tasknode",
    )
}

fn built(var: &str, name: &str, how: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
            target.join("update-test").join(name)
        },
        PathBuf::from,
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build it with `{how}` and strip it there with aarch64-linux-gnu-strip (scripts/test.sh does)",
            path.display()
        )
    });
    assert_eq!(
        Arch::of_elf(&bytes),
        Some(Arch::Aarch64),
        "{} is not an aarch64 ELF",
        path.display()
    );
    path
}

/// Whether the kernel runs aarch64 ELF files here (qemu-aarch64 registered with binfmt_misc).
pub fn binfmt_runs_aarch64() -> bool {
    std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
        .is_ok_and(|s| s.lines().next() == Some("enabled"))
}

/// qemu-aarch64-static, to start an aarch64 binary with where binfmt_misc does not.
pub fn qemu() -> PathBuf {
    which("qemu-aarch64-static")
}

/// Runs `binary ARGS` on this host: directly under binfmt_misc, else through qemu.
pub fn command(binary: &Path) -> std::process::Command {
    if binfmt_runs_aarch64() {
        std::process::Command::new(binary)
    } else {
        let mut cmd = std::process::Command::new(qemu());
        cmd.arg(binary);
        cmd
    }
}

/// For tests that need the kernel to run aarch64 binaries (an agent that execs its new
/// version): true when it does. CI registers qemu-aarch64 (scripts/test.sh), so there its
/// absence fails the test; elsewhere the test says it did not run.
pub fn require_binfmt() -> bool {
    if binfmt_runs_aarch64() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must register qemu-aarch64 with binfmt_misc (scripts/test.sh does)"
    );
    eprintln!(
        "qemu-aarch64 is not registered with binfmt_misc: skipped (register it with `systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf`)"
    );
    false
}
