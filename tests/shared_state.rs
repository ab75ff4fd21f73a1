//! What every console of one store shares, with the real console on loopback: web sessions
//! outlive restarts (and sign-outs and expiry hold across them), hostile cookies get the
//! sign-in page, the admin token, the log-token key and the TLS CA move from an older
//! console's files into the database and stay the same without them, install links printed by
//! one console work on the next, and a console reached by other names gets a certificate of its
//! own from the same CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tasknode_render::artifacts::stand_in_binary;
use tasknode_tests::{Agent, Console, hostname, stderr, wait_for};

fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with the admin token over HTTP; returns the `Cookie` header of the session.
fn sign_in_admin(http: &Client, console: &Console) -> String {
    let page = http
        .get(format!("{}/ui/login", console.url))
        .send()
        .unwrap();
    let login = set_cookie(&page, "tasknode_login");
    let res = http
        .post(format!("{}/ui/login/token", console.url))
        .header("Cookie", format!("tasknode_login={login}"))
        .form(&[("csrf", login.as_str()), ("token", &console.token())])
        .send()
        .unwrap();
    assert_eq!(res.status(), 303, "signing in with the admin token");
    format!("tasknode_session={}", set_cookie(&res, "tasknode_session"))
}

fn set_cookie(res: &Response, name: &str) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// GET `path` with `cookie`: the status, the redirect target and the body.
fn get(http: &Client, console: &Console, path: &str, cookie: &str) -> (u16, String, String) {
    let res = http
        .get(format!("{}{path}", console.url))
        .header("Cookie", cookie)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, res.text().unwrap())
}

/// The CSRF token a signed-in page carries.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on the page: {page}"))
        .to_owned()
}

/// Posts a new group from the groups page; returns the status.
fn create_group(http: &Client, console: &Console, cookie: &str, csrf: &str, name: &str) -> u16 {
    http.post(format!("{}/ui/groups", console.url))
        .header("Cookie", cookie)
        .form(&[
            ("csrf", csrf),
            ("name", name),
            ("network", "classic"),
            ("project", "default"),
        ])
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_web_session_outlives_restarts_until_it_signs_out() {
    let mut console = Console::start(&[]);
    let http = http();
    let session = sign_in_admin(&http, &console);
    let (status, _, page) = get(&http, &console, "/ui/groups", &session);
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);

    // A clean restart and a kill -9: the same cookie opens pages, and forms carry the same
    // CSRF token, which a post still needs.
    for (round, how) in ["stop", "kill"].into_iter().enumerate() {
        if how == "stop" {
            console.stop();
        } else {
            console.kill();
        }
        console.restart();
        let (status, location, page) = get(&http, &console, "/ui/groups", &session);
        assert_eq!(status, 200, "after {how}: sent to {location}");
        assert_eq!(csrf_of(&page), csrf);
        let name = format!("after-{how}");
        assert_eq!(create_group(&http, &console, &session, "stale", &name), 403);
        assert_eq!(create_group(&http, &console, &session, &csrf, &name), 303);
        let groups = console.cli_ok(&["group", "list"]);
        assert!(groups.contains(&name), "round {round}: {groups}");
    }

    // Another console on the same store takes the same session.
    console.stop();
    console.restart_as_another(&[]);
    let (status, _, _) = get(&http, &console, "/ui/groups", &session);
    assert_eq!(status, 200, "on another console of the store");

    // Signing out holds across a restart.
    let res = http
        .post(format!("{}/ui/logout", console.url))
        .header("Cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(res.status(), 303);
    console.stop();
    console.restart();
    let (status, location, _) = get(&http, &console, "/ui/groups", &session);
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/login?next=/ui/groups")
    );
    assert_eq!(
        create_group(&http, &console, &session, &csrf, "signed-out"),
        303
    );
    assert!(!console.cli_ok(&["group", "list"]).contains("signed-out"));
}

