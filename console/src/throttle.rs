//! Password checks are bounded, because each one costs Argon2 time and memory that anyone on
//! the network can ask for (web sign-in, enrollment with an access key).
//!
//! - [`Gate`]: a fixed number of hashes run at once and a bounded number wait; past that the
//!   answer is "busy, retry after" at once, without hashing. A freed hashing place goes to the
//!   waiting check whose address has the fewest recent failures (then one whose address
//!   signed in lately, then the oldest), and when
//!   every place is taken a newcomer may take a waiting place from a worse-placed check (more
//!   failures, or as many and more places held). So addresses that keep failing can neither
//!   keep a clean one (a user who has not failed) out of the queue nor ahead of it in line.
//! - [`Backoff`]: after [`FREE_FAILURES`] failures within [`WINDOW`], a user name or a client
//!   address is refused without hashing for a delay that doubles with each further failure (up
//!   to [`MAX_DELAY`]); a success clears both. Each table holds at most a fixed number of
//!   entries and drops the oldest harmless ones first, so spraying names or addresses cannot
//!   grow it.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Failures allowed within [`WINDOW`] before a user name or address is slowed down.
pub const FREE_FAILURES: u32 = 5;
/// Failures older than this (since the last one) are forgotten.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first delay; each further failure doubles it.
pub const FIRST_DELAY: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5 * 60);
/// Entries each backoff table keeps at most.
pub const MAX_ENTRIES: usize = 10_000;
/// Waiting places per hashing place.
pub const WAITING_PER_WORKER: usize = 8;
/// What a "busy" answer asks the client to wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Why a password check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every hashing and waiting place is taken.
    Busy { retry_after: Duration },
    /// Too many recent failures for this user name or from this address.
    Backoff { retry_after: Duration },
}

impl Refused {
    pub fn retry_after(self) -> Duration {
        match self {
            Refused::Busy { retry_after } | Refused::Backoff { retry_after } => retry_after,
        }
    }

    /// Whole seconds to send in `Retry-After` (at least 1).
    pub fn retry_after_secs(self) -> u64 {
        let d = self.retry_after();
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    /// What a person is told.
    pub fn message(self) -> String {
        match self {
            Refused::Busy { .. } => format!(
                "the console is checking too many passwords right now; try again in {} s",
                self.retry_after_secs()
            ),
            Refused::Backoff { .. } => format!(
                "too many failed sign-ins for this user name or from this address; try again in {} s",
                self.retry_after_secs()
            ),
        }
    }
}

/// The key an address is counted under: an IPv4 address, or the /64 of an IPv6 one (a single
/// host often holds a whole /64).
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// How long an address that signed in stays known (preferred over unknown addresses).
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The password checks of the whole console: the gate, the two backoff tables, and the
/// addresses that signed in lately.
pub struct Throttle {
    gate: Arc<Gate>,
    users: Backoff<String>,
    addresses: Backoff<IpAddr>,
    known: Mutex<HashMap<IpAddr, Instant>>,
}

/// A password check that has its hashing place: run it with [`Attempt::verify`]. Dropping it
/// gives the place back and records nothing.
pub struct Attempt<'t> {
    throttle: &'t Throttle,
    ticket: Ticket,
    user: String,
    addr: IpAddr,
}

impl Attempt<'_> {
    /// Runs `verify` (Argon2) on the blocking pool and records the outcome: a failure counts
    /// towards the user name's and the address's backoff, a success clears both and makes the
    /// address known.
    pub async fn verify(
        self,
        verify: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<bool, Refused> {
        let Attempt {
            throttle,
            ticket,
            user,
            addr,
        } = self;
        let ok = tokio::task::spawn_blocking(move || {
            let _held = ticket;
            verify()
        })
        .await
        .map_err(|_| Refused::Busy {
            retry_after: BUSY_RETRY_AFTER,
        })?;
        let now = Instant::now();
        if ok {
            throttle.users.clear(&user);
            throttle.addresses.clear(&addr);
            throttle.remember(addr, now);
        } else {
            throttle.users.failed(user, now);
            throttle.addresses.failed(addr, now);
        }
        Ok(ok)
    }
}

