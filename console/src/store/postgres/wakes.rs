//! Wake-ups across consoles. A change that makes work for a group or news for a server's agent
//! sends `NOTIFY tasknode_wake` in its own transaction, so PostgreSQL delivers it to every
//! listening console when (and only if) the change commits. Each console keeps one connection
//! of its own, outside the pool, that `LISTEN`s and hands what arrives to the local wake-ups;
//! its own notifications it already delivered locally, right after the commit, and skips.
//! When that connection drops, it reconnects with backoff and, once listening again, wakes
//! every local poll once: what was sent meanwhile is lost, and a poll that looks again finds
//! it in the tables.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Cached, db};
use crate::store::wakes::WakeHub;
use crate::store::{StoreError, Wake};

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
        ("a", None, None) => Wake::All,
        _ => return None,
    };
    f.next().is_none().then_some((instance, wake))
}

/// Sends `wakes` to every listening console when the transaction `c` is in commits.
pub(super) async fn notify(
    c: &impl deadpool_postgres::GenericClient,
    instance: u64,
    wakes: &[Wake],
) -> Result<(), StoreError> {
    for w in wakes {
        c.exec(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &payload(instance, *w)],
        )
        .await
        .map_err(db("sending a wake-up"))?;
    }
    Ok(())
}

/// Listens for the other consoles' wake-ups until the task is aborted, reconnecting with
/// backoff; each time it is listening again, every local poll is woken once.
pub(super) async fn listen(mut config: tokio_postgres::Config, instance: u64, hub: WakeHub) {
    config.application_name(LISTENER_NAME);
    let mut retry = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        let mut listening = false;
        let ended = listen_once(&config, instance, &hub, &mut listening).await;
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
    config: &tokio_postgres::Config,
    instance: u64,
    hub: &WakeHub,
    listening: &mut bool,
) -> String {
    let (client, mut conn) = match config.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return format!("connecting: {e}"),
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
                        Some((_, wake)) => hub.send(wake),
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
