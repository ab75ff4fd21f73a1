//! Which of the agents' long polls look for work, and when. The store sends a wake-up with
//! every change that concerns them (see `store/wakes.rs`; on PostgreSQL those of the other
//! consoles arrive too); this module hands each to as few polls as can act on it:
//!
//! - work for a group (n tasks queued) wakes at most n of its polls that can take work: the
//!   oldest waiting ones whose last look found a free slot (and that were accepting, with their
//!   clock in bounds), or that are looking right now. A poll at capacity is not woken for work.
//! - news for a server (a cancel) wakes that server's polls only; a freed slot wakes them only
//!   if their last look found them full (or they are looking now); a move to another group ends
//!   them (the agent's next poll waits on the new group's work);
//! - "all" (wake-ups may have been lost) wakes every poll once.
//!
//! A wake-up of this console's own change that its polls cannot act on (work beyond what they
//! can take, news for a server whose poll is not here) goes on to the other consoles through
//! the store's pass-on (see `store/wakes.rs`); one passed on from elsewhere goes no further.
//!
//! No wake-up for work is lost: a poll woken for work that then takes nothing, and not because
//! the queue was empty (it was full, not accepting, superseded, or it ended or failed before
//! it looked), passes the wake-up on to another poll of its group that can take work. A wake-up
//! that finds every such poll already woken is dropped: each of those looks after the change
//! and takes what it has room for. Behind all this, every poll looks when it starts and polls
//! end within `MAX_POLL_WAIT_SECS`, so a poll never waits longer than that without looking.
//!
//! An agent holds one long poll at a time, so when a node's poll arrives, that node's older
//! polls on this console are from a process that is gone (it restarted, or exec'd its update)
//! whose connection the console has not yet seen closed. Those end at once and take no work: a
//! task handed to one would sit assigned to nobody until the live poll next looked.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, broadcast, mpsc};

use crate::store::{Origin, Wake, WakeFeed};

#[derive(Debug, Default)]
pub struct Dispatch {
    polls: Mutex<Polls>,
    /// Where what this console's polls cannot act on goes (to the other consoles).
    pass_on: Option<mpsc::UnboundedSender<Wake>>,
    next: AtomicU64,
    /// Looks for work, all polls together (each costs the store a reconcile and an assign).
    looks: AtomicU64,
    closing: AtomicBool,
    closed: Notify,
}

#[derive(Debug, Default)]
struct Polls {
    all: HashMap<u64, Entry>,
    /// The polls of each group and of each server, by number: oldest first.
    groups: HashMap<i64, BTreeSet<u64>>,
    servers: HashMap<i64, BTreeSet<u64>>,
    /// The newest poll of each node.
    newest: HashMap<String, u64>,
}

#[derive(Debug)]
struct Entry {
    node: String,
    group: i64,
    server: i64,
    /// Between [`PollTicket::begin_look`] and [`PollTicket::looked`].
    looking: bool,
    /// Its last look found room for more work (a new poll counts as ready: it is about to look).
    ready: bool,
    /// Woken for work it has not looked for yet, by a wake-up made where.
    unit: Option<Origin>,
    superseded: bool,
    wake: Arc<Notify>,
}

impl Entry {
    fn can_take_a_unit(&self) -> bool {
        !self.superseded && self.unit.is_none() && (self.ready || self.looking)
    }
}

