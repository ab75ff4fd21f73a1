//! The console's own certificate authority, for `serve --tls`.
//!
//! The CA (certificate and key) is kept in the store, created once with an insert-if-absent,
//! so every console sharing the store serves certificates from the same CA and agents' pins
//! hold whichever console they reach. A store without one takes the CA an older console kept
//! in DATA/tls/ (ca.pem and ca.key), so installed agents keep their pin. Each console serves a
//! certificate from that CA for the names it is reached by; it is kept in the store too, one
//! per set of names, so a restart serves the same one and a console reached by other names
//! gets its own instead of failing. DATA/tls/ca.pem is written at each start for the admin
//! commands and operators; the key stays in the store.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{SecretStore, secret_names};

const CA_COMMON_NAME: &str = "tasknode console CA";
/// Server certificates kept in the store at most (one per set of names); older ones go.
const KEEP_SERVER_CERTS: u32 = 32;

/// The console's CA and a server configuration with a certificate it issued.
pub struct ConsoleTls {
    /// The CA certificate, PEM: what clients pin.
    pub ca_pem: String,
    /// DATA/tls/ca.pem, where the CA certificate is written for the admin commands.
    pub ca_path: PathBuf,
    /// The certificate served, PEM.
    pub server_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

/// A certificate with its private key, as the store keeps them.
#[derive(Clone, Serialize, Deserialize)]
struct KeyedCert {
    cert_pem: String,
    key_pem: String,
}

impl KeyedCert {
    fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        serde_json::to_vec(self).context("encoding a certificate")
    }

    fn from_bytes(bytes: &[u8], what: &str) -> anyhow::Result<KeyedCert> {
        serde_json::from_slice(bytes).with_context(|| {
            format!("the database's {what} is not a certificate with its key: the database is damaged; restore it from a backup")
        })
    }
}

impl ConsoleTls {
    /// Loads the CA from the store (moving an older console's from `dir` into it, or creating
    /// one), writes its certificate to `dir`/ca.pem, and serves a certificate from it for
    /// `names` (host names or IP addresses).
    pub async fn load_or_create(
        store: &dyn SecretStore,
        dir: &Path,
        names: &[String],
        now_ms: i64,
    ) -> anyhow::Result<ConsoleTls> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let ca = stored_ca(store, dir, now_ms).await?;
        let ca_key = KeyPair::from_pem(&ca.key_pem).context(
            "the database's CA key is not a PEM private key: the database is damaged; restore it from a backup",
        )?;
        let ca_path = dir.join("ca.pem");
        if fs::read_to_string(&ca_path).ok().as_deref() != Some(ca.cert_pem.as_str()) {
            write_file(&ca_path, ca.cert_pem.as_bytes(), 0o644)?;
        }
        // The issuer only needs the CA's name and key: rebuilding it from the same parameters
        // signs certificates that chain to the stored CA.
        let issuer = ca_params()?
            .self_signed(&ca_key)
            .context("loading the CA")?;
        let issue = || issue_server(names, &issuer, &ca_key);

        let name = server_cert_name(&ca.cert_pem, names);
        let served = match store.secret(&name).await? {
            Some(stored) => KeyedCert::from_bytes(&stored.0, "server certificate")
                .and_then(|c| server_config(&c).map(|config| (c, config))),
            None => {
                let fresh = issue()?;
                let stored = store
                    .insert_secret(&name, &fresh.to_bytes()?, now_ms)
                    .await?;
                store
                    .prune_secrets(secret_names::TLS_SERVER_PREFIX, KEEP_SERVER_CERTS)
                    .await?;
                KeyedCert::from_bytes(&stored.0, "server certificate")
                    .and_then(|c| server_config(&c).map(|config| (c, config)))
            }
        };
        let (server_cert, server) = match served {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the stored server certificate cannot be served; serving a new one from the CA");
                let fresh = issue()?;
                let config = server_config(&fresh)?;
                (fresh, config)
            }
        };
        Ok(ConsoleTls {
            ca_pem: ca.cert_pem,
            ca_path,
            server_pem: server_cert.cert_pem,
            server: Arc::new(server),
        })
    }

    /// SHA-256 of the CA certificate's PEM text, as `sha256sum` prints it.
    pub fn ca_sha256(&self) -> String {
        fingerprint(&self.ca_pem)
    }
}

