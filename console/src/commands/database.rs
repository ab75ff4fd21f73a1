//! Which store `serve` opens: SQLite in the data directory, or with `--database postgres://…`
//! a PostgreSQL that several consoles share. A password never comes on the command line (the
//! process list and shell history show it): a URL with one is refused, and the password comes
//! from a file only its owner can read (`--database-password-file`) or from the environment
//! (TASKNODE_DATABASE_PASSWORD). With TLS (the URL's `sslmode`), the server's certificate is
//! verified against the system's roots, or the CA file given with `--database-ca`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::cli::ServeArgs;
use crate::env;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::store::{PostgresStore, Roots, SqliteStore, Store, redact_url};

pub async fn open(args: &ServeArgs, data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let Some(url) = &args.database else {
        return Ok(Arc::new(SqliteStore::open(&data.join("tasknode.db"))?));
    };
    let store = connect(
        "--database",
        url,
        args.database_password_file.as_deref(),
        args.database_ca.as_deref(),
    )
    .await?;
    tracing::info!(database = %redact_url(url), "using PostgreSQL");
    Ok(Arc::new(store))
}

/// Connects to the PostgreSQL database at `url`, given with the flag `flag`, with the password
/// from `password_file` or the environment, over TLS as the URL's `sslmode` asks (verified
/// against the CA file `ca`, else the system's roots), and brings its schema up to date.
pub async fn connect(
    flag: &str,
    url: &str,
    password_file: Option<&Path>,
    ca: Option<&Path>,
) -> anyhow::Result<PostgresStore> {
    check_url(flag, url)?;
    let roots = match ca {
        Some(file) => Roots::Ca(read_ca(file)?),
        None => Roots::System,
    };
    let password = password(password_file)?;
    PostgresStore::connect(url, password.as_deref(), roots)
        .await
        .with_context(|| flag.to_owned())
}

/// Refuses what is not a PostgreSQL URL, and a URL that carries a password.
fn check_url(flag: &str, url: &str) -> anyhow::Result<()> {
    let shown = redact_url(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let sqlite = if flag == "--database" {
            ", or leave --database out to use SQLite in the data directory"
        } else {
            ""
        };
        bail!("{flag} {shown}: give a postgres://USER@HOST:PORT/DATABASE URL{sqlite}");
    }
    let config: tokio_postgres::Config = url.parse().map_err(|e| {
        let hint = if url.contains("sslmode=verify-") {
            "; use sslmode=require, which here verifies the certificate and the host name as libpq's verify-full does (the CA comes from --database-ca FILE or the system's roots)"
        } else if url.contains("sslrootcert=") {
            "; give the CA with --database-ca FILE instead"
        } else {
            ""
        };
        anyhow::anyhow!("{flag} {shown}: {e}{hint}")
    })?;
    if config.get_password().is_some() {
        bail!(
            "{flag} {shown}: the URL carries a password, which the process list and shell history would show; \
             remove it from the URL and put it in a file given with --database-password-file FILE (chmod 600), \
             or in the environment variable {}",
            env::DATABASE_PASSWORD
        );
    }
    Ok(())
}

/// The CA certificates of `--database-ca FILE` (PEM): at least one, and nothing else in it.
fn read_ca(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || format!("--database-ca {}", file.display());
    let pem = fs::read(file).with_context(what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate file: {e}", what()))?;
    if certs.is_empty() {
        bail!(
            "{}: no certificate in it; give the PEM file of the CA that signed the database server's certificate (-----BEGIN CERTIFICATE-----)",
            what()
        );
    }
    Ok(certs)
}

/// The password from `file` (its first line), else from the environment, else none.
fn password(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(file) = file else {
        return Ok(std::env::var(env::DATABASE_PASSWORD)
            .ok()
            .filter(|p| !p.is_empty()));
    };
    let what = || format!("--database-password-file {}", file.display());
    let meta = fs::metadata(file).with_context(what)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: mode {mode:03o} lets other users read or change the database password; run `chmod 600 {}`",
            what(),
            file.display()
        );
    }
    let text = fs::read_to_string(file).with_context(what)?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        bail!(
            "{}: the file is empty; put the password on its first line",
            what()
        );
    }
    Ok(Some(password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_url_with_a_password_is_refused_naming_the_fix_and_not_the_password() {
        let err = check_url("--database", "postgres://ann:hunter2@db:5432/tasknode").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--database-password-file"), "{text}");
        assert!(text.contains("TASKNODE_DATABASE_PASSWORD"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = check_url("--to", "mysql://db/x").unwrap_err().to_string();
        assert!(err.contains("postgres://USER@HOST:PORT/DATABASE"), "{err}");
        assert!(err.starts_with("--to "), "{err}");
        check_url("--database", "postgres://ann@db:5432/tasknode").unwrap();
        check_url("--to", "postgresql://ann@db/tasknode").unwrap();
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let mut f = fs::File::create(&path).unwrap();
        writeln!(f, "s3cret").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = password(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password(Some(&path)).unwrap().as_deref(), Some("s3cret"));
        fs::write(&path, "").unwrap();
        assert!(
            password(Some(&path))
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
