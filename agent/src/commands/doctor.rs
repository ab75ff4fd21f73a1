//! `tasknode doctor`: the checks for what operators trip on, each with its fix. It changes
//! nothing; it exits 0 when no check failed (warnings allowed) and 1 otherwise.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tasknode_protocol::{MAX_CLOCK_OFFSET_MS, NetworkType};

use crate::Exit;
use crate::cli::DoctorArgs;
use crate::client::ConsoleClient;
use crate::config::{self, Config};
use crate::service::{self, Host, State};
use crate::{env, passwd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
    /// What to do about it, when something is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(
    name: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<Exit> {
    let path = &args.config.config;
    let mut checks = Vec::new();
    let config = match Config::load(path) {
        Ok(c) => {
            checks.push(match config::permission_warning(path) {
                Some(w) => bad(
                    "config",
                    Verdict::Fail,
                    w,
                    format!("chmod 600 {}", path.display()),
                ),
                None if c.node.is_none() => bad(
                    "config",
                    Verdict::Fail,
                    format!("{} has no node credentials", path.display()),
                    "enroll: run the install command from the console, or `tasknode enroll`",
                ),
                None => ok("config", format!("{} (0600, enrolled)", path.display())),
            });
            Some(c)
        }
        Err(e) => {
            checks.push(bad(
                "config",
                Verdict::Fail,
                e.to_string(),
                "run the install command from the console, or `tasknode enroll`",
            ));
            None
        }
    };
    checks.push(hostname_resolves(&env::root()).await);
    if let Some(config) = &config {
        checks.extend(console_checks(config).await);
        if config
            .node
            .as_ref()
            .is_some_and(|n| n.network == NetworkType::Classic)
        {
            checks.push(log_port(config));
        }
        for (what, dir) in [
            ("log directory", config.log_dir.clone()),
            ("work directory", config.work_dir()),
        ] {
            checks.push(directory(what, &dir));
            checks.push(disk(what, &dir));
        }
        checks.push(service_state(path, config));
    }

    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "healthy": !failed, "checks": checks })
            )?
        );
    } else {
        for c in &checks {
            let mark = match c.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            println!("{mark} {:<16} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("     {:<16} fix: {fix}", "");
            }
        }
        println!();
        println!(
            "{}",
            if failed {
                "something needs fixing: see the FAIL lines"
            } else {
                "all checks passed"
            }
        );
    }
    Ok(if failed { Exit::Failure } else { Exit::Success })
}

/// `hostname -i` must work: the name resolves, to an address that is not loopback-only when
/// the server is on a network with others.
async fn hostname_resolves(root: &Path) -> Check {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
    let in_hosts = hosts.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("");
        l.split_whitespace()
            .skip(1)
            .any(|n| n.eq_ignore_ascii_case(&name))
    });
    match tokio::net::lookup_host((name.as_str(), 0)).await {
        Ok(addrs) => {
            let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            let shown: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            if ips.is_empty() {
                bad(
                    "hostname",
                    Verdict::Fail,
                    format!("{name} resolves to no address"),
                    fix_hosts(&name),
                )
            } else {
                ok(
                    "hostname",
                    format!(
                        "{name} resolves to {}{}",
                        shown.join(", "),
                        if in_hosts { " (/etc/hosts)" } else { "" }
                    ),
                )
            }
        }
        Err(e) => bad(
            "hostname",
            Verdict::Fail,
            format!("`hostname -i` fails: {name} does not resolve ({e})"),
            fix_hosts(&name),
        ),
    }
}

fn fix_hosts(name: &str) -> String {
    format!(
        "add a line `IP {name}` to /etc/hosts with this server's address (install.sh --fix-hosts does it and keeps a backup)"
    )
}

async fn console_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let urls = config.console_urls();
    let client = match ConsoleClient::new(&urls, config.console_ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            out.push(bad(
                "console",
                Verdict::Fail,
                e.to_string(),
                "fix console_url, more_console_urls or console_ca in the config",
            ));
            return out;
        }
    };
    let Some(node) = &config.node else {
        return out;
    };
    let tls = if config.console_url.starts_with("https://") {
        match &config.console_ca {
            Some(ca) => format!(", TLS verified against {}", ca.display()),
            None => ", TLS verified against the system's CAs".to_owned(),
        }
    } else {
        String::new()
    };
    let several = client.consoles().len() > 1;
    match client.node(&node.id, &node.secret).await {
        Ok(answer) => {
            out.push(ok(
                "console",
                format!(
                    "{} answers in {} ms{tls}{}",
                    client.consoles().current_url(),
                    answer.latency.as_millis(),
                    if several { " (in use)" } else { "" }
                ),
            ));
            let v = answer.body;
            out.push(
                if v.status == tasknode_protocol::wire::ServerStatus::Available {
                    ok(
                        "server",
                        format!("{} in group {}: {}", v.server_name, v.group, v.status),
                    )
                } else {
                    bad(
                        "server",
                        Verdict::Warn,
                        format!("{} in group {}: {}", v.server_name, v.group, v.status),
                        v.reason,
                    )
                },
            );
            out.push(clock(answer.offset_ms));
        }
        Err(e) => {
            let fix = match e.status() {
                Some(401) => "this server was enrolled again elsewhere or its node was replaced: enroll again".to_owned(),
                Some(_) => "see the console's answer above".to_owned(),
                None if config.console_url.starts_with("https://") => format!(
                    "check that {} is reachable from here (firewall, DNS) and that its certificate chains to the pinned CA",
                    urls.join(", ")
                ),
                None => format!("check that {} is reachable from here (firewall, DNS, proxy)", urls.join(", ")),
            };
            out.push(bad("console", Verdict::Fail, e.to_string(), fix));
            // A refusal still carries the console's time.
            if e.offset_ms().is_some() {
                out.push(clock(e.offset_ms()));
            }
        }
    }
    if several {
        out.extend(other_consoles(&client, node).await);
    }
    out
}

