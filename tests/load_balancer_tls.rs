//! TLS behind the load balancer, as an operator deploys it: two consoles serving HTTPS
//! themselves (`serve --tls`) on one throwaway PostgreSQL, behind a real HAProxy passing TLS
//! through (docs/haproxy-tls.cfg), so agents verify the consoles' own CA, which both consoles
//! share through the database. A classic server (this host, by name) and a VPC server enroll
//! through the balancer trusting that CA alone, become available and run tasks; the console
//! holding their connections is killed with SIGKILL; both agents heartbeat again through the
//! balancer without ever being shown `stopped`, run a task each submitted after the kill
//! (the classic one's log read back from its own log service), and still verify the
//! certificate the surviving console serves. An agent given another CA, or none, is refused
//! through the balancer and says why. The balancer connects from an address of its own and
//! names each client in a PROXY protocol header (`--proxy-protocol`), so the consoles see a
//! client's own address, which the classic server's log service and the password throttle go
//! by; a connection from the balancer's address without that header is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tasknode_tests::haproxy::{LoadBalancer, Mode};
use tasknode_tests::postgres::SharedDatabase;
use tasknode_tests::web::WebClient;
use tasknode_tests::{
    Agent, Console, SHARED_LIVENESS, admin_cli_ok, bin, free_port, hostname, stderr, submit_script,
    wait_for,
};

/// The VPC server.
const VPC: &str = "4c4c4544-0000-4000-8000-00000000d101";
/// A VPC server whose agent is given another CA after enrolling.
const SWAPPED: &str = "4c4c4544-0000-4000-8000-00000000d102";
/// The address the balancer connects to the consoles from, as a host of its own would.
const BALANCER: &str = "127.0.0.3";

/// The admin's view through the balancer: the CLI (`TASKNODE_CONSOLE` the balancer, a data
/// directory holding only the admin token and the CA) and the API over HTTPS trusting only the
/// consoles' CA.
struct Operator {
    http: reqwest::blocking::Client,
    lb: String,
    token: String,
    data: tempfile::TempDir,
}

impl Operator {
    fn new(lb: &LoadBalancer, console: &Console, ca: &Path) -> Operator {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir(data.path().join("tls")).unwrap();
        std::fs::copy(ca, data.path().join("tls/ca.pem")).unwrap();
        let token = data.path().join("admin.token");
        std::fs::copy(console.data().join("admin.token"), &token).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pem = std::fs::read(ca).unwrap();
        Operator {
            http: reqwest::blocking::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            lb: lb.url.clone(),
            token: console.token(),
            data,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        admin_cli_ok(&self.lb, self.data.path(), args)
    }

    /// Every server's status, as `GET /api/v1/servers` through the balancer shows them.
    fn statuses(&self) -> Result<BTreeMap<String, String>, String> {
        let res = self
            .http
            .get(format!("{}/api/v1/servers", self.lb))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| format!("no answer: {e} ({:?})", std::error::Error::source(&e)))?;
        if res.status() != 200 {
            return Err(format!("HTTP {}", res.status()));
        }
        let list: Value = res.json().map_err(|e| format!("not JSON: {e}"))?;
        Ok(list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect())
    }

    /// Submits `script` to `group` and waits until it succeeded; returns its log.
    fn run_task(&self, group: &str, script: &str) -> String {
        let id = submit_script(&self.lb, self.data.path(), group, script).to_string();
        let task = wait_for(
            Duration::from_secs(60),
            &format!("task {id} in {group} to end"),
            || {
                let t: Value =
                    serde_json::from_str(&self.cli(&["task", "show", &id, "--json"])).unwrap();
                matches!(t["state"].as_str(), Some("succeeded" | "failed" | "lost")).then_some(t)
            },
        );
        assert_eq!(task["state"], "succeeded", "{task:#}");
        assert_eq!(task["exit_code"], 0, "{task:#}");
        self.cli(&["task", "log", &id])
    }
}

/// Established connections to loopback `port` (the balancer's to a console).
fn connections_to(port: u16) -> usize {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ss: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `tasknode doctor --json` of `agent`: the check named `name`.
fn doctor_check(agent: &Agent, name: &str) -> Value {
    let out = Command::new(bin("tasknode"))
        .args(["doctor", "--json"])
        .env("TASKNODE_CONFIG", agent.config())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor: {e}: {}", stderr(&out)));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} check: {report:#}"))
}

/// Heartbeats `agent` logged as answered (status 200, no error).
fn answered_heartbeats(agent: &Agent) -> usize {
    agent
        .heartbeat_lines()
        .iter()
        .filter(|l| l.contains(" status=200 ") && l.ends_with(" error=-"))
        .count()
}

