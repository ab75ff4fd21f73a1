//! `tasknode run`: the agent's main loop. It heartbeats at the interval the console asks for,
//! records every attempt in heartbeat.log, measures its clock offset from each answer and takes
//! no work while that offset is beyond 120 s. Failures (network errors, non-200 answers) are
//! retried with backoff and jitter and never end the process. Beside the heartbeats it polls for
//! tasks and runs them ([`crate::tasks`]). On SIGTERM or SIGINT it drains (no new tasks; running
//! ones may finish within the drain timeout), tells the console it is stopping, then exits.
//! Under systemd it reports readiness with sd_notify.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tasknode_protocol::wire::HeartbeatRequest;
use tasknode_protocol::{MAX_CLOCK_OFFSET_MS, NetworkType, concurrency, layout};
use tokio::signal::unix::{SignalKind, signal};

use crate::backoff::Backoff;
use crate::cli::RunArgs;
use crate::client::ConsoleClient;
use crate::config::{self, Config, Node};
use crate::logfile::{DEFAULT_MAX_BYTES, HeartbeatEntry, RotatingFile};
use crate::logserver::{self, Allow, LogKey};
use crate::metrics::AgentMetrics;
use crate::tasks::{Runner, Settings};
use crate::update::{self, Updater};
use crate::{Exit, env, facts};

