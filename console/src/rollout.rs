//! The rollout engine: which version each server should run.
//!
//! Each group has at most one rollout (a version, a batch size and how many failures it
//! tolerates). A tick looks at every running rollout: when more admitted agents failed to
//! update than allowed, it halts; when no admitted server is still on its way (updating, or
//! offered and reachable), it admits the next batch, available servers first; when every
//! server was admitted, it is done. Servers admitted to a rollout, and once it is done every
//! server of its group (also servers added later), should run its version; heartbeat answers
//! carry it from an in-memory map the tick rebuilds.
//!
//! The decisions are pure functions of what the console knows ([`plan`], [`update_view`]),
//! tested without a store or a clock. [`RolloutEngine`] gathers that knowledge, writes the
//! decisions, and is ticked every second, right after a rollout is set, after every update
//! report, and before the rollouts or servers are shown. Of several consoles on one database,
//! only the one holding the engine lease ([`crate::lease`]) writes steps, each fenced by it;
//! the others' ticks only rebuild the desired versions from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tasknode_protocol::updates::{
    Batch, RolloutState, RolloutView, SetRollout, UpdateOutcome, UpdateView,
};
use tasknode_protocol::wire::ServerStatus;

use crate::clock::{Clock, rfc3339};
use crate::liveness::LivenessMap;
use crate::status::{self, Thresholds};
use crate::store::{Advance, Rollout, Server, ServerFilter, Store, StoreError, UpdateRecord};

/// One server of a rollout's group, as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub id: i64,
    pub name: String,
    /// The agent version it runs, from its last heartbeat (or enrollment).
    pub running: Option<String>,
    /// When that heartbeat came.
    pub last_heartbeat_ms: Option<i64>,
    pub status: ServerStatus,
    /// Its latest update report, whatever version it was about.
    pub report: Option<UpdateRecord>,
    /// When these facts were gathered.
    pub as_of_ms: i64,
}

/// How long a server may run the new version under an update that is not over (on trial or
/// on probation, until its agent reports `updated`) before it counts as updated anyway: its
/// `updated` report may have been lost.
pub const UPDATE_SETTLES_MS: i64 = 15 * 60 * 1000;

impl Facts {
    /// It heartbeats as `version` (maybe only on trial: see [`Facts::updated`]).
    fn runs(&self, version: &str) -> bool {
        self.running.as_deref() == Some(version)
    }

    /// Its latest report, if it counts for rollout `r`: about the rollout's version, and made
    /// since the server was admitted (a failure of an earlier rollout does not count again;
    /// the agent tries again). A `managed` report counts whenever it came: the agent says it
    /// once, and it stays true.
    fn report_for(&self, r: &Rollout) -> Option<&UpdateRecord> {
        let rep = self
            .report
            .as_ref()
            .filter(|rep| rep.version == r.version)?;
        let admitted = r.members.get(&self.id);
        (rep.outcome == UpdateOutcome::Managed || admitted.is_none_or(|&at| rep.at_ms >= at))
            .then_some(rep)
    }

    fn reported(&self, r: &Rollout, outcome: UpdateOutcome) -> bool {
        self.report_for(r).is_some_and(|rep| rep.outcome == outcome)
    }

    /// It runs the version of `r` and keeps it. An agent's trial and probation of a new
    /// version heartbeat as that version before the agent reports `updated`: while its latest
    /// report is `started` (for less than [`UPDATE_SETTLES_MS`]) the update is not over, and
    /// when it reported `failed` after its last heartbeat, those heartbeats were the trial of a
    /// version it gave up.
    fn updated(&self, r: &Rollout) -> bool {
        if !self.runs(&r.version) {
            return false;
        }
        match self.report.as_ref().filter(|rep| rep.version == r.version) {
            Some(rep) if rep.outcome == UpdateOutcome::Started => {
                self.as_of_ms - rep.at_ms >= UPDATE_SETTLES_MS
            }
            Some(rep) if rep.outcome == UpdateOutcome::Failed => {
                self.last_heartbeat_ms.is_some_and(|beat| beat > rep.at_ms)
            }
            _ => true,
        }
    }

