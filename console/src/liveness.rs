//! Liveness on the hot path. Heartbeats touch only memory: each node's last heartbeat, version,
//! clock offset and load live in a map, marked dirty, and a background flusher writes the dirty
//! ones to the store in one transaction every few seconds (and once more at shutdown). A console
//! killed outright loses at most one flush interval of heartbeat times, never an enrollment or a
//! clean-shutdown record: those are written through at once.
//!
//! Consoles sharing a database each hold such a map for the agents that talk to them, and
//! each loads what the others wrote every [`REFRESH`] ([`LivenessMap::merge`]: the newest sign of
//! life wins), so every console shows the same status. A node this console does not know (it
//! enrolled through another) is looked up in the store when it first calls, at most once per
//! [`LOOKUP_AGAIN_MS`] per node id and [`LOOKUPS_PER_SEC`] in all, so a stream of made-up
//! credentials does not become a stream of queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tasknode_protocol::wire::HeartbeatRequest;

use crate::auth::{self, SecretDigest};
use crate::removed::RemovedNodes;
use crate::store::{
    Liveness, LivenessUpdate, NodeRecord, RemovedNode, Server, Stop, Store, StoreError,
};

/// How often a console loads the liveness other consoles wrote.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A node id looked up in the store and not found is not looked up again for this long.
pub const LOOKUP_AGAIN_MS: i64 = 5_000;
/// Store lookups of unknown node ids per second, in all.
pub const LOOKUPS_PER_SEC: u32 = 50;
/// Node ids remembered as looked up, at most (beyond it, lookups wait for the cache to clear).
const LOOKUPS_REMEMBERED: usize = 10_000;
/// Loaded records merged per hold of the map's lock; heartbeats wait at most that long.
const MERGE_SLICE: usize = 1_000;

#[derive(Debug, Clone)]
struct Node {
    server_id: i64,
    /// The server's enrollment generation this node was made by (0: loaded from the store,
    /// which any later enrollment supersedes).
    generation: u64,
    secret: SecretDigest,
    live: Liveness,
    dirty: bool,
}

/// The nodes by node id, and which node each server has: a server has at most one node, the one
/// of its latest enrollment, so an enrollment or a merge finds the node it replaces without a
/// walk over every node (at 100,000 agents that walk, under the lock every heartbeat takes,
/// made enrolling quadratic).
///
/// `dirty` lists the nodes marked dirty since the last flush (an id may be there twice, or
/// for a node no longer dirty: the flag decides), so a flush visits those and not every node:
/// a walk over 100,000 nodes each flush held the lock every heartbeat takes for milliseconds.
#[derive(Debug, Default)]
struct Nodes {
    by_id: HashMap<String, Node>,
    by_server: HashMap<i64, String>,
    dirty: Vec<String>,
}

/// Marks node `n` (its id `node_id`) dirty, listing it in `dirty` unless it already was.
fn mark_dirty(n: &mut Node, node_id: &str, dirty: &mut Vec<String>) {
    if !std::mem::replace(&mut n.dirty, true) {
        dirty.push(node_id.to_owned());
    }
}

impl Nodes {
    /// Whether server `server_id` has a node of enrollment `generation` or a later one.
    fn has_generation(&self, server_id: i64, generation: u64) -> bool {
        self.by_server
            .get(&server_id)
            .and_then(|id| self.by_id.get(id))
            .is_some_and(|n| n.generation >= generation)
    }

    /// Puts `node` in, in place of its server's node, if any.
    fn replace(&mut self, node_id: String, node: Node) {
        if let Some(old) = self.by_server.insert(node.server_id, node_id.clone()) {
            self.by_id.remove(&old);
        }
        self.by_id.insert(node_id, node);
    }

    fn get(&self, node_id: &str) -> Option<&Node> {
        self.by_id.get(node_id)
    }

    fn get_mut(&mut self, node_id: &str) -> Option<&mut Node> {
        self.by_id.get_mut(node_id)
    }
}

