//! Wake-ups across consoles. What a console's own polls cannot act on (see `store/wakes.rs`)
//! goes out with `NOTIFY tasknode_wake` from a task of its own ([`pass_on`]), which gathers
//! what queued up meanwhile into one statement. Each console keeps one connection, outside the
//! pool, that `LISTEN`s and hands what arrives to the local wake-ups, skipping its own. When
//! that connection drops, it reconnects with backoff and, once listening again, wakes every
//! local poll once: what was sent meanwhile is lost, and a poll that looks again finds it in
//! the tables.

use std::time::Duration;

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::Connector;

use super::Cached;
use crate::store::Wake;
use crate::store::wakes::WakeHub;

/// The one channel every wake-up travels on.
pub(super) const CHANNEL: &str = "tasknode_wake";

/// The listening connection's application name, as `pg_stat_activity` shows it.
pub(crate) const LISTENER_NAME: &str = "tasknode-console-listen";

/// How often the listening connection proves it is alive, and how long it may take.
const CHECK_EVERY: Duration = Duration::from_secs(15);
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// `INSTANCE KIND ID [TASKS]`: the sending console's instance, then the wake-up.
pub(super) fn payload(instance: u64, wake: Wake) -> String {
    match wake {
        Wake::Work { group, tasks } => format!("{instance:x} w {group} {tasks}"),
        Wake::Server { server } => format!("{instance:x} s {server}"),
        Wake::Slot { server } => format!("{instance:x} f {server}"),
        Wake::Moved { server } => format!("{instance:x} m {server}"),
        Wake::All => format!("{instance:x} a"),
    }
}

/// The sender and wake-up of a payload; `None` for one this console does not understand
/// (a newer console's), which is ignored.
fn parse(payload: &str) -> Option<(u64, Wake)> {
    let mut f = payload.split(' ');
    let instance = u64::from_str_radix(f.next()?, 16).ok()?;
    let wake = match (f.next()?, f.next(), f.next()) {
        ("w", Some(g), Some(n)) => Wake::Work {
            group: g.parse().ok()?,
            tasks: n.parse().ok()?,
        },
        ("s", Some(s), None) => Wake::Server {
            server: s.parse().ok()?,
        },
        ("f", Some(s), None) => Wake::Slot {
            server: s.parse().ok()?,
        },
        ("m", Some(s), None) => Wake::Moved {
            server: s.parse().ok()?,
        },
        ("a", None, None) => Wake::All,
        _ => return None,
    };
    f.next().is_none().then_some((instance, wake))
}

/// Sends what this console's polls could not act on to every other console, until `rx`
/// closes. Each send takes what has queued up by then, work for one group summed into one
/// wake-up, in one statement. A send that fails is dropped with a warning: the other consoles'
/// polls find the change at their next look.
pub(super) async fn pass_on(pool: Pool, instance: u64, mut rx: mpsc::UnboundedReceiver<Wake>) {
    while let Some(first) = rx.recv().await {
        let mut work: BTreeMap<i64, u32> = BTreeMap::new();
        let mut other = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next {
            match w {
                Wake::Work { group, tasks } => {
                    let n = work.entry(group).or_default();
                    *n = n.saturating_add(tasks);
                }
                w if !other.contains(&w) => other.push(w),
                _ => {}
            }
            next = rx.try_recv().ok();
        }
        let payloads: Vec<String> = work
            .into_iter()
            .map(|(group, tasks)| Wake::Work { group, tasks })
            .chain(other)
            .map(|w| payload(instance, w))
            .collect();
        let sent = async {
            let c = pool.get().await.map_err(|e| e.to_string())?;
            c.exec(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                &[&CHANNEL, &payloads],
            )
            .await
            .map_err(|e| e.to_string())
        };
        if let Err(error) = sent.await {
            tracing::warn!(%error, wakes = payloads.len(), "could not pass wake-ups on to the other consoles; their polls find the change at their next look");
        }
    }
}

/// Listens for the other consoles' wake-ups until the task is aborted, reconnecting with
/// backoff; each time it is listening again, every local poll is woken once.
pub(super) async fn listen(connector: Connector, instance: u64, hub: WakeHub) {
    let mut retry = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        let mut listening = false;
        let ended = listen_once(&connector, instance, &hub, &mut listening).await;
        if listening {
            retry = FIRST_RETRY;
            failures = 0;
        }
        failures += 1;
        if failures == 1 || failures.is_multiple_of(20) {
            tracing::warn!(error = %ended, failures, "not listening for other consoles' wake-ups; reconnecting (their submits reach this console's agents at their next poll meanwhile)");
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// One connection's life: connects, listens, delivers; returns why it ended.
async fn listen_once(
    connector: &Connector,
    instance: u64,
    hub: &WakeHub,
    listening: &mut bool,
) -> String {
    let (client, mut conn) = match connector.connect(LISTENER_NAME).await {
        Ok(c) => c,
        Err(e) => return format!("connecting: {}", connector.explain(&e)),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The connection is driven here; notifications go to `rx`, and its end closes `rx`.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return "stopped".to_owned();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("the connection failed: {e}"),
                None => return "the server closed the connection".to_owned(),
            }
        }
    });
    let ended = async {
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            return format!("LISTEN: {e}");
        }
        *listening = true;
        tracing::info!("listening for other consoles' wake-ups");
        // Whatever was sent while this console was not listening is lost: every poll looks.
        hub.send(Wake::All);
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                n = rx.recv() => {
                    let Some(n) = n else { return String::new() };
                    match parse(n.payload()) {
                        Some((from, _)) if from == instance => {}
                        Some((_, wake)) => hub.send_from_elsewhere(wake),
                        None => tracing::debug!(payload = n.payload(), "ignoring a wake-up this console does not understand"),
                    }
                }
                _ = check.tick() => {
                    match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("checking the connection: {e}"),
                        Err(_) => return format!("the connection did not answer within {CHECK_TIMEOUT:?}"),
                    }
                }
            }
        }
    }
    .await;
    drop(client);
    driver.abort();
    match driver.await {
        Ok(why) => why,
        Err(_) if !ended.is_empty() => ended,
        Err(_) => "the connection ended".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_and_strangers_are_ignored() {
        for w in [
            Wake::Work { group: 7, tasks: 3 },
            Wake::Server { server: 42 },
            Wake::Slot { server: 43 },
            Wake::Moved { server: 44 },
            Wake::All,
        ] {
            assert_eq!(parse(&payload(0xabc, w)), Some((0xabc, w)));
        }
        for bad in [
            "",
            "x w 1 1",
            "1 w 1",
            "1 w 1 1 1",
            "1 s",
            "1 q 1",
            "1 w -x 1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