    /// It reported that its update to the version of `r` failed (in this rollout), and does
    /// not run it.
    fn failed(&self, r: &Rollout) -> bool {
        !self.updated(r) && self.reported(r, UpdateOutcome::Failed)
    }

    /// Admitted and still on its way to the version of `r`: it is not updated, did not fail,
    /// is not updated by its package manager, and is reachable. A stopped, pending or skewed
    /// server is settled, so it never holds a rollout up.
    fn in_flight(&self, r: &Rollout) -> bool {
        !self.updated(r)
            && !self.reported(r, UpdateOutcome::Failed)
            && !self.reported(r, UpdateOutcome::Managed)
            && matches!(
                self.status,
                ServerStatus::Available | ServerStatus::Degraded
            )
    }
}

/// How far a rollout got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub servers: u32,
    pub admitted: u32,
    pub updated: u32,
    pub failed: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Counts a rollout over the servers of its group.
pub fn counts(r: &Rollout, group: &[Facts]) -> Counts {
    let members = || group.iter().filter(|f| r.members.contains_key(&f.id));
    Counts {
        servers: count(group.len()),
        admitted: count(members().count()),
        updated: count(members().filter(|f| f.updated(r)).count()),
        failed: count(members().filter(|f| f.failed(r)).count()),
    }
}

/// What a tick decides for one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Servers to admit now.
    pub admit: Vec<i64>,
    pub state: RolloutState,
    pub reason: String,
}

/// Names for a reason: at most three, then how many more.
fn names<'a>(list: impl Iterator<Item = &'a str>) -> String {
    let mut all: Vec<&str> = list.collect();
    all.sort_unstable();
    let mut text = all.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 3 {
        text.push_str(&format!(" and {} more", all.len() - 3));
    }
    text
}

fn servers(n: usize) -> String {
    if n == 1 {
        "1 server".to_owned()
    } else {
        format!("{n} servers")
    }
}

/// The next step of rollout `r` over the servers of its group. A rollout that is not running
/// stays as it is.
pub fn plan(r: &Rollout, group: &[Facts]) -> Plan {
    let v = r.version.as_str();
    let stay = || Plan {
        admit: Vec::new(),
        state: r.state,
        reason: r.reason.clone(),
    };
    if r.state != RolloutState::Running {
        return stay();
    }
    let members: Vec<&Facts> = group
        .iter()
        .filter(|f| r.members.contains_key(&f.id))
        .collect();

    let mut failed: Vec<&Facts> = members.iter().copied().filter(|f| f.failed(r)).collect();
    if failed.len() > r.max_failures as usize {
        failed.sort_by_key(|f| (f.report.as_ref().map(|rep| rep.at_ms), f.name.clone()));
        let first = failed[0];
        let why = first
            .report
            .as_ref()
            .map(|rep| rep.reason.trim())
            .filter(|why| !why.is_empty())
            .unwrap_or("no reason given");
        let (agents, them) = if failed.len() == 1 {
            ("1 agent".to_owned(), "it")
        } else {
            (format!("{} agents", failed.len()), "them")
        };
        return Plan {
            admit: Vec::new(),
            state: RolloutState::Halted,
            reason: format!(
                "{agents} failed to update to {v} (first: {}: {why}); fix {them} and set the rollout again, or roll back with `tasknode-console release pin`",
                first.name
            ),
        };
    }

    let in_flight: Vec<&Facts> = members.iter().copied().filter(|f| f.in_flight(r)).collect();
    if !in_flight.is_empty() {
        return Plan {
            admit: Vec::new(),
            state: RolloutState::Running,
            reason: format!(
                "{} of {} offered {v}; waiting for {} to update: {}",
                members.len(),
                servers(group.len()),
                servers(in_flight.len()),
                names(in_flight.iter().map(|f| f.name.as_str()))
            ),
        };
    }

    let mut waiting: Vec<&Facts> = group
        .iter()
        .filter(|f| !r.members.contains_key(&f.id))
        .collect();
    if waiting.is_empty() {
        return Plan {
            admit: Vec::new(),
            state: RolloutState::Done,
            reason: format!("every server was offered {v}"),
        };
    }
    waiting.sort_by(|a, b| {
        (a.status != ServerStatus::Available, &a.name)
            .cmp(&(b.status != ServerStatus::Available, &b.name))
    });
    let size = r.batch.size(count(group.len())) as usize;
    let batch: Vec<&Facts> = waiting.into_iter().take(size).collect();
    Plan {
        admit: batch.iter().map(|f| f.id).collect(),
        state: RolloutState::Running,
        reason: format!(
            "offered {v} to {} more {} ({}); {} of {} offered",
            batch.len(),
            if batch.len() == 1 {
                "server"
            } else {
                "servers"
            },
            names(batch.iter().map(|f| f.name.as_str())),
            members.len() + batch.len(),
            servers(group.len())
        ),
    }
}