fn fingerprint(pem: &str) -> String {
    hex::encode(Sha256::digest(pem.as_bytes()))
}

/// The CA the store holds; else one from an older console's files in `dir`, or a new one,
/// stored unless another console stored one first (then that one).
async fn stored_ca(store: &dyn SecretStore, dir: &Path, now_ms: i64) -> anyhow::Result<KeyedCert> {
    let name = secret_names::TLS_CA;
    if let Some(stored) = store.secret(name).await? {
        return KeyedCert::from_bytes(&stored.0, "CA");
    }
    let (ca, imported) = match read_ca_files(dir)? {
        Some(ca) => (ca, true),
        None => (new_ca()?, false),
    };
    let stored = KeyedCert::from_bytes(
        &store.insert_secret(name, &ca.to_bytes()?, now_ms).await?.0,
        "CA",
    )?;
    if stored.cert_pem != ca.cert_pem {
        tracing::info!("another console created the CA first; using it");
    } else if imported {
        tracing::info!(dir = %dir.display(), sha256 = %fingerprint(&ca.cert_pem), "moved the console CA into the database; ca.key there is no longer read and may be removed");
    } else {
        tracing::info!(sha256 = %fingerprint(&ca.cert_pem), "created the console CA in the database");
    }
    Ok(stored)
}

/// The CA an older console kept in `dir` (ca.pem and ca.key), if there is one.
fn read_ca_files(dir: &Path) -> anyhow::Result<Option<KeyedCert>> {
    let ca_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    if key_path.exists() {
        let key_pem = fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        KeyPair::from_pem(&key_pem).with_context(|| {
            format!(
                "{} is not a PEM private key; move it away and start again to create a new CA (agents then need reinstalling)",
                key_path.display()
            )
        })?;
        let cert_pem = fs::read_to_string(&ca_path).with_context(|| {
            format!(
                "reading {} (the CA certificate beside {})",
                ca_path.display(),
                key_path.display()
            )
        })?;
        Ok(Some(KeyedCert { cert_pem, key_pem }))
    } else if ca_path.exists() {
        anyhow::bail!(
            "{} exists without its key {}: restore the key, or move both away to create a new CA (agents then need reinstalling)",
            ca_path.display(),
            key_path.display()
        );
    } else {
        Ok(None)
    }
}

fn new_ca() -> anyhow::Result<KeyedCert> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = ca_params()?
        .self_signed(&key)
        .context("creating the CA certificate")?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The store's name for the server certificate of `names` from the CA `ca_pem`: the same
/// names (in any order) from the same CA find the same certificate.
fn server_cert_name(ca_pem: &str, names: &[String]) -> String {
    let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    h.update(ca_pem.as_bytes());
    for n in sorted {
        h.update(b"\n");
        h.update(n.as_bytes());
    }
    let id = hex::encode(h.finalize());
    format!("{}{}", secret_names::TLS_SERVER_PREFIX, &id[..32])
}

fn issue_server(
    names: &[String],
    issuer: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> anyhow::Result<KeyedCert> {
    let mut params = CertificateParams::new(names.to_vec())
        .context("--tls-name: a name is neither a DNS name nor an IP address")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tasknode console");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().context("generating the server key")?;
    let cert = params
        .signed_by(&key, issuer, ca_key)
        .context("issuing the server certificate")?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn server_config(cert: &KeyedCert) -> anyhow::Result<rustls::ServerConfig> {
    let chain = vec![
        CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("reading the server certificate: {e}"))?,
    ];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("reading the server key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("loading the server certificate")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Agents keep pinning this CA for as long as they run: twenty years.
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    Ok(params)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