/// Interval used until the console has named one.
const FIRST_INTERVAL: Duration = Duration::from_secs(10);
/// How long the goodbye to the console may take at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    // First of all, before the config or anything else this version might crash on: a version
    // on probation that keeps dying is put back here.
    if args.trial.is_none() {
        probation_check();
    }
    let path = &args.config.config;
    let (config, node) = Config::load_enrolled(path)?;
    refuse_root_over_others_paths(path, &config)?;
    fs::create_dir_all(&config.log_dir)
        .with_context(|| format!("creating log directory {}", config.log_dir.display()))?;
    init_logging(&config.log_dir)?;
    if let Some(w) = config::permission_warning(path) {
        tracing::warn!("{w}");
    }

    let client = Arc::new(ConsoleClient::new(
        &config.console_urls(),
        config.console_ca.as_deref(),
    )?);
    if let Some(n) = args.trial {
        return trial(&client, &node, &config, n).await;
    }
    crate::tasks::contain::init();
    let update_settings = update::Settings::from_config(&config)?;
    // Held for the life of the process: `tasknode update` refuses to swap binaries under a
    // running agent.
    let packaged = config.install_method.is_package();
    let _lock = match (!packaged).then(|| update::lock(path)).transpose() {
        Ok(Some(Some(lock))) => Some(lock),
        Ok(None) => None,
        Ok(Some(None)) => {
            tracing::warn!("another agent runs with this config");
            None
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot take the agent's lock");
            None
        }
    };
    let facts = facts::collect(&env::root());
    let slots = concurrency::max_concurrency(facts.cpu_cores, facts.memory_bytes);
    let hb_log = RotatingFile::open(&config.log_dir.join("heartbeat.log"), DEFAULT_MAX_BYTES)
        .with_context(|| format!("opening heartbeat.log in {}", config.log_dir.display()))?;
    tracing::info!(
        version = crate::version(),
        server = %node.server_name,
        group = %node.group,
        node_id = %node.id,
        console = %config.console_urls().join(" "),
        slots,
        "agent started"
    );
    if let Some(secs) = env::TEST_EXIT_AFTER_SECS.and_then(|s| s.parse::<u64>().ok()) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            tracing::error!(
                secs,
                "this test build exits 1 after {secs} s, as it was built to"
            );
            std::process::exit(1);
        });
    }
    let settings = Settings::from_config(&config);
    if let Err(reason) = &settings.run_as {
        tracing::error!("{reason}; tasks given to this server fail until it is fixed");
    }
    let runner = Runner::new(Arc::clone(&client), node.clone(), settings);
    runner.start()?;
    let mut updater = Updater::new(
        Arc::clone(&client),
        node.clone(),
        update_settings,
        path.clone(),
    );
    updater.start();
    // A version on probation takes no tasks: if it is rolled back, the exec would lose them.
    if updater.probation_deadline().is_some() {
        runner.set_paused(true);
    }
    let poller = tokio::spawn(Arc::clone(&runner).poll_loop());
    let metrics = Arc::new(AgentMetrics::new(slots));
    if let Some(listen) = &config.metrics.listen {
        start_metrics(listen, &config, Arc::clone(&metrics), Arc::clone(&runner)).await;
    }
    let log_key: LogKey = Arc::default();
    let log_port = if node.network == NetworkType::Classic {
        start_log_service(&config, &node, Arc::clone(&log_key), Arc::clone(&runner)).await
    } else {
        None
    };
    // Signal handlers before readiness: a stop that follows READY=1 at once must be clean.
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    notify(&[sd_notify::NotifyState::Ready]);

    let mut beat = Heartbeat {
        client: &client,
        node: &node,
        log: hb_log,
        backoff: Backoff::default(),
        interval: FIRST_INTERVAL,
        offset_ms: None,
        skewed: false,
        slots,
        runner: &runner,
        log_port,
        log_key: &log_key,
        desired: None,
        metrics: &metrics,
    };
    let mut next = Duration::ZERO;
    let mut preparing: Option<(String, update::Preparing)> = None;
    let mut removed = None;
    let reason = loop {
        let probation = updater.probation_deadline();
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            said = client.removed() => {
                removed = Some(said);
                break "removed";
            }
            (delay, answered) = async { tokio::time::sleep(next).await; beat.once().await } => {
                next = delay;
                let on_probation = updater.probation_deadline().is_some();
                let wanted = updater.on_heartbeat(answered, beat.desired.as_deref());
                if on_probation && updater.probation_deadline().is_none() {
                    runner.set_paused(false);
                }
                if let Some(version) = wanted
                    && preparing.is_none()
                {
                    let task = update::spawn_prepare(&updater, Arc::clone(&runner), version.clone());
                    preparing = Some((version, task));
                }
            }
            joined = async { (&mut preparing.as_mut().expect("guarded by the select condition").1).await }, if preparing.is_some() => {
                let version = preparing.take().map(|(v, _)| v).unwrap_or_default();
                let prepared = match joined {
                    Ok(Ok(p)) => p,
                    Ok(Err((why, tell))) => {
                        updater.failed(&version, &why, tell);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the update task ended abnormally");
                        runner.set_paused(false);
                        continue;
                    }
                };
                // No heartbeats from here on: the new version sends them during its trial.
                let outcome = tokio::select! {
                    r = try_and_switch(&updater, &prepared) => r,
                    _ = term.recv() => {
                        updater.failed(&prepared.to, "stopped during the update", false);
                        break "SIGTERM";
                    }
                };
                if let Err(e) = outcome {
                    updater.failed(&prepared.to, &format!("{e:#}"), true);
                }
                runner.set_paused(false);
                next = Duration::ZERO;
            }
            () = async { tokio::time::sleep_until(probation.expect("guarded by the select condition")).await }, if probation.is_some() => {
                updater.roll_back_and_exec();
            }
        }
    };

    if let Some(said) = removed {
        poller.abort();
        // The last line of heartbeat.log says it (`status` reads it), whichever call was told.
        let entry = HeartbeatEntry {
            at: SystemTime::now(),
            status: Some(410),
            latency: Duration::ZERO,
            offset_ms: None,
            console: console_field(&client),
            error: Some(format!("server removed from the console: {said}")),
        };
        if let Err(e) = beat.log.write_all(entry.line().as_bytes()) {
            tracing::error!(error = %e, "cannot write heartbeat.log");
        }
        return idle_removed(&said, &runner, &mut term, &mut int).await;
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    let drain = config.drain_timeout();
    tracing::info!(
        signal = reason,
        running = runner.running(),
        drain_timeout_secs = drain.as_secs(),
        "stopping: taking no new tasks, waiting for running ones"
    );
    // Heartbeats go on while tasks drain, so the console keeps the server available.
    let draining = runner.drain(drain, SHUTDOWN_TIMEOUT);
    tokio::pin!(draining);
    loop {
        tokio::select! {
            () = &mut draining => break,
            (delay, _) = async { tokio::time::sleep(next).await; beat.once().await } => next = delay,
        }
    }
    poller.abort();
    tracing::info!("telling the console this agent stops");
    let goodbye = format!("agent received {reason}");
    match tokio::time::timeout(
        SHUTDOWN_TIMEOUT,
        client.shutdown(&node.id, &node.secret, &goodbye),
    )
    .await
    {
        Ok(Ok(())) => tracing::info!("console told; agent stopped"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not tell the console; it will mark this server stopped when heartbeats stay away")
        }
        Err(_) => tracing::warn!(
            "the console did not answer within 5 s; it will mark this server stopped when heartbeats stay away"
        ),
    }
    Ok(Exit::Success)
}

