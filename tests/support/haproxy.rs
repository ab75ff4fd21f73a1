//! A real load balancer for the tests: Debian's HAProxy, run in the foreground with the
//! recommended config (docs/haproxy.cfg) as the README gives it, in front of consoles on
//! loopback. Only the addresses change (the bind line, one server line per console) and the log
//! goes to a file; every other line is the documented one, so the tests prove that config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian installs HAProxy (scripts/test.sh installs it when missing).
const HAPROXY: &str = "/usr/sbin/haproxy";

/// A running HAProxy with its config and log in a directory of its own; killed on drop.
pub struct LoadBalancer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub url: String,
    pub port: u16,
}

/// The documented config with `port` as the only bind address, `consoles` (loopback ports) as
/// the servers, and the log on standard error.
pub fn config_for(port: u16, consoles: &[u16]) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/haproxy.cfg"))
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
                    for (i, p) in consoles.iter().enumerate() {
                        out.push_str(&format!("    server console-{i} 127.0.0.1:{p}\n"));
                    }
                    servers_written = true;
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(servers_written, "docs/haproxy.cfg has no server lines");
    out
}

impl LoadBalancer {
    /// Starts HAProxy on loopback `port` in front of the consoles listening on `consoles`, and
    /// waits until it answers.
    pub fn start(port: u16, consoles: &[u16]) -> LoadBalancer {
        assert!(
            Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: scripts/test.sh installs Debian's haproxy"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_for(port, consoles)).unwrap();
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
            url: format!("http://127.0.0.1:{port}"),
            port,
        };
        let health = format!("{}/healthz", lb.url);
        crate::wait_for(Duration::from_secs(20), "haproxy to answer", || {
            reqwest::blocking::get(&health)
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