impl Polls {
    /// Gives up to `n` polls of `group` a unit of work, waiting ones before looking ones;
    /// answers how many it gave.
    fn work(&mut self, group: i64, n: u32, origin: Origin) -> u32 {
        let Some(ids) = self.groups.get(&group) else {
            return 0;
        };
        let mut chosen: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                self.all
                    .get(id)
                    .is_some_and(|e| e.can_take_a_unit() && !e.looking)
            })
            .take(n as usize)
            .collect();
        if chosen.len() < n as usize {
            let more = ids
                .iter()
                .copied()
                .filter(|id| {
                    self.all
                        .get(id)
                        .is_some_and(|e| e.can_take_a_unit() && e.looking)
                })
                .take(n as usize - chosen.len())
                .collect::<Vec<_>>();
            chosen.extend(more);
        }
        for id in &chosen {
            if let Some(e) = self.all.get_mut(id) {
                e.unit = Some(origin);
                e.wake.notify_one();
            }
        }
        chosen.len() as u32
    }

    /// Ends the polls of server `server` at once, empty-handed (it moved to another group:
    /// its agent's next poll waits under the new one); answers how many there were.
    fn end_polls_of(&mut self, server: i64) -> usize {
        let ids: Vec<u64> = self
            .servers
            .get(&server)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in &ids {
            if let Some(e) = self.all.get_mut(id) {
                e.superseded = true;
                e.wake.notify_one();
            }
        }
        ids.len()
    }

    fn kick(&self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if let Some(e) = self.all.get(&id) {
                e.wake.notify_one();
            }
        }
    }
}

impl Dispatch {
    fn lock(&self) -> MutexGuard<'_, Polls> {
        self.polls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A dispatch that follows `feed` (the store's wake-ups) until the store goes.
    pub fn following(feed: WakeFeed) -> Arc<Dispatch> {
        let dispatch = Arc::new(Dispatch {
            pass_on: feed.pass_on,
            ..Dispatch::default()
        });
        tokio::spawn(Arc::clone(&dispatch).follow(feed.rx));
        dispatch
    }

    async fn follow(self: Arc<Self>, mut wakes: broadcast::Receiver<(Wake, Origin)>) {
        loop {
            match wakes.recv().await {
                Ok((w, origin)) => self.deliver(w, origin),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "wake-ups came faster than polls were woken; every poll looks again"
                    );
                    self.wake(Wake::All);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Hands a wake-up of this console's own to the polls it concerns.
    pub fn wake(&self, wake: Wake) {
        self.deliver(wake, Origin::Here);
    }

    /// Hands a wake-up to the polls it concerns; what they cannot act on goes on to the other
    /// consoles when it was made here.
    fn deliver(&self, wake: Wake, origin: Origin) {
        let mut polls = self.lock();
        let left = match wake {
            Wake::Work { group, tasks } => {
                let given = polls.work(group, tasks, origin);
                (given < tasks).then_some(Wake::Work {
                    group,
                    tasks: tasks - given,
                })
            }
            Wake::Server { server } | Wake::Slot { server } => {
                let slot = matches!(wake, Wake::Slot { .. });
                let ids: Vec<u64> = polls
                    .servers
                    .get(&server)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                // A poll that had room is not held back by the slot: work wakes it anyway.
                let concerned: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| !slot || polls.all.get(id).is_some_and(|e| e.looking || !e.ready))
                    .collect();
                polls.kick(concerned);
                ids.is_empty().then_some(wake)
            }
            Wake::Moved { server } => {
                let ids = polls.end_polls_of(server);
                (ids == 0).then_some(wake)
            }
            Wake::All => {
                let ids: Vec<u64> = polls.all.keys().copied().collect();
                polls.kick(ids);
                None
            }
        };
        drop(polls);
        if let (Some(w), Origin::Here) = (left, origin) {
            self.send_on(w);
        }
    }

    /// Passes `wake` on to the other consoles (none on SQLite).
    fn send_on(&self, wake: Wake) {
        if let Some(tx) = &self.pass_on {
            // Closed only when the store is gone.
            let _ = tx.send(wake);
        }
    }

    /// Gives a unit of work of `group` that a poll could not act on to another poll here, or
    /// passes it on when it was made here and no poll here can take it.
    fn hand_on(&self, polls: &mut Polls, group: i64, origin: Origin) {
        if polls.work(group, 1, origin) == 0 && origin == Origin::Here {
            self.send_on(Wake::Work { group, tasks: 1 });
        }
    }

    /// Registers a long poll of `node`, whose server is `server` in group `group`; a poll of
    /// the same node registered before is superseded and ends.
    pub fn register(self: &Arc<Self>, node: &str, server: i64, group: i64) -> PollTicket {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let wake = Arc::new(Notify::new());
        let mut polls = self.lock();
        if let Some(old) = polls.newest.insert(node.to_owned(), id)
            && let Some(e) = polls.all.get_mut(&old)
        {
            e.superseded = true;
            e.wake.notify_one();
        }
        polls.all.insert(
            id,
            Entry {
                node: node.to_owned(),
                group,
                server,
                looking: false,
                ready: true,
                unit: None,
                superseded: false,
                wake: Arc::clone(&wake),
            },
        );
        polls.groups.entry(group).or_default().insert(id);
        polls.servers.entry(server).or_default().insert(id);
        PollTicket {
            dispatch: Arc::clone(self),
            id,
            wake,
            carrying: None,
        }
    }

    /// Looks for work so far, by every poll (the store's cost of dispatch).
    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::SeqCst)
    }