/// In-memory liveness of every enrolled node, keyed by node id.
#[derive(Debug, Default)]
pub struct LivenessMap {
    nodes: Mutex<Nodes>,
    lookups: Mutex<Lookups>,
    removed: RemovedNodes,
}

/// Which unknown node ids were looked up in the store lately, and how many this second.
#[derive(Debug, Default)]
struct Lookups {
    last: HashMap<String, i64>,
    second: i64,
    this_second: u32,
}

/// The moment a node last showed a sign of life: its last heartbeat or its clean shutdown.
fn last_sign(l: &Liveness) -> i64 {
    l.last_heartbeat_ms
        .unwrap_or(i64::MIN)
        .max(l.stopped.as_ref().map_or(i64::MIN, |s| s.at_ms))
}

fn decode_secret(hex_digest: &str) -> Option<SecretDigest> {
    let mut secret = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut secret).ok()?;
    Some(secret)
}

/// Why a node's credentials were refused. Deliberately one answer for "no such node" and "wrong
/// secret", so a caller learns nothing about other nodes.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown node or wrong node secret; re-enroll the agent (tasknode enroll) if this server was enrolled again elsewhere"
)]
pub struct BadCredentials;

impl LivenessMap {
    fn lock(&self) -> MutexGuard<'_, Nodes> {
        // A panic while holding this lock leaves the map consistent (each update is a plain
        // field write), so a poisoned lock is taken over rather than spread.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the map from what the store holds.
    pub fn load(servers: &[Server]) -> LivenessMap {
        let map = LivenessMap::default();
        {
            let mut nodes = map.lock();
            for s in servers {
                let Some(e) = &s.enrollment else { continue };
                let mut secret = [0u8; 32];
                if hex::decode_to_slice(&e.secret_sha256, &mut secret).is_err() {
                    tracing::warn!(server = %s.name, "stored node secret digest is malformed; the agent must enroll again");
                    continue;
                }
                nodes.replace(
                    e.node_id.clone(),
                    Node {
                        server_id: s.id,
                        generation: 0,
                        secret,
                        live: s.liveness.clone(),
                        dirty: false,
                    },
                );
            }
        }
        map
    }

    /// Merges what the store holds of these nodes (as other consoles wrote it): a node this map
    /// knows takes the newer of the two liveness records (by last heartbeat or shutdown; a
    /// newer one from the store replaces unwritten older data here); a node it does not know
    /// replaces its server's node unless the map holds one of a later or the same
    /// enrollment generation. Returns how many entries changed.
    pub fn merge(&self, records: Vec<NodeRecord>) -> usize {
        let mut changed = 0;
        let mut records = records.into_iter().peekable();
        // A refresh brings every node another console saw lately (all of them, on a busy
        // fleet): the lock every heartbeat takes is held for a slice of them at a time.
        while records.peek().is_some() {
            let nodes = self.lock();
            changed += Self::merge_some(nodes, records.by_ref().take(MERGE_SLICE));
        }
        changed
    }

    fn merge_some(
        mut nodes: MutexGuard<'_, Nodes>,
        records: impl Iterator<Item = NodeRecord>,
    ) -> usize {
        let mut changed = 0;
        for rec in records {
            if let Some(n) = nodes.get_mut(&rec.node_id) {
                n.generation = n.generation.max(rec.generation);
                if last_sign(&rec.liveness) > last_sign(&n.live) {
                    n.live = rec.liveness;
                    n.dirty = false;
                    changed += 1;
                }
                continue;
            }
            if nodes.has_generation(rec.server_id, rec.generation) {
                continue;
            }
            let Some(secret) = decode_secret(&rec.secret_sha256) else {
                continue;
            };
            nodes.replace(
                rec.node_id,
                Node {
                    server_id: rec.server_id,
                    generation: rec.generation,
                    secret,
                    live: rec.liveness,
                    dirty: false,
                },
            );
            changed += 1;
        }
        changed
    }