/// After the console said this server was removed: says so once, with how to enroll again,
/// stops the tasks it still runs (the console let them go), and idles until stopped. Idle
/// rather than exit: every service manager the agent runs under restarts an agent that exits
/// (systemd's unit has Restart=always), and each restart would knock again.
async fn idle_removed(
    said: &str,
    runner: &Runner,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Exit> {
    tracing::error!(
        "this server was removed from the console, which answered: {said}. The agent no longer \
         asks the console for anything and stays idle until it is stopped. To enroll this host \
         again: add it to a resource group in the console, then run that group's install \
         command on this host with --reinstall (`... | sh -s -- --reinstall`), which enrolls \
         it anew and restarts the agent (or run `tasknode enroll` and restart the agent); to \
         remove the agent, run the install command with --uninstall"
    );
    notify(&[sd_notify::NotifyState::Status(
        "removed from the console; idle (see agent.log for how to enroll again)",
    )]);
    if runner.running() > 0 {
        runner.drain(Duration::ZERO, Duration::from_secs(1)).await;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("agent stopped (this server is removed from the console)");
    Ok(Exit::Success)
}

/// Counts this start against a probation in progress; when the previous version was put back,
/// runs it in place of this process (see [`crate::probation::check_at_start`]).
fn probation_check() {
    let Ok(paths) = update::Paths::current() else {
        return;
    };
    if let crate::probation::StartCheck::RolledBack(reason) =
        crate::probation::check_at_start(&paths, crate::version(), crate::client::now_ms())
    {
        eprintln!("tasknode: {reason}; starting it");
        let e = update::exec(&paths);
        eprintln!(
            "tasknode: cannot start {}: {e}; this version keeps running",
            paths.exe.display()
        );
    }
}

/// Tries the prepared version, puts it in place and runs it. Returns only on failure, with
/// the previous binary in place.
async fn try_and_switch(updater: &Updater, prepared: &update::Prepared) -> anyhow::Result<()> {
    let paths = updater
        .paths
        .as_ref()
        .context("the agent cannot tell where its binary is")?;
    update::trial(paths, &updater.config, &updater.settings).await?;
    update::swap(paths, prepared, updater.settings.health_timeout)?;
    tracing::info!(to = %prepared.to, path = %paths.exe.display(), "the new version passed its trial; starting it");
    notify(&[sd_notify::NotifyState::Reloading]);
    let e = update::exec(paths);
    // Still here: the new binary could not be started. Put the old one back.
    let reason = format!("starting {}: {e}", paths.exe.display());
    if let Some(state) = paths.read_state() {
        update::roll_back(paths, &state, &reason)?;
    }
    anyhow::bail!(reason)
}

/// `run --trial N`: heartbeats as this server's agent until N are answered, then exits 0.
/// It is the child of the agent that is updating, and dies with it.
async fn trial(
    client: &ConsoleClient,
    node: &Node,
    config: &Config,
    n: u32,
) -> anyhow::Result<Exit> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::Kill));
    let mut log = RotatingFile::open(&config.log_dir.join("heartbeat.log"), DEFAULT_MAX_BYTES)
        .with_context(|| format!("opening heartbeat.log in {}", config.log_dir.display()))?;
    let mut answered = 0;
    let mut backoff = Backoff::default();
    tracing::info!(version = crate::version(), heartbeats = n, "on trial");
    while answered < n {
        let req = HeartbeatRequest {
            agent_version: crate::version().to_owned(),
            clock_offset_ms: None,
            running_tasks: 0,
            free_slots: 0,
            log_port: None,
        };
        let at = SystemTime::now();
        let result = client.heartbeat(&node.id, &node.secret, &req).await;
        let (entry, wait) = match &result {
            Ok(a) => {
                answered += 1;
                backoff.reset();
                let interval = Duration::from_secs(a.body.heartbeat_interval_secs.max(1));
                (
                    HeartbeatEntry {
                        at,
                        status: Some(a.status),
                        latency: a.latency,
                        offset_ms: a.offset_ms,
                        console: console_field(client),
                        error: None,
                    },
                    interval.min(Duration::from_secs(1)),
                )
            }
            Err(e) => (
                HeartbeatEntry {
                    at,
                    status: e.status(),
                    latency: e.latency(),
                    offset_ms: e.offset_ms(),
                    console: console_field(client),
                    error: Some(e.to_string()),
                },
                backoff.next_delay().min(Duration::from_secs(1)),
            ),
        };
        let _ = log.write_all(entry.line().as_bytes());
        if answered < n {
            tokio::time::sleep(wait).await;
        }
    }
    tracing::info!(version = crate::version(), "trial passed");
    Ok(Exit::Success)
}