    /// Polls registered now, and how many of them are waiting (not looking).
    pub fn polls(&self) -> (usize, usize) {
        let polls = self.lock();
        let waiting = polls.all.values().filter(|e| !e.looking).count();
        (polls.all.len(), waiting)
    }

    /// Ends every long poll at once and makes new ones answer at once: the console is stopping.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.closed.notify_waiters();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Resolves when [`Dispatch::close`] is called.
    pub async fn closed(&self) {
        let notified = self.closed.notified();
        if self.is_closing() {
            return;
        }
        notified.await;
    }
}

/// One long poll's place in the dispatch, from its start to its answer (or its connection's
/// end): dropping it lets go of the place and passes on a wake-up it did not act on.
#[derive(Debug)]
pub struct PollTicket {
    dispatch: Arc<Dispatch>,
    id: u64,
    wake: Arc<Notify>,
    /// The current look was woken for work, by a wake-up made where.
    carrying: Option<Origin>,
}

impl PollTicket {
    /// A newer poll of the same node arrived: this one must take no work and end.
    pub fn superseded(&self) -> bool {
        self.dispatch
            .lock()
            .all
            .get(&self.id)
            .is_none_or(|e| e.superseded)
    }

    /// Starts a look for work (and for what the agent must stop).
    pub fn begin_look(&mut self) {
        self.dispatch.looks.fetch_add(1, Ordering::SeqCst);
        let mut polls = self.dispatch.lock();
        if let Some(e) = polls.all.get_mut(&self.id) {
            e.looking = true;
            if let Some(origin) = e.unit.take() {
                self.carrying = Some(origin);
            }
        }
    }

    /// Ends a look that took `took` tasks and left the poll `ready` for more (a free slot,
    /// accepting, clock in bounds) or not. A look woken for work that took nothing and could
    /// not have passes the wake-up on.
    pub fn looked(&mut self, took: usize, ready: bool) {
        let mut polls = self.dispatch.lock();
        let Some(e) = polls.all.get_mut(&self.id) else {
            return;
        };
        e.looking = false;
        e.ready = ready;
        let group = e.group;
        if let Some(origin) = self.carrying.take()
            && took == 0
            && !ready
        {
            self.dispatch.hand_on(&mut polls, group, origin);
        }
    }

    /// Resolves when this poll is woken (at once if it was while it looked).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for PollTicket {
    fn drop(&mut self) {
        let mut guard = self.dispatch.lock();
        let polls = &mut *guard;
        let Some(e) = polls.all.remove(&self.id) else {
            return;
        };
        for (map, key) in [(&mut polls.groups, e.group), (&mut polls.servers, e.server)] {
            if let Some(set) = map.get_mut(&key) {
                set.remove(&self.id);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        }
        if polls.newest.get(&e.node) == Some(&self.id) {
            polls.newest.remove(&e.node);
        }
        // Woken for work it never looked for (it ended, failed or was superseded first).
        if let Some(origin) = e.unit.or(self.carrying) {
            self.dispatch.hand_on(polls, e.group, origin);
        }
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