    /// Whether the store may be asked about unknown node `node_id` at `now_ms`: not within
    /// [`LOOKUP_AGAIN_MS`] of the last time it did not know it, and not beyond
    /// [`LOOKUPS_PER_SEC`] in all (which also bounds concurrent lookups of one id: an agent's
    /// first heartbeat and poll may both come before either lookup returned). Counts it.
    fn may_look_up(&self, node_id: &str, now_ms: i64) -> bool {
        let mut l = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if l.last
            .get(node_id)
            .is_some_and(|&at| now_ms.saturating_sub(at) < LOOKUP_AGAIN_MS)
        {
            return false;
        }
        let second = now_ms.div_euclid(1000);
        if l.second != second {
            l.second = second;
            l.this_second = 0;
        }
        if l.this_second >= LOOKUPS_PER_SEC {
            return false;
        }
        if l.last.len() >= LOOKUPS_REMEMBERED {
            l.last
                .retain(|_, at| now_ms.saturating_sub(*at) < LOOKUP_AGAIN_MS);
            if l.last.len() >= LOOKUPS_REMEMBERED {
                return false;
            }
        }
        l.this_second += 1;
        true
    }

    /// Remembers that the store did not know `node_id` at `now_ms`.
    fn missed(&self, node_id: &str, now_ms: i64) {
        let mut l = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        l.last.insert(node_id.to_owned(), now_ms);
    }

    /// Checks a node's secret; a node this map does not know (enrolled through another
    /// console) is looked up in the store first, within the bounds of [`Self::may_look_up`].
    /// A known node id with a wrong secret is not looked up: node ids are never reused, so
    /// the store cannot hold another secret for it.
    pub async fn authenticate_shared(
        &self,
        store: &dyn Store,
        node_id: &str,
        secret: &str,
        now_ms: i64,
    ) -> Result<Result<(), BadCredentials>, StoreError> {
        if self.server_of(node_id).is_some()
            || uuid::Uuid::parse_str(node_id).is_err()
            || !self.may_look_up(node_id, now_ms)
        {
            return Ok(self.authenticate(node_id, secret));
        }
        match store.node_record(node_id).await? {
            Some(rec) => {
                self.merge(vec![rec]);
            }
            None => self.missed(node_id, now_ms),
        }
        Ok(self.authenticate(node_id, secret))
    }

    /// Checks a node's secret.
    pub fn authenticate(&self, node_id: &str, secret: &str) -> Result<(), BadCredentials> {
        let presented = auth::digest(secret);
        let nodes = self.lock();
        match nodes.get(node_id) {
            Some(n) if auth::digests_equal(&n.secret, &presented) => Ok(()),
            _ => Err(BadCredentials),
        }
    }

    /// Replaces the node of `server_id` (if any) with a newly enrolled one, made by the
    /// server's enrollment `generation` (as the store's transaction returned it). A node of a
    /// newer generation already in the map stays: concurrent enrollments of one server end with
    /// the node whose transaction committed last, as in the store. Returns whether it was
    /// taken.
    pub fn enroll(
        &self,
        server_id: i64,
        generation: u64,
        node_id: &str,
        secret: SecretDigest,
        live: Liveness,
    ) -> bool {
        let mut nodes = self.lock();
        if nodes.has_generation(server_id, generation) {
            return false;
        }
        nodes.replace(
            node_id.to_owned(),
            Node {
                server_id,
                generation,
                secret,
                live,
                dirty: false,
            },
        );
        true
    }

    /// Drops the nodes of removed servers and remembers them as removed.
    pub fn forget_removed(&self, removed: &[RemovedNode]) {
        self.removed.remember(removed);
        let mut nodes = self.lock();
        for r in removed {
            if let Some(n) = nodes.by_id.remove(&r.node_id)
                && nodes.by_server.get(&n.server_id) == Some(&r.node_id)
            {
                nodes.by_server.remove(&n.server_id);
            }
        }
    }

