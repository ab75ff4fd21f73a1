//! The CPU architectures the agent is released for, and each one's names: `uname -m` (and
//! rpm's arch), Debian's arch, the Rust target, the ELF machine. One enum, so no other code
//! spells these strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An architecture a static agent is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// `e_machine` of an x86_64 ELF (EM_X86_64).
const EM_X86_64: u16 = 62;
/// `e_machine` of an aarch64 ELF (EM_AARCH64).
const EM_AARCH64: u16 = 183;

impl Arch {
    /// Every architecture, in build order.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// As `uname -m` prints it, which is also rpm's arch and yum's `$basearch`.
    pub fn uname(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// As dpkg names it.
    pub fn deb(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The Rust target of the static agent (what update manifests key binaries by).
    pub const fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The architecture of this build of tasknode-dist, when it is one agents are built for.
    pub fn host() -> Option<Arch> {
        Arch::from_uname(std::env::consts::ARCH)
    }

    pub fn from_uname(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.uname() == name)
    }

    /// The architecture of a 64-bit little-endian ELF file, from its header.
    pub fn of_elf(bytes: &[u8]) -> Option<Arch> {
        if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
            return None;
        }
        match u16::from_le_bytes([bytes[18], bytes[19]]) {
            EM_X86_64 => Some(Arch::X86_64),
            EM_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uname())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn elf_headers_name_their_architecture() {
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
        assert_eq!(Arch::of_elf(&elf), Some(Arch::X86_64));
        elf[18] = 0xb7;
        assert_eq!(Arch::of_elf(&elf), Some(Arch::Aarch64));
        elf[18] = 0x28; // 32-bit ARM
        assert_eq!(Arch::of_elf(&elf), None);
        assert_eq!(Arch::of_elf(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn each_architecture_has_its_names() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_uname(a.uname()), Some(a));
            assert!(a.rust_target().starts_with(a.uname()));
        }
        assert_eq!(Arch::Aarch64.deb(), "arm64");
        assert_eq!(Arch::X86_64.deb(), "amd64");
    }
}
