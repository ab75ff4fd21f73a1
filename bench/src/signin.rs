//! `tasknode-loadgen signin`: how long a valid web sign-in takes while a flood of wrong
//! passwords is in flight. ATTACKERS tasks each keep one wrong sign-in in flight, sprayed over
//! ADDRESSES loopback source addresses (127.1.0.0/16) and a thousand user names. The valid user
//! has signed in from 127.0.0.1 once before the flood; after WARMUP it signs in PROBES times
//! from there, one after another, and as often from a fresh address each (127.0.0.2, ...),
//! which the console has never seen. Prints one JSON line: both kinds of probes' latencies and
//! statuses, and what the flood was answered.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

/// What the `signin` subcommand is given.
#[derive(Debug, clap::Args)]
pub struct SigninArgs {
    #[arg(long)]
    console: String,
    /// The valid user's name.
    #[arg(long)]
    user: String,
    /// A file holding the valid user's password.
    #[arg(long)]
    password_file: PathBuf,
    /// Wrong sign-ins kept in flight at once.
    #[arg(long, default_value_t = 2000)]
    attackers: usize,
    /// Source addresses the flood is spread over.
    #[arg(long, default_value_t = 200)]
    addresses: usize,
    #[arg(long, value_parser = super::duration, default_value = "3s")]
    warmup: Duration,
    #[arg(long, default_value_t = 20)]
    probes: usize,
}

/// Each attacker walks the sprayed names with this stride, so attackers of one address name
/// different users.
const STRIDE: usize = 7;

/// A sign-in form post. The sign-in form's CSRF check is a double submit (the form's token
/// must equal the cookie's), so any client makes its own token, as a browser's page would.
async fn sign_in(
    http: &reqwest::Client,
    console: &str,
    user: &str,
    password: &str,
) -> reqwest::Result<u16> {
    const TOKEN: &str = "loadgen-sign-in-token-0123456789abcdef";
    let res = http
        .post(format!("{console}/ui/login"))
        .header("Cookie", format!("tasknode_login={TOKEN}"))
        .form(&[
            ("csrf", TOKEN),
            ("user_name", user),
            ("password", password),
            ("next", "/ui/groups"),
        ])
        .send()
        .await?;
    Ok(res.status().as_u16())
}

fn client(local: IpAddr) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .local_address(local)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .context("building an HTTP client")
}

pub async fn run(args: SigninArgs) -> anyhow::Result<()> {
    let console = args.console.trim_end_matches('/').to_owned();
    let password = std::fs::read_to_string(&args.password_file)
        .with_context(|| format!("reading {}", args.password_file.display()))?
        .trim()
        .to_owned();
    let addresses = args.addresses.clamp(1, 60_000);
    let probes = args.probes.max(1);
    let clients: Vec<reqwest::Client> = (0..addresses)
        .map(|i| {
            let [_, _, hi, lo] = u32::try_from(i + 1).unwrap_or(1).to_be_bytes();
            client(IpAddr::V4(Ipv4Addr::new(127, 1, hi, lo)))
        })
        .collect::<anyhow::Result<_>>()?;

    let valid = client(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let before = sign_in(&valid, &console, &args.user, &password).await?;
    anyhow::ensure!(
        before == 303,
        "the valid user could not sign in before the flood ({before}); check --user and --password-file"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let first_other: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let mut flood = Vec::with_capacity(args.attackers);
    for i in 0..args.attackers {
        let (http, console, stop, counts, first_other) = (
            clients[i % addresses].clone(),
            console.clone(),
            Arc::clone(&stop),
            Arc::clone(&counts),
            Arc::clone(&first_other),
        );
        flood.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let user = format!("sprayed-{}", n % 1000);
                n += STRIDE;
                let slot = match sign_in(&http, &console, &user, "wrong-password").await {
                    Ok(401) => 0,
                    Ok(429) => 1,
                    other => {
                        let mut first = first_other.lock().unwrap_or_else(|e| e.into_inner());
                        if first.is_none() {
                            *first = Some(match other {
                                Ok(status) => format!("status {status}"),
                                Err(e) => format!("{e:?}"),
                            });
                        }
                        2
                    }
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let flood_start = Instant::now();
    tokio::time::sleep(args.warmup).await;

    let mut known = Probes::default();
    let mut fresh = Probes::default();
    for i in 0..probes {
        known.probe(&valid, &console, &args.user, &password).await;
        let [_, _, hi, lo] = u32::try_from(i + 2).unwrap_or(2).to_be_bytes();
        let newcomer = client(IpAddr::V4(Ipv4Addr::new(127, 0, hi, lo)))?;
        fresh
            .probe(&newcomer, &console, &args.user, &password)
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let flood_secs = flood_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.abort();
    }
    let answered: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    println!(
        "{}",
        json!({
            "attackers": args.attackers,
            "addresses": addresses,
            "probes": probes,
            "probes_ok": known.ok(),
            "probe_statuses": known.statuses,
            "probe_min_ms": known.at(0.0),
            "probe_p50_ms": known.at(0.5),
            "probe_max_ms": known.at(1.0),
            "fresh_probes_ok": fresh.ok(),
            "fresh_probe_statuses": fresh.statuses,
            "fresh_probe_p50_ms": fresh.at(0.5),
            "fresh_probe_max_ms": fresh.at(1.0),
            "flood_401": counts[0].load(Ordering::Relaxed),
            "flood_429": counts[1].load(Ordering::Relaxed),
            "flood_other": counts[2].load(Ordering::Relaxed),
            "flood_first_other": first_other.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "flood_answers_per_s": answered as f64 / flood_secs,
        })
    );
    Ok(())
}

/// Timed valid sign-ins and their statuses (0: no answer).
#[derive(Default)]
struct Probes {
    ms: Vec<f64>,
    statuses: Vec<u16>,
}

impl Probes {
    async fn probe(&mut self, http: &reqwest::Client, console: &str, user: &str, password: &str) {
        let t = Instant::now();
        let status = sign_in(http, console, user, password).await.unwrap_or(0);
        self.ms.push(t.elapsed().as_secs_f64() * 1000.0);
        self.statuses.push(status);
    }

    fn ok(&self) -> usize {
        self.statuses.iter().filter(|s| **s == 303).count()
    }

    /// The `q` quantile of the latencies (0: min, 1: max).
    fn at(&self, q: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => 0.0,
            n => sorted[((n - 1) as f64 * q).round() as usize],
        }
    }
}
