//! Signed update manifests: what an agent may update itself to.
//!
//! `tasknode-dist build` writes one manifest per version and channel, signed with the release's
//! ed25519 manifest key; the console hands it to agents unchanged. A manifest file is JSON:
//!
//! ```json
//! { "manifest": "<the manifest's own JSON text>",
//!   "signed_by": "<hex ed25519 public key>",
//!   "signature": "<base64 signature>" }
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by the exact bytes of `manifest`, so what
//! is verified is what is parsed. An agent trusts a fixed set of public keys (more than one, so
//! a key can be rotated) and checks, in this order: the signature, the channel, its own target,
//! and that the version moves forward unless the manifest is a signed rollback that has not
//! expired.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::validate;

/// Prefixed to the manifest bytes before signing: a manifest signature can never be taken for
/// a signature over anything else made with the same key.
pub const SIGNING_CONTEXT: &[u8] = b"tasknode update manifest v1\n";

/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;

/// The largest manifest file accepted.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// The channel agents follow unless configured otherwise.
pub const DEFAULT_CHANNEL: &str = "stable";

/// How long a rollback manifest is good for unless its signer says otherwise: long enough to
/// roll a fleet back, short enough that it cannot be replayed much later.
pub const DEFAULT_ROLLBACK_LIFE_MS: i64 = 30 * 24 * 3600 * 1000;

/// What a release offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub channel: String,
    pub version: String,
    /// Signed permission to move agents back to this version from a newer one.
    #[serde(default)]
    pub rollback: bool,
    pub issued_ms: i64,
    /// When the manifest stops being accepted; required for rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    pub artifacts: Vec<Artifact>,
}

/// One binary of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// The Rust target it runs on, e.g. `x86_64-unknown-linux-musl`.
    pub target: String,
    /// Relative to the console's URL, e.g. `releases/1.2.0/tasknode-x86_64-unknown-linux-musl`.
    pub url: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// The signed file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub manifest: String,
    #[serde(default)]
    pub signed_by: String,
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the update manifest is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("the update manifest is unsigned; only manifests signed by `tasknode-dist` are used")]
    Unsigned,
    #[error(
        "the update manifest is signed by key {key}, which this agent does not trust; sign releases with a trusted key (the agent's trusted keys are listed by `tasknode update --check`)"
    )]
    UntrustedKey { key: String },
    #[error("the update manifest's signature does not verify: it was changed after signing")]
    BadSignature,
    #[error("the update manifest has format {0}; this agent reads format {FORMAT}")]
    Format(u32),
    #[error("the update manifest's {field} is invalid: {why}")]
    Field { field: &'static str, why: String },
    #[error("the update manifest is for channel {found}; this agent follows channel {expected}")]
    WrongChannel { expected: String, found: String },
    #[error("the update manifest offers version {found}, not the version {expected} asked for")]
    WrongVersion { expected: String, found: String },
    #[error(
        "the release has no binary for this agent's target {target} (it has: {offered}); build one for {target}"
    )]
    WrongTarget { target: String, offered: String },
    #[error(
        "version {offered} is older than the running {running} and the manifest is not a signed rollback; sign one with `tasknode-dist rollback`"
    )]
    Downgrade { running: String, offered: String },
    #[error(
        "the rollback manifest for {version} expired; sign a new one with `tasknode-dist rollback`"
    )]
    Expired { version: String },
    #[error("version {0} is already running")]
    Current(String),
}

/// Compares two release versions: numbers separated by dots, compared number by number
/// (`1.10.0` is newer than `1.9.3`; missing numbers count as 0). `None` when either is not such
/// a version.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let parse = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    let (mut a, mut b) = (parse(a)?, parse(b)?);
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    Some(a.cmp(&b))
}

/// Checks that `v` is a release version: numbers separated by dots.
pub fn release_version(field: &'static str, v: &str) -> Result<(), ManifestError> {
    let ok = v.len() <= 64
        && !v.is_empty()
        && v.split('.')
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Field {
            field,
            why: format!(
                "{v:?} is not a release version; use numbers separated by dots, e.g. 1.4.0"
            ),
        })
    }
}