/// Records in `desired` the version each server of the group should run under rollout `r`:
/// its admitted servers, and once it is done all of them.
pub fn desired(r: &Rollout, group: &[Facts], desired: &mut HashMap<i64, String>) {
    for id in r.members.keys() {
        desired.insert(*id, r.version.clone());
    }
    if r.state == RolloutState::Done {
        for f in group {
            desired.insert(f.id, r.version.clone());
        }
    }
}

/// What a managed install's report means, and what to run instead.
pub fn managed_reason(manager: &str) -> String {
    use tasknode_protocol::layout::{self, InstallMethod};
    let method = manager.parse::<InstallMethod>().ok();
    match (method, method.and_then(layout::package_update_command)) {
        (Some(InstallMethod::Rpm), Some(update)) => {
            format!("installed by rpm; run `{update}` on the server")
        }
        (Some(_), Some(update)) => format!("installed by a .deb; run `{update}` on the server"),
        _ => format!(
            "installed by a package manager ({}); update the {} package with it",
            tasknode_protocol::validate::show(manager),
            layout::PACKAGE_NAME
        ),
    }
}

/// Where server `f` stands with rollout `r` of its group.
pub fn update_view(r: &Rollout, f: &Facts) -> UpdateView {
    let v = r.version.as_str();
    let view = |state: &str, reason: String| UpdateView {
        desired_version: v.to_owned(),
        state: state.to_owned(),
        reason,
    };
    if f.updated(r) {
        return view("current", format!("runs {v}"));
    }
    if f.runs(v) && f.reported(r, UpdateOutcome::Started) {
        return view(
            "updating",
            format!(
                "runs {v} on trial; the update is done once the new version passes its health check"
            ),
        );
    }
    let admitted = r.members.get(&f.id).copied();
    if admitted.is_none() && r.state != RolloutState::Done {
        return view(
            "waiting",
            match r.state {
                RolloutState::Halted => format!(
                    "the rollout to {v} halted before this server's batch: {}",
                    r.reason
                ),
                _ => format!("the rollout to {v} has not reached this server's batch yet"),
            },
        );
    }
    let running = f.running.as_deref().unwrap_or("no version yet");
    match f.report_for(r) {
        Some(rep) if rep.outcome == UpdateOutcome::Started => view(
            "updating",
            format!("updating to {v} since {}", rfc3339(rep.at_ms)),
        ),
        Some(rep) if rep.outcome == UpdateOutcome::Failed => view(
            "failed",
            if rep.reason.trim().is_empty() {
                format!("the agent failed to update to {v} and gave no reason")
            } else {
                rep.reason.clone()
            },
        ),
        Some(rep) if rep.outcome == UpdateOutcome::Managed => {
            view("managed", managed_reason(&rep.reason))
        }
        Some(_) => view(
            "offered",
            format!(
                "the agent reported it updated to {v}, but its heartbeats say it runs {running}"
            ),
        ),
        None => {
            let offered = match admitted {
                Some(at) => format!("offered {v} at {}", rfc3339(at)),
                None => format!("offered {v}"),
            };
            // A failure from before this rollout: the agent tries again, after a while.
            let before = f
                .report
                .as_ref()
                .filter(|rep| rep.version == v && rep.outcome == UpdateOutcome::Failed)
                .map(|rep| {
                    format!(
                        "; it failed to update to {v} at {} ({}) and tries again once its [update] retry_after_secs passed",
                        rfc3339(rep.at_ms),
                        rep.reason.trim()
                    )
                })
                .unwrap_or_default();
            view(
                "offered",
                format!(
                    "{offered}; the agent has not started updating (it runs {running}){before}"
                ),
            )
        }
    }
}

