//! `tasknode-dist build`: one version in, every artifact the fleet needs out.
//!
//! ```text
//! OUT/RPM-GPG-KEY-tasknode                      the package key, as yum imports it
//! OUT/agents/tasknode-ARCH                      the newest agent, as install scripts fetch it
//! OUT/releases/VERSION/tasknode-VERSION-ARCH-linux-musl.tar.gz
//! OUT/releases/VERSION/tasknode_VERSION-1_DEBARCH.deb
//! OUT/releases/VERSION/tasknode-RUST_TARGET    the agent, as self-updates fetch it
//! OUT/releases/VERSION/manifest.CHANNEL.json   the signed update manifest (with --keys)
//! OUT/manifest-signing.public.pem               the key manifests are signed with
//! OUT/releases/VERSION/SHA256SUMS               of the release's files, paths relative to OUT
//! OUT/repo/DIST/ARCH/tasknode-VERSION-1.DIST.ARCH.rpm + repodata/ (+ repomd.xml.asc)
//! OUT/repo/DIST/x86_64/tasknode-console-VERSION-1.DIST.x86_64.rpm   (el7, al8; with a console)
//! OUT/releases/VERSION/tasknode-console_VERSION-1_amd64.deb          (with a console)
//! ```
//!
//! ARCH is each architecture of the agents built ([`Arch`]: x86_64, aarch64), DEBARCH its
//! Debian name (amd64, arm64). One manifest lists every architecture's binary, one SHA256SUMS
//! every file of the release; each dist gets the RPMs of the architectures rpm/targets.toml
//! gives it, each in a repository of its own, as yum's `$basearch` finds it.
//!
//! Everything is checked before anything is written; every file is written under a temporary
//! name and renamed into place; a version already built is never changed (building it again
//! from the same tree gives the same bytes, which is allowed). Times come from one source date,
//! so two builds of a version are byte-identical, signatures included.
//!
//! The jobs, one module each: [`inputs`] reads and checks what goes in (agents, source date,
//! the release directory) or compiles it; [`build`] makes every package in memory; [`publish`]
//! writes them and SHA256SUMS; [`manifest`] signs update and rollback manifests; [`report`]
//! prints what was built.

pub mod build;
pub mod inputs;
pub mod manifest;
pub mod publish;
pub mod report;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::repo::Indexed;
use crate::target::{Target, Version};
use tasknode_render::arch::Arch;
use tasknode_render::dist::Dist;
use tasknode_render::published::REPO_DIR;

pub use crate::error::BuildError;
pub use build::build;
pub use inputs::{compile_agent, source_date};
pub use manifest::{RollbackReport, manifest_name, sign_rollback, update_binary_name};
pub use report::summary;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    pub version: Version,
    pub targets: Vec<Target>,
    pub keys: Option<PathBuf>,
    /// The static agents, one per architecture (read from each ELF header); each must carry
    /// `version`.
    pub agents: Vec<PathBuf>,
    /// The static x86_64 console, packaged as tasknode-console (see [`crate::console_package`]);
    /// without it the release holds no console packages.
    pub console: Option<PathBuf>,
    /// Seconds since the epoch: build time, file times, signature times.
    pub source_date: u32,
    /// Templates (embedded unless overridden).
    pub templates_dir: Option<PathBuf>,
    /// The workspace (cargo-deb reads agent/Cargo.toml there).
    pub workspace: PathBuf,
    /// The update channel the manifest is signed for.
    pub channel: String,
    /// How many packages, signatures and indexes are made at once; any number gives the same
    /// bytes.
    pub jobs: std::num::NonZeroUsize,
}

/// What a file of a release is (the `kind` of the report and the first column of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// A public key: the package key, the manifest key.
    Key,
    /// The agent in a tarball.
    Tarball,
    /// The agent as self-updates fetch it.
    Binary,
    /// The signed update manifest.
    Manifest,
    Rpm,
    ConsoleRpm,
    Deb,
    ConsoleDeb,
    /// The agent as install scripts fetch it (OUT/agents/).
    Agent,
    /// SHA256SUMS.
    Sums,
}

impl ArtifactKind {
    pub const fn name(self) -> &'static str {
        match self {
            ArtifactKind::Key => "key",
            ArtifactKind::Tarball => "tarball",
            ArtifactKind::Binary => "binary",
            ArtifactKind::Manifest => "manifest",
            ArtifactKind::Rpm => "rpm",
            ArtifactKind::ConsoleRpm => "console-rpm",
            ArtifactKind::Deb => "deb",
            ArtifactKind::ConsoleDeb => "console-deb",
            ArtifactKind::Agent => "agent",
            ArtifactKind::Sums => "sums",
        }
    }

    /// Whether SHA256SUMS lists it: the release's own files, not the keys and agents at the
    /// top of OUT that every release shares.
    pub const fn summed(self) -> bool {
        !matches!(self, ArtifactKind::Key | ArtifactKind::Agent)
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One file the build wrote (or found identical).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// What `build` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    pub version: String,
    pub source_date: u32,
    pub artifacts: Vec<Artifact>,
    pub repositories: Vec<RepoReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RepoReport {
    pub dist: Dist,
    pub arch: Arch,
    pub path: PathBuf,
    #[serde(flatten)]
    pub indexed: Indexed,
}

/// Observes the steps of a build (progress bars in the CLI; nothing in the library). Steps
/// that run at once report from their own threads, each when it is done.
pub trait Progress: Sync {
    fn start(&self, steps: u64);
    fn step(&self, what: &str);
    fn finish(&self);
}

/// No progress output.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn step(&self, _: &str) {}
    fn finish(&self) {}
}

/// OUT/repo/DIST/ARCH.
pub fn repo_dir(out: &Path, dist: Dist, arch: Arch) -> PathBuf {
    out.join(REPO_DIR).join(dist.name()).join(arch.uname())
}

pub(crate) fn artifact(kind: ArtifactKind, path: &Path, bytes: &[u8]) -> Artifact {
    Artifact {
        kind,
        path: path.to_owned(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

/// Writes one file of the release atomically ([`crate::fsutil::write_atomic`]), making its
/// directory first.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BuildError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(crate::error::io(dir))?;
    crate::fsutil::write_atomic(path, bytes, mode).map_err(crate::error::io(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn artifact_kinds_read_the_same_in_the_json_report_and_the_table() {
        use ArtifactKind::*;
        for kind in [
            Key, Tarball, Binary, Manifest, Rpm, ConsoleRpm, Deb, ConsoleDeb, Agent, Sums,
        ] {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json.as_str(), Some(kind.name()), "{kind:?}");
            assert_eq!(kind.to_string(), kind.name());
        }
        assert!(!Key.summed() && !Agent.summed() && Rpm.summed() && Sums.summed());
    }
}