    /// The removed server node `node_id` was enrolled as, when `secret` is its secret.
    pub fn removed_server(&self, node_id: &str, secret: &str) -> Option<String> {
        self.removed.check(node_id, secret)
    }

    /// The removed server node `node_id` was enrolled as (its secret checked before).
    pub fn was_removed(&self, node_id: &str) -> Option<String> {
        self.removed.contains(node_id)
    }

    /// Where a node's log service is, as its last heartbeat said.
    pub fn log_addr(&self, node_id: &str) -> Option<std::net::SocketAddr> {
        self.lock().get(node_id).and_then(|n| n.live.log_addr)
    }

    /// Records a heartbeat that came from `peer`. Returns false for an unknown node.
    pub fn heartbeat(
        &self,
        node_id: &str,
        hb: &HeartbeatRequest,
        peer: std::net::IpAddr,
        now_ms: i64,
    ) -> bool {
        let mut guard = self.lock();
        // One lookup on this hot path: the node and the dirty list are borrowed apart.
        let nodes = &mut *guard;
        let Some(n) = nodes.by_id.get_mut(node_id) else {
            return false;
        };
        n.live.log_addr = hb.log_port.map(|p| std::net::SocketAddr::new(peer, p));
        n.live.last_heartbeat_ms = Some(now_ms);
        if n.live.agent_version.as_deref() != Some(hb.agent_version.as_str()) {
            n.live.agent_version = Some(hb.agent_version.clone());
        }
        if hb.clock_offset_ms.is_some() {
            n.live.clock_offset_ms = hb.clock_offset_ms;
        }
        n.live.running_tasks = hb.running_tasks;
        mark_dirty(n, node_id, &mut nodes.dirty);
        true
    }

    /// Records a clean shutdown and returns the update to write through at once.
    pub fn shutdown(&self, node_id: &str, reason: &str, now_ms: i64) -> Option<LivenessUpdate> {
        let mut nodes = self.lock();
        let n = nodes.get_mut(node_id)?;
        n.live.stopped = Some(Stop {
            at_ms: now_ms,
            reason: reason.to_owned(),
        });
        n.live.running_tasks = 0;
        n.dirty = false;
        Some(LivenessUpdate {
            node_id: node_id.to_owned(),
            liveness: n.live.clone(),
        })
    }

    /// The server a node is enrolled as.
    pub fn server_of(&self, node_id: &str) -> Option<i64> {
        self.lock().get(node_id).map(|n| n.server_id)
    }

    /// Current liveness of one node.
    pub fn get(&self, node_id: &str) -> Option<Liveness> {
        self.lock().get(node_id).map(|n| n.live.clone())
    }

    /// Current liveness of every node, by server id.
    pub fn by_server(&self) -> HashMap<i64, Liveness> {
        self.lock()
            .by_id
            .values()
            .map(|n| (n.server_id, n.live.clone()))
            .collect()
    }

    /// Takes the dirty entries, clearing their marks.
    fn take_dirty(&self) -> Vec<LivenessUpdate> {
        let mut nodes = self.lock();
        let ids = std::mem::take(&mut nodes.dirty);
        let mut batch = Vec::with_capacity(ids.len());
        for node_id in ids {
            if let Some(n) = nodes.by_id.get_mut(&node_id)
                && std::mem::replace(&mut n.dirty, false)
            {
                batch.push(LivenessUpdate {
                    node_id,
                    liveness: n.live.clone(),
                });
            }
        }
        batch
    }

    /// Marks entries dirty again after a failed write, unless newer data replaced them.
    fn restore_dirty(&self, batch: &[LivenessUpdate]) {
        let mut guard = self.lock();
        let nodes = &mut *guard;
        for u in batch {
            if let Some(n) = nodes.by_id.get_mut(&u.node_id) {
                mark_dirty(n, &u.node_id, &mut nodes.dirty);
            }
        }
    }

