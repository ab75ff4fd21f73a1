//! Credentials: user passwords (stored as Argon2id hashes), node secrets and the admin token
//! (stored as SHA-256 digests: they are random and long, so a fast hash is enough).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// A SHA-256 digest of a secret.
pub type SecretDigest = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("hashing a password failed: {0}")]
    Hash(String),
    #[error("admin token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "admin token file {path} is empty or malformed; delete it and restart the console to make a new one"
    )]
    TokenMalformed { path: PathBuf },
    #[error("log key file {path}: {source}")]
    LogKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "log key file {path} is not 64 hex digits; delete it and restart the console to make a new one (classic servers learn the new key from their next heartbeat)"
    )]
    LogKeyMalformed { path: PathBuf },
}

/// Hashes a password with Argon2id at the crate's default cost (19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks a password against a stored hash. With no stored hash (an unknown user) it still
/// spends the time of one verification, so response times do not tell which users exist.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    // A hash of a random password nobody knows, made once per process.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password(&generate_password()).unwrap_or_default());
    let hash = stored.unwrap_or(dummy);
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && stored.is_some()
}

/// A new user password: 24 characters from an alphabet without look-alikes.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = OsRng;
    (0..24)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A new random secret (node secrets, admin tokens): 32 bytes, base64url.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests in constant time.
pub fn digests_equal(a: &SecretDigest, b: &SecretDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the admin token from `path`, creating it (mode 0600) when missing. Returns the token's
/// digest and whether it was created.
pub fn load_or_create_admin_token(path: &Path) -> Result<(SecretDigest, bool), AuthError> {
    let io_err = |source| AuthError::TokenFile {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if token.len() < 32 {
                return Err(AuthError::TokenMalformed {
                    path: path.to_owned(),
                });
            }
            // Tighten a token file someone loosened.
            let mode = fs::metadata(path).map_err(io_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
            }
            Ok((digest(token), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_secret();
            write_private(path, &token).map_err(io_err)?;
            Ok((digest(&token), true))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Creates `path` (it must not exist) with mode 0600 holding `line`, synced to disk.
fn write_private(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{line}")?;
    file.sync_all()
}

/// Reads the ed25519 log key an older console kept in `path` (hex of its 32 secret bytes), to
/// move it into the store; `None` when there is no such file.
pub fn read_log_key(path: &Path) -> Result<Option<ed25519_dalek::SigningKey>, AuthError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
                AuthError::LogKeyMalformed {
                    path: path.to_owned(),
                }
            })?;
            Ok(Some(ed25519_dalek::SigningKey::from_bytes(&bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::LogKeyFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A new ed25519 log key from the OS's random numbers.
pub fn generate_log_key() -> ed25519_dalek::SigningKey {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    ed25519_dalek::SigningKey::from_bytes(&bytes)
}

/// Reads the admin token's digest from `path`, if the file is there and holds a token.
pub fn read_admin_token(path: &Path) -> Option<SecretDigest> {
    let text = fs::read_to_string(path).ok()?;
    let token = text.trim();
    (token.len() >= 32).then(|| digest(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_consoles_log_key_file_is_read_and_a_damaged_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log-token.key");
        assert!(read_log_key(&path).unwrap().is_none());
        let key = generate_log_key();
        fs::write(&path, format!("{}\n", hex::encode(key.to_bytes()))).unwrap();
        let read = read_log_key(&path).unwrap().unwrap();
        assert_eq!(read.to_bytes(), key.to_bytes());
        assert_ne!(generate_log_key().to_bytes(), key.to_bytes());
        fs::write(&path, "nonsense").unwrap();
        let err = read_log_key(&path).unwrap_err();
        assert!(err.to_string().contains("log-token.key"), "{err}");
    }

    #[test]
    fn password_round_trip() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("wrong horse battery", Some(&hash)));
        assert!(!verify_password("correct horse battery", None));
    }

    #[test]
    fn generated_values_are_long_and_distinct() {
        assert_eq!(generate_password().len(), 24);
        assert_ne!(generate_secret(), generate_secret());
        assert_eq!(generate_secret().len(), 43);
    }

    #[test]
    fn admin_token_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let (first, created) = load_or_create_admin_token(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, created) = load_or_create_admin_token(&path).unwrap();
        assert!(!created);
        assert!(digests_equal(&first, &second));
        let token = fs::read_to_string(&path).unwrap();
        assert!(digests_equal(&first, &digest(token.trim())));
    }
}
