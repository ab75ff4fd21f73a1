//! `tasknode-console serve`: opens the data directory, the store and the admin token, then runs
//! the HTTP API until SIGTERM or Ctrl-C, persisting liveness in batches and once more on exit,
//! and advancing rollouts every second. It runs with umask 077, raises its soft open-file limit
//! to the hard one (every agent holds a long poll beside its heartbeats), and lowers
//! `--max-connections` to what that limit allows.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::app::{self, AppState};
use crate::cli::{Global, ServeArgs};
use crate::clock::Clock;
use crate::lease::{self, Lease};
use crate::liveness::{self, LivenessMap};
use crate::rollout::{self, RolloutEngine};
use crate::status::Thresholds;
use crate::store::LogLimits;
use crate::store::{ServerFilter, Store};
use crate::tasks::{self, Dispatch};
use crate::tls::ConsoleTls;

/// How often rollouts advance (they also do at once when set and when an agent reports).
const ROLLOUT_TICK: Duration = Duration::from_secs(1);

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let thresholds = thresholds(&args)?;
    let public_url = match &args.public_url {
        Some(u) => Some(tasknode_render::render::console_url("--public-url", u)?),
        None => None,
    };
    if let Some(u) = &public_url
        && args.tls
        && !u.starts_with("https://")
    {
        bail!("--public-url {u}: with --tls the console serves HTTPS only; give an https:// URL");
    }
    let agent_urls = agent_urls(&args, public_url.as_deref())?;
    // The database holds password hashes and secret digests: nothing the console writes is
    // for other users.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    raise_open_file_limit();
    let data = global.data.clone().unwrap_or_else(super::default_data_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let _lock = lock_data_dir(&data)?;

    let store: Arc<dyn Store> = super::database::open(&args, &data).await?;
    let clock = Clock::with_offset(args.clock_offset.saturating_mul(1000));
    // The admin token, the log-token key and the TLS material live in the store, shared by
    // every console on it; an older console's files in DATA are moved in once.
    let token_path = data.join("admin.token");
    let admin_token = if args.new_admin_token {
        crate::keys::new_admin_token(store.as_ref(), &token_path, clock.now_ms()).await?
    } else {
        crate::keys::admin_token(store.as_ref(), &token_path, clock.now_ms()).await?
    };

    let servers = store.list_servers(&ServerFilter::default()).await?;
    let live = Arc::new(LivenessMap::load(&servers));
    live.forget_removed(&store.removed_nodes_since(None).await?);
    if let Some(dist) = &args.dist
        && !dist.join(tasknode_render::published::REPO_DIR).is_dir()
        && !dist.join(tasknode_render::published::RELEASES_DIR).is_dir()
    {
        // A build for no package targets (`--targets none`) has releases but no repositories.
        anyhow::bail!(
            "--dist {}: neither repo/ nor releases/ is there; pass the --out of `tasknode-dist build`",
            dist.display()
        );
    }
    let agent_dir = args.agent_dir.clone().or_else(|| {
        args.dist
            .as_ref()
            .map(|d| d.join(tasknode_render::published::AGENTS_DIR))
    });
    let artifacts = match &agent_dir {
        Some(dir) => {
            let what = if args.agent_dir.is_some() {
                "--agent-dir"
            } else {
                "--dist (its agents/ directory)"
            };
            let a = tasknode_render::artifacts::AgentArtifacts::scan(dir).context(what)?;
            for b in &a.binaries {
                tracing::info!(arch = %b.arch, size = b.size, sha256 = %b.sha256, "serving agent binary");
            }
            a
        }
        None => tasknode_render::artifacts::AgentArtifacts::default(),
    };
    let templates = tasknode_render::Templates::embedded().context("loading templates")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let tls = if args.tls {
        let names = tls_names(&args, addr, public_url.as_deref(), &agent_urls);
        let tls =
            ConsoleTls::load_or_create(store.as_ref(), &data.join("tls"), &names, clock.now_ms())
                .await?;
        tracing::info!(ca = %tls.ca_path.display(), ca_sha256 = %tls.ca_sha256(), names = ?names, "serving HTTPS");
        Some(tls)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", reachable(addr));
    write_private(&data.join("console.url"), &format!("{url}\n"))?;
    let public_url = public_url.unwrap_or_else(|| url.clone());
    let agent_urls: Arc<[String]> = if agent_urls.is_empty() {
        Arc::from(vec![public_url.clone()])
    } else {
        Arc::from(agent_urls)
    };
    let log_key =
        crate::keys::log_key(store.as_ref(), &data.join("log-token.key"), clock.now_ms()).await?;
    let log_key_public: Arc<str> = Arc::from(tasknode_protocol::logtoken::encode_key(
        &log_key.verifying_key(),
    ));
    // Follows the store's wake-ups (on PostgreSQL, every console's) to the polls they concern.
    let dispatch = Dispatch::following(store.wakes());
    // One console of those sharing a database runs rollouts and the sweep. A SQLite database
    // has one console (the data directory's lock says so), which takes the lease over from
    // its own earlier run at once.
    let holder = if args.database.is_some() {
        Lease::holder_name()
    } else {
        "the console of this data directory".to_owned()
    };
    let lease = Arc::new(Lease::new(Arc::clone(&store), clock, holder));
    lease.renew().await;
    let rollouts = Arc::new(
        RolloutEngine::new(Arc::clone(&store), Arc::clone(&live), clock, thresholds)
            .with_lease(Arc::clone(&lease)),
    );
    let web = crate::web::state(
        tls.is_some() || public_url.starts_with("https://"),
        Arc::clone(&store) as Arc<dyn crate::store::SessionStore>,
    )
    .context("loading the web console's templates")?;
    let state = AppState {
        web,
        store: Arc::clone(&store),
        live: Arc::clone(&live),
        clock,
        thresholds,
        admin_token,
        credentials: Arc::new(crate::throttle::Throttle::new(password_parallelism())),
        public_url,
        agent_urls,
        templates: Arc::new(templates),
        artifacts: Arc::new(artifacts),
        console_ca: tls.as_ref().map(|t| Arc::from(t.ca_pem.as_str())),
        dist: args.dist.clone().map(Arc::from),
        trusted_proxies: Arc::from(args.trusted_proxies.clone()),
        metrics: Arc::new(
            crate::metrics::Metrics::new().context("registering the console's metrics")?,
        ),
        dispatch: Arc::clone(&dispatch),
        log_key: Arc::new(log_key),
        log_key_public,
        rollouts: Arc::clone(&rollouts),
        log_limits: LogLimits {
            per_task: args.max_task_log,
            per_server: args.max_server_logs,
        },
    };

    println!(
        "tasknode-console listening on {url} (data: {}; web console: {url}/ui/)",
        data.display()
    );
    tracing::info!(
        %url,
        servers = servers.len(),
        interval = ?thresholds.interval,
        degraded_after = ?thresholds.degraded_after,
        stopped_after = ?thresholds.stopped_after,
        "console started"
    );

    let flusher = tokio::spawn(liveness::flush_periodically(
        Arc::clone(&live),
        Arc::clone(&store),
        args.persist_interval,
    ));
    // With PostgreSQL, other consoles write liveness too: load what they wrote since the last
    // load (docs/architecture.md, "Liveness across consoles").
    // Not tied to --persist-interval: each load reads the whole servers table, a cost that
    // grows with the fleet, not with how often agents call.
    let refresh = liveness::REFRESH;
    if args.database.is_some()
        && thresholds.degraded_after <= thresholds.interval + args.persist_interval + refresh
    {
        tracing::warn!(
            degraded_after = ?thresholds.degraded_after,
            interval = ?thresholds.interval,
            persist_interval = ?args.persist_interval,
            refresh = ?refresh,
            "--degraded-after is not above --heartbeat-interval + --persist-interval + the liveness refresh: another console may show a server that heartbeats here as degraded; raise --degraded-after or lower --persist-interval"
        );
    }
    let refresher = args.database.is_some().then(|| {
        tokio::spawn(liveness::refresh_periodically(
            Arc::clone(&live),
            Arc::clone(&store),
            refresh,
        ))
    });
    // Servers removed through another console: their nodes stop authenticating here too.
    let removals = args.database.is_some().then(|| {
        tokio::spawn(crate::removed::refresh_periodically(
            Arc::clone(&live),
            Arc::clone(&store),
            clock,
            refresh,
            crate::removed::CLOCK_ALLOWANCE,
        ))
    });
    let renewer = tokio::spawn(lease::renew_periodically(Arc::clone(&lease)));
    let sweeper = tokio::spawn(tasks::sweep_periodically(
        Arc::clone(&store),
        Arc::clone(&live),
        Arc::clone(&lease),
        state.clock,
        thresholds,
        args.persist_interval,
    ));
    let rollout_ticker = tokio::spawn(rollout::tick_periodically(rollouts, ROLLOUT_TICK));
    let router = app::router(state);
    // Long polls end at once when the console stops, so the graceful shutdown does not wait
    // for them.
    let stopping = {
        let dispatch = Arc::clone(&dispatch);
        async move {
            shutdown_signal().await;
            dispatch.close();
        }
    };
    let limits = crate::server::Limits {
        max_connections: connection_cap(args.max_connections as usize),
        body: args.body_timeout,
        ..crate::server::Limits::default()
    };
    let proxies: Arc<[std::net::IpAddr]> = if args.proxy_protocol {
        Arc::from(args.trusted_proxies.clone())
    } else {
        Arc::from(Vec::new())
    };
    let served = crate::server::serve(
        listener,
        router,
        tls.map(|t| t.server),
        proxies,
        limits,
        stopping,
    )
    .await
    .context("serving HTTP");
    flusher.abort();
    sweeper.abort();
    rollout_ticker.abort();
    renewer.abort();
    for r in [refresher, removals].into_iter().flatten() {
        r.abort();
    }
    lease.release().await;
    let flushed = live.flush(store.as_ref()).await;
    served?;
    let n = flushed.context("persisting liveness at shutdown")?;
    tracing::info!(nodes = n, "console stopped; liveness persisted");
    Ok(())
}

/// The `--agent-url`s, checked: each a console URL (no credentials, query or fragment) with
/// the scheme agents must use, https:// with --tls, else that of --public-url (http:// unless
/// a TLS proxy fronts the console); one scheme for all, so one CA pin covers every URL.
fn agent_urls(args: &ServeArgs, public_url: Option<&str>) -> anyhow::Result<Vec<String>> {
    let scheme = if args.tls {
        "https"
    } else {
        public_url
            .and_then(|u| u.split_once("://"))
            .map_or("http", |(s, _)| s)
    };
    let mut urls: Vec<String> = Vec::new();
    for u in &args.agent_urls {
        let url = tasknode_render::render::console_url("--agent-url", u)?;
        if !url.starts_with(&format!("{scheme}://")) {
            bail!(
                "--agent-url {url}: agents reach this console over {scheme}:// ({}); give a {scheme}:// URL",
                if args.tls {
                    "it serves HTTPS only with --tls"
                } else {
                    "the scheme of --public-url, so one setting covers every URL"
                }
            );
        }
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    Ok(urls)
}

/// The names the console's certificate is issued for: loopback, this host's name, the listen
/// address, the --public-url and --agent-url hosts, and every --tls-name.
fn tls_names(
    args: &ServeArgs,
    addr: SocketAddr,
    public_url: Option<&str>,
    agent_urls: &[String],
) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if !host.is_empty() {
        names.push(host);
    }
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    for url in public_url
        .into_iter()
        .chain(agent_urls.iter().map(String::as_str))
        .filter_map(|u| reqwest::Url::parse(u).ok())
    {
        if let Some(h) = url.host_str() {
            names.push(h.trim_start_matches('[').trim_end_matches(']').to_owned());
        }
    }
    names.extend(args.tls_names.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Concurrent password hashes: two per core.
fn password_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

fn thresholds(args: &ServeArgs) -> anyhow::Result<Thresholds> {
    let interval = args.heartbeat_interval;
    let degraded_after = args.degraded_after.unwrap_or(interval * 3);
    if degraded_after < interval {
        bail!(
            "--degraded-after ({degraded_after:?}) is shorter than --heartbeat-interval ({interval:?}); every server would flap to degraded between heartbeats"
        );
    }
    if args.stopped_after <= degraded_after {
        bail!(
            "--stopped-after ({:?}) must be longer than --degraded-after ({degraded_after:?})",
            args.stopped_after
        );
    }
    Ok(Thresholds {
        interval,
        degraded_after,
        stopped_after: args.stopped_after,
    })
}

/// The address clients on this host should use: a wildcard listen address becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Holds an exclusive lock on DATA/console.lock for the life of the process, so two consoles
/// never share one database.
pub(crate) fn lock_data_dir(data: &Path) -> anyhow::Result<fs::File> {
    let path = data.join("console.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            anyhow::anyhow!(
                "another tasknode-console is already serving {}; stop it or pass another --data",
                data.display()
            )
        },
    )?;
    Ok(file)
}

/// Writes a small file atomically (temporary file, then rename), mode 0600.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
}

/// File descriptors kept for the database, task logs and reads from agents' log services.
const SPARE_FILES: u64 = 256;

/// `--max-connections`, lowered to what the open-file limit allows.
fn connection_cap(wanted: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let Some(fits) = limit.map(|l| l.saturating_sub(SPARE_FILES).max(16)) else {
        return wanted;
    };
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if wanted > fits {
        tracing::warn!(
            wanted,
            serving = fits,
            "--max-connections is above what the open-file limit allows; raise LimitNOFILE (ulimit -n) to serve more"
        );
        return fits;
    }
    wanted
}

/// Every agent keeps a long poll open beside its heartbeats: lift the soft limit on open files
/// to the hard one, which is often 1024 against 524288.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let before = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                tracing::info!(from = ?before, to = ?limit.current, "raised the open-file limit")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not raise the open-file limit; each agent holds up to two connections")
            }
        }
    }
}
