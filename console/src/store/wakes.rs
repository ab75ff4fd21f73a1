//! Wake-ups: what a change in the store means for the agents' long polls. The store sends one
//! with every change that makes work for a group (a task queued or queued again) or that a
//! server's agent must hear of (a cancel, a freed slot), so the consoles holding those polls
//! let them look again. SQLite's are local (one console owns the file); PostgreSQL's travel to
//! every console on the database with NOTIFY (see `postgres/wakes.rs`).

use tokio::sync::broadcast;

/// A wake-up, by the ids of what it concerns (names can be renamed; ids cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// `tasks` tasks of group `group` were queued (submitted, or queued again).
    Work { group: i64, tasks: u32 },
    /// Server `server`'s agent has something to hear (a cancel) or a slot free.
    Server { server: i64 },
    /// Every poll should look again: wake-ups of a while may have been lost.
    All,
}

/// How many wake-ups a slow receiver may fall behind before it is told it lagged (and must
/// treat that as [`Wake::All`]).
const CAPACITY: usize = 4096;

pub trait WakeStore: Send + Sync {
    /// The wake-ups of every console on this database, this one's included, from now on. A
    /// receiver that falls behind gets `Lagged`: it must then act as on [`Wake::All`].
    fn wakes(&self) -> broadcast::Receiver<Wake>;
}

/// The local fan-out of wake-ups, which each backend owns.
#[derive(Debug, Clone)]
pub(crate) struct WakeHub {
    tx: broadcast::Sender<Wake>,
}

impl Default for WakeHub {
    fn default() -> WakeHub {
        WakeHub {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl WakeHub {
    pub(crate) fn send(&self, wake: Wake) {
        // No receiver yet (a command that only writes): nobody to wake.
        let _ = self.tx.send(wake);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Wake> {
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
