//! Probation that survives restarts. A new version on probation may die before it finishes
//! and be started again by systemd's `Restart=always` or by hand, which a timer in the process
//! cannot see; so every start of it is counted in the update record beside the binary, first
//! thing in `tasknode run`, and the start that finds it has already started
//! [`MAX_PROBATION_STARTS`] times, or its probation deadline passed, puts the previous binary
//! back before the new version runs any further.

use crate::update::{Paths, Phase, roll_back};

/// A version on probation may start this many times; the next start puts the previous one
/// back instead.
pub const MAX_PROBATION_STARTS: u32 = 3;

/// What a start of the agent finds about its own probation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCheck {
    /// Not on probation, or on probation with starts and time left: run.
    Run,
    /// The previous version was put back (and the failure recorded): exec it.
    RolledBack(String),
}

/// Counts this start of version `running` if it is on probation, and puts the previous
/// version back when it has started too often or its probation deadline has passed. Needs no
/// config: it runs first in `tasknode run`, before anything the new version might crash on.
pub fn check_at_start(paths: &Paths, running: &str, now: i64) -> StartCheck {
    let Some(mut state) = paths.read_state() else {
        return StartCheck::Run;
    };
    if !matches!(state.phase, Phase::Swapping | Phase::Swapped) || state.to != running {
        return StartCheck::Run;
    }
    let why = if state.starts >= MAX_PROBATION_STARTS {
        Some(format!(
            "version {} started {} times without finishing probation (it keeps stopping before its heartbeats are answered); version {} was put back",
            state.to, state.starts, state.from
        ))
    } else if let Some(deadline) = state.probation_deadline_ms()
        && now > deadline
    {
        Some(format!(
            "version {} did not finish probation within {} s across {} starts; version {} was put back",
            state.to, state.probation_secs, state.starts, state.from
        ))
    } else {
        None
    };
    if let Some(reason) = why {
        if !paths.prev.exists() {
            eprintln!(
                "tasknode: {reason}, but {} is missing; this version keeps running",
                paths.prev.display()
            );
            return StartCheck::Run;
        }
        return match roll_back(paths, &state, &reason) {
            Ok(()) => StartCheck::RolledBack(reason),
            Err(e) => {
                eprintln!(
                    "tasknode: {reason}, but putting it back failed: {e:#}; this version keeps running"
                );
                StartCheck::Run
            }
        };
    }
    state.phase = Phase::Swapped;
    state.starts += 1;
    if state.first_start_ms == 0 {
        state.first_start_ms = now;
    }
    if let Err(e) = paths.write_state(&state) {
        eprintln!(
            "tasknode: cannot count this start of the new version in {}: {e}",
            paths.state.display()
        );
    }
    StartCheck::Run
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::fs;

    use super::*;
    use crate::update::tests::swapped_to_0_2_0;

    #[test]
    fn a_version_that_keeps_dying_on_probation_is_put_back_at_its_next_start() {
        let (_dir, paths) = swapped_to_0_2_0();
        // Another version's start (the previous one, or an unrelated binary) counts nothing.
        assert_eq!(check_at_start(&paths, "0.1.0", 1_000), StartCheck::Run);
        assert_eq!(paths.read_state().unwrap().starts, 0);
        for n in 1..=MAX_PROBATION_STARTS {
            assert_eq!(
                check_at_start(&paths, "0.2.0", 1_000 + i64::from(n)),
                StartCheck::Run
            );
            let s = paths.read_state().unwrap();
            assert_eq!((s.starts, s.first_start_ms), (n, 1_001));
        }
        let StartCheck::RolledBack(reason) = check_at_start(&paths, "0.2.0", 2_000) else {
            panic!("expected a roll back")
        };
        assert!(reason.contains("started 3 times"), "{reason}");
        assert_eq!(fs::read(&paths.exe).unwrap(), b"old");
        let s = paths.read_state().unwrap();
        assert_eq!(
            (s.phase, s.to.as_str(), s.reported),
            (Phase::Failed, "0.2.0", false)
        );
        // The previous version, started next, runs.
        assert_eq!(check_at_start(&paths, "0.1.0", 2_001), StartCheck::Run);
        assert_eq!(fs::read(&paths.exe).unwrap(), b"old");
    }

    #[test]
    fn a_probation_deadline_passed_across_restarts_puts_the_previous_version_back() {
        let (_dir, paths) = swapped_to_0_2_0();
        assert_eq!(check_at_start(&paths, "0.2.0", 10_000), StartCheck::Run);
        // Restarted within the minute: runs on.
        assert_eq!(check_at_start(&paths, "0.2.0", 69_000), StartCheck::Run);
        let StartCheck::RolledBack(reason) = check_at_start(&paths, "0.2.0", 70_001) else {
            panic!("expected a roll back")
        };
        assert!(reason.contains("within 60 s"), "{reason}");
        assert_eq!(fs::read(&paths.exe).unwrap(), b"old");
        assert_eq!(paths.read_state().unwrap().phase, Phase::Failed);
    }
}