/// The view of rollout `r` over the servers of its group.
pub fn rollout_view(r: &Rollout, group: &[Facts]) -> RolloutView {
    let c = counts(r, group);
    RolloutView {
        project: r.project.clone(),
        group: r.group.clone(),
        version: r.version.clone(),
        batch: r.batch,
        max_failures: r.max_failures,
        state: r.state,
        reason: r.reason.clone(),
        servers: c.servers,
        admitted: c.admitted,
        updated: c.updated,
        failed: c.failed,
        started_at: rfc3339(r.started_ms),
    }
}

/// The state of every rollout after a tick, with the servers of each group.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub rollouts: Vec<Rollout>,
    /// The servers of each rollout's group, by (project, group).
    pub groups: HashMap<(String, String), Vec<Facts>>,
}

impl Snapshot {
    /// The servers of the group of `r`.
    pub fn group(&self, r: &Rollout) -> &[Facts] {
        self.groups
            .get(&(r.project.clone(), r.group.clone()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn views(&self) -> Vec<RolloutView> {
        self.rollouts
            .iter()
            .map(|r| rollout_view(r, self.group(r)))
            .collect()
    }

    /// Where each server of a group with a rollout stands, by server id.
    pub fn update_views(&self) -> HashMap<i64, UpdateView> {
        let mut out = HashMap::new();
        for r in &self.rollouts {
            for f in self.group(r) {
                out.insert(f.id, update_view(r, f));
            }
        }
        out
    }
}

/// Runs rollouts and answers which version a server should run.
pub struct RolloutEngine {
    store: Arc<dyn Store>,
    live: Arc<LivenessMap>,
    clock: Clock,
    thresholds: Thresholds,
    /// Server id → the version it should run; a server not in it stays where it is.
    desired: Mutex<HashMap<i64, String>>,
    /// One tick (or rollout change) at a time, so no decision is made on stale data.
    ticking: tokio::sync::Mutex<()>,
    /// With several consoles on one database: rollouts advance only on the console holding
    /// this lease, their steps fenced by it; the others only rebuild the desired versions.
    lease: Option<Arc<crate::lease::Lease>>,
}

impl RolloutEngine {
    pub fn new(
        store: Arc<dyn Store>,
        live: Arc<LivenessMap>,
        clock: Clock,
        thresholds: Thresholds,
    ) -> RolloutEngine {
        RolloutEngine {
            store,
            live,
            clock,
            thresholds,
            desired: Mutex::new(HashMap::new()),
            ticking: tokio::sync::Mutex::new(()),
            lease: None,
        }
    }

    /// Advances rollouts only while `lease` is held, and writes each step under it.
    pub fn with_lease(mut self, lease: Arc<crate::lease::Lease>) -> RolloutEngine {
        self.lease = Some(lease);
        self
    }

    fn desired_map(&self) -> MutexGuard<'_, HashMap<i64, String>> {
        // Each update replaces the whole map, so a poisoned lock holds a consistent map.
        self.desired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version server `server_id` should run, as of the last tick; `None`: stay.
    pub fn desired_version(&self, server_id: i64) -> Option<String> {
        self.desired_map().get(&server_id).cloned()
    }

    /// Advances every running rollout and rebuilds the desired versions.
    pub async fn tick(&self) -> Result<Snapshot, StoreError> {
        let _one = self.ticking.lock().await;
        self.tick_locked().await
    }

    /// Sets a group's rollout and takes its first step at once.
    pub async fn set(&self, req: &SetRollout) -> Result<RolloutView, StoreError> {
        let _one = self.ticking.lock().await;
        let reason = match req.batch {
            Batch::All => format!("pinned to {}: every server at once", req.version),
            batch => format!("set to {} in batches of {batch}", req.version),
        };
        let set = self
            .store
            .set_rollout(req, &reason, self.clock.now_ms())
            .await?;
        let snap = self.tick_locked().await?;
        let r = snap
            .rollouts
            .iter()
            .find(|r| r.group_id == set.group_id)
            .unwrap_or(&set);
        Ok(rollout_view(r, snap.group(r)))
    }

    async fn tick_locked(&self) -> Result<Snapshot, StoreError> {
        let mut snap = self.snapshot().await?;
        let now = self.clock.now_ms();
        let fence = match &self.lease {
            None => Some(None),
            Some(lease) if lease.held() => Some(Some(lease.fence())),
            Some(_) => None,
        };
        let mut desired_now = HashMap::new();
        for i in 0..snap.rollouts.len() {
            let r = &snap.rollouts[i];
            let group = snap.group(r);
            let p = plan(r, group);
            if let Some(fence) = &fence
                && (!p.admit.is_empty() || p.state != r.state || p.reason != r.reason)
            {
                let step = Advance {
                    group_id: r.group_id,
                    started_ms: r.started_ms,
                    admit: p.admit.clone(),
                    state: p.state,
                    reason: p.reason.clone(),
                    fence: fence.clone(),
                };
                if self.store.advance_rollout(&step, now).await? {
                    if !p.admit.is_empty() || p.state != r.state {
                        log_step(r, group, &p);
                    }
                    let r = &mut snap.rollouts[i];
                    r.members.extend(p.admit.iter().map(|&id| (id, now)));
                    r.state = p.state;
                    r.reason = p.reason;
                }
            }
            let r = &snap.rollouts[i];
            desired(r, snap.group(r), &mut desired_now);
        }
        *self.desired_map() = desired_now;
        Ok(snap)
    }

    /// Every rollout, and what the console knows about the servers of their groups.
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let rollouts = self.store.list_rollouts(None).await?;
        if rollouts.is_empty() {
            return Ok(Snapshot::default());
        }
        let servers = self.store.list_servers(&ServerFilter::default()).await?;
        let mut reports: HashMap<i64, UpdateRecord> = self
            .store
            .update_reports()
            .await?
            .into_iter()
            .map(|r| (r.server_id, r))
            .collect();
        let lives = self.live.by_server();
        let now = self.clock.now_ms();
        let mut groups: HashMap<(String, String), Vec<Facts>> = rollouts
            .iter()
            .map(|r| ((r.project.clone(), r.group.clone()), Vec::new()))
            .collect();
        for s in servers {
            let Some(group) = groups.get_mut(&(s.project.clone(), s.group.clone())) else {
                continue;
            };
            group.push(facts(
                &s,
                lives.get(&s.id),
                reports.remove(&s.id),
                now,
                &self.thresholds,
            ));
        }
        Ok(Snapshot { rollouts, groups })
    }
}

/// What the engine knows about server `s`.
pub fn facts(
    s: &Server,
    live: Option<&crate::store::Liveness>,
    report: Option<UpdateRecord>,
    now_ms: i64,
    thresholds: &Thresholds,
) -> Facts {
    let live = live.unwrap_or(&s.liveness);
    Facts {
        id: s.id,
        name: s.name.clone(),
        running: live.agent_version.clone(),
        last_heartbeat_ms: live.last_heartbeat_ms,
        status: status::derive(s, live, now_ms, thresholds).0,
        report,
        as_of_ms: now_ms,
    }
}

fn log_step(r: &Rollout, group: &[Facts], p: &Plan) {
    let c = counts(r, group);
    match p.state {
        RolloutState::Halted => tracing::warn!(
            group = %r.group, project = %r.project, version = %r.version,
            failed = c.failed, reason = %p.reason, "rollout halted"
        ),
        RolloutState::Done => tracing::info!(
            group = %r.group, project = %r.project, version = %r.version,
            servers = c.servers, updated = c.updated, "rollout done"
        ),
        RolloutState::Running => tracing::info!(
            group = %r.group, project = %r.project, version = %r.version,
            admitted = p.admit.len(), reason = %p.reason, "rollout admitted a batch"
        ),
    }
}

/// Ticks `engine` every `every` until the task is dropped.
pub async fn tick_periodically(engine: Arc<RolloutEngine>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = engine.tick().await {
            tracing::warn!(error = %e, "advancing rollouts failed; will retry");
        }
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
