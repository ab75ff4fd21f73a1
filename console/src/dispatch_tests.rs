//! Which polls a wake-up reaches: work goes to as many polls as there are tasks, oldest first,
//! never to a poll at capacity; a poll that could not act on it passes it on (superseded, at
//! capacity, or gone before it looked); news for a server reaches that server's poll only.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// Whether `t` was woken (a permit is waiting for it).
async fn woken(t: &PollTicket) -> bool {
    tokio::time::timeout(Duration::from_millis(50), t.woken())
        .await
        .is_ok()
}

/// A poll of `node` on server `server` of group 1 that looked and found the queue empty.
fn idle(d: &Arc<Dispatch>, node: &str, server: i64, ready: bool) -> PollTicket {
    let mut t = d.register(node, server, 1);
    t.begin_look();
    t.looked(0, ready);
    t
}

#[tokio::test]
async fn work_wakes_as_many_polls_as_tasks_oldest_first_and_none_at_capacity() {
    let d = Arc::new(Dispatch::default());
    let full = idle(&d, "n0", 10, false);
    let polls: Vec<PollTicket> = (1..=5)
        .map(|i| idle(&d, &format!("n{i}"), 10 + i, true))
        .collect();
    let other_group = d.register("x", 99, 2);
    d.wake(Wake::Work { group: 1, tasks: 2 });
    assert!(
        !woken(&full).await,
        "a poll at capacity is not woken for work"
    );
    let got: Vec<bool> = futures_woken(&polls).await;
    assert_eq!(got, [true, true, false, false, false]);
    assert!(!woken(&other_group).await);
    // More tasks than polls: every poll that can take work is woken, once.
    d.wake(Wake::Work {
        group: 1,
        tasks: 50,
    });
    assert_eq!(
        futures_woken(&polls).await,
        [false, false, true, true, true]
    );
}

async fn futures_woken(polls: &[PollTicket]) -> Vec<bool> {
    let mut out = Vec::new();
    for p in polls {
        out.push(woken(p).await);
    }
    out
}

#[tokio::test]
async fn a_poll_that_cannot_take_the_work_it_was_woken_for_passes_it_on() {
    let d = Arc::new(Dispatch::default());
    let mut a = idle(&d, "a", 1, true);
    let b = idle(&d, "b", 2, true);
    d.wake(Wake::Work { group: 1, tasks: 1 });
    assert!(woken(&a).await && !woken(&b).await);
    // a looks and is full (its slots were taken meanwhile): b gets the wake-up.
    a.begin_look();
    a.looked(0, false);
    assert!(woken(&b).await);

    // A poll that found the queue empty with room to spare drops it: nothing is left.
    let d = Arc::new(Dispatch::default());
    let mut a = idle(&d, "a", 1, true);
    let b = idle(&d, "b", 2, true);
    d.wake(Wake::Work { group: 1, tasks: 1 });
    assert!(woken(&a).await);
    a.begin_look();
    a.looked(0, true);
    assert!(!woken(&b).await);
    assert_eq!(d.looks(), 3);
}

#[tokio::test]
async fn a_poll_superseded_or_gone_before_it_looked_passes_its_wake_up_on() {
    let d = Arc::new(Dispatch::default());
    let old = idle(&d, "a", 1, true);
    let b = idle(&d, "b", 2, true);
    d.wake(Wake::Work { group: 1, tasks: 1 });
    // The node's newer poll supersedes the old one, which ends at once.
    let new = d.register("a", 1, 1);
    assert!(old.superseded() && !new.superseded() && !b.superseded());
    drop(old);
    // The wake-up goes on to the oldest poll that can take it.
    assert!(woken(&b).await);
    assert!(!woken(&new).await);

    // A poll whose connection ends (its future is dropped) before it looks passes it on too.
    let c = idle(&d, "c", 3, true);
    d.wake(Wake::Work { group: 1, tasks: 1 });
    // b still holds its unit (it never looked), so the oldest other poll gets this one; then
    // b's connection ends and its unit goes to the next.
    assert!(woken(&new).await && !woken(&c).await);
    drop(b);
    assert!(woken(&c).await, "the wake-up of a poll that went was lost");
    assert_eq!(d.polls().0, 2);
}

#[tokio::test]
async fn news_for_a_server_wakes_its_poll_only_and_all_wakes_every_poll() {
    let d = Arc::new(Dispatch::default());
    let full = idle(&d, "a", 1, false);
    let b = idle(&d, "b", 2, true);
    d.wake(Wake::Server { server: 1 });
    assert!(
        woken(&full).await,
        "a poll at capacity hears of its own server"
    );
    assert!(!woken(&b).await);
    d.wake(Wake::All);
    assert!(woken(&full).await && woken(&b).await);
}