impl Throttle {
    /// `workers` hashes at once, `workers × WAITING_PER_WORKER` waiting.
    pub fn new(workers: usize) -> Throttle {
        let workers = workers.max(1);
        Throttle {
            gate: Arc::new(Gate::new(workers, workers * WAITING_PER_WORKER)),
            users: Backoff::new(MAX_ENTRIES),
            addresses: Backoff::new(MAX_ENTRIES),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a password check for `user` from `peer`: refused at once while the user name or
    /// address is backing off or the gate is full; otherwise waits for a hashing place. Do
    /// what the check needs (look the user up) after this, so refused requests cost nothing.
    pub async fn begin(&self, user: &str, peer: IpAddr) -> Result<Attempt<'_>, Refused> {
        let (user, addr) = (user.to_owned(), address_key(peer));
        let now = Instant::now();
        let wait = [
            self.users.blocked(&user, now),
            self.addresses.blocked(&addr, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(retry_after) = wait {
            return Err(Refused::Backoff { retry_after });
        }
        // Fewer failures first; among as many, an address that signed in lately first.
        let failures = u64::from(self.addresses.failures(&addr, now));
        let rank = failures * 2 + u64::from(!self.is_known(&addr, now));
        let ticket = Gate::enter(&self.gate, addr, rank).await?;
        Ok(Attempt {
            throttle: self,
            ticket,
            user,
            addr,
        })
    }

    /// Runs other Argon2 work (hashing a new user's password, asked by the admin) through the
    /// gate, counted under `lane`, ahead of every password check.
    pub async fn work<T: Send + 'static>(
        &self,
        lane: IpAddr,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        Gate::run(&self.gate, address_key(lane), 0, f).await
    }

    fn lock_known(&self) -> MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_known(&self, addr: &IpAddr, now: Instant) -> bool {
        self.lock_known()
            .get(addr)
            .is_some_and(|at| now.saturating_duration_since(*at) <= KNOWN_FOR)
    }

    /// Remembers that `addr` signed in, dropping the oldest entry when the table is full.
    fn remember(&self, addr: IpAddr, now: Instant) {
        let mut known = self.lock_known();
        if !known.contains_key(&addr) && known.len() >= MAX_ENTRIES {
            let oldest = known.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a);
            if let Some(a) = oldest {
                known.remove(&a);
            }
        }
        known.insert(addr, now);
    }
}

/// A fixed number of hashing places and a bounded number of waiting places, handed out by
/// standing rather than by arrival: a freed hashing place goes to the waiting check whose
/// address has the fewest recent failures (then the oldest).
pub struct Gate {
    workers: usize,
    /// Hashing and waiting places together.
    capacity: usize,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    next: u64,
    /// Checks hashing now.
    running: usize,
    /// Every admitted check, by admission order.
    tickets: BTreeMap<u64, Entry>,
    /// How many admitted checks each address has.
    per_lane: HashMap<IpAddr, usize>,
}

struct Entry {
    lane: IpAddr,
    /// Its standing when it was admitted (lower is better: fewer recent failures of its
    /// address, then an address that signed in lately): the higher, the later it hashes and
    /// the sooner it gives up its place.
    rank: u64,
    /// Set while it waits: sending on it starts the check; dropping it (eviction) tells the
    /// waiter it lost its place.
    go: Option<oneshot::Sender<()>>,
}

/// An admitted check's place; dropping it gives the place back (and a hashing place to the
/// best-placed waiting check).
struct Ticket {
    gate: Arc<Gate>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        let Some(e) = st.tickets.remove(&self.id) else {
            return;
        };
        st.release(e.lane);
        if e.go.is_none() {
            st.running -= 1;
            st.promote(self.gate.workers);
        }
    }
}

impl GateState {
    fn release(&mut self, lane: IpAddr) {
        if let Some(n) = self.per_lane.get_mut(&lane) {
            *n -= 1;
            if *n == 0 {
                self.per_lane.remove(&lane);
            }
        }
    }

