//! Release signing keys: an OpenPGP RSA key for packages and repodata, and an ed25519 key for
//! update manifests.
//!
//! The OpenPGP key is a lone RSA primary key that signs by itself: rpm 4.8 and 4.11 (CentOS 6
//! and 7) verify neither subkey signatures nor EdDSA/ECDSA ones. Private keys are written 0600
//! from the moment their file exists, and an existing key is never replaced.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use pgp::composed::{
    ArmorOptions, Deserializable, KeyType, SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::types::{KeyDetails, PublicParams};
use rsa::traits::PublicKeyParts;

use crate::signer::PackageSigner;

/// The secret OpenPGP key that signs packages and repomd.xml (0600).
pub const PACKAGE_SECRET: &str = "package-signing.secret.asc";
/// Its public half, as yum and rpm import it (the same name in the keys and release directories).
pub use tasknode_render::published::PACKAGE_PUBLIC;
/// The ed25519 key that signs update manifests (PKCS#8 PEM, 0600).
pub const MANIFEST_SECRET: &str = "manifest-signing.secret.pem";
/// Its public half (SubjectPublicKeyInfo PEM), which agents are built to trust.
pub use tasknode_render::published::MANIFEST_PUBLIC;
/// The standby manifest key, for the next rotation (0600). Agents are built to trust it too,
/// so releases can be signed with it once the current key is retired; keep it offline.
pub const MANIFEST_NEXT_SECRET: &str = "manifest-signing.next.secret.pem";
/// Its public half.
pub const MANIFEST_NEXT_PUBLIC: &str = "manifest-signing.next.public.pem";

/// The smallest RSA key accepted for packages.
pub const MIN_RSA_BITS: usize = 3072;
/// The size `keygen` makes.
pub const RSA_BITS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} already exists: signing keys are never replaced; move the old keys away (they sign what is already released) or choose another --out"
    )]
    Exists { path: PathBuf },
    #[error(
        "{path} is missing: create the release keys with `tasknode-dist keygen --out DIR` and pass that DIR as --keys"
    )]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not the key it should be: {why}")]
    WrongKey { path: PathBuf, why: String },
    #[error(
        "{path} is readable by group or others (mode {mode:o}): a private key must be 0600; run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("generating the OpenPGP key: {0}")]
    Generate(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `keygen` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generated {
    pub dir: PathBuf,
    /// Fingerprint of the package key, upper-case hex, as `rpm -qi gpg-pubkey` and gpg show it.
    pub package_fingerprint: String,
    pub manifest_public_key: String,
    /// The standby manifest key agents also trust.
    pub next_manifest_public_key: String,
}

/// Creates both key pairs in `dir` (created if missing). Refuses, before writing anything,
/// when any of the four files exists.
pub fn generate(dir: &Path, user_id: &str) -> Result<Generated, KeyError> {
    let names = [
        PACKAGE_SECRET,
        PACKAGE_PUBLIC,
        MANIFEST_SECRET,
        MANIFEST_PUBLIC,
        MANIFEST_NEXT_SECRET,
        MANIFEST_NEXT_PUBLIC,
    ];
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            return Err(KeyError::Exists { path });
        }
    }
    fs::create_dir_all(dir).map_err(io(dir))?;

    let mut rng = rand::thread_rng();
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Rsa(RSA_BITS))
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(user_id.to_owned())
        .preferred_hash_algorithms(
            [HashAlgorithm::Sha256, HashAlgorithm::Sha512]
                .into_iter()
                .collect(),
        )
        .build()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let secret = params
        .generate(&mut rng)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let public = SignedPublicKey::from(secret.clone());
    let secret_asc = secret
        .to_armored_string(ArmorOptions::default())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let public_asc = public
        .to_armored_string(ArmorOptions::default())
        .map_err(|e| KeyError::Generate(e.to_string()))?;

    let manifest = ed25519_dalek::SigningKey::generate(&mut rng);
    let manifest_secret = manifest
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::Generate(format!("encoding the ed25519 key: {e}")))?;
    let manifest_public = manifest
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| KeyError::Generate(format!("encoding the ed25519 key: {e}")))?;

    let next = ed25519_dalek::SigningKey::generate(&mut rng);
    let next_secret = next
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::Generate(format!("encoding the ed25519 key: {e}")))?;
    let next_public = next
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| KeyError::Generate(format!("encoding the ed25519 key: {e}")))?;

    write_new(&dir.join(PACKAGE_SECRET), secret_asc.as_bytes(), 0o600)?;
    write_new(
        &dir.join(MANIFEST_NEXT_SECRET),
        next_secret.as_bytes(),
        0o600,
    )?;
    write_new(
        &dir.join(MANIFEST_NEXT_PUBLIC),
        next_public.as_bytes(),
        0o644,
    )?;
    write_new(
        &dir.join(MANIFEST_SECRET),
        manifest_secret.as_bytes(),
        0o600,
    )?;
    write_new(&dir.join(PACKAGE_PUBLIC), public_asc.as_bytes(), 0o644)?;
    write_new(
        &dir.join(MANIFEST_PUBLIC),
        manifest_public.as_bytes(),
        0o644,
    )?;

    Ok(Generated {
        dir: dir.to_owned(),
        package_fingerprint: hex::encode_upper(public.fingerprint().as_bytes()),
        manifest_public_key: hex::encode(manifest.verifying_key().as_bytes()),
        next_manifest_public_key: hex::encode(next.verifying_key().as_bytes()),
    })
}