#[tokio::test]
async fn a_poll_looking_when_work_comes_is_woken_for_it() {
    let d = Arc::new(Dispatch::default());
    let mut a = idle(&d, "a", 1, false);
    // a's slot frees: it looks; the work is committed after its look read the queue.
    a.begin_look();
    d.wake(Wake::Work { group: 1, tasks: 1 });
    a.looked(0, true);
    assert!(woken(&a).await, "a looks again and finds the task");
}

/// A dispatch whose polls' leftovers go to the returned queue, as on PostgreSQL.
fn passing_on() -> (Arc<Dispatch>, mpsc::UnboundedReceiver<Wake>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let d = Arc::new(Dispatch {
        pass_on: Some(tx),
        ..Dispatch::default()
    });
    (d, rx)
}

fn passed(rx: &mut mpsc::UnboundedReceiver<Wake>) -> Vec<Wake> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn work_no_poll_here_can_take_goes_on_once_and_never_back() {
    let (d, mut rx) = passing_on();
    let polls: Vec<PollTicket> = (1..=2)
        .map(|i| idle(&d, &format!("n{i}"), i, true))
        .collect();
    let _full = idle(&d, "n3", 3, false);
    d.wake(Wake::Work { group: 1, tasks: 5 });
    assert_eq!(futures_woken(&polls).await, [true, true]);
    assert_eq!(passed(&mut rx), [Wake::Work { group: 1, tasks: 3 }]);
    // Work for a group with no poll here goes on whole; what fits here goes nowhere.
    d.wake(Wake::Work { group: 7, tasks: 2 });
    let _other = d.register("m", 70, 2);
    d.wake(Wake::Work { group: 2, tasks: 1 });
    assert_eq!(passed(&mut rx), [Wake::Work { group: 7, tasks: 2 }]);
    // Passed on from elsewhere, what finds no poll here is dropped there.
    d.deliver(Wake::Work { group: 9, tasks: 4 }, Origin::Elsewhere);
    d.deliver(Wake::Server { server: 99 }, Origin::Elsewhere);
    assert_eq!(passed(&mut rx), []);
}

#[tokio::test]
async fn a_unit_made_here_that_no_poll_here_takes_goes_on_and_one_from_elsewhere_does_not() {
    let (d, mut rx) = passing_on();
    let gone = idle(&d, "n1", 1, true);
    d.wake(Wake::Work { group: 1, tasks: 1 });
    assert!(passed(&mut rx).is_empty());
    // Its poll ends before it looked, and no other poll here can take it.
    drop(gone);
    assert_eq!(passed(&mut rx), [Wake::Work { group: 1, tasks: 1 }]);
    let mut full_after = idle(&d, "n2", 2, true);
    d.deliver(Wake::Work { group: 1, tasks: 1 }, Origin::Elsewhere);
    full_after.begin_look();
    full_after.looked(0, false);
    assert!(passed(&mut rx).is_empty());
    // Made here, the same goes on.
    let mut again = idle(&d, "n3", 3, true);
    d.wake(Wake::Work { group: 1, tasks: 1 });
    again.begin_look();
    again.looked(0, false);
    assert_eq!(passed(&mut rx), [Wake::Work { group: 1, tasks: 1 }]);
}

#[tokio::test]
async fn a_freed_slot_wakes_a_full_poll_or_a_looking_one_only() {
    let (d, mut rx) = passing_on();
    let room = idle(&d, "n1", 1, true);
    let full = idle(&d, "n2", 2, false);
    let mut looking = idle(&d, "n3", 3, true);
    looking.begin_look();
    for server in [1, 2, 3] {
        d.wake(Wake::Slot { server });
    }
    assert!(
        !woken(&room).await,
        "a poll with room looks when work comes"
    );
    assert!(woken(&full).await);
    assert!(
        woken(&looking).await,
        "its look may have counted the slot taken"
    );
    // A freed slot or news for a server whose poll is not here goes on.
    d.wake(Wake::Slot { server: 4 });
    d.wake(Wake::Server { server: 5 });
    d.wake(Wake::Server { server: 1 });
    assert!(woken(&room).await);
    assert_eq!(
        passed(&mut rx),
        [Wake::Slot { server: 4 }, Wake::Server { server: 5 }]
    );
}

#[tokio::test]
async fn a_move_ends_the_servers_polls_here_or_goes_on_to_find_them() {
    let (d, mut rx) = passing_on();
    let moved = idle(&d, "n1", 1, true);
    let other = idle(&d, "n2", 2, true);
    d.wake(Wake::Moved { server: 1 });
    assert!(woken(&moved).await && moved.superseded());
    assert!(!woken(&other).await && !other.superseded());
    assert!(passed(&mut rx).is_empty());
    d.wake(Wake::Moved { server: 3 });
    assert_eq!(passed(&mut rx), [Wake::Moved { server: 3 }]);
    d.deliver(Wake::Moved { server: 4 }, Origin::Elsewhere);
    assert!(passed(&mut rx).is_empty());
}
