//! What crosses the wire between the tasknode agent and console, and the rules both sides apply
//! to it: identity (hostname or DMI UUID), field validation, server states and the formula that
//! turns a host's size into its default max concurrency.

pub mod access;
pub mod concurrency;
pub mod identity;
pub mod layout;
pub mod logtoken;
pub mod manifest;
pub mod tasks;
pub mod updates;
pub mod validate;
pub mod wire;

pub use identity::{Identity, NetworkType};
pub use validate::FieldError;

/// Every API path lives under this prefix.
pub const API_PREFIX: &str = "/api/v1";

/// Response header carrying the console's wall clock, in milliseconds since the Unix epoch.
/// Every console response has it, so an agent can measure its clock offset from any answer.
pub const TIME_HEADER: &str = "x-tasknode-time";

/// An agent whose clock differs from the console's by more than this takes no work.
pub const MAX_CLOCK_OFFSET_MS: i64 = 120_000;

/// Largest JSON body the console accepts on any endpoint.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Agent binaries carry their version right after these bytes, ended by a NUL, so that tools
/// (the console, `tasknode-dist`) read it from a binary of any architecture without running it.
pub const AGENT_VERSION_MARKER: &[u8] = b"\0tasknode-agent-version=";

/// The version an agent binary carries after [`AGENT_VERSION_MARKER`], if it carries one that
/// is a valid version string.
pub fn agent_version_in(binary: &[u8]) -> Option<&str> {
    let at = binary
        .windows(AGENT_VERSION_MARKER.len())
        .position(|w| w == AGENT_VERSION_MARKER)?;
    let rest = &binary[at + AGENT_VERSION_MARKER.len()..];
    let end = rest.iter().take(64).position(|&b| b == 0)?;
    let version = std::str::from_utf8(&rest[..end]).ok()?;
    validate::version("version", version).ok()?;
    Some(version)
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn reads_the_version_between_the_marker_and_a_nul() {
        let mut bin = b"\x7fELF junk".to_vec();
        bin.extend_from_slice(AGENT_VERSION_MARKER);
        bin.extend_from_slice(b"1.2.3\0more");
        assert_eq!(agent_version_in(&bin), Some("1.2.3"));
        assert_eq!(agent_version_in(b"no marker here"), None);
        let mut unterminated = AGENT_VERSION_MARKER.to_vec();
        unterminated.extend_from_slice(b"1.2.3");
        assert_eq!(agent_version_in(&unterminated), None);
        let mut hostile = AGENT_VERSION_MARKER.to_vec();
        hostile.extend_from_slice(b"1'$(x)\0");
        assert_eq!(agent_version_in(&hostile), None);
    }
}