/// Creates `path` with `mode` (never existing before: `create_new`), so a private key is never
/// readable by others for an instant.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => KeyError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    // The umask may have taken bits away from a public key; give them back.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// The standby manifest key of `dir` (hex), if `keygen` made one there.
pub fn standby_key_hex(dir: &Path) -> Result<Option<String>, KeyError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let path = dir.join(MANIFEST_NEXT_PUBLIC);
    let Ok(pem) = fs::read_to_string(&path) else {
        return Ok(None);
    };
    let key =
        ed25519_dalek::VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::WrongKey {
            path: path.clone(),
            why: format!("not an ed25519 public key in SPKI PEM ({e})"),
        })?;
    Ok(Some(tasknode_protocol::manifest::encode_key(&key)))
}

/// The keys a build signs with, loaded and checked.
pub struct ReleaseKeys {
    /// The signer of RPM headers and repomd.xml, made from the secret OpenPGP key.
    package_signer: PackageSigner,
    /// The armored public key, published as RPM-GPG-KEY-tasknode.
    pub package_public: String,
    pub package_fingerprint: String,
    /// When the package key was made (seconds since the epoch). Signatures are never dated
    /// before it: gpg and librepo reject a signature older than its key.
    pub package_created: u32,
    pub manifest: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for ReleaseKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseKeys")
            .field("package_fingerprint", &self.package_fingerprint)
            .finish_non_exhaustive()
    }
}

impl ReleaseKeys {
    /// Loads the keys `keygen` wrote to `dir`, refusing private keys others can read and keys
    /// of the wrong kind.
    pub fn load(dir: &Path) -> Result<ReleaseKeys, KeyError> {
        let package_secret = read_private(&dir.join(PACKAGE_SECRET))?;
        let path = dir.join(PACKAGE_SECRET);
        let wrong = |why: String| KeyError::WrongKey {
            path: path.clone(),
            why,
        };
        let (secret, _) = SignedSecretKey::from_string(&package_secret).map_err(|e| {
            wrong(format!(
                "not an armored OpenPGP secret key ({e}); `tasknode-dist keygen` writes one"
            ))
        })?;
        check_package_key(&secret).map_err(wrong)?;
        let package_signer = PackageSigner::new(&secret).map_err(|e| wrong(e.to_string()))?;
        let public = SignedPublicKey::from(secret.clone());
        let package_public = public
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| wrong(e.to_string()))?;
        let package_fingerprint = hex::encode_upper(public.fingerprint().as_bytes());
        let package_created = secret.primary_key.created_at().as_secs();