#[test]
fn hostile_session_cookies_get_the_sign_in_page() {
    let mut console = Console::start(&[]);
    let other = Console::start(&[]);
    let http = http();
    let own = sign_in_admin(&http, &console);
    let elsewhere = sign_in_admin(&http, &other);
    let overlong = format!("tasknode_session={}", "A".repeat(8 * 1024));
    let cookies = [
        "tasknode_session=".to_owned(),
        "tasknode_session=garbage".to_owned(),
        "tasknode_session=%00%ff\\\"'; DROP TABLE web_sessions".to_owned(),
        format!("tasknode_session={}", "x".repeat(43)),
        overlong,
        // A session of another console (another database).
        elsewhere.clone(),
        format!("{own}; {own}x"),
    ];
    let refused = |console: &Console, cookie: &str| {
        let (status, location, _) = get(&http, console, "/ui/groups", cookie);
        assert_eq!(
            (status, location.as_str()),
            (303, "/ui/login?next=/ui/groups"),
            "{}",
            &cookie[..cookie.len().min(80)]
        );
        let res = http
            .get(format!("{}/ui/groups/default/x/servers", console.url))
            .header("Cookie", cookie)
            .header("X-Tasknode-Script", "1")
            .send()
            .unwrap();
        assert_eq!(res.status(), 401);
        let (status, _, page) = get(&http, console, "/ui/login", cookie);
        assert_eq!(status, 200);
        assert!(page.contains("id=\"login-token\""), "{page}");
        let res = http
            .post(format!("{}/ui/logout", console.url))
            .header("Cookie", cookie)
            .form(&[("csrf", "x")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
    };
    for cookie in &cookies[..cookies.len() - 1] {
        refused(&console, cookie);
    }
    // The first cookie of the name counts: the own session, then junk, still works.
    assert_eq!(get(&http, &console, "/ui/groups", &cookies[6]).0, 200);
    assert_eq!(get(&http, &other, "/ui/groups", &elsewhere).0, 200);

    // Thirteen hours later the session is past its idle and lifetime limits; it is deleted
    // when found, so it stays ended when the clock is back.
    console.stop();
    console.restart_as_another(&["--clock-offset", "46800"]);
    refused(&console, &own);
    console.stop();
    console.restart_as_another(&[]);
    refused(&console, &own);
    assert!(!console.log_text().contains("store failure"));
}

/// Turns a stopped console's data directory into one an older console left: the secrets in
/// files (admin.token, log-token.key, tls/ca.pem and tls/ca.key) and the database at schema
/// version 6, without sessions or secrets. Returns the log key's bytes.
fn make_it_an_older_consoles(data: &Path) -> Vec<u8> {
    let conn = rusqlite::Connection::open(data.join("tasknode.db")).unwrap();
    let secret = |name: &str| -> Vec<u8> {
        conn.query_row(
            "SELECT value FROM console_secrets WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    let ca: Value = serde_json::from_slice(&secret("tls_ca")).unwrap();
    let key = secret("log_token_key");
    let tls = data.join("tls");
    assert_eq!(
        std::fs::read_to_string(tls.join("ca.pem")).unwrap(),
        ca["cert_pem"].as_str().unwrap()
    );
    assert!(
        !tls.join("ca.key").exists(),
        "the key is kept in the database only"
    );
    std::fs::write(tls.join("ca.key"), ca["key_pem"].as_str().unwrap()).unwrap();
    std::fs::write(
        data.join("log-token.key"),
        format!("{}\n", hex::encode(&key)),
    )
    .unwrap();
    // Schema 6: without what migrations 7 (sessions, secrets), 8 (leases), 9 (server
    // removal), 10 (the audit log) and 11 (submits' idempotency keys) added.
    conn.execute_batch(
        "DROP TABLE console_secrets; DROP TABLE web_sessions; DROP TABLE leases;
         DROP TABLE removed_nodes; ALTER TABLE servers DROP COLUMN draining_ms;
         ALTER TABLE tasks DROP COLUMN server_name; DROP TABLE audit_log;
         DROP INDEX tasks_idempotency_key; ALTER TABLE tasks DROP COLUMN idempotency_key;
         PRAGMA user_version = 6;",
    )
    .unwrap();
    key
}

fn stored_secret(data: &Path, name: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("tasknode.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT value FROM console_secrets WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

/// A client that trusts `ca` (PEM) and nothing else.
fn trusting(ca: &[u8]) -> Client {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
        .build()
        .unwrap()
}

#[test]
fn an_older_consoles_token_key_and_ca_move_into_the_database_and_stay() {
    let mut console = Console::start(&["--tls", "--heartbeat-interval", "1s"]);
    let data = console.data();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("tasknode.db")), 0o600);
    let token = console.token();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);
    let ca = std::fs::read(console.ca()).unwrap();
    let ca_path = console.dir.path().join("pinned-ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let mut agent = Agent::new();
    let out = agent.enroll_with(
        &console.url,
        "etl",
        &password,
        false,
        &["--console-ca", ca_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(10));
    console.stop();
    let key = make_it_an_older_consoles(&data);
    // A loosened directory is tightened again: the database holds private keys.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The newer console takes the older one's token, key and CA.
    console.restart();
    assert_eq!(mode(&data), 0o700);
    let projects = |client: &Client, console: &Console| {
        client
            .get(console.api("/projects"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(projects(&trusting(&ca), &console), 200);
    assert_eq!(stored_secret(&data, "log_token_key"), key);
    console.stop();

    // Without the files, nothing changes: the same token, CA and key.
    for file in ["admin.token", "log-token.key", "tls/ca.key", "tls/ca.pem"] {
        std::fs::remove_file(data.join(file)).unwrap();
    }
    console.restart();
    let pinned = trusting(&ca);
    assert_eq!(projects(&pinned, &console), 200);
    let served = pinned
        .get(format!("{}/ca.pem", console.url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&served)),
        hex::encode(Sha256::digest(&ca))
    );
    assert_eq!(
        std::fs::read(console.ca()).unwrap(),
        ca,
        "ca.pem is written again"
    );
    assert!(
        !data.join("admin.token").exists(),
        "no new token is made while the database has one"
    );
    assert!(!data.join("tls/ca.key").exists());
    assert_eq!(stored_secret(&data, "log_token_key"), key);

    // The agent, pinning the CA it enrolled with, goes on heartbeating.
    let before = agent.heartbeat_lines().len();
    wait_for(
        Duration::from_secs(10),
        "heartbeats after the restart",
        || {
            let lines = agent.heartbeat_lines();
            (lines.len() >= before + 2 && lines.last().unwrap().contains("status=200"))
                .then_some(())
        },
    );
    assert!(agent.stop());

    // A new admin token replaces the old one in the database; the old one stops working.
    console.stop();
    console.restart_as_another(&["--tls", "--new-admin-token"]);
    assert_eq!(projects(&pinned, &console), 401);
    assert_ne!(console.token(), token);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    let res = pinned
        .get(console.api("/projects"))
        .bearer_auth(console.token())
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    // The next start keeps it.
    console.stop();
    console.restart_as_another(&["--tls"]);
    assert!(console.cli_ok(&["project", "list"]).contains("default"));
}

#[test]
fn an_install_link_from_one_console_works_on_the_next() {
    const HOST: &str = "linked-1.example";
    let agents = tempfile::tempdir().unwrap();
    std::fs::write(
        agents.path().join("tasknode-x86_64"),
        stand_in_binary("0.1.0", b"agent"),
    )
    .unwrap();
    let agent_dir = agents.path().to_str().unwrap();
    let mut console = Console::start(&["--agent-dir", agent_dir]);
    console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", HOST]);
    let printed: Value = serde_json::from_str(&console.cli_ok(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--json",
    ]))
    .unwrap();
    let link = printed["url"].as_str().unwrap();
    let token = link.rsplit('/').next().unwrap().to_owned();
    let first_url = console.url.clone();
    console.stop();

    // Another console of the store serves the script behind the link, pointing at itself.
    console.restart_as_another(&["--agent-dir", agent_dir]);
    assert_ne!(console.url, first_url);
    let http = http();
    let res = http
        .get(format!("{}/install/{token}", console.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let script = res.text().unwrap();
    assert!(
        script.contains(&console.url),
        "the script names this console"
    );
    let enroll = |console: &Console| {
        http.post(console.api("/enroll"))
            .json(&json!({
                "enrollment_token": token,
                "identity": { "kind": "hostname", "value": HOST },
                "facts": {
                    "hostname": HOST, "cpu_cores": 2.0, "memory_bytes": 4_294_967_296u64,
                    "os": "test", "arch": "x86_64", "kernel": "6.1", "agent_version": "0.1.0"
                }
            }))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(enroll(&console), 200);
    console.stop();

    // Spent on one console, spent on every one.
    console.restart_as_another(&[]);
    assert_eq!(enroll(&console), 401);
}

#[test]
fn a_console_reached_by_other_names_gets_its_own_certificate_from_the_same_ca() {
    let mut console = Console::start(&["--tls"]);
    let ca = std::fs::read(console.ca()).unwrap();
    let res = trusting(&ca)
        .get(format!("{}/ca.pem", console.url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    console.stop();
    console.restart_as_another(&["--tls", "--tls-name", "console-b.example"]);
    assert_eq!(std::fs::read(console.ca()).unwrap(), ca);
    let addr = format!("127.0.0.1:{}", console.port).parse().unwrap();
    let by_name = Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("console-b.example", addr)
        .build()
        .unwrap();
    let res = by_name
        .get(format!("https://console-b.example:{}/ca.pem", console.port))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().unwrap().as_ref(), ca.as_slice());
    console.stop();

    // The first console's names again: its certificate, which does not cover the other name.
    console.restart_as_another(&["--tls"]);
    let addr = format!("127.0.0.1:{}", console.port).parse().unwrap();
    let by_name = Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("console-b.example", addr)
        .build()
        .unwrap();
    let err = by_name
        .get(format!("https://console-b.example:{}/ca.pem", console.port))
        .send()
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(
        trusting(&ca)
            .get(format!("{}/ca.pem", console.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    let conn = rusqlite::Connection::open_with_flags(
        console.data().join("tasknode.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let certs: i64 = conn
        .query_row(
            "SELECT count(*) FROM console_secrets WHERE name LIKE 'tls!_server/%' ESCAPE '!'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(certs, 2, "one certificate per set of names");
}
