//! Wake-ups: what a change in the store means for the agents' long polls. The store sends one
//! with every change that makes work for a group (a task queued or queued again) or that a
//! server's agent must hear of (a cancel, a freed slot), so the consoles holding those polls
//! let them look again.
//!
//! A wake-up goes first to this console's own polls, right after its change commits. Only what
//! they cannot act on (work no poll here can take, news for a server whose poll is not here)
//! goes on to the other consoles on the database (PostgreSQL's NOTIFY, see
//! `postgres/wakes.rs`): a submit then costs the database no notification and wakes no poll
//! elsewhere that would find the task taken. `crate::dispatch` decides what goes on. A console
//! that dies between its commit and that pass-on loses it: the other consoles' polls find the
//! change at their next look (each poll looks when it starts, and polls end within
//! `MAX_POLL_WAIT_SECS`).

use tokio::sync::{broadcast, mpsc};

/// A wake-up, by the ids of what it concerns (names can be renamed; ids cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// `tasks` tasks of group `group` were queued (submitted, or queued again).
    Work { group: i64, tasks: u32 },
    /// Server `server`'s agent has something to hear (a cancel).
    Server { server: i64 },
    /// A task of server `server` ended: a slot is free (its poll looks only if it was full).
    Slot { server: i64 },
    /// Server `server` moved to another group: its polls end, and its agent's next one waits
    /// on the new group's work.
    Moved { server: i64 },
    /// Every poll should look again: wake-ups of a while may have been lost.
    All,
}

/// How many wake-ups a slow receiver may fall behind before it is told it lagged (and must
/// treat that as [`Wake::All`]).
const CAPACITY: usize = 4096;

/// Where a wake-up was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// By a change this console made: what its polls cannot act on goes on to the others.
    Here,
    /// By another console's change, passed on to this one: it goes no further.
    Elsewhere,
}

/// What a console's polls hear of the store's changes, and the way on to the other consoles.
#[derive(Debug)]
pub struct WakeFeed {
    /// From now on: this console's wake-ups and those the others passed on. A receiver that
    /// falls behind gets `Lagged`: it must then act as on [`Wake::All`].
    pub rx: broadcast::Receiver<(Wake, Origin)>,
    /// Where a wake-up this console's polls cannot act on goes, to reach every other console;
    /// `None` when there is no other (SQLite).
    pub pass_on: Option<mpsc::UnboundedSender<Wake>>,
}

pub trait WakeStore: Send + Sync {
    /// The wake-ups this console hears from now on (see [`WakeFeed`]).
    fn wakes(&self) -> WakeFeed;
}

/// The local fan-out of wake-ups, which each backend owns.
#[derive(Debug, Clone)]
pub(crate) struct WakeHub {
    tx: broadcast::Sender<(Wake, Origin)>,
}

impl Default for WakeHub {
    fn default() -> WakeHub {
        WakeHub {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl WakeHub {
    /// A wake-up of this console's own change.
    pub(crate) fn send(&self, wake: Wake) {
        // No receiver yet (a command that only writes): nobody to wake.
        let _ = self.tx.send((wake, Origin::Here));
    }

    /// A wake-up another console passed on.
    pub(crate) fn send_from_elsewhere(&self, wake: Wake) {
        let _ = self.tx.send((wake, Origin::Elsewhere));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<(Wake, Origin)> {
        self.tx.subscribe()
    }
}

/// The work wake-ups of `requeued` tasks, given as their groups: one per group.
pub(crate) fn requeued(groups: &[i64]) -> Vec<Wake> {
    let mut counts: std::collections::BTreeMap<i64, u32> = std::collections::BTreeMap::new();
    for g in groups {
        *counts.entry(*g).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(group, tasks)| Wake::Work { group, tasks })
        .collect()
}