    /// Starts waiting checks, best placed first, while hashing places are free.
    fn promote(&mut self, workers: usize) {
        while self.running < workers {
            let best = self
                .tickets
                .iter()
                .filter(|(_, e)| e.go.is_some())
                .min_by_key(|(id, e)| (e.rank, **id))
                .map(|(id, _)| *id);
            let Some(id) = best else { return };
            let go = self.tickets.get_mut(&id).and_then(|e| e.go.take());
            self.running += 1;
            if let Some(go) = go {
                // A waiter that went away drops its ticket, which gives the place back.
                let _ = go.send(());
            }
        }
    }
}

impl Gate {
    pub fn new(workers: usize, waiting: usize) -> Gate {
        let workers = workers.max(1);
        Gate {
            workers,
            capacity: workers + waiting,
            state: Mutex::new(GateState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Every update leaves the state whole, so a poisoned lock is taken over.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for `lane` (standing `rank`, lower is better): a hashing place when one
    /// is free (then no receiver is returned), else a waiting one. When all are taken, it
    /// takes the place of the worst-placed waiting check (highest rank, then the address
    /// holding most places, then the newest) if that one is worse placed than this one would
    /// be; else the answer is busy.
    fn admit(
        gate: &Arc<Gate>,
        lane: IpAddr,
        rank: u64,
    ) -> Result<(Ticket, Option<oneshot::Receiver<()>>), Refused> {
        let mut st = gate.lock();
        if st.tickets.len() >= gate.capacity {
            let mine = (rank, st.per_lane.get(&lane).copied().unwrap_or(0) + 1);
            let victim = st
                .tickets
                .iter()
                .filter(|(_, e)| e.go.is_some())
                .map(|(id, e)| {
                    let held = st.per_lane.get(&e.lane).copied().unwrap_or(0);
                    ((e.rank, held), *id)
                })
                .max()
                .filter(|&(rank, _)| rank > mine);
            let Some((_, id)) = victim else {
                return Err(Refused::Busy {
                    retry_after: BUSY_RETRY_AFTER,
                });
            };
            // Dropping its sender tells the waiter it lost its place.
            if let Some(e) = st.tickets.remove(&id) {
                st.release(e.lane);
            }
        }
        let id = st.next;
        st.next += 1;
        let (go, rx) = if st.running < gate.workers {
            st.running += 1;
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        st.tickets.insert(id, Entry { lane, rank, go });
        *st.per_lane.entry(lane).or_default() += 1;
        let ticket = Ticket {
            gate: Arc::clone(gate),
            id,
        };
        Ok((ticket, rx))
    }

    /// Waits for a hashing place. Whoever holds the returned ticket holds the place: move it
    /// into the blocking work, so the place is held until the hash returns even if the caller
    /// stops waiting, and no more than the fixed number of hashes ever run.
    fn enter(
        gate: &Arc<Gate>,
        lane: IpAddr,
        rank: u64,
    ) -> impl Future<Output = Result<Ticket, Refused>> + Send + 'static {
        let admitted = Gate::admit(gate, lane, rank);
        async move {
            let (ticket, wait) = admitted?;
            if let Some(go) = wait {
                // An error: evicted, its place taken by a better-placed check.
                go.await.map_err(|_| Refused::Busy {
                    retry_after: BUSY_RETRY_AFTER,
                })?;
            }
            Ok(ticket)
        }
    }

    /// Runs `f` on the blocking pool once it has a hashing place, holding the place until
    /// `f` returns.
    async fn run<T: Send + 'static>(
        gate: &Arc<Gate>,
        lane: IpAddr,
        rank: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        let ticket = Gate::enter(gate, lane, rank).await?;
        tokio::task::spawn_blocking(move || {
            let _held = ticket;
            f()
        })
        .await
        .map_err(|_| Refused::Busy {
            retry_after: BUSY_RETRY_AFTER,
        })
    }

    /// Admitted checks (hashing and waiting).
    #[cfg(test)]
    fn admitted(&self) -> usize {
        self.lock().tickets.len()
    }
}

/// Failures per key and the delays they earn, in a table of bounded size.
pub struct Backoff<K> {
    entries: Mutex<HashMap<K, Record>>,
    cap: usize,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    until: Option<Instant>,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    pub fn new(cap: usize) -> Backoff<K> {
        Backoff {
            entries: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Record>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The failures of `key` that still count (within the window).
    pub fn failures(&self, key: &K, now: Instant) -> u32 {
        self.lock()
            .get(key)
            .filter(|r| now.saturating_duration_since(r.last) <= WINDOW)
            .map_or(0, |r| r.failures)
    }

    /// How long `key` is still refused, if it is.
    pub fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        self.lock()
            .get(key)
            .and_then(|r| r.until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    pub fn failed(&self, key: K, now: Instant) {
        let mut entries = self.lock();
        if !entries.contains_key(&key) && entries.len() >= self.cap {
            evict(&mut entries, now);
        }
        let r = entries.entry(key).or_insert(Record {
            failures: 0,
            last: now,
            until: None,
        });
        if now.saturating_duration_since(r.last) > WINDOW {
            r.failures = 0;
            r.until = None;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        if r.failures >= FREE_FAILURES {
            let doublings = (r.failures - FREE_FAILURES).min(16);
            let delay = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
            r.until = Some(now + delay);
        }
    }

    pub fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Makes room in a full table: first everything forgotten anyway (window passed, not
/// blocked), else the unblocked entry failed longest ago, else the block that ends first.
fn evict<K: Eq + Hash + Clone>(entries: &mut HashMap<K, Record>, now: Instant) {
    let before = entries.len();
    let live = |r: &Record| {
        r.until.is_some_and(|u| u > now) || now.saturating_duration_since(r.last) <= WINDOW
    };
    entries.retain(|_, r| live(r));
    if entries.len() < before {
        return;
    }
    let oldest = entries
        .iter()
        .min_by_key(|(_, r)| match r.until.filter(|u| *u > now) {
            None => (0, r.last),
            Some(until) => (1, until),
        })
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        entries.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_earn_doubling_delays_and_a_success_clears_them() {
        let b: Backoff<String> = Backoff::new(100);
        let t0 = Instant::now();
        let key = "ann".to_owned();
        for _ in 0..FREE_FAILURES - 1 {
            b.failed(key.clone(), t0);
            assert_eq!(b.blocked(&key, t0), None);
        }
        b.failed(key.clone(), t0);
        assert_eq!(b.blocked(&key, t0), Some(FIRST_DELAY));
        let t1 = t0 + FIRST_DELAY;
        assert_eq!(b.blocked(&key, t1), None, "the delay ran out");
        b.failed(key.clone(), t1);
        assert_eq!(b.blocked(&key, t1), Some(FIRST_DELAY * 2));
        // Many more never exceed the cap.
        for _ in 0..40 {
            b.failed(key.clone(), t1);
        }
        assert_eq!(b.blocked(&key, t1), Some(MAX_DELAY));
        b.clear(&key);
        assert_eq!(b.blocked(&key, t1), None);
        // Failures spread wider than the window never add up.
        let mut t = t1;
        for _ in 0..20 {
            t += WINDOW + Duration::from_secs(1);
            b.failed(key.clone(), t);
            assert_eq!(b.blocked(&key, t), None);
        }
    }

    #[test]
    fn a_sprayed_table_stays_bounded_and_keeps_its_blocks() {
        let b: Backoff<String> = Backoff::new(50);
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            b.failed("victim".to_owned(), t0);
        }
        for i in 0..10_000 {
            b.failed(format!("spray-{i}"), t0 + Duration::from_millis(i));
        }
        assert!(b.len() <= 50, "{}", b.len());
        assert!(
            b.blocked(&"victim".to_owned(), t0).is_some(),
            "a block is kept over one-off failures"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(address_key(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_gate_refuses_at_once_and_a_newcomer_takes_a_flooders_place() {
        let gate = Arc::new(Gate::new(1, 3));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let flooder = ip("10.0.0.1");
        let mut runs = Vec::new();
        for _ in 0..4 {
            let (g, rx) = (Arc::clone(&gate), Arc::clone(&release_rx));
            runs.push(tokio::spawn(async move {
                Gate::run(&g, flooder, 0, move || {
                    let _ = rx.lock().unwrap().recv();
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(gate.admitted(), 4);
        // The flooder's fifth is refused at once: it holds every place.
        assert!(matches!(
            Gate::run(&gate, flooder, 0, || ()).await,
            Err(Refused::Busy { .. })
        ));
        // Another address takes the flooder's newest waiting place.
        let g = Arc::clone(&gate);
        let newcomer = tokio::spawn(async move { Gate::run(&g, ip("10.0.0.2"), 0, || 7).await });
        let evicted = runs.pop().unwrap().await.unwrap();
        assert!(matches!(evicted, Err(Refused::Busy { .. })), "{evicted:?}");
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        for r in runs {
            assert_eq!(r.await.unwrap(), Ok(()));
        }
        assert_eq!(newcomer.await.unwrap(), Ok(7));
        assert_eq!(gate.admitted(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_address_takes_the_place_of_one_that_failed_and_hashes_next() {
        let gate = Arc::new(Gate::new(1, 2));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let started = Arc::new(Mutex::new(Vec::new()));
        // Three addresses with failures, one place each: every place taken.
        let mut runs = Vec::new();
        for i in 1..=3 {
            let (g, rx, started) = (
                Arc::clone(&gate),
                Arc::clone(&release_rx),
                Arc::clone(&started),
            );
            runs.push(tokio::spawn(async move {
                Gate::run(&g, ip(&format!("10.0.1.{i}")), 3, move || {
                    started.lock().unwrap().push(format!("failing-{i}"));
                    let _ = rx.lock().unwrap().recv();
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A clean address gets in; another address that failed as often pushes nobody out
        // (it is refused instead), least of all the clean one.
        let (g, s) = (Arc::clone(&gate), Arc::clone(&started));
        let clean = tokio::spawn(async move {
            Gate::run(&g, ip("10.0.0.9"), 0, move || {
                s.lock().unwrap().push("clean".to_owned());
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let evicted = runs.pop().unwrap().await.unwrap();
        assert!(matches!(evicted, Err(Refused::Busy { .. })), "{evicted:?}");
        assert!(matches!(
            Gate::run(&gate, ip("10.0.1.7"), 3, || ()).await,
            Err(Refused::Busy { .. })
        ));
        for _ in 0..2 {
            release_tx.send(()).unwrap();
        }
        for r in runs {
            assert_eq!(r.await.unwrap(), Ok(()));
        }
        assert_eq!(clean.await.unwrap(), Ok(()));
        // The clean check hashed as soon as the first place was free, ahead of the older one.
        assert_eq!(
            *started.lock().unwrap(),
            ["failing-1", "clean", "failing-2"]
        );
        assert_eq!(gate.admitted(), 0);
    }

    #[tokio::test]
    async fn a_success_makes_an_address_known_and_failures_back_off_without_checking() {
        let t = Throttle::new(1);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            let attempt = t.begin("ann", a).await.unwrap();
            assert_eq!(attempt.verify(|| false).await, Ok(false));
        }
        assert_eq!(t.addresses.failures(&a, Instant::now()), 3);
        assert!(!t.is_known(&a, Instant::now()));
        let attempt = t.begin("ann", a).await.unwrap();
        assert_eq!(attempt.verify(|| true).await, Ok(true));
        assert_eq!(t.addresses.failures(&a, Instant::now()), 0);
        assert!(t.is_known(&a, Instant::now()));
        // A user name that failed five times is refused from anywhere, before any check.
        for i in 0..FREE_FAILURES {
            let attempt = t.begin("bob", ip(&format!("10.0.2.{i}"))).await.unwrap();
            attempt.verify(|| false).await.unwrap();
        }
        let refused = t.begin("bob", ip("10.0.3.1")).await.err();
        assert!(
            matches!(refused, Some(Refused::Backoff { retry_after }) if retry_after <= FIRST_DELAY),
            "{refused:?}"
        );
    }
}
