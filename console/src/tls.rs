//! The console's own certificate authority, for `serve --tls`.
//!
//! On first start the console creates a CA key and certificate in DATA/tls/ (the key 0600).
//! Every start issues a fresh server certificate from that CA for the names the console is
//! reached by; it lives in memory only. Install scripts and agents pin the CA (they trust it
//! and nothing else), so the server certificate can change freely while the pin stays.

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
use sha2::{Digest, Sha256};

const CA_COMMON_NAME: &str = "tasknode console CA";

/// The console's CA and a server configuration with a certificate it issued.
pub struct ConsoleTls {
    /// The CA certificate, PEM: what clients pin.
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

impl ConsoleTls {
    /// Loads the CA from `dir` (creating it on first use) and issues a server certificate for
    /// `names` (host names or IP addresses).
    pub fn load_or_create(dir: &Path, names: &[String]) -> anyhow::Result<ConsoleTls> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let ca_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let (ca_key, ca_pem) = if key_path.exists() {
            let key_pem = fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem).with_context(|| {
                format!(
                    "{} is not a PEM private key; move it away and start again to create a new CA (agents then need reinstalling)",
                    key_path.display()
                )
            })?;
            let pem = fs::read_to_string(&ca_path).with_context(|| {
                format!(
                    "reading {} (the CA certificate beside {})",
                    ca_path.display(),
                    key_path.display()
                )
            })?;
            (key, pem)
        } else if ca_path.exists() {
            anyhow::bail!(
                "{} exists without its key {}: restore the key, or move both away to create a new CA (agents then need reinstalling)",
                ca_path.display(),
                key_path.display()
            );
        } else {
            let key = KeyPair::generate().context("generating the CA key")?;
            let cert = ca_params()?
                .self_signed(&key)
                .context("creating the CA certificate")?;
            let pem = cert.pem();
            // The certificate first: a key without its certificate is never left behind.
            write_file(&ca_path, pem.as_bytes(), 0o644)?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            tracing::info!(path = %ca_path.display(), sha256 = %fingerprint(&pem), "created the console CA");
            (key, pem)
        };
        // The issuer only needs the CA's name and key: rebuilding it from the same parameters
        // signs certificates that chain to the CA on disk.
        let issuer = ca_params()?
            .self_signed(&ca_key)
            .context("loading the CA")?;

        let mut params = CertificateParams::new(names.to_vec())
            .context("--tls-name: a name is neither a DNS name nor an IP address")?;
        params
            .distinguished_name
            .push(DnType::CommonName, "tasknode console");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params
            .signed_by(&key, &issuer, &ca_key)
            .context("issuing the server certificate")?;

        let chain = vec![cert.der().clone()];
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("encoding the server key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .context("loading the server certificate")?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ConsoleTls {
            ca_pem,
            ca_path,
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
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = ConsoleTls::load_or_create(dir.path(), &names).unwrap();
        let second = ConsoleTls::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.ca_sha256().len(), 64);
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
    }

    #[test]
    fn a_damaged_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.key"), "not a key").unwrap();
        let err = ConsoleTls::load_or_create(dir.path(), &["localhost".to_owned()])
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("ca.key is not a PEM private key"));
    }

    #[test]
    fn a_certificate_without_its_key_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["localhost".to_owned()];
        let first = ConsoleTls::load_or_create(dir.path(), &names).unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = ConsoleTls::load_or_create(dir.path(), &names)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("exists without its key"),
            "{err:#}"
        );
        assert_eq!(fs::read_to_string(&first.ca_path).unwrap(), first.ca_pem);
    }
}
