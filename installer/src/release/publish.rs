//! Publishing a built release: refusing to change a version already released, then writing
//! every file (the public keys, the packages, the agents install scripts fetch) atomically,
//! and last the release's SHA256SUMS.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::BuildError;
use crate::keys::{self, ReleaseKeys};
use tasknode_render::published::AGENTS_DIR;

use super::inputs::{ReleaseAgent, publishes_agents};
use super::{Artifact, ArtifactKind, BuildOptions, Progress, artifact};

/// A file to write: its final path and bytes.
pub(super) struct Planned {
    pub(super) kind: ArtifactKind,
    pub(super) path: PathBuf,
    pub(super) bytes: Vec<u8>,
    pub(super) mode: u32,
}

/// Writes the `planned` files of a release, the public keys and (unless a newer version is
/// published) the agents for install scripts, then SHA256SUMS; returns what was written.
pub(super) fn publish(
    opts: &BuildOptions,
    planned: &[Planned],
    keys: Option<&ReleaseKeys>,
    agents: &[ReleaseAgent],
    release_dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<Artifact>, BuildError> {
    let version = opts.version.as_str();
    // -- Refuse to change a released version, before writing anything.
    for p in planned {
        if let Ok(existing) = fs::read(&p.path)
            && existing != p.bytes
        {
            return Err(BuildError::Released {
                path: p.path.clone(),
                version: version.to_owned(),
            });
        }
    }

    // -- Write.
    let mut artifacts = Vec::new();
    if let Some(keys) = keys {
        let key_path = opts.out.join(keys::PACKAGE_PUBLIC);
        super::write_file(&key_path, keys.package_public.as_bytes(), 0o644)?;
        artifacts.push(artifact(
            ArtifactKind::Key,
            &key_path,
            keys.package_public.as_bytes(),
        ));
        let pem = keys.manifest_public_pem()?;
        let key_path = opts.out.join(keys::MANIFEST_PUBLIC);
        super::write_file(&key_path, pem.as_bytes(), 0o644)?;
        artifacts.push(artifact(ArtifactKind::Key, &key_path, pem.as_bytes()));
    }
    // Each file is synced before its rename: those waits overlap (the file system commits
    // them together), unless the build runs on one thread.
    let at_once = if opts.jobs.get() == 1 {
        opts.jobs
    } else {
        std::num::NonZeroUsize::new(planned.len()).unwrap_or(opts.jobs)
    };
    artifacts.extend(crate::parallel::map(at_once, planned, |p| {
        super::write_file(&p.path, &p.bytes, p.mode)?;
        Ok::<_, BuildError>(artifact(p.kind, &p.path, &p.bytes))
    })?);
    progress.step("agents for install scripts");
    if publishes_agents(&opts.out, &opts.version) {
        for a in agents {
            let path = opts
                .out
                .join(AGENTS_DIR)
                .join(tasknode_render::artifacts::file_name(a.arch));
            super::write_file(&path, &a.bytes, 0o755)?;
            artifacts.push(artifact(ArtifactKind::Agent, &path, &a.bytes));
        }
    }

    // SHA256SUMS of the release's own files, by their path in OUT: `sha256sum -c
    // releases/VERSION/SHA256SUMS` in OUT checks them.
    let sums: String = artifacts
        .iter()
        .filter(|a| a.kind.summed())
        .map(|a| {
            let rel = a.path.strip_prefix(&opts.out).unwrap_or(&a.path);
            format!("{}  {}\n", a.sha256, rel.display())
        })
        .collect();
    let sums_path = release_dir.join("SHA256SUMS");
    super::write_file(&sums_path, sums.as_bytes(), 0o644)?;
    artifacts.push(artifact(ArtifactKind::Sums, &sums_path, sums.as_bytes()));
    Ok(artifacts)
}
