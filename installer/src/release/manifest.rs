//! Update manifests: the names of a release's manifest and self-update binaries, and signing
//! a rollback manifest for a version already built.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tasknode_protocol::manifest::{self, Manifest};

use crate::error::BuildError;
use crate::keys::ReleaseKeys;
use crate::target::Version;
use tasknode_render::arch::Arch;
use tasknode_render::published::RELEASES_DIR;

/// The file name of the agent binary for `arch` that self-updates download.
pub fn update_binary_name(arch: Arch) -> String {
    format!("tasknode-{}", arch.rust_target())
}

/// The file name of a release's manifest for `channel` (a rollback manifest, or the one
/// `build` signs).
pub fn manifest_name(channel: &str, rollback: bool) -> String {
    if rollback {
        format!("rollback.{channel}.json")
    } else {
        format!("manifest.{channel}.json")
    }
}

pub(super) fn update_artifact(version: &str, arch: Arch, agent: &[u8]) -> manifest::Artifact {
    manifest::Artifact {
        target: arch.rust_target().to_owned(),
        url: format!("{RELEASES_DIR}/{version}/{}", update_binary_name(arch)),
        size: agent.len() as u64,
        sha256: hex::encode(Sha256::digest(agent)),
    }
}

/// What `rollback` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackReport {
    pub version: String,
    pub channel: String,
    pub path: PathBuf,
    pub expires_ms: i64,
}

/// Signs a rollback manifest for a version already built in `out`: it lets agents that run a
/// newer version move back to `version` until `now_ms + life_ms`.
pub fn sign_rollback(
    out: &Path,
    keys_dir: &Path,
    version: &Version,
    channel: &str,
    now_ms: i64,
    life_ms: i64,
) -> Result<RollbackReport, BuildError> {
    let keys = ReleaseKeys::load(keys_dir)?;
    let release_dir = out.join(RELEASES_DIR).join(version.as_str());
    // Every architecture the release was built for.
    let mut artifacts = Vec::new();
    for arch in Arch::ALL {
        let path = release_dir.join(update_binary_name(arch));
        if let Ok(agent) = fs::read(&path) {
            artifacts.push(update_artifact(version.as_str(), arch, &agent));
        }
    }
    if artifacts.is_empty() {
        return Err(BuildError::NotBuilt {
            version: version.to_string(),
            out: out.to_owned(),
            path: release_dir.join(update_binary_name(Arch::X86_64)),
        });
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        channel: channel.to_owned(),
        version: version.to_string(),
        rollback: true,
        issued_ms: now_ms,
        expires_ms: Some(now_ms.saturating_add(life_ms)),
        artifacts,
    };
    let text = manifest
        .sign(&keys.manifest)
        .map_err(|e| BuildError::Manifest(e.to_string()))?;
    let path = release_dir.join(manifest_name(channel, true));
    super::write_file(&path, text.as_bytes(), 0o644)?;
    Ok(RollbackReport {
        version: version.to_string(),
        channel: channel.to_owned(),
        path,
        expires_ms: now_ms.saturating_add(life_ms),
    })
}
