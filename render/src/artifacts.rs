//! The agent binaries a console hands out: `tasknode-<arch>` files in a directory, each with
//! its size and SHA-256, which install.sh verifies before it installs one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::arch::Arch;

/// The file name of the agent binary for `arch` (`tasknode-x86_64`: install.sh names it by
/// `uname -m`).
pub fn file_name(arch: Arch) -> String {
    format!("tasknode-{}", arch.uname())
}

#[derive(Clone, PartialEq, Eq)]
pub struct AgentBinary {
    pub arch: Arch,
    pub path: PathBuf,
    /// The version the binary carries (see [`tasknode_protocol::AGENT_VERSION_MARKER`]).
    pub version: String,
    pub size: u64,
    /// Lowercase hex, of `data`.
    pub sha256: String,
    /// The file as it was read: what is served is exactly what was hashed, even if the file
    /// is replaced later.
    pub data: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for AgentBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBinary")
            .field("arch", &self.arch)
            .field("path", &self.path)
            .field("version", &self.version)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("reading agent binary {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} holds no agent binary; put tasknode-x86_64 (and tasknode-aarch64) there")]
    Empty { dir: PathBuf },
    #[error(
        "{path} carries no tasknode agent version: it is not an agent built from this workspace (cargo build -p tasknode)"
    )]
    NoVersion { path: PathBuf },
    #[error(
        "the agent binaries disagree on their version ({first} is {first_version}, {second} is {second_version}); serve one version"
    )]
    Mixed {
        first: PathBuf,
        first_version: String,
        second: PathBuf,
        second_version: String,
    },
}

/// The agent binaries found in a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentArtifacts {
    pub binaries: Vec<AgentBinary>,
}

impl AgentArtifacts {
    /// Hashes every `tasknode-<arch>` in `dir`. A directory without any is an error.
    pub fn scan(dir: &Path) -> Result<AgentArtifacts, ArtifactError> {
        let mut binaries = Vec::new();
        for arch in Arch::ALL {
            let path = dir.join(file_name(arch));
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).map_err(|source| ArtifactError::Read {
                path: path.clone(),
                source,
            })?;
            let sha256 = hex::encode(Sha256::digest(&data));
            let version = tasknode_protocol::agent_version_in(&data)
                .ok_or_else(|| ArtifactError::NoVersion { path: path.clone() })?
                .to_owned();
            if let Some(first) = binaries
                .first()
                .filter(|b: &&AgentBinary| b.version != version)
            {
                return Err(ArtifactError::Mixed {
                    first: first.path.clone(),
                    first_version: first.version.clone(),
                    second: path,
                    second_version: version,
                });
            }
            binaries.push(AgentBinary {
                arch,
                version,
                path: path.clone(),
                size: data.len() as u64,
                sha256,
                data: data.into(),
            });
        }
        if binaries.is_empty() {
            return Err(ArtifactError::Empty {
                dir: dir.to_owned(),
            });
        }
        Ok(AgentArtifacts { binaries })
    }

    /// The version every binary carries; `None` without binaries.
    pub fn version(&self) -> Option<&str> {
        self.binaries.first().map(|b| b.version.as_str())
    }

    pub fn get(&self, arch: Arch) -> Option<&AgentBinary> {
        self.binaries.iter().find(|b| b.arch == arch)
    }
}

/// The bytes of a stand-in agent binary carrying `version`, for tests of what handles
/// binaries without running them.
pub fn stand_in_binary(version: &str, body: &[u8]) -> Vec<u8> {
    let mut data = body.to_vec();
    data.extend_from_slice(tasknode_protocol::AGENT_VERSION_MARKER);
    data.extend_from_slice(version.as_bytes());
    data.push(0);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_finds_and_refuses_an_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            AgentArtifacts::scan(dir.path()),
            Err(ArtifactError::Empty { .. })
        ));
        let data = stand_in_binary("1.4.0", b"abc");
        std::fs::write(dir.path().join("tasknode-x86_64"), &data).unwrap();
        std::fs::write(dir.path().join("tasknode-mips"), b"x").unwrap();
        let a = AgentArtifacts::scan(dir.path()).unwrap();
        assert_eq!(a.binaries.len(), 1);
        let b = a.get(Arch::X86_64).unwrap();
        assert_eq!(b.size, data.len() as u64);
        assert_eq!(b.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(a.version(), Some("1.4.0"));
        assert!(a.get(Arch::Aarch64).is_none());
    }

    #[test]
    fn binaries_without_a_version_or_of_two_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tasknode-x86_64"), b"not an agent").unwrap();
        let err = AgentArtifacts::scan(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("carries no tasknode agent version"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("tasknode-x86_64"),
            stand_in_binary("1.0.0", b"a"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tasknode-aarch64"),
            stand_in_binary("1.1.0", b"b"),
        )
        .unwrap();
        let err = AgentArtifacts::scan(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("disagree on their version"),
            "{err}"
        );
    }
}