#[test]
fn agents_verify_the_consoles_ca_through_the_balancer_and_survive_a_console_kill() {
    let scratch = tempfile::tempdir().unwrap();
    let db = SharedDatabase::new();
    let lb_port = free_port();
    let lb_url = format!("https://127.0.0.1:{lb_port}");
    let args = [
        "--tls",
        "--public-url",
        &lb_url,
        "--trusted-proxy",
        BALANCER,
        "--proxy-protocol",
    ];
    let args = [&args[..], &SHARED_LIVENESS].concat();
    let mut consoles = db.consoles(2, &args);
    // One CA for the database: both consoles wrote the same certificate, which the operator
    // copies where the balancer's checks and the agents read it.
    let ca_pem = std::fs::read_to_string(consoles[0].ca()).unwrap();
    assert_eq!(std::fs::read_to_string(consoles[1].ca()).unwrap(), ca_pem);
    let ca = scratch.path().join("tasknode-ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let ca_arg = ca.to_str().unwrap();

    let ports: Vec<u16> = consoles.iter().map(|c| c.port).collect();
    let mode = Mode::TlsPassthrough {
        ca: &ca,
        from: BALANCER.parse().unwrap(),
    };
    let lb = LoadBalancer::start_with(&mode, lb_port, &ports);
    assert_eq!(lb.url, lb_url);
    let op = Operator::new(&lb, &consoles[0], &ca);

    // Through the balancer the consoles serve their CA, the one pinned.
    let served = op.http.get(format!("{}/ca.pem", lb.url)).send().unwrap();
    assert_eq!(served.text().unwrap(), ca_pem);

    let user: Value = serde_json::from_str(&op.cli(&["user", "create", "ops", "--json"])).unwrap();
    let password = user["password"].as_str().unwrap().to_owned();
    op.cli(&["group", "create", "hosts", "--network", "classic"]);
    op.cli(&["group", "create", "vpcs", "--network", "vpc"]);
    op.cli(&["server", "add", "--group", "hosts", "--name", &hostname()]);
    op.cli(&["server", "add", "--group", "vpcs", "--name", VPC]);
    op.cli(&["server", "add", "--group", "vpcs", "--name", SWAPPED]);

    // An attacker's view first: without the consoles' CA, or with another console's, an
    // agent reaching the balancer is refused, says why, and writes nothing.
    let other = Console::start(&["--tls"]);
    let stranger = Agent::with_uuid(VPC);
    for extra in [vec![], vec!["--console-ca", other.ca().to_str().unwrap()]] {
        let out = stranger.enroll_with(&lb.url, "ops", &password, true, &extra);
        assert_eq!(out.status.code(), Some(4), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&lb.url) && err.to_lowercase().contains("certificate"),
            "{extra:?}: {err}"
        );
        assert!(!stranger.config().exists());
    }
    drop(other);

    // A classic server (this host, by name) and a VPC server, enrolled through the balancer,
    // which is all they know, pinning the consoles' CA.
    let mut classic = Agent::new();
    let out = classic.enroll_with(&lb.url, "ops", &password, false, &["--console-ca", ca_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut vpc = Agent::with_uuid(VPC);
    let out = vpc.enroll_with(&lb.url, "ops", &password, true, &["--console-ca", ca_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    for agent in [&classic, &vpc] {
        assert_eq!(agent.config_value("console_url"), lb.url);
        assert_eq!(agent.config_value("console_ca"), ca_arg);
        agent.allow_tasks();
    }
    classic.run();
    vpc.run();
    let names = [hostname(), VPC.to_owned()];
    for c in &consoles {
        for name in &names {
            c.wait_status(name, "available", Duration::from_secs(30));
        }
    }
    assert!(
        op.run_task("hosts", "echo classic before\n")
            .contains("classic before")
    );
    assert!(
        op.run_task("vpcs", "echo vpc before\n")
            .contains("vpc before")
    );

    // What the consoles see as the client: the balancer passes bytes, not HTTP, and names the
    // client in its PROXY protocol header, so a wrong password from 127.0.0.2 is logged as from
    // there, not from the balancer. (The classic server's task log above was read from its
    // log service at its own address, 127.0.0.1, not at the balancer's.)
    let wrong = WebClient::with_root(&lb.url, "127.0.0.2".parse().unwrap(), ca_pem.as_bytes())
        .sign_in_attempt("ops", "not the password")
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let refusals: Vec<String> = consoles
        .iter()
        .flat_map(|c| {
            c.log_text()
                .lines()
                .filter(|l| l.contains("sign-in refused"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert!(refusals[0].contains("peer=127.0.0.2"), "{refusals:#?}");
    // The balancer's address without the header, straight to a console: refused, so no one
    // who reaches the consoles from there can name an address of their choosing without it.
    let direct = reqwest::blocking::Client::builder()
        .local_address(BALANCER.parse::<std::net::IpAddr>().unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let refused = direct.get(format!("{}/healthz", consoles[0].url)).send();
    assert!(refused.is_err(), "{refused:?}");
    wait_for(
        Duration::from_secs(10),
        "the console to log the connection without a header",
        || {
            consoles[0]
                .log_text()
                .contains("does not begin with a PROXY protocol header")
                .then_some(())
        },
    );
    // Anyone else reaches a console directly with no header, as before.
    let res = op
        .http
        .get(format!("{}/healthz", consoles[0].url))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);

    // Kill the console holding most of the balancer's connections (the agents' long polls and
    // heartbeats), with SIGKILL.
    let held: Vec<usize> = ports.iter().map(|p| connections_to(*p)).collect();
    let killed = if held[0] >= held[1] { 0 } else { 1 };
    assert!(held[killed] >= 1, "no connection to any console: {held:?}");
    eprintln!("connections to the consoles before the kill: {held:?}; killing {killed}");
    let answered_before = [answered_heartbeats(&classic), answered_heartbeats(&vpc)];
    let stop = AtomicBool::new(false);
    let (seen, errors) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match op.statuses() {
                    Ok(list) => {
                        for (name, status) in list {
                            seen.entry(name).or_default().insert(status);
                        }
                    }
                    Err(e) => errors.push(e),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (seen, errors)
        });
        let _stop = OnDrop(|| stop.store(true, Ordering::SeqCst));
        consoles[killed].kill();

        // Both agents heartbeat again through the balancer, answered by the console left.
        wait_for(
            Duration::from_secs(20),
            "both agents to heartbeat again",
            || {
                (answered_heartbeats(&classic) >= answered_before[0] + 3
                    && answered_heartbeats(&vpc) >= answered_before[1] + 3)
                    .then_some(())
            },
        );
        // Tasks submitted after the kill run on each, the classic one's log read from its own
        // log service by the console left.
        let log = op.run_task("hosts", "echo classic after the kill\n");
        assert_eq!(log, "classic after the kill\n");
        let log = op.run_task("vpcs", "echo vpc after the kill\n");
        assert_eq!(log, "vpc after the kill\n");
        // Seen by the watcher for a few more heartbeats.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        watcher.join().unwrap()
    });
    let survivor = &consoles[1 - killed];
    let lb_log = lb.log_text();
    assert!(
        lb_log.contains(&format!("consoles/console-{killed} is DOWN")),
        "{lb_log}"
    );
    for name in &names {
        let statuses = seen.get(name).unwrap_or_else(|| panic!("{name} not seen"));
        assert!(
            !statuses.contains("stopped") && !statuses.contains("pending"),
            "{name} was seen {statuses:?}"
        );
    }
    eprintln!("statuses seen across the kill: {seen:?}; reads that failed: {errors:?}");
    // Reads through the balancer: at most the ones whose connection the kill cut (TCP mode
    // resends nothing once a console took the connection).
    assert!(errors.len() <= 2, "{errors:#?}\nhaproxy:\n{lb_log}");
    for name in &names {
        survivor.wait_status(name, "available", Duration::from_secs(10));
    }

    // The agents still verify the certificate, now the survivor's, against the pinned CA, and
    // say which console URL they talk to.
    for agent in [&classic, &vpc] {
        let (status, healthy) = agent.status();
        assert!(healthy, "{status:#}");
        assert_eq!(status["console_url"], lb.url.as_str(), "{status:#}");
        let check = doctor_check(agent, "console");
        assert_eq!(check["verdict"], "ok", "{check:#}");
        let detail = check["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{} answers in", lb.url))
                && detail.ends_with(&format!("TLS verified against {ca_arg}")),
            "{check:#}"
        );
    }
    let served = op.http.get(format!("{}/ca.pem", lb.url)).send().unwrap();
    assert_eq!(served.text().unwrap(), ca_pem);

    // An enrolled agent whose pinned CA is swapped for another's is refused by the console
    // left too, and doctor says why and what to check.
    let swapped = Agent::with_uuid(SWAPPED);
    let out = swapped.enroll_with(&lb.url, "ops", &password, true, &["--console-ca", ca_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let foreign = Console::start(&["--tls"]);
    let foreign_ca = scratch.path().join("foreign-ca.pem");
    std::fs::copy(foreign.ca(), &foreign_ca).unwrap();
    drop(foreign);
    let text = std::fs::read_to_string(swapped.config()).unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    config.insert("console_ca".to_owned(), foreign_ca.to_str().unwrap().into());
    std::fs::write(swapped.config(), toml::to_string(&config).unwrap()).unwrap();
    let check = doctor_check(&swapped, "console");
    assert_eq!(check["verdict"], "fail", "{check:#}");
    let detail = check["detail"].as_str().unwrap().to_lowercase();
    assert!(detail.contains("certificate"), "{check:#}");
    assert!(
        check["fix"]
            .as_str()
            .is_some_and(|f| f.contains("chains to the pinned CA")),
        "{check:#}"
    );

    for agent in [&mut classic, &mut vpc] {
        assert!(agent.is_running());
        assert!(agent.stop());
    }
}

/// Runs its closure when dropped: the watcher ends even when an assertion fails first.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
