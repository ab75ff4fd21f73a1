//! The agent binaries a console hands out: `tasknode-<arch>` files in a directory, each with
//! its size and SHA-256, which install.sh verifies before it installs one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Architectures install.sh knows, as `uname -m` prints them.
pub const ARCHES: &[&str] = &["x86_64", "aarch64"];

/// The file name of the agent binary for `arch`.
pub fn file_name(arch: &str) -> String {
    format!("tasknode-{arch}")
}

#[derive(Clone, PartialEq, Eq)]
pub struct AgentBinary {
    pub arch: String,
    pub path: PathBuf,
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
        for arch in ARCHES {
            let path = dir.join(file_name(arch));
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).map_err(|source| ArtifactError::Read {
                path: path.clone(),
                source,
            })?;
            let sha256 = hex::encode(Sha256::digest(&data));
            binaries.push(AgentBinary {
                arch: (*arch).to_owned(),
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

    pub fn get(&self, arch: &str) -> Option<&AgentBinary> {
        self.binaries.iter().find(|b| b.arch == arch)
    }
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
        std::fs::write(dir.path().join("tasknode-x86_64"), b"abc").unwrap();
        std::fs::write(dir.path().join("tasknode-mips"), b"x").unwrap();
        let a = AgentArtifacts::scan(dir.path()).unwrap();
        assert_eq!(a.binaries.len(), 1);
        let b = a.get("x86_64").unwrap();
        assert_eq!(b.size, 3);
        assert_eq!(
            b.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(a.get("aarch64").is_none());
    }
}