/// The console heartbeat.log names on each line, when there are several to tell apart.
fn console_field(client: &ConsoleClient) -> Option<String> {
    let consoles = client.consoles();
    (consoles.len() > 1).then(|| consoles.current_url())
}

struct Heartbeat<'a> {
    client: &'a ConsoleClient,
    runner: &'a Runner,
    log_port: Option<u16>,
    log_key: &'a LogKey,
    node: &'a Node,
    log: RotatingFile,
    backoff: Backoff,
    interval: Duration,
    offset_ms: Option<i64>,
    skewed: bool,
    slots: u32,
    /// The version the console last asked for.
    desired: Option<String>,
    metrics: &'a AgentMetrics,
}

impl Heartbeat<'_> {
    /// Sends one heartbeat, records it, and returns how long to wait before the next and
    /// whether it was answered.
    async fn once(&mut self) -> (Duration, bool) {
        let req = HeartbeatRequest {
            agent_version: crate::version().to_owned(),
            clock_offset_ms: self.offset_ms,
            running_tasks: self.runner.running(),
            free_slots: if self.skewed {
                0
            } else {
                self.slots.saturating_sub(self.runner.running())
            },
            log_port: self.log_port,
        };
        let at = SystemTime::now();
        let result = self
            .client
            .heartbeat(&self.node.id, &self.node.secret, &req)
            .await;
        let console = console_field(self.client);
        let entry = match &result {
            Ok(a) => HeartbeatEntry {
                at,
                status: Some(a.status),
                latency: a.latency,
                offset_ms: a.offset_ms,
                console,
                error: None,
            },
            Err(e) => HeartbeatEntry {
                at,
                status: e.status(),
                latency: e.latency(),
                offset_ms: e.offset_ms(),
                console,
                error: Some(e.to_string()),
            },
        };
        // Moves between consoles (by this heartbeat, polls or task reports) come first, so
        // the last line stays a heartbeat.
        let mut lines: String = self
            .client
            .consoles()
            .take_switches()
            .iter()
            .map(crate::consoles::Switch::line)
            .collect();
        lines.push_str(&entry.line());
        if let Err(e) = self.log.write_all(lines.as_bytes()) {
            tracing::error!(error = %e, "cannot write heartbeat.log");
        }
        if let Some(offset) = entry.offset_ms {
            self.observe_offset(offset);
        }
        self.metrics.heartbeat(
            result.is_ok(),
            crate::client::now_ms(),
            entry.offset_ms,
            self.skewed,
        );
        match result {
            Ok(answer) => {
                if self.backoff.failures() > 0 {
                    tracing::info!(
                        failures = self.backoff.failures(),
                        "console reachable again"
                    );
                }
                self.backoff.reset();
                if let Some(key) = answer
                    .body
                    .log_key
                    .as_deref()
                    .and_then(tasknode_protocol::logtoken::decode_key)
                {
                    *self.log_key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
                }
                self.interval = Duration::from_secs(answer.body.heartbeat_interval_secs.max(1));
                self.desired = answer.body.desired_version;
                (self.interval, true)
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tracing::warn!(
                    error = %e,
                    failures = self.backoff.failures(),
                    retry_in_ms = delay.as_millis() as u64,
                    "heartbeat failed"
                );
                (delay, false)
            }
        }
    }

    fn observe_offset(&mut self, offset: i64) {
        self.offset_ms = Some(offset);
        let skewed = offset.abs() > MAX_CLOCK_OFFSET_MS;
        if skewed && !self.skewed {
            let side = if offset > 0 { "behind" } else { "ahead of" };
            tracing::error!(
                offset_ms = offset,
                "this host's clock is {} s {side} the console's (limit 120 s); taking no work until it is fixed: run `chronyc makestep` or `ntpdate -u <ntp server>` and keep chronyd or ntpd running",
                offset.abs() / 1000
            );
        } else if !skewed && self.skewed {
            tracing::info!(
                offset_ms = offset,
                "clock offset back within 120 s; taking work again"
            );
        }
        self.skewed = skewed;
        self.runner.set_skewed(skewed);
    }
}

