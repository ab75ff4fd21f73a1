//! The suite's tests of pushed task logs: kept in order and once, read back from any offset,
//! bounded per task and per server, gone with their tasks, and kept when the store is opened
//! again (another console on a shared database reads what this one received).

use bytes::Bytes;
use tasknode_protocol::NetworkType;

use super::Harness;
use crate::store::*;

/// A VPC group `logs` with servers `vpc-1` and `vpc-2`, and `n` tasks assigned to the first
/// (ids returned after the servers' ids).
async fn setup(store: &dyn Store, n: usize) -> (i64, i64, Vec<i64>) {
    store
        .create_group("default", "logs", NetworkType::Vpc, 1)
        .await
        .unwrap();
    let a = store
        .add_server("default", "logs", "vpc-1", Some(n as u32 + 1), 1)
        .await
        .unwrap();
    let b = store
        .add_server("default", "logs", "vpc-2", Some(1), 1)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            store
                .submit_task("default", "logs", "true", 60, 1)
                .await
                .unwrap()
                .id,
        );
    }
    let got = store.assign(a.id, n as u32 + 1, 2).await.unwrap().tasks;
    assert_eq!(got.len(), n);
    (a.id, b.id, ids)
}

fn push(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

pub(super) async fn a_pushed_log_is_kept_in_order_once_and_read_from_any_offset(h: &dyn Harness) {
    let store = h.open().await;
    let (a, _, ids) = setup(store.as_ref(), 2).await;
    let (t, other) = (ids[0], ids[1]);
    let l = LogLimits::default();
    assert_eq!(store.log_sizes(&[t]).await.unwrap().get(&t), None);
    assert_eq!(store.read_log(t, 0, 10).await.unwrap(), (Vec::new(), 0));
    let ok = |n| Appended::Size(n);
    assert_eq!(
        store.append_log(t, a, 0, push(b"hello "), l).await.unwrap(),
        ok(6)
    );
    // A resend of bytes already held, with one new byte; then a gap; then the rest.
    assert_eq!(
        store.append_log(t, a, 3, push(b"lo w"), l).await.unwrap(),
        ok(7)
    );
    assert_eq!(
        store.append_log(t, a, 9, push(b"x"), l).await.unwrap(),
        Appended::Gap { size: 7 }
    );
    assert_eq!(
        store.append_log(t, a, 7, push(b"orld"), l).await.unwrap(),
        ok(11)
    );
    assert_eq!(
        store.append_log(t, a, 0, push(b"hello"), l).await.unwrap(),
        ok(11)
    );
    assert_eq!(store.log_sizes(&[t]).await.unwrap().get(&t), Some(&11));
    // Reads across the chunks the log was pushed in.
    for (offset, max, want) in [
        (0, 100, &b"hello world"[..]),
        (0, 3, b"hel"),
        (4, 4, b"o wo"),
        (6, 100, b"world"),
        (10, 1, b"d"),
        (11, 5, b""),
        (50, 3, b""),
    ] {
        let (bytes, size) = store.read_log(t, offset, max).await.unwrap();
        assert_eq!((bytes.as_slice(), size), (want, 11), "from {offset}, {max}");
    }
    // Another task's log is its own; a store opened again reads the same.
    assert_eq!(
        store
            .append_log(other, a, 0, push(b"2nd"), l)
            .await
            .unwrap(),
        ok(3)
    );
    let again = h.open().await;
    assert_eq!(
        again.read_log(t, 0, 100).await.unwrap(),
        (b"hello world".to_vec(), 11)
    );
    assert_eq!(
        again.read_log(other, 0, 100).await.unwrap(),
        (b"2nd".to_vec(), 3)
    );

    // The logs of removed tasks go; a log never written is no error.
    again.remove_logs(&[t, other, 999_999]).await.unwrap();
    assert_eq!(again.log_sizes(&[t]).await.unwrap().get(&t), None);
    assert_eq!(again.read_log(other, 0, 10).await.unwrap(), (Vec::new(), 0));
}

pub(super) async fn pushed_logs_stop_at_the_limits_per_task_and_per_server(h: &dyn Harness) {
    let store = h.open().await;
    let (a, b, ids) = setup(store.as_ref(), 3).await;
    let l = LogLimits {
        per_task: 10,
        per_server: 15,
    };
    let ok = |n| Appended::Size(n);
    assert_eq!(
        store
            .append_log(ids[0], a, 0, push(b"0123456789"), l)
            .await
            .unwrap(),
        ok(10)
    );
    assert_eq!(
        store
            .append_log(ids[0], a, 10, push(b"x"), l)
            .await
            .unwrap(),
        Appended::TaskFull { limit: 10 }
    );
    // A push that crosses the server's limit keeps what fits; the next is refused.
    assert_eq!(
        store
            .append_log(ids[1], a, 0, push(b"0123456789"), l)
            .await
            .unwrap(),
        ok(5)
    );
    assert_eq!(
        store.append_log(ids[1], a, 5, push(b"5"), l).await.unwrap(),
        Appended::ServerFull { limit: 15 }
    );
    assert_eq!(
        store.read_log(ids[1], 0, 100).await.unwrap(),
        (b"01234".to_vec(), 5)
    );
    // A store opened again counts what the server's tasks hold.
    let again = h.open().await;
    assert_eq!(
        again.append_log(ids[2], a, 0, push(b"z"), l).await.unwrap(),
        Appended::ServerFull { limit: 15 }
    );
    assert_eq!(again.log_sizes(&[ids[2]]).await.unwrap().get(&ids[2]), None);
    // Another server is not held back.
    let t = again
        .submit_task("default", "logs", "true", 60, 3)
        .await
        .unwrap();
    assert_eq!(again.assign(b, 1, 4).await.unwrap().tasks.len(), 1);
    assert_eq!(
        again.append_log(t.id, b, 0, push(b"abc"), l).await.unwrap(),
        ok(3)
    );
}