impl Manifest {
    /// Checks the fields of a manifest on their own.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        release_version("version", &self.version)?;
        validate::name("channel", &self.channel).map_err(|e| ManifestError::Field {
            field: "channel",
            why: e.message,
        })?;
        if self.rollback && self.expires_ms.is_none() {
            return Err(ManifestError::Field {
                field: "expires_ms",
                why: "a rollback manifest must expire".to_owned(),
            });
        }
        if self.artifacts.is_empty() {
            return Err(ManifestError::Field {
                field: "artifacts",
                why: "lists no binary".to_owned(),
            });
        }
        for a in &self.artifacts {
            let bad = |field, why: &str| ManifestError::Field {
                field,
                why: why.to_owned(),
            };
            if a.target.is_empty()
                || !a
                    .target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad("artifacts.target", "is not a Rust target name"));
            }
            let relative = !a.url.is_empty()
                && !a.url.starts_with('/')
                && !a.url.contains("://")
                && !a.url.contains('\\')
                && a.url
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != "..")
                && a.url
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+/".contains(&b));
            if !relative {
                return Err(bad(
                    "artifacts.url",
                    "must be a plain path relative to the console, like releases/1.2.0/tasknode-x86_64-unknown-linux-musl",
                ));
            }
            if a.sha256.len() != 64
                || !a
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad("artifacts.sha256", "is not 64 lowercase hex digits"));
            }
            if a.size == 0 {
                return Err(bad("artifacts.size", "is 0"));
            }
        }
        Ok(())
    }

    /// Signs the manifest: the text of the file to publish.
    pub fn sign(&self, key: &SigningKey) -> Result<String, ManifestError> {
        self.validate()?;
        let manifest =
            serde_json::to_string(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let mut message = SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(manifest.as_bytes());
        let envelope = Envelope {
            signature: B64.encode(key.sign(&message).to_bytes()),
            signed_by: encode_key(&key.verifying_key()),
            manifest,
        };
        let mut text = serde_json::to_string_pretty(&envelope)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        text.push('\n');
        Ok(text)
    }

    /// Whether an agent running `running` on `target`, following `channel`, may move to this
    /// release at `now_ms`; returns the artifact to fetch.
    pub fn offer_for(
        &self,
        running: &str,
        target: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<&Artifact, ManifestError> {
        if self.channel != channel {
            return Err(ManifestError::WrongChannel {
                expected: channel.to_owned(),
                found: self.channel.clone(),
            });
        }
        let artifact = self
            .artifacts
            .iter()
            .find(|a| a.target == target)
            .ok_or_else(|| ManifestError::WrongTarget {
                target: target.to_owned(),
                offered: self
                    .artifacts
                    .iter()
                    .map(|a| a.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if self.expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(ManifestError::Expired {
                version: self.version.clone(),
            });
        }
        match compare_versions(&self.version, running) {
            Some(Ordering::Greater) => Ok(artifact),
            Some(Ordering::Equal) => Err(ManifestError::Current(self.version.clone())),
            Some(Ordering::Less) if self.rollback => Ok(artifact),
            // A running version that is not a release version (a development build) can only
            // be left through a signed rollback.
            Some(Ordering::Less) | None => Err(ManifestError::Downgrade {
                running: running.to_owned(),
                offered: self.version.clone(),
            }),
        }
    }
}

/// Reads a manifest file and checks its signature against `trusted`.
pub fn verify(file: &[u8], trusted: &[VerifyingKey]) -> Result<Manifest, ManifestError> {
    if file.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::Malformed(format!(
            "{} bytes is more than the {MAX_MANIFEST_BYTES} a manifest may have",
            file.len()
        )));
    }
    let envelope: Envelope =
        serde_json::from_slice(file).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if envelope.signature.is_empty() || envelope.signed_by.is_empty() {
        return Err(ManifestError::Unsigned);
    }
    let key = trusted
        .iter()
        .find(|k| encode_key(k) == envelope.signed_by)
        .ok_or_else(|| ManifestError::UntrustedKey {
            key: envelope.signed_by.clone(),
        })?;
    let signature: [u8; 64] = B64
        .decode(&envelope.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(ManifestError::BadSignature)?;
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(envelope.manifest.as_bytes());
    key.verify(&message, &Signature::from_bytes(&signature))
        .map_err(|_| ManifestError::BadSignature)?;
    let manifest: Manifest = serde_json::from_str(&envelope.manifest)
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    manifest.validate()?;
    Ok(manifest)
}

/// Reads a manifest file without checking who signed it (the console shows what it was given;
/// agents always [`verify`]).
pub fn read_unverified(file: &[u8]) -> Result<(Manifest, Envelope), ManifestError> {
    let envelope: Envelope =
        serde_json::from_slice(file).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    let manifest: Manifest = serde_json::from_str(&envelope.manifest)
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    manifest.validate()?;
    Ok((manifest, envelope))
}

/// A public key as manifests name it: 64 lowercase hex digits.
pub fn encode_key(key: &VerifyingKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`encode_key`].
pub fn decode_key(hex: &str) -> Option<VerifyingKey> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TARGET: &str = "x86_64-unknown-linux-musl";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn manifest(version: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            channel: DEFAULT_CHANNEL.into(),
            version: version.into(),
            rollback: false,
            issued_ms: 1,
            expires_ms: None,
            artifacts: vec![Artifact {
                target: TARGET.into(),
                url: format!("releases/{version}/tasknode-{TARGET}"),
                size: 10,
                sha256: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn versions_compare_number_by_number() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Some(Ordering::Greater));
        assert_eq!(compare_versions("1.2", "1.2.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("0.1.0", "0.2.0"), Some(Ordering::Less));
        assert_eq!(compare_versions("1.0-rc1", "1.0"), None);
        assert!(release_version("v", "1.2.3").is_ok());
        for bad in ["", "1..2", "v1", "1.2.3-rc", "1.2.3.", "1234567890"] {
            assert!(release_version("v", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_trusted_key_verifies_and_every_change_is_caught() {
        let (old, new) = (key(1), key(2));
        let trusted = [old.verifying_key(), new.verifying_key()];
        let signed = manifest("0.2.0").sign(&new).unwrap();
        assert_eq!(
            verify(signed.as_bytes(), &trusted).unwrap(),
            manifest("0.2.0")
        );

        let err = verify(signed.as_bytes(), &[old.verifying_key()]).unwrap_err();
        assert!(matches!(err, ManifestError::UntrustedKey { .. }), "{err}");

        // Changing one byte of the signed text, even inside the JSON string.
        let tampered = signed.replace("0.2.0", "0.2.1");
        assert_eq!(
            verify(tampered.as_bytes(), &trusted).unwrap_err(),
            ManifestError::BadSignature
        );
        // Claiming another trusted signer.
        let mut env: Envelope = serde_json::from_str(&signed).unwrap();
        env.signed_by = encode_key(&old.verifying_key());
        let claimed = serde_json::to_vec(&env).unwrap();
        assert_eq!(
            verify(&claimed, &trusted).unwrap_err(),
            ManifestError::BadSignature
        );
        // No signature at all.
        let unsigned = serde_json::json!({
            "manifest": serde_json::to_string(&manifest("0.2.0")).unwrap()
        });
        assert_eq!(
            verify(unsigned.to_string().as_bytes(), &trusted).unwrap_err(),
            ManifestError::Unsigned
        );
        assert!(matches!(
            verify(b"not json", &trusted).unwrap_err(),
            ManifestError::Malformed(_)
        ));
    }

    #[test]
    fn an_offer_must_fit_the_channel_the_target_and_move_forward() {
        let m = manifest("0.2.0");
        assert!(m.offer_for("0.1.9", TARGET, "stable", 5).is_ok());
        assert!(matches!(
            m.offer_for("0.1.9", TARGET, "beta", 5).unwrap_err(),
            ManifestError::WrongChannel { .. }
        ));
        assert!(matches!(
            m.offer_for("0.1.9", "aarch64-unknown-linux-musl", "stable", 5)
                .unwrap_err(),
            ManifestError::WrongTarget { .. }
        ));
        assert!(matches!(
            m.offer_for("0.3.0", TARGET, "stable", 5).unwrap_err(),
            ManifestError::Downgrade { .. }
        ));
        assert!(matches!(
            m.offer_for("0.2.0", TARGET, "stable", 5).unwrap_err(),
            ManifestError::Current(_)
        ));

        let rollback = Manifest {
            rollback: true,
            expires_ms: Some(100),
            ..manifest("0.2.0")
        };
        assert!(rollback.offer_for("0.3.0", TARGET, "stable", 99).is_ok());
        assert!(matches!(
            rollback
                .offer_for("0.3.0", TARGET, "stable", 100)
                .unwrap_err(),
            ManifestError::Expired { .. }
        ));
    }

    #[test]
    fn signing_refuses_what_an_agent_would_refuse() {
        let k = key(3);
        let mut m = manifest("0.2.0");
        m.artifacts[0].url = "../../etc/passwd".into();
        assert!(m.sign(&k).is_err());
        let mut m = manifest("0.2.0");
        m.artifacts[0].url = "https://elsewhere.example/x".into();
        assert!(m.sign(&k).is_err());
        let mut m = manifest("0.2.0");
        m.artifacts[0].sha256 = "AB".repeat(32);
        assert!(m.sign(&k).is_err());
        let m = Manifest {
            rollback: true,
            ..manifest("0.2.0")
        };
        assert!(m.sign(&k).is_err(), "a rollback without an expiry");
        assert!(manifest("v2").sign(&k).is_err());
    }

    #[test]
    fn keys_round_trip_as_hex() {
        let k = key(4).verifying_key();
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        assert_eq!(decode_key("zz"), None);
        assert_eq!(decode_key(&"g".repeat(64)), None);
    }
}