/// agent.log (rotating) plus standard error; `TASKNODE_LOG` sets the filter, `info` by default.
/// Root never writes where another user can plant a link, nor takes orders from a config such
/// a user can edit: as root the agent runs only when its config, log and work directories are
/// root's alone (docs/architecture.md, Privilege model). The services run it as the agent user.
fn refuse_root_over_others_paths(path: &Path, config: &Config) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    for p in [path, config.log_dir.as_path(), config.work_dir().as_path()] {
        if let Some((part, uid)) = crate::trust::changeable_by_others(p) {
            anyhow::bail!(
                "refusing to run as root: {} can be changed by uid {uid}, so root would follow what that user plants there; run the agent as that user (systemctl start {service}, {init} start or {serverctl} start do)",
                part.display(),
                service = layout::SERVICE,
                init = layout::SCRIPT_INIT,
                serverctl = layout::ROOT_SERVERCTL,
            );
        }
    }
    Ok(())
}

/// The log filter `TASKNODE_LOG` sets, `info` without it. Targets rather than EnvFilter: the
/// same `info` or `tasknode=debug,hyper=warn` syntax without span and field matchers, which
/// need regex and would add half a MiB to the static agent.
fn log_filter(value: Option<String>) -> anyhow::Result<tracing_subscriber::filter::Targets> {
    let value = value.unwrap_or_else(|| "info".to_owned());
    value.parse().with_context(|| {
        format!(
            "{} is {value:?}, not a log filter; set it like `info` or `tasknode=debug,warn`",
            env::LOG
        )
    })
}