        let manifest_path = dir.join(MANIFEST_SECRET);
        let pem = read_private(&manifest_path)?;
        let manifest =
            ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::WrongKey {
                path: manifest_path.clone(),
                why: format!("not an ed25519 private key in PKCS#8 PEM ({e})"),
            })?;
        Ok(ReleaseKeys {
            package_signer,
            package_public,
            package_fingerprint,
            package_created,
            manifest,
        })
    }

    /// The time a release built at `source_date` signs with: the source date, or the key's
    /// creation time when the source is older than the key. Fixed for a key and a source.
    pub fn signature_time(&self, source_date: u32) -> u32 {
        source_date.max(self.package_created)
    }

    /// The public half of the manifest key, as SubjectPublicKeyInfo PEM.
    pub fn manifest_public_pem(&self) -> Result<String, KeyError> {
        self.manifest
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| KeyError::Generate(e.to_string()))
    }

    /// The manifest key as agents list the keys they trust (hex).
    pub fn manifest_public_hex(&self) -> String {
        tasknode_protocol::manifest::encode_key(&self.manifest.verifying_key())
    }

    /// The keys an agent built with these keys trusts (hex): the manifest key, and the standby
    /// key of `dir` when it has one.
    pub fn trusted_hex(&self, dir: &Path) -> Result<Vec<String>, KeyError> {
        let mut keys = vec![self.manifest_public_hex()];
        keys.extend(standby_key_hex(dir)?);
        Ok(keys)
    }

    /// The signer for RPM headers and repomd.xml.
    pub fn package_signer(&self) -> &PackageSigner {
        &self.package_signer
    }
}

/// The fingerprint of an armored public key, as [`ReleaseKeys::package_fingerprint`] spells it.
pub fn public_key_fingerprint(armored: &str) -> Option<String> {
    let (key, _) = SignedPublicKey::from_string(armored).ok()?;
    Some(hex::encode_upper(key.fingerprint().as_bytes()))
}

/// Why `key` cannot sign packages that rpm 4.8 verifies, if it cannot.
fn check_package_key(key: &SignedSecretKey) -> Result<(), String> {
    if !key.secret_subkeys.is_empty() || !key.public_subkeys.is_empty() {
        return Err(
            "it has subkeys; rpm 4.8 and 4.11 verify only signatures made by the primary key, so use a key made by `tasknode-dist keygen`".to_owned(),
        );
    }
    if key.primary_key.algorithm() != PublicKeyAlgorithm::RSA {
        return Err(format!(
            "it is a {:?} key; rpm 4.8 and 4.11 verify only RSA (and DSA) signatures",
            key.primary_key.algorithm()
        ));
    }
    if let PublicParams::RSA(rsa) = key.primary_key.public_params() {
        let bits = rsa.key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "its RSA modulus has {bits} bits; use at least {MIN_RSA_BITS}"
            ));
        }
    }
    Ok(())
}

fn read_private(path: &Path) -> Result<String, KeyError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeyError::Missing {
            path: path.to_owned(),
        },
        _ => KeyError::Io {
            path: path.to_owned(),
            source: e,
        },
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_with_the_wrong_mode_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PACKAGE_SECRET);
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = ReleaseKeys::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, KeyError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn the_standby_key_is_read_when_there_is_one() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(standby_key_hex(dir.path()).unwrap(), None);
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let pem = key.to_public_key_pem(Default::default()).unwrap();
        write_new(
            &dir.path().join(MANIFEST_NEXT_PUBLIC),
            pem.as_bytes(),
            0o644,
        )
        .unwrap();
        assert_eq!(
            standby_key_hex(dir.path()).unwrap(),
            Some(tasknode_protocol::manifest::encode_key(&key))
        );
        fs::write(dir.path().join(MANIFEST_NEXT_PUBLIC), "junk").unwrap();
        assert!(standby_key_hex(dir.path()).is_err());
    }

    #[test]
    fn missing_keys_say_how_to_make_them() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReleaseKeys::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("tasknode-dist keygen"), "{err}");
    }

    #[test]
    fn text_that_is_not_a_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_new(&dir.path().join(PACKAGE_SECRET), b"hello", 0o600).unwrap();
        let err = ReleaseKeys::load(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::WrongKey { .. }), "{err}");
    }
}
