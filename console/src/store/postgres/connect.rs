//! Every connection a console makes to PostgreSQL starts here: the pool's and the listening
//! connection's (`wakes.rs`), for `serve --database` and `migrate --to` alike, so all of them
//! speak TLS the same way. The URL's `sslmode` decides: `require` always speaks TLS, `prefer`
//! speaks it when the server offers it, `disable` (and a URL without `sslmode`, as before TLS
//! was built) speaks plain TCP. With TLS the server's certificate is always verified and its
//! host name checked, against the CA given with `--database-ca` or else the system's roots:
//! `require` here is what libpq calls `verify-full`. rustls does the TLS (with ring, as the
//! console's own HTTPS); tokio-postgres-rustls adapts it to tokio-postgres.

use std::error::Error as _;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;

/// Where the certificates that may sign the database server's come from.
#[derive(Debug, Clone)]
pub enum Roots {
    /// The system's roots (rustls-native-certs: /etc/ssl/certs and the like).
    System,
    /// The certificates of `--database-ca FILE`, and no others.
    Ca(Vec<CertificateDer<'static>>),
}

/// A stream of a connection, with TLS or without.
type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// How this console connects to its database: the parsed URL and the TLS setup for it.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    tls: MakeRustlsConnect,
    /// Whether `--database-ca` gave the roots (for the hint of a certificate that fails).
    own_ca: bool,
}

impl Connector {
    /// The connector for `config`, parsed from `url`. A URL without `sslmode` speaks plain
    /// TCP (tokio-postgres would read it as `prefer`).
    pub(crate) fn new(url: &str, mut config: Config, roots: Roots) -> Result<Connector, String> {
        if sslmode_in(url).is_none() {
            config.ssl_mode(SslMode::Disable);
        }
        let own_ca = matches!(roots, Roots::Ca(_));
        if own_ca && config.get_ssl_mode() == SslMode::Disable {
            return Err(
                "--database-ca is for TLS, and the URL asks for none: add sslmode=require to the URL"
                    .into(),
            );
        }
        let store = if config.get_ssl_mode() == SslMode::Disable {
            // Never used: tokio-postgres asks for no TLS.
            rustls::RootCertStore::empty()
        } else {
            root_store(roots)?
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(tls),
            own_ca,
        })
    }

    /// The parsed URL (with the password, if any, set in it).
    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A pool of at most `size` connections.
    pub(crate) fn pool(
        &self,
        size: usize,
        timeout: std::time::Duration,
    ) -> Result<Pool, deadpool_postgres::BuildError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(timeout))
            .build()
    }

    /// One connection outside the pool, named `application_name`; the caller drives it.
    pub(crate) async fn connect(
        &self,
        application_name: &str,
    ) -> Result<(Client, Connection<Socket, Stream>), PgError> {
        let mut config = self.config.clone();
        config.application_name(application_name);
        config.connect(self.tls.clone()).await
    }

    /// The database server as messages name it: its first host and port.
    pub(crate) fn server(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// Why connecting failed, with what to do when the cause is TLS: a certificate that does
    /// not verify, a server without TLS, a server that wants TLS. Never holds the password:
    /// tokio-postgres's errors do not carry it.
    pub(crate) fn explain(&self, e: &PgError) -> String {
        let server = self.server();
        if let Some(tls) = rustls_error(e) {
            let why = match tls {
                rustls::Error::InvalidCertificate(c) => certificate_hint(c, self.own_ca),
                _ => "the TLS handshake failed".to_owned(),
            };
            return format!(
                "the certificate of the database server {server} does not verify ({tls}): {why}"
            );
        }
        if chain_says(e, "server does not support TLS") {
            return format!(
                "the database server {server} does not offer TLS, and the URL says sslmode=require: \
                 set ssl = on (with a certificate) in its postgresql.conf, or on a network you trust \
                 connect without TLS (sslmode=disable)"
            );
        }
        if let Some(db) = e.as_db_error()
            && db.message().contains("no encryption")
        {
            return format!(
                "the database server {server} refuses connections without TLS ({}): add sslmode=require \
                 to the URL, and --database-ca FILE if its certificate is not signed by a CA in the \
                 system's roots",
                db.message()
            );
        }
        match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        }
    }
}

/// What to do about a certificate rustls refused.
fn certificate_hint(c: &rustls::CertificateError, own_ca: bool) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer | C::BadSignature if own_ca => {
            "it is not signed by the CA given with --database-ca; give the CA that signed the server's certificate".to_owned()
        }
        C::UnknownIssuer | C::BadSignature => {
            "it is not signed by a CA in the system's roots; give the CA that signed it with --database-ca FILE (PEM)".to_owned()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is not made out to the host name in the URL; connect with a name the certificate carries, or give the server a certificate for this name".to_owned()
        }
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            "it is outside its validity period; renew the server's certificate (or check this host's clock)".to_owned()
        }
        _ => "give the server a certificate from a CA this console trusts (--database-ca FILE, or the system's roots)".to_owned(),
    }
}

/// The rustls error somewhere in `e`'s chain (tokio-postgres wraps it in an `io::Error`,
/// whose `source` skips it).
fn rustls_error(e: &PgError) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

fn chain_says(e: &PgError, text: &str) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains(text) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The `sslmode` the URL gives, if it gives one.
pub fn sslmode_in(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "sslmode")
        .map(|(_, v)| v)
}

fn root_store(roots: Roots) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::Ca(certs) => {
            for c in certs {
                store.add(c).map_err(|e| {
                    format!("--database-ca: a certificate in it is not a CA's: {e}")
                })?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(format!(
                    "no CA certificates in the system's roots to verify the database server with ({why}): \
                     give the CA that signed its certificate with --database-ca FILE (PEM)"
                ));
            }
        }
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_from_the_query_alone() {
        assert_eq!(sslmode_in("postgres://a@h/db"), None);
        assert_eq!(
            sslmode_in("postgres://a@h/db?application_name=x&sslmode=require"),
            Some("require")
        );
        assert_eq!(sslmode_in("postgres://sslmode=require@h/db"), None);
    }

    #[test]
    fn a_url_without_sslmode_speaks_plain_tcp_and_a_ca_wants_tls() {
        let url = "postgres://a@h/db";
        let c = Connector::new(url, url.parse().unwrap(), Roots::System).unwrap();
        assert_eq!(c.config().get_ssl_mode(), SslMode::Disable);
        let err = Connector::new(url, url.parse().unwrap(), Roots::Ca(Vec::new()))
            .err()
            .unwrap();
        assert!(err.contains("sslmode=require"), "{err}");
        let url = "postgres://a@h/db?sslmode=prefer";
        let c = Connector::new(url, url.parse().unwrap(), Roots::Ca(Vec::new())).unwrap();
        assert_eq!(c.config().get_ssl_mode(), SslMode::Prefer);
        assert_eq!(c.server(), "h:5432");
    }
}
