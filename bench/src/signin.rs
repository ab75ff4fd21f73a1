//! `tasknode-loadgen signin`: how long a valid web sign-in takes while a flood of wrong
//! passwords is in flight. ATTACKERS tasks each keep one wrong sign-in in flight, sprayed over
//! ADDRESSES loopback source addresses (127.1.0.0/16) and a thousand user names; after WARMUP,
//! a valid user signs in PROBES times from 127.0.0.1, one after another. Prints one JSON line:
//! the probes' latencies and statuses and what the flood was answered.

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

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let mut flood = Vec::with_capacity(args.attackers);
    for i in 0..args.attackers {
        let (http, console, stop, counts) = (
            clients[i % addresses].clone(),
            console.clone(),
            Arc::clone(&stop),
            Arc::clone(&counts),
        );
        flood.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let user = format!("sprayed-{}", n % 1000);
                n += STRIDE;
                let slot = match sign_in(&http, &console, &user, "wrong-password").await {
                    Ok(401) => 0,
                    Ok(429) => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let flood_start = Instant::now();
    tokio::time::sleep(args.warmup).await;

    let mut latencies = Vec::with_capacity(probes);
    let mut ok = 0;
    let mut statuses = Vec::with_capacity(probes);
    let valid = client(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    for _ in 0..probes {
        let t = Instant::now();
        let status = sign_in(&valid, &console, &args.user, &password)
            .await
            .unwrap_or(0);
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        statuses.push(status);
        if status == 303 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let flood_secs = flood_start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.abort();
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let answered: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    println!(
        "{}",
        json!({
            "attackers": args.attackers,
            "addresses": addresses,
            "probes": probes,
            "probes_ok": ok,
            "probe_statuses": statuses,
            "probe_min_ms": sorted.first().copied().unwrap_or(0.0),
            "probe_p50_ms": at(0.5),
            "probe_max_ms": sorted.last().copied().unwrap_or(0.0),
            "flood_401": counts[0].load(Ordering::Relaxed),
            "flood_429": counts[1].load(Ordering::Relaxed),
            "flood_other": counts[2].load(Ordering::Relaxed),
            "flood_answers_per_s": answered as f64 / flood_secs,
        })
    );
    Ok(())
}