    /// Writes every dirty entry to the store in one batch. Returns how many were written.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let batch = self.take_dirty();
        let n = batch.len();
        if n == 0 {
            return Ok(0);
        }
        match store.record_liveness(batch.clone()).await {
            Ok(()) => Ok(n),
            Err(e) => {
                self.restore_dirty(&batch);
                Err(e)
            }
        }
    }
}

/// Flushes `map` every `every` until the task is dropped.
pub async fn flush_periodically(map: Arc<LivenessMap>, store: Arc<dyn Store>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match map.flush(store.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(nodes = n, "persisted liveness"),
            Err(e) => tracing::error!(error = %e, "persisting liveness failed; will retry"),
        }
    }
}

/// Every `every`, merges into `map` what other consoles wrote to the store since the previous
/// load ([`Store::nodes_changed`]: the store keeps the cursor exact, so no heartbeat written
/// between two loads is missed, and rows this console wrote itself are not loaded back). Rows
/// seen twice merge to the same result.
pub async fn refresh_periodically(map: Arc<LivenessMap>, store: Arc<dyn Store>, every: Duration) {
    let mut after = None;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store.nodes_changed(after).await {
            Ok(changes) => {
                let n = map.merge(changes.nodes);
                if n > 0 {
                    tracing::debug!(nodes = n, "merged liveness other consoles wrote");
                }
                after = Some(changes.next);
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading liveness other consoles wrote failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ProjectStore, ServerFilter, ServerStore, SqliteStore};
    use tasknode_protocol::NetworkType;
    use tasknode_protocol::wire::HostFacts;

    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn hb(offset: Option<i64>) -> HeartbeatRequest {
        HeartbeatRequest {
            agent_version: "0.1.0".into(),
            clock_offset_ms: offset,
            running_tasks: 1,
            free_slots: 3,
            log_port: None,
        }
    }

    #[test]
    fn the_log_service_is_where_the_heartbeats_come_from() {
        let map = LivenessMap::default();
        map.enroll(1, 1, "a", auth::digest("secret-a"), Liveness::default());
        let peer: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        let with_port = HeartbeatRequest {
            log_port: Some(8000),
            ..hb(None)
        };
        assert!(map.heartbeat("a", &with_port, peer, 1));
        assert_eq!(map.log_addr("a"), Some("10.0.0.7:8000".parse().unwrap()));
        // An agent that stops serving its logs says so by leaving the port out.
        assert!(map.heartbeat("a", &hb(None), peer, 2));
        assert_eq!(map.log_addr("a"), None);
        assert_eq!(map.log_addr("nope"), None);
    }

    #[test]
    fn a_console_the_heartbeats_do_not_reach_learns_the_log_service_from_the_store() {
        // Console A takes the heartbeats and writes them; console B merges what A wrote.
        let a = LivenessMap::default();
        a.enroll(1, 1, "a", auth::digest("secret-a"), Liveness::default());
        let with_port = HeartbeatRequest {
            log_port: Some(8000),
            ..hb(None)
        };
        assert!(a.heartbeat("a", &with_port, "10.0.0.7".parse().unwrap(), 5));
        let written = a.take_dirty();
        assert_eq!(
            written[0].liveness.log_addr,
            Some("10.0.0.7:8000".parse().unwrap())
        );
        let b = LivenessMap::default();
        b.enroll(1, 1, "a", auth::digest("secret-a"), Liveness::default());
        assert_eq!(b.log_addr("a"), None);
        let mut rec = record(1, "a", 1, Some(5));
        rec.liveness = written[0].liveness.clone();
        assert_eq!(b.merge(vec![rec]), 1);
        assert_eq!(b.log_addr("a"), Some("10.0.0.7:8000".parse().unwrap()));
    }

    #[test]
    fn a_secret_works_only_for_its_own_node() {
        let map = LivenessMap::default();
        map.enroll(1, 1, "a", auth::digest("secret-a"), Liveness::default());
        map.enroll(2, 1, "b", auth::digest("secret-b"), Liveness::default());
        assert!(map.authenticate("a", "secret-a").is_ok());
        assert!(map.authenticate("b", "secret-a").is_err());
        assert!(map.authenticate("c", "secret-a").is_err());
        // Enrolling server 1 again retires node a.
        assert!(map.enroll(1, 2, "a2", auth::digest("secret-a2"), Liveness::default()));
        assert!(map.authenticate("a", "secret-a").is_err());
        assert!(map.authenticate("a2", "secret-a2").is_ok());
        assert_eq!(map.server_of("a2"), Some(1));
        assert_eq!(map.server_of("a"), None);
    }

    #[test]
    fn a_stale_enrollment_never_replaces_a_newer_one() {
        let map = LivenessMap::default();
        // Generation 3 committed last but reached the map first; 2 arrives late.
        assert!(map.enroll(1, 3, "new", auth::digest("s3"), Liveness::default()));
        assert!(!map.enroll(1, 2, "old", auth::digest("s2"), Liveness::default()));
        assert!(map.authenticate("new", "s3").is_ok());
        assert!(map.authenticate("old", "s2").is_err());
        // The same generation twice is a replay, not news.
        assert!(!map.enroll(1, 3, "again", auth::digest("s3b"), Liveness::default()));
        // A node loaded from the store (generation 0) gives way to any enrollment.
        let servers = vec![];
        let loaded = LivenessMap::load(&servers);
        assert!(loaded.enroll(1, 1, "n", auth::digest("s"), Liveness::default()));
    }

    #[tokio::test]
    async fn heartbeats_reach_the_store_only_when_flushed_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store
            .create_group("default", "g", NetworkType::Classic, 0)
            .await
            .unwrap();
        let facts = HostFacts {
            hostname: "h".into(),
            cpu_cores: 2.0,
            memory_bytes: 1 << 30,
            os: "x".into(),
            arch: "x86_64".into(),
            kernel: "k".into(),
            agent_version: "0.1.0".into(),
        };
        let map = LivenessMap::default();
        for (i, name) in ["h1", "h2"].iter().enumerate() {
            let s = store
                .add_server("default", "g", name, None, 0)
                .await
                .unwrap();
            let e = crate::store::Enrollment {
                node_id: format!("n{i}"),
                secret_sha256: hex::encode(auth::digest("s")),
                enrolled_ms: 0,
                cpu_cores: 2.0,
                memory_bytes: 1 << 30,
            };
            let generation = store.enroll(s.id, &e, &facts, None).await.unwrap();
            map.enroll(
                s.id,
                generation,
                &e.node_id,
                auth::digest("s"),
                Liveness::default(),
            );
        }
        for t in 1..=100 {
            assert!(map.heartbeat("n0", &hb(Some(5)), LOOPBACK, t));
            assert!(map.heartbeat("n1", &hb(None), LOOPBACK, t));
        }
        assert!(!map.heartbeat("nope", &hb(None), LOOPBACK, 1));
        let before = store.list_servers(&ServerFilter::default()).await.unwrap();
        assert!(
            before
                .iter()
                .all(|s| s.liveness.last_heartbeat_ms.is_none())
        );

        assert_eq!(map.flush(&store).await.unwrap(), 2);
        assert_eq!(
            map.flush(&store).await.unwrap(),
            0,
            "nothing dirty after a flush"
        );
        let after = store.list_servers(&ServerFilter::default()).await.unwrap();
        assert!(
            after
                .iter()
                .all(|s| s.liveness.last_heartbeat_ms == Some(100))
        );
        assert_eq!(after[0].liveness.clock_offset_ms, Some(5));

        // Reloading from the store gives the same view.
        let reloaded = LivenessMap::load(&after);
        assert_eq!(reloaded.by_server(), map.by_server());
        assert!(reloaded.authenticate("n1", "s").is_ok());
    }

    fn record(server_id: i64, node: &str, generation: u64, beat: Option<i64>) -> NodeRecord {
        NodeRecord {
            server_id,
            node_id: node.into(),
            secret_sha256: hex::encode(auth::digest(&format!("secret-{node}"))),
            generation,
            liveness: Liveness {
                last_heartbeat_ms: beat,
                ..Liveness::default()
            },
        }
    }

    #[test]
    fn merging_keeps_the_newest_sign_of_life_and_the_latest_enrollment() {
        let map = LivenessMap::default();
        map.enroll(1, 2, "a", auth::digest("secret-a"), Liveness::default());
        assert!(map.heartbeat("a", &hb(None), LOOPBACK, 100));
        // Older than what this console saw: ignored; newer: taken, and nothing is left to
        // write back over it.
        assert_eq!(map.merge(vec![record(1, "a", 2, Some(90))]), 0);
        assert_eq!(map.get("a").unwrap().last_heartbeat_ms, Some(100));
        assert_eq!(map.merge(vec![record(1, "a", 2, Some(150))]), 1);
        assert_eq!(map.get("a").unwrap().last_heartbeat_ms, Some(150));
        assert!(map.take_dirty().is_empty());
        // A clean shutdown another console recorded after the last heartbeat wins too.
        let mut stopped = record(1, "a", 2, Some(150));
        stopped.liveness.stopped = Some(Stop {
            at_ms: 160,
            reason: "SIGTERM".into(),
        });
        assert_eq!(map.merge(vec![stopped]), 1);
        assert!(map.get("a").unwrap().stopped.is_some());

        // A node enrolled through another console: known at once, and its server's older node
        // is retired; an older generation never comes back.
        assert_eq!(map.merge(vec![record(1, "a3", 3, None)]), 1);
        assert!(map.authenticate("a3", "secret-a3").is_ok());
        assert!(map.authenticate("a", "secret-a").is_err());
        assert_eq!(map.merge(vec![record(1, "a", 2, Some(500))]), 0);
        assert!(map.authenticate("a", "secret-a").is_err());
        // A malformed digest is skipped.
        let mut bad = record(2, "b", 1, None);
        bad.secret_sha256 = "zz".into();
        assert_eq!(map.merge(vec![bad]), 0);
    }

    #[test]
    fn a_flush_takes_each_dirty_node_once_with_its_latest_liveness() {
        let map = LivenessMap::default();
        map.enroll(1, 1, "a", auth::digest("secret-a"), Liveness::default());
        map.enroll(2, 1, "b", auth::digest("secret-b"), Liveness::default());
        map.enroll(3, 1, "c", auth::digest("secret-c"), Liveness::default());
        for t in 1..=3 {
            assert!(map.heartbeat("a", &hb(None), LOOPBACK, t));
        }
        // b is dirty, then another console's newer record makes it clean, then it is dirty
        // again: one entry, the latest.
        assert!(map.heartbeat("b", &hb(None), LOOPBACK, 1));
        assert_eq!(map.merge(vec![record(2, "b", 1, Some(50))]), 1);
        assert!(map.heartbeat("b", &hb(None), LOOPBACK, 60));
        // c is dirty, then its server is enrolled again: its node is gone.
        assert!(map.heartbeat("c", &hb(None), LOOPBACK, 1));
        assert!(map.enroll(3, 2, "c2", auth::digest("secret-c2"), Liveness::default()));
        let mut batch: Vec<(String, Option<i64>)> = map
            .take_dirty()
            .into_iter()
            .map(|u| (u.node_id, u.liveness.last_heartbeat_ms))
            .collect();
        batch.sort();
        assert_eq!(
            batch,
            [("a".to_owned(), Some(3)), ("b".to_owned(), Some(60))]
        );
        assert!(map.take_dirty().is_empty());
        // A failed write puts them back, once each.
        let again = vec![
            LivenessUpdate {
                node_id: "a".into(),
                liveness: Liveness::default(),
            };
            2
        ];
        map.restore_dirty(&again);
        let retried = map.take_dirty();
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].liveness.last_heartbeat_ms, Some(3));
    }

    #[test]
    fn a_load_larger_than_a_slice_merges_whole_and_in_order() {
        let map = LivenessMap::default();
        let n = MERGE_SLICE * 2 + 7;
        let mut records: Vec<NodeRecord> = (0..n)
            .map(|i| record(i as i64 + 1, &format!("n{i}"), 1, Some(10)))
            .collect();
        // A later record of the first node, in the last slice, is the one kept.
        records.push(record(1, "n0", 1, Some(20)));
        assert_eq!(map.merge(records), n + 1);
        assert!(
            map.authenticate(&format!("n{}", n - 1), &format!("secret-n{}", n - 1))
                .is_ok()
        );
        assert_eq!(map.get("n0").unwrap().last_heartbeat_ms, Some(20));
    }

    #[test]
    fn unknown_node_ids_are_looked_up_rarely() {
        let map = LivenessMap::default();
        assert!(map.may_look_up("x", 10_000));
        // Looked up again until the store says it does not know it.
        assert!(map.may_look_up("x", 10_000));
        map.missed("x", 10_000);
        assert!(!map.may_look_up("x", 10_001));
        assert!(!map.may_look_up("x", 10_000 + LOOKUP_AGAIN_MS - 1));
        assert!(map.may_look_up("x", 10_000 + LOOKUP_AGAIN_MS));
        // At most LOOKUPS_PER_SEC a second, whatever the ids.
        let t = 100_000;
        let allowed = (0..200)
            .filter(|i| map.may_look_up(&format!("n{i}"), t))
            .count();
        assert_eq!(allowed, LOOKUPS_PER_SEC as usize);
        assert!(map.may_look_up("n199", t + 1_000));
    }

    #[tokio::test]
    async fn a_node_enrolled_through_another_console_is_found_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store
            .create_group("default", "g", NetworkType::Classic, 0)
            .await
            .unwrap();
        let s = store
            .add_server("default", "g", "h1", None, 0)
            .await
            .unwrap();
        let node = uuid::Uuid::new_v4().to_string();
        let e = crate::store::Enrollment {
            node_id: node.clone(),
            secret_sha256: hex::encode(auth::digest("s")),
            enrolled_ms: 0,
            cpu_cores: 2.0,
            memory_bytes: 1 << 30,
        };
        let facts = HostFacts {
            hostname: "h1".into(),
            cpu_cores: 2.0,
            memory_bytes: 1 << 30,
            os: "x".into(),
            arch: "x86_64".into(),
            kernel: "k".into(),
            agent_version: "0.1.0".into(),
        };
        store.enroll(s.id, &e, &facts, None).await.unwrap();
        // This map never saw the enrollment (another console did it).
        let map = LivenessMap::default();
        assert!(map.authenticate(&node, "s").is_err());
        let wrong = map
            .authenticate_shared(&store, &node, "wrong", 1_000)
            .await
            .unwrap();
        assert!(wrong.is_err());
        // The lookup put it in the map: the right secret needs no second one.
        assert_eq!(map.server_of(&node), Some(s.id));
        let right = map
            .authenticate_shared(&store, &node, "s", 1_001)
            .await
            .unwrap();
        assert!(right.is_ok());
        // Made-up ids are looked up once per LOOKUP_AGAIN_MS, and never when not a node id.
        let other = uuid::Uuid::new_v4().to_string();
        assert!(
            map.authenticate_shared(&store, &other, "s", 2_000)
                .await
                .unwrap()
                .is_err()
        );
        assert!(!map.may_look_up(&other, 2_001));
        assert!(
            map.authenticate_shared(&store, "not-a-uuid", "s", 2_000)
                .await
                .unwrap()
                .is_err()
        );
        assert!(
            map.may_look_up("not-a-uuid", 2_002),
            "never counted as looked up"
        );
    }
}
