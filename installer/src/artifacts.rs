//! The agent binaries a console hands out: `tasknode-<arch>` files in a directory, each with
//! its size and SHA-256, which install.sh verifies before it installs one.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Architectures install.sh knows, as `uname -m` prints them.
pub const ARCHES: &[&str] = &["x86_64", "aarch64"];

/// The file name of the agent binary for `arch`.
pub fn file_name(arch: &str) -> String {
    format!("tasknode-{arch}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinary {
    pub arch: String,
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
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
            let err = |source| ArtifactError::Read {
                path: path.clone(),
                source,
            };
            let mut file = std::fs::File::open(&path).map_err(err)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            binaries.push(AgentBinary {
                arch: (*arch).to_owned(),
                path: path.clone(),
                size,
                sha256: hex::encode(hasher.finalize()),
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
