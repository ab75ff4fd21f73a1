//! The consoles an agent may talk to (a load balancer, or the consoles themselves) and which
//! one it talks to now. A request goes to the console in use; when that one cannot be reached,
//! times out or answers 5xx, the same request goes to the next one, round-robin, and the first
//! that answers becomes the console in use. Each console's last error and every switch are
//! kept, so heartbeat.log, `status` and `doctor` can say what happened.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use reqwest::Url;

use crate::client::{ClientError, parse_console_url};

/// The switches kept until the heartbeat loop writes them to heartbeat.log.
const MAX_PENDING_SWITCHES: usize = 64;

/// A move from one console to another, as heartbeat.log records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub at: SystemTime,
    pub from: String,
    pub to: String,
    /// Why the console left failed, when it was the one that failed.
    pub error: Option<String>,
}

impl Switch {
    /// `2026-11-23T21:30:00.123Z switch from=http://a:8080 to=http://b:8080 error="..."`, one
    /// line, the error escaped as heartbeat lines escape theirs.
    pub fn line(&self) -> String {
        format!(
            "{} switch from={} to={} error={}\n",
            humantime::format_rfc3339_millis(self.at),
            self.from,
            self.to,
            self.error
                .as_ref()
                .map_or_else(|| "-".to_owned(), |e| format!("\"{}\"", e.escape_debug())),
        )
    }
}

/// One console as `status` and `doctor` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsoleView {
    pub url: String,
    /// The console requests go to.
    pub in_use: bool,
    /// The last failure seen from it, if its last answer was not a success since.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Health {
    last_error: Vec<Option<String>>,
    switches: Vec<Switch>,
}

#[derive(Debug)]
pub struct Consoles {
    urls: Vec<Url>,
    current: AtomicUsize,
    health: Mutex<Health>,
}

impl Consoles {
    /// The consoles at `urls`, in that order, the first in use; duplicates are dropped. Each
    /// must be http(s) with a host and no credentials or query; at least one is needed.
    pub fn new(urls: &[String]) -> Result<Consoles, ClientError> {
        let mut parsed: Vec<Url> = Vec::new();
        for u in urls {
            let url = parse_console_url(u)?;
            if !parsed.iter().any(|p| same(p, &url)) {
                parsed.push(url);
            }
        }
        if parsed.is_empty() {
            return Err(ClientError::BadUrl {
                value: String::new(),
            });
        }
        Ok(Consoles {
            health: Mutex::new(Health {
                last_error: vec![None; parsed.len()],
                switches: Vec::new(),
            }),
            urls: parsed,
            current: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The index of the console in use.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire) % self.urls.len()
    }

    pub fn url(&self, i: usize) -> &Url {
        &self.urls[i % self.urls.len()]
    }

    /// The console in use, as the config spells it (no trailing slash).
    pub fn current_url(&self) -> String {
        show(self.url(self.current()))
    }

    /// Puts the console at `url` in use, when it is one of these (`status` starts where the
    /// running agent last was).
    pub fn prefer(&self, url: &str) {
        if let Ok(u) = Url::parse(url)
            && let Some(i) = self.urls.iter().position(|p| same(p, &u))
        {
            self.current.store(i, Ordering::Release);
        }
    }

    /// The order a request tries the consoles in: the one in use, then round-robin.
    pub fn order(&self) -> (usize, impl Iterator<Item = usize>) {
        let start = self.current();
        let n = self.urls.len();
        (start, (0..n).map(move |k| (start + k) % n))
    }

    /// Console `i` failed a request with `error`.
    pub fn failed(&self, i: usize, error: &ClientError) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = h.last_error.get_mut(i) {
            *slot = Some(error.to_string());
        }
    }

    /// Console `i` answered a request that started at console `start`: it is in use from now
    /// on, and a move away from `start` is recorded as a switch.
    pub fn answered(&self, start: usize, i: usize) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = h.last_error.get_mut(i) {
            *slot = None;
        }
        if i == start {
            return;
        }
        // Another request may have switched already: record the move once.
        if self
            .current
            .compare_exchange(start, i, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let switch = Switch {
                at: SystemTime::now(),
                from: show(self.url(start)),
                to: show(self.url(i)),
                error: h.last_error.get(start).cloned().flatten(),
            };
            tracing::warn!(from = %switch.from, to = %switch.to, error = switch.error.as_deref().unwrap_or("-"), "switched to another console");
            if h.switches.len() < MAX_PENDING_SWITCHES {
                h.switches.push(switch);
            }
        }
    }

    /// The switches since the last call, oldest first.
    pub fn take_switches(&self) -> Vec<Switch> {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut h.switches)
    }

    /// Every console, the one in use marked, with its last error.
    pub fn views(&self) -> Vec<ConsoleView> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        self.urls
            .iter()
            .enumerate()
            .map(|(i, u)| ConsoleView {
                url: show(u),
                in_use: i == current,
                last_error: h.last_error.get(i).cloned().flatten(),
            })
            .collect()
    }
}

/// A console URL as configs spell it: without the trailing slash of a bare host.
fn show(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

fn same(a: &Url, b: &Url) -> bool {
    show(a) == show(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn unreachable(url: &str) -> ClientError {
        ClientError::Unreachable {
            url: url.to_owned(),
            detail: "connection refused".to_owned(),
            latency: Duration::ZERO,
            tls: false,
        }
    }

    #[test]
    fn the_first_console_that_answers_stays_in_use_and_the_switch_is_recorded() {
        let c = Consoles::new(&[
            "http://a:1".to_owned(),
            "http://b:2/".to_owned(),
            "http://a:1/".to_owned(),
            "http://c:3".to_owned(),
        ])
        .unwrap();
        assert_eq!(c.len(), 3, "duplicates dropped");
        let (start, order) = c.order();
        assert_eq!((start, order.collect::<Vec<_>>()), (0, vec![0, 1, 2]));
        c.failed(0, &unreachable("http://a:1"));
        c.answered(0, 1);
        assert_eq!(c.current_url(), "http://b:2");
        let (start, order) = c.order();
        assert_eq!((start, order.collect::<Vec<_>>()), (1, vec![1, 2, 0]));
        // A second request that started at a, answered by c, lost the race: b stays.
        c.answered(0, 2);
        assert_eq!(c.current(), 1);
        let switches = c.take_switches();
        assert_eq!(switches.len(), 1);
        assert_eq!(
            (switches[0].from.as_str(), switches[0].to.as_str()),
            ("http://a:1", "http://b:2")
        );
        assert!(switches[0].line().contains(
            " switch from=http://a:1 to=http://b:2 error=\"cannot reach the console at http://a:1: connection refused\"\n"
        ));
        assert!(c.take_switches().is_empty());
        let views = c.views();
        assert!(views[1].in_use && views[1].last_error.is_none());
        assert!(views[0].last_error.as_deref().unwrap().contains("refused"));
        c.prefer("http://c:3");
        assert_eq!(c.current_url(), "http://c:3");
        c.prefer("http://elsewhere:9");
        assert_eq!(c.current_url(), "http://c:3");
    }

    #[test]
    fn every_url_is_checked_and_one_is_needed() {
        assert!(Consoles::new(&[]).is_err());
        let err = Consoles::new(&["http://a:1".to_owned(), "http://u:p@b:2".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("u:p@b:2"), "{err}");
    }
}
