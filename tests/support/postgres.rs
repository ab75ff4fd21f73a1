//! A fresh database of the tests' throwaway PostgreSQL cluster (`tasknode-pgtest`) for
//! consoles to share: the `serve` flags that reach it (the password in a 0600 file, never on
//! the command line), and consoles started on it that share one admin token. [`TlsCluster`]
//! is a cluster of its own that takes TCP connections over TLS alone, with a certificate for
//! `localhost` and 127.0.0.1 from a test CA.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tasknode_pgtest::{Cluster, Database, ServerTls};

use crate::Console;

pub struct SharedDatabase {
    pub db: Database,
    password_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl SharedDatabase {
    pub fn new() -> SharedDatabase {
        let dir = tempfile::tempdir().unwrap();
        let password_file = Cluster::shared()
            .password_file(dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        SharedDatabase {
            db: Cluster::shared().database(),
            password_file,
            _dir: dir,
        }
    }

    /// The file holding the database's password (0600).
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// `--database URL --database-password-file FILE`.
    pub fn flags(&self) -> [&str; 4] {
        [
            "--database",
            self.db.url.as_str(),
            "--database-password-file",
            self.password_file.to_str().unwrap(),
        ]
    }

    /// `n` consoles on the database, started with its flags and `extra`. The database keeps
    /// only the admin token's digest: each console's admin commands use the token file the
    /// first console wrote.
    pub fn consoles(&self, n: usize, extra: &[&str]) -> Vec<Console> {
        let args: Vec<&str> = self
            .flags()
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let consoles: Vec<Console> = (0..n).map(|_| Console::start(&args)).collect();
        for c in consoles.iter().skip(1) {
            share_admin_token(&consoles[0], c);
        }
        consoles
    }

    /// The pid of the console holding the engine lease (rollouts, the stopped-server sweep),
    /// from the holder's name.
    pub fn engine_holder_pid(&self) -> Option<u32> {
        let holder = Cluster::shared()
            .psql(
                &self.db.name,
                "SELECT holder FROM leases WHERE name = 'engine'",
            )
            .ok()?;
        holder.split(':').nth(1)?.parse().ok()
    }

    /// SQL run on the database as the cluster's superuser; its output.
    pub fn psql(&self, sql: &str) -> String {
        Cluster::shared()
            .psql(&self.db.name, sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Default for SharedDatabase {
    fn default() -> SharedDatabase {
        SharedDatabase::new()
    }
}

/// Copies `from`'s admin token file (0600) into `to`'s data directory.
pub fn share_admin_token(from: &Console, to: &Console) {
    let token = to.data().join("admin.token");
    std::fs::copy(from.data().join("admin.token"), &token).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A cluster with `ssl = on` and `hostssl` lines only, its certificate (for `localhost` and
/// 127.0.0.1) signed by a test CA; `ca` holds that CA's certificate, `other_ca` one of a CA
/// that signed nothing the cluster serves.
pub struct TlsCluster {
    pub cluster: Cluster,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    password_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsCluster {
    pub fn start() -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = test_ca("tasknode test database CA");
        let (other, _) = test_ca("tasknode test other CA");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tasknode test database");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let cluster = Cluster::start_tls(&ServerTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let other_ca = dir.path().join("other-ca.pem");
        std::fs::write(&other_ca, other.pem()).unwrap();
        let password_file = cluster
            .password_file(dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        TlsCluster {
            cluster,
            ca: ca_file,
            other_ca,
            password_file,
            _dir: dir,
        }
    }

    /// A fresh database, and its URL with `localhost` as the host and `query` (such as
    /// `?sslmode=require`) after it.
    pub fn database(&self, query: &str) -> (Database, String) {
        let db = self.cluster.database();
        let url = format!(
            "postgres://postgres@localhost:{}/{}{query}",
            self.cluster.port(),
            db.name
        );
        (db, url)
    }

    /// The file holding the superuser's password (0600).
    pub fn password_file(&self) -> &str {
        self.password_file.to_str().unwrap()
    }
}

fn test_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}
