//! What the packaging tests share: release keys and two versions of the real static agent
//! (made once per test binary), `tasknode-dist` itself, and running a tool that must succeed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::sandbox::Sandbox;
use crate::{bin, static_agent, stderr};

/// A source date older than any key made here: signatures must still verify.
pub const EPOCH: &str = "1700000000";

/// Release keys and two agent versions, made once per test binary.
pub struct Fixture {
    pub keys: PathBuf,
    pub other_keys: PathBuf,
    /// (version, stripped static agent carrying it)
    pub v1: (String, PathBuf),
    pub v2: (String, PathBuf),
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = crate::fixture_dir("releases");
        let keys = dir.join("keys");
        let out = dist(&["keygen", "--out", keys.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "keygen: {}", stderr(&out));
        let other_keys = dir.join("other-keys");
        let out = dist(&["keygen", "--out", other_keys.to_str().unwrap()]);
        assert!(out.status.success(), "keygen: {}", stderr(&out));

        // The real static agent, stripped as a release build is, and a copy that reports the
        // next patch version (its version marker rewritten in place: same length).
        let v1_path = dir.join("agent-v1");
        std::fs::copy(static_agent(), &v1_path).unwrap();
        let st = Command::new("strip").arg(&v1_path).status().unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&v1_path).unwrap();
        let v1 = tasknode_protocol::agent_version_in(&bytes)
            .unwrap()
            .to_owned();
        let (head, last) = v1.split_at(v1.len() - 1);
        let next: u8 = last.parse::<u8>().unwrap() + 1;
        assert!(
            next < 10,
            "agent version {v1}: its last digit cannot be bumped in place"
        );
        let v2 = format!("{head}{next}");
        let mut marker = tasknode_protocol::AGENT_VERSION_MARKER.to_vec();
        marker.extend_from_slice(v1.as_bytes());
        marker.push(0);
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap();
        let mut patched = bytes.clone();
        let start = at + tasknode_protocol::AGENT_VERSION_MARKER.len();
        patched[start..start + v2.len()].copy_from_slice(v2.as_bytes());
        let v2_path = dir.join("agent-v2");
        std::fs::write(&v2_path, &patched).unwrap();
        assert_eq!(
            tasknode_protocol::agent_version_in(&patched),
            Some(v2.as_str())
        );
        Fixture {
            keys,
            other_keys,
            v1: (v1, v1_path),
            v2: (v2, v2_path),
        }
    })
}

pub fn dist(args: &[&str]) -> Output {
    Command::new(bin("tasknode-dist"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// Where a release directory keeps the x86_64 RPM of `version` for `dist`.
pub fn rpm_path(out: &Path, dist: &str, version: &str) -> PathBuf {
    out.join(format!(
        "repo/{dist}/x86_64/tasknode-{version}-1.{dist}.x86_64.rpm"
    ))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// lintian on `deb`, with its scratch files in a directory of its own that goes with it
/// (lintian leaves a cache file in TMPDIR on every run).
pub fn lintian(deb: &Path) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    run(Command::new(crate::which("lintian"))
        .arg(deb)
        .env("TMPDIR", scratch.path()))
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `tasknode --version` says of the agent installed in `sb`.
pub fn agent_version_in_root(sb: &Sandbox) -> String {
    let out = sb.sh("/bin/sh", "/usr/bin/tasknode --version");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