/// Each console not in use, asked on its own: the agent moves to it when the one in use
/// fails, so one that fails too is worth a warning.
async fn other_consoles(client: &ConsoleClient, node: &config::Node) -> Vec<Check> {
    let current = client.consoles().current();
    let mut out = Vec::new();
    for i in (0..client.consoles().len()).filter(|&i| i != current) {
        let url = client
            .consoles()
            .url(i)
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        out.push(match client.node_at(i, &node.id, &node.secret).await {
            Ok(a) => ok(
                "other console",
                format!("{url} answers in {} ms", a.latency.as_millis()),
            ),
            Err(e) => bad(
                "other console",
                Verdict::Warn,
                format!("{url}: {e}"),
                format!(
                    "the agent moves to {url} when the console in use fails: check the network path to it, or remove it from the config"
                ),
            ),
        });
    }
    out
}

fn clock(offset_ms: Option<i64>) -> Check {
    match offset_ms {
        Some(o) if o.abs() > MAX_CLOCK_OFFSET_MS => bad(
            "clock",
            Verdict::Fail,
            format!(
                "{} s from the console's (limit 120 s): this server takes no tasks",
                o.abs() / 1000
            ),
            "chronyc makestep (or ntpdate -u NTP_SERVER), and keep chronyd or ntpd running",
        ),
        Some(o) => ok("clock", format!("{o} ms from the console's")),
        None => bad(
            "clock",
            Verdict::Warn,
            "the console sent no time",
            "upgrade the console",
        ),
    }
}

/// The log service (classic servers) listens, as far as this host can tell.
fn log_port(config: &Config) -> Check {
    let listen = config.logs.listen.as_deref().unwrap_or("0.0.0.0:8000");
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        return bad(
            "log service",
            Verdict::Fail,
            format!("[logs] listen {listen:?} is not an address"),
            "set it like 0.0.0.0:8000",
        );
    };
    if addr.port() == 0 {
        return ok(
            "log service",
            "listens on a port chosen at start ([logs] listen has port 0)",
        );
    }
    let probe = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port()),
        _ => addr,
    };
    match TcpStream::connect_timeout(&probe, Duration::from_secs(2)) {
        Ok(_) => ok(
            "log service",
            format!(
                "listening on {listen}; the console must reach this port (firewall, security group)"
            ),
        ),
        Err(e) => bad(
            "log service",
            Verdict::Fail,
            format!("nothing answers on {probe} ({e})"),
            "start the agent (serverctl start); if it runs, agent.log says why the port could not be bound",
        ),
    }
}

fn directory(what: &'static str, dir: &Path) -> Check {
    use std::os::unix::fs::MetadataExt;
    let name = if what == "log directory" {
        "log dir"
    } else {
        "work dir"
    };
    let Ok(m) = std::fs::metadata(dir) else {
        return bad(
            name,
            Verdict::Warn,
            format!("{} does not exist yet", dir.display()),
            "the agent creates it when it starts",
        );
    };
    let owner =
        passwd::by_uid(Path::new("/"), m.uid()).map_or_else(|| m.uid().to_string(), |e| e.name);
    if m.mode() & 0o002 != 0 {
        return bad(
            name,
            Verdict::Fail,
            format!("{} is writable by every user", dir.display()),
            format!("chmod o-w {}", dir.display()),
        );
    }
    let me = rustix::process::geteuid();
    if !me.is_root() && m.uid() != me.as_raw() {
        return bad(
            name,
            Verdict::Fail,
            format!(
                "{} belongs to {owner}, not to the agent's user",
                dir.display()
            ),
            format!("chown -R admin:admin {}", dir.display()),
        );
    }
    ok(
        name,
        format!("{} ({owner}, {:o})", dir.display(), m.mode() & 0o777),
    )
}

fn disk(what: &'static str, dir: &Path) -> Check {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let name = if what == "log directory" {
        "log disk"
    } else {
        "work disk"
    };
    match rustix::fs::statvfs(existing) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let mib = free / (1 << 20);
            if mib < 100 {
                bad(
                    name,
                    Verdict::Fail,
                    format!("{mib} MiB free under {}", existing.display()),
                    "free space: tasks and logs stop being written",
                )
            } else if mib < 1024 {
                bad(
                    name,
                    Verdict::Warn,
                    format!("{mib} MiB free under {}", existing.display()),
                    "free space before tasks fill it",
                )
            } else {
                ok(
                    name,
                    format!("{} GiB free under {}", mib / 1024, existing.display()),
                )
            }
        }
        Err(e) => bad(
            name,
            Verdict::Warn,
            format!("cannot read free space under {}: {e}", existing.display()),
            "check the filesystem",
        ),
    }
}

fn service_state(path: &Path, config: &Config) -> Check {
    let host = Host { root: env::root() };
    let manager = service::detect(&host, path, &config.pid_file(path), &config.log_dir);
    match manager.status() {
        Ok(State::Running { pid }) => ok(
            "service",
            format!(
                "running{} ({})",
                pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
                manager.name()
            ),
        ),
        Ok(State::Dead) => bad(
            "service",
            Verdict::Fail,
            format!("dead ({})", manager.name()),
            format!(
                "see agent.log in {}, then `serverctl start`",
                config.log_dir.display()
            ),
        ),
        Ok(State::Stopped) => bad(
            "service",
            Verdict::Fail,
            format!("stopped ({})", manager.name()),
            "serverctl start",
        ),
        Err(e) => bad(
            "service",
            Verdict::Warn,
            e.to_string(),
            "check the service manager",
        ),
    }
}
