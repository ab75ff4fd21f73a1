//! A real load balancer for the tests: Debian's HAProxy, run in the foreground with one of the
//! recommended configs as the README gives them (docs/haproxy.cfg for consoles serving HTTP,
//! docs/haproxy-tls.cfg passing TLS through to consoles serving `--tls`), in front of consoles
//! on loopback. Only the addresses change (the bind line, one server line per console, in TLS
//! mode with the address the balancer connects from), the CA file the TLS health checks verify
//! against, and the log goes to a file; every other line is the documented one, so the tests
//! prove that config.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian installs HAProxy (scripts/test.sh installs it when missing).
const HAPROXY: &str = "/usr/sbin/haproxy";

/// Which documented config the balancer runs.
pub enum Mode<'a> {
    /// docs/haproxy.cfg: HTTP, `X-Forwarded-For` added.
    Http,
    /// docs/haproxy-tls.cfg: TCP, the consoles' TLS passed through; the health checks verify
    /// the consoles' certificates against `ca`. The balancer connects to the consoles from
    /// loopback address `from`, as a balancer on a host of its own, so that what the consoles
    /// see as the client (the PROXY protocol header) and the balancer's address differ.
    TlsPassthrough { ca: &'a Path, from: IpAddr },
}

impl Mode<'_> {
    fn doc(&self) -> &'static str {
        match self {
            Mode::Http => "haproxy.cfg",
            Mode::TlsPassthrough { .. } => "haproxy-tls.cfg",
        }
    }

    fn scheme(&self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::TlsPassthrough { .. } => "https",
        }
    }
}

/// A running HAProxy with its config and log in a directory of its own; killed on drop.
pub struct LoadBalancer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub url: String,
    pub port: u16,
}

/// The documented config of `mode` with `port` as the only bind address, `consoles` (loopback
/// ports) as the servers, and the log on standard error.
pub fn config_for(mode: &Mode, port: u16, consoles: &[u16]) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(mode.doc()),
    )
    .unwrap();
    let mut out = String::new();
    let mut servers_written = false;
    for line in doc.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("bind") => out.push_str(&format!("    bind 127.0.0.1:{port}\n")),
            Some("log") if words.get(1) != Some(&"global") => {
                out.push_str("    log stderr format short local0 info\n");
            }
            Some("server") => {
                if !servers_written {
                    let source = match mode {
                        Mode::Http => String::new(),
                        Mode::TlsPassthrough { from, .. } => format!(" source {from}"),
                    };
                    for (i, p) in consoles.iter().enumerate() {
                        out.push_str(&format!("    server console-{i} 127.0.0.1:{p}{source}\n"));
                    }
                    servers_written = true;
                }
            }
            Some("default-server") => match mode {
                Mode::Http => {
                    out.push_str(line);
                    out.push('\n');
                }
                Mode::TlsPassthrough { ca, .. } => {
                    let (before, after) = line
                        .split_once("ca-file ")
                        .expect("the TLS config's default-server names a ca-file");
                    let rest = after.split_once(' ').map_or("", |(_, r)| r);
                    out.push_str(&format!("{before}ca-file {} {rest}\n", ca.display()));
                }
            },
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(servers_written, "docs/{} has no server lines", mode.doc());
    out
}

impl LoadBalancer {
    /// Starts HAProxy with docs/haproxy.cfg on loopback `port` in front of the consoles
    /// listening on `consoles`, and waits until it answers.
    pub fn start(port: u16, consoles: &[u16]) -> LoadBalancer {
        LoadBalancer::start_with(&Mode::Http, port, consoles)
    }

    /// Starts HAProxy with the config of `mode` on loopback `port` in front of the consoles
    /// listening on `consoles`, and waits until it answers (through it, `GET /healthz` over
    /// HTTPS trusting only the consoles' CA in TLS mode).
    pub fn start_with(mode: &Mode, port: u16, consoles: &[u16]) -> LoadBalancer {
        assert!(
            Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: scripts/test.sh installs Debian's haproxy"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_for(mode, port, consoles)).unwrap();
        let check = Command::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy refuses the config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        // -db: in the foreground, not a daemon, so the child is HAProxy itself.
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let lb = LoadBalancer {
            dir,
            child: Some(child),
            url: format!("{}://127.0.0.1:{port}", mode.scheme()),
            port,
        };
        let mut client = reqwest::blocking::Client::builder().tls_built_in_root_certs(false);
        if let Mode::TlsPassthrough { ca, .. } = mode {
            let pem = std::fs::read(ca).unwrap();
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let client = client.build().unwrap();
        let health = format!("{}/healthz", lb.url);
        crate::wait_for(Duration::from_secs(20), "haproxy to answer", || {
            client
                .get(&health)
                .send()
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        });
        lb
    }

    /// The config HAProxy runs.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    /// What HAProxy logged: every request, and each server going down or up.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
