//! The consoles over TLS to PostgreSQL, against a throwaway cluster with `ssl = on` and
//! `hostssl` lines only, its certificate from a test CA: `serve --database …?sslmode=require
//! --database-ca CA` serves, and both its pooled and its listening connections are TLS (the
//! server's `pg_stat_ssl` says so); `migrate --to` moves a SQLite console's state over TLS.
//! Refused, each with the reason and what to pass, and no password in any message: the
//! system's roots (the test CA is not among them, also with `sslmode=prefer`), another CA, a name the certificate does
//! not carry, a URL without TLS (the server refuses it), `sslmode=require` against a server
//! without TLS, and a `--database-ca` that is missing, holds no certificate, or comes
//! without `sslmode`.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tasknode_pgtest::Cluster;
use tasknode_tests::postgres::TlsCluster;
use tasknode_tests::{Console, bin, stderr, wait_for};

fn tls_cluster() -> &'static TlsCluster {
    static CLUSTER: OnceLock<TlsCluster> = OnceLock::new();
    CLUSTER.get_or_init(TlsCluster::start)
}

/// `serve` with `args`, which must fail within 30 s; its stderr, checked to hold no password.
fn serve_refused(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("tasknode-console"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(args)
        .env_remove("TASKNODE_DATABASE_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("serve {args:?} was not refused: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains(tls_cluster().cluster.password()), "{err}");
    assert!(!err.contains(Cluster::shared().password()), "{err}");
    err
}

fn migrate(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(bin("tasknode-console"))
        .arg("migrate")
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("TASKNODE_DATABASE_PASSWORD")
        .output()
        .unwrap()
}

#[test]
fn a_console_over_verified_tls_serves_and_every_connection_is_encrypted() {
    let tls = tls_cluster();
    let (db, url) = tls.database("?sslmode=require");
    let ca = tls.ca.to_str().unwrap();
    let console = Console::start(&[
        "--database",
        &url,
        "--database-password-file",
        tls.password_file(),
        "--database-ca",
        ca,
    ]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    assert!(console.cli_ok(&["group", "list"]).contains("etl"));
    assert_eq!(
        tls.cluster
            .psql(
                &db.name,
                "SELECT name FROM resource_groups WHERE name = 'etl'"
            )
            .unwrap(),
        "etl"
    );
    // The pool's connections and the one listening for other consoles' wake-ups are TLS.
    let over = |ssl: bool| {
        tls.cluster
            .psql(
                &db.name,
                &format!(
                    "SELECT string_agg(DISTINCT a.application_name, ',' ORDER BY a.application_name) \
                     FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.datname = '{}' AND a.client_addr IS NOT NULL AND s.ssl = {ssl}",
                    db.name
                ),
            )
            .unwrap()
    };
    wait_for(Duration::from_secs(10), "the listening connection", || {
        (over(true) == "tasknode-console,tasknode-console-listen").then_some(())
    });
    assert_eq!(over(false), "");
    // The console's log holds no password.
    assert!(!console.log_text().contains(tls.cluster.password()));
}

#[test]
fn a_certificate_that_does_not_verify_is_refused_naming_the_host_and_what_to_pass() {
    let tls = tls_cluster();
    let (_, url) = tls.database("?sslmode=require");
    let pw = tls.password_file();
    let port = tls.cluster.port();

    // The system's roots: the test CA is not among them.
    let err = serve_refused(&["--database", &url, "--database-password-file", pw]);
    assert!(
        err.contains(&format!("database server localhost:{port}")),
        "{err}"
    );
    assert!(err.contains("does not verify"), "{err}");
    assert!(
        err.contains("not signed by a CA in the system's roots"),
        "{err}"
    );
    assert!(err.contains("--database-ca FILE"), "{err}");

    // prefer goes without TLS only when the server offers none: a certificate that does not
    // verify is refused all the same, never taken unverified.
    let (_, prefer) = tls.database("?sslmode=prefer");
    let err = serve_refused(&["--database", &prefer, "--database-password-file", pw]);
    assert!(
        err.contains("not signed by a CA in the system's roots"),
        "{err}"
    );

    // Another CA.
    let other = tls.other_ca.to_str().unwrap();
    let err = serve_refused(&[
        "--database",
        &url,
        "--database-password-file",
        pw,
        "--database-ca",
        other,
    ]);
    assert!(
        err.contains(&format!("database server localhost:{port}")),
        "{err}"
    );
    assert!(
        err.contains("not signed by the CA given with --database-ca"),
        "{err}"
    );

    // The right CA, but a name the certificate does not carry (the server is reached at
    // 127.0.0.1 all the same): a certificate of that CA for another host passes for none.
    let (_, elsewhere) = tls.database("?sslmode=require&hostaddr=127.0.0.1");
    let elsewhere = elsewhere.replace("@localhost:", "@db.example.invalid:");
    let err = serve_refused(&[
        "--database",
        &elsewhere,
        "--database-password-file",
        pw,
        "--database-ca",
        tls.ca.to_str().unwrap(),
    ]);
    assert!(err.contains("db.example.invalid"), "{err}");
    assert!(err.contains("not made out to the host name"), "{err}");
}

#[test]
fn without_tls_the_server_refuses_and_the_error_says_to_ask_for_it() {
    let tls = tls_cluster();
    let pw = tls.password_file();
    for query in ["?sslmode=disable", ""] {
        let (_, url) = tls.database(query);
        let err = serve_refused(&["--database", &url, "--database-password-file", pw]);
        assert!(err.contains("refuses connections without TLS"), "{err}");
        assert!(err.contains("no encryption"), "{err}");
        assert!(err.contains("add sslmode=require"), "{err}");
    }
    // --database-ca asks for TLS the URL does not.
    let (_, url) = tls.database("");
    let err = serve_refused(&[
        "--database",
        &url,
        "--database-password-file",
        pw,
        "--database-ca",
        tls.ca.to_str().unwrap(),
    ]);
    assert!(err.contains("--database-ca is for TLS"), "{err}");
    assert!(err.contains("sslmode=require"), "{err}");
}

#[test]
fn sslmode_require_against_a_server_without_tls_says_so() {
    let plain = Cluster::shared();
    let db = plain.database();
    let secrets = tempfile::tempdir().unwrap();
    let pw = plain.password_file(secrets.path()).unwrap();
    let url = format!("{}?sslmode=require", db.url);
    let err = serve_refused(&[
        "--database",
        &url,
        "--database-password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "database server 127.0.0.1:{} does not offer TLS",
            plain.port()
        )),
        "{err}"
    );
    assert!(err.contains("ssl = on"), "{err}");
}

#[test]
fn a_bad_database_ca_names_the_flag_and_the_file() {
    let tls = tls_cluster();
    let (_, url) = tls.database("?sslmode=require");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (file, why) in [
        (&missing, "No such file"),
        (&garbage, "no certificate in it"),
    ] {
        let f = file.to_str().unwrap();
        let err = serve_refused(&[
            "--database",
            &url,
            "--database-password-file",
            tls.password_file(),
            "--database-ca",
            f,
        ]);
        assert!(err.contains(&format!("--database-ca {f}")), "{err}");
        assert!(err.contains(why), "{err}");
    }
    // libpq's spellings are pointed at the flag and the mode that does the same here.
    let verify_full = url.replace("sslmode=require", "sslmode=verify-full");
    let err = serve_refused(&["--database", &verify_full]);
    assert!(err.contains("use sslmode=require"), "{err}");
    assert!(err.contains("verify-full"), "{err}");
}

#[test]
fn migrate_moves_a_sqlite_console_over_tls() {
    let tls = tls_cluster();
    // channel_binding=require: the password exchange (SCRAM-SHA-256-PLUS) is bound to this
    // TLS connection, so a server relaying it elsewhere could not use it.
    let (db, url) = tls.database("?sslmode=require&channel_binding=require");
    let mut console = Console::start(&[]);
    console.cli_ok(&["group", "create", "moved", "--network", "classic"]);
    console.stop();
    let data = console.data();
    // Not without the CA that signed the server's certificate.
    let out = migrate(
        &data,
        &[
            "--to",
            &url,
            "--database-password-file",
            tls.password_file(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--database-ca FILE"),
        "{}",
        stderr(&out)
    );
    let out = migrate(
        &data,
        &[
            "--to",
            &url,
            "--database-password-file",
            tls.password_file(),
            "--database-ca",
            tls.ca.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tls.cluster
            .psql(
                &db.name,
                "SELECT name FROM resource_groups WHERE name = 'moved'"
            )
            .unwrap(),
        "moved"
    );
}
