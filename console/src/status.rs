//! How a server's state and its reason are derived from what the console knows: enrollment,
//! the last heartbeat, a clean shutdown and the agent's clock offset. A pure function of its
//! inputs and the time, so every threshold is tested without waiting.

use std::time::Duration;

use tasknode_protocol::wire::ServerStatus;
use tasknode_protocol::{MAX_CLOCK_OFFSET_MS, layout};

use crate::clock::{human_duration, rfc3339};
use crate::store::{Liveness, Server};

/// When heartbeats count as late and when as gone.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// How often agents are asked to heartbeat.
    pub interval: Duration,
    /// Without a heartbeat for this long a server is degraded (still schedulable).
    pub degraded_after: Duration,
    /// Without a heartbeat for this long a server is stopped.
    pub stopped_after: Duration,
}

impl Default for Thresholds {
    /// By default agents beat every 10 s, are degraded after 30 s and stopped after 10 minutes.
    fn default() -> Self {
        Thresholds {
            interval: Duration::from_secs(10),
            degraded_after: Duration::from_secs(30),
            stopped_after: Duration::from_secs(600),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The state of `server` at `now_ms`, given its current liveness, with a reason a person can
/// act on.
pub fn derive(
    server: &Server,
    live: &Liveness,
    now_ms: i64,
    th: &Thresholds,
) -> (ServerStatus, String) {
    let Some(enrollment) = &server.enrollment else {
        let flag = server.network.enable_uuid();
        return (
            ServerStatus::Pending,
            format!(
                "never enrolled: run the install command for group {} on this server (enable_uuid={flag})",
                server.group
            ),
        );
    };
    // Only heartbeats of the current enrollment count: after an agent enrolls again, the
    // heartbeats of the one before say nothing about it.
    let beat_ms = live
        .last_heartbeat_ms
        .filter(|&t| t >= enrollment.enrolled_ms);
    // A server is judged from its last sign of life: a heartbeat, or its enrollment.
    let seen_ms = beat_ms.unwrap_or(enrollment.enrolled_ms);
    let silent_ms = now_ms.saturating_sub(seen_ms);
    let last = match beat_ms {
        Some(t) => format!("last heartbeat {}", rfc3339(t)),
        None => format!(
            "enrolled {} and never heartbeated",
            rfc3339(enrollment.enrolled_ms)
        ),
    };

    if let Some(stop) = &live.stopped
        && stop.at_ms >= seen_ms
    {
        return (
            ServerStatus::Stopped,
            format!(
                "agent shut down cleanly at {} ({}); start it with {}",
                rfc3339(stop.at_ms),
                stop.reason,
                layout::control_command("start")
            ),
        );
    }
    if silent_ms >= ms(th.stopped_after) {
        return (
            ServerStatus::Stopped,
            format!(
                "no heartbeat for {} ({last}); tasks are no longer scheduled here: check {} on the server, its agent.log, and that it can reach the console",
                human_duration(silent_ms),
                layout::control_command("status")
            ),
        );
    }
    if beat_ms.is_none() {
        return (
            ServerStatus::Pending,
            format!(
                "enrolled {}; waiting for the first heartbeat: start the agent with {}",
                rfc3339(enrollment.enrolled_ms),
                layout::control_command("start")
            ),
        );
    }
    if let Some(offset) = live.clock_offset_ms
        && offset.unsigned_abs() > MAX_CLOCK_OFFSET_MS.unsigned_abs()
    {
        let side = if offset > 0 { "behind" } else { "ahead of" };
        return (
            ServerStatus::ClockSkew,
            format!(
                "agent clock is {} s {side} the console (limit {} s); no tasks until it is fixed: sync it with `chronyc makestep` or `ntpdate -u <ntp server>` and keep chronyd or ntpd running",
                offset.unsigned_abs() / 1000,
                MAX_CLOCK_OFFSET_MS / 1000
            ),
        );
    }
    if silent_ms >= ms(th.degraded_after) {
        return (
            ServerStatus::Degraded,
            format!(
                "no heartbeat for {} ({last}, expected every {}); still schedulable, running tasks continue; stopped after {} without one",
                human_duration(silent_ms),
                human_duration(ms(th.interval)),
                human_duration(ms(th.stopped_after))
            ),
        );
    }
    (
        ServerStatus::Available,
        format!("heartbeat {} ago", human_duration(silent_ms)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Enrollment, Stop};
    use tasknode_protocol::NetworkType;

    fn server(enrolled: bool) -> Server {
        Server {
            id: 1,
            name: "db-1".into(),
            group: "etl".into(),
            group_id: 1,
            project: "default".into(),
            network: NetworkType::Classic,
            max_concurrency: None,
            created_ms: 0,
            enrollment: enrolled.then(|| Enrollment {
                node_id: "n".into(),
                secret_sha256: String::new(),
                enrolled_ms: 1_000,
                cpu_cores: 8.0,
                memory_bytes: 16 << 30,
            }),
            liveness: Liveness::default(),
            draining_ms: None,
        }
    }

    fn beat_at(t: i64) -> Liveness {
        Liveness {
            last_heartbeat_ms: Some(t),
            clock_offset_ms: Some(12),
            ..Liveness::default()
        }
    }

    #[test]
    fn walks_available_degraded_stopped() {
        let th = Thresholds::default();
        let s = server(true);
        let at = |now| derive(&s, &beat_at(10_000), now, &th).0;
        assert_eq!(at(10_000), ServerStatus::Available);
        assert_eq!(at(39_999), ServerStatus::Available);
        assert_eq!(at(40_000), ServerStatus::Degraded);
        assert_eq!(at(609_999), ServerStatus::Degraded);
        assert_eq!(at(610_000), ServerStatus::Stopped);
        let (_, reason) = derive(&s, &beat_at(10_000), 55_000, &th);
        assert!(reason.contains("no heartbeat for 45s"), "{reason}");
    }

    #[test]
    fn pending_until_enrolled_and_first_heartbeat() {
        let th = Thresholds::default();
        let (st, reason) = derive(&server(false), &Liveness::default(), 5_000, &th);
        assert_eq!(st, ServerStatus::Pending);
        assert!(
            reason.contains("group etl") && reason.contains("enable_uuid=false"),
            "{reason}"
        );
        let (st, _) = derive(&server(true), &Liveness::default(), 5_000, &th);
        assert_eq!(st, ServerStatus::Pending);
        let (st, reason) = derive(&server(true), &Liveness::default(), 700_000, &th);
        assert_eq!(st, ServerStatus::Stopped);
        assert!(reason.contains("never heartbeated"), "{reason}");
    }

    #[test]
    fn heartbeats_from_before_an_enrollment_do_not_count() {
        let th = Thresholds::default();
        // Enrolled at 1_000; the last heartbeat came from the agent enrolled before that.
        let (st, reason) = derive(&server(true), &beat_at(900), 1_500, &th);
        assert_eq!(st, ServerStatus::Pending, "{reason}");
        assert_eq!(
            derive(&server(true), &beat_at(1_200), 1_500, &th).0,
            ServerStatus::Available
        );
    }

    #[test]
    fn an_old_agents_clock_skew_does_not_outlive_its_enrollment() {
        let th = Thresholds::default();
        let mut live = beat_at(900);
        live.clock_offset_ms = Some(300_000);
        assert_eq!(
            derive(&server(true), &live, 1_500, &th).0,
            ServerStatus::Pending
        );
        live.clock_offset_ms = Some(i64::MIN);
        live.last_heartbeat_ms = Some(1_200);
        assert_eq!(
            derive(&server(true), &live, 1_500, &th).0,
            ServerStatus::ClockSkew
        );
    }

    #[test]
    fn clean_shutdown_stops_until_the_next_heartbeat() {
        let th = Thresholds::default();
        let mut live = beat_at(10_000);
        live.stopped = Some(Stop {
            at_ms: 11_000,
            reason: "SIGTERM".into(),
        });
        let (st, reason) = derive(&server(true), &live, 12_000, &th);
        assert_eq!(st, ServerStatus::Stopped);
        assert!(
            reason.contains("SIGTERM") && reason.contains("serverctl start"),
            "{reason}"
        );
        live.last_heartbeat_ms = Some(13_000);
        assert_eq!(
            derive(&server(true), &live, 13_500, &th).0,
            ServerStatus::Available
        );
    }

    #[test]
    fn clock_skew_beyond_two_minutes_names_the_direction_and_fix() {
        let th = Thresholds::default();
        let mut live = beat_at(10_000);
        live.clock_offset_ms = Some(300_000);
        let (st, reason) = derive(&server(true), &live, 11_000, &th);
        assert_eq!(st, ServerStatus::ClockSkew);
        assert!(
            reason.contains("300 s behind") && reason.contains("chronyc"),
            "{reason}"
        );
        live.clock_offset_ms = Some(-121_000);
        let (_, reason) = derive(&server(true), &live, 11_000, &th);
        assert!(reason.contains("121 s ahead of"), "{reason}");
        live.clock_offset_ms = Some(120_000);
        assert_eq!(
            derive(&server(true), &live, 11_000, &th).0,
            ServerStatus::Available
        );
    }
}