fn init_logging(log_dir: &Path) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = log_filter(std::env::var(env::LOG).ok())?;
    let path = log_dir.join("agent.log");
    let file = RotatingFile::open(&path, DEFAULT_MAX_BYTES)
        .with_context(|| format!("opening {}", path.display()))?;
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_ansi(false).with_writer(Mutex::new(file)))
        .with(
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .try_init()
        .context("setting up logging")?;
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os(env::NOTIFY_SOCKET).is_some()
        && let Err(e) = sd_notify::notify(false, state)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Starts the log service of a classic server; returns its port, or `None` (said in agent.log)
/// when it cannot run: the console then cannot show this server's task logs.
async fn start_log_service(
    config: &Config,
    node: &Node,
    key: LogKey,
    runner: Arc<Runner>,
) -> Option<u16> {
    let listen = config.logs.listen.as_deref().unwrap_or("0.0.0.0:8000");
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        tracing::error!(
            listen,
            "[logs] listen is not an address like 0.0.0.0:8000; the log service is off"
        );
        return None;
    };
    let allow = match &config.logs.allow {
        Some(list) => match Allow::parse(list) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("{e}; the log service is off");
                return None;
            }
        },
        None => {
            // Every console may read the logs: whichever one the operator asks.
            let mut ips = Vec::new();
            let mut failed = Vec::new();
            for url in config.console_urls() {
                match console_addresses(&url).await {
                    Ok(found) => ips.extend(found),
                    Err(e) => failed.push(format!("{url}: {e:#}")),
                }
            }
            if ips.is_empty() {
                tracing::error!(error = %failed.join("; "), "cannot resolve the console's host for the log service's allow list; set [logs] allow; the log service is off");
                return None;
            }
            if !failed.is_empty() {
                tracing::warn!(error = %failed.join("; "), "some consoles' hosts do not resolve: they cannot read task logs; set [logs] allow to name them");
            }
            Allow::from_ips(ips)
        }
    };
    let router = logserver::router(&node.id, config.log_dir.clone(), allow.clone(), key, runner);
    match logserver::spawn(addr, router, allow.clone()).await {
        Ok(port) => {
            tracing::info!(%addr, port, allow = %allow.describe(), "log service listening");
            Some(port)
        }
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for the log service; the console cannot show this server's task logs until it can (is the port taken?)");
            None
        }
    }
}

/// Starts the metrics endpoint `[metrics] listen` names. A bad setting or a taken port is said
/// in agent.log and leaves it off: metrics never keep the agent from running tasks.
async fn start_metrics(
    listen: &str,
    config: &Config,
    metrics: Arc<AgentMetrics>,
    runner: Arc<Runner>,
) {
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        tracing::error!(
            listen,
            "[metrics] listen is not an address like 127.0.0.1:9465; metrics are off"
        );
        return;
    };
    let allow = match &config.metrics.allow {
        Some(list) => match Allow::parse_setting("[metrics] allow", list) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("{e}; metrics are off");
                return;
            }
        },
        None => Allow::from_ips([
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]),
    };
    let router = crate::metrics::router(metrics, runner);
    match logserver::spawn(addr, router, allow.clone()).await {
        Ok(port) => tracing::info!(%addr, port, allow = %allow.describe(), "metrics listening"),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for metrics (is the port taken?); metrics are off")
        }
    }
}

/// The addresses the console URL's host resolves to.
async fn console_addresses(url: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let url = reqwest::Url::parse(url).context("console URL")?;
    let host = url.host_str().context("console URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?;
    Ok(addrs.map(|a| a.ip()).collect())
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    fn enabled(filter: &Targets, target: &str, level: Level) -> bool {
        filter.would_enable(target, &level)
    }

    #[test]
    fn the_log_filter_is_info_unless_tasknode_log_says_otherwise() {
        let default = super::log_filter(None).expect("the default filter");
        assert!(enabled(&default, "tasknode", Level::INFO));
        assert!(!enabled(&default, "tasknode", Level::DEBUG));
        let set = super::log_filter(Some("tasknode=debug,hyper=warn".to_owned())).expect("a list");
        assert!(enabled(&set, "tasknode::update", Level::DEBUG));
        assert!(!enabled(&set, "hyper::proto", Level::INFO));
    }

    #[test]
    fn a_log_filter_it_cannot_read_is_refused_naming_tasknode_log() {
        let err = super::log_filter(Some("tasknode=loud".to_owned())).expect_err("not a level");
        let text = format!("{err:#}");
        assert!(text.contains("TASKNODE_LOG is \"tasknode=loud\""), "{text}");
        assert!(text.contains("set it like `info`"), "{text}");
    }
}
