//! Tests of self-update on disk: recovery after a kill, swap and roll back, the configured
//! keys; and the fixture of a binary swapped to a new version on probation, which the
//! probation tests share.

#![allow(clippy::unwrap_used)]

use super::*;

fn state(phase: Phase, to: &str) -> State {
    State {
        phase,
        from: "0.1.0".into(),
        to: to.into(),
        sha256: String::new(),
        at_ms: 1,
        reason: String::new(),
        reported: false,
        probation_secs: 0,
        first_start_ms: 0,
        starts: 0,
    }
}

/// A binary `tasknode` ("old") in a fresh directory, swapped by [`swap`] for "new", version
/// 0.2.0, on a 60 s probation. The directory lives as long as the returned guard.
pub(crate) fn swapped_to_0_2_0() -> (tempfile::TempDir, Paths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::beside(&dir.path().join("tasknode"));
    fs::write(&paths.exe, b"old").unwrap();
    fs::write(&paths.new, b"new").unwrap();
    let prepared = Prepared {
        to: "0.2.0".into(),
        sha256: "x".into(),
    };
    swap(&paths, &prepared, Duration::from_secs(60)).unwrap();
    (dir, paths)
}

#[test]
fn recovery_follows_the_binary_that_is_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::beside(&dir.path().join("tasknode"));
    assert_eq!(recover(&paths, "0.1.0"), Recovery::Clean);

    // Killed before the rename: the old binary runs, the attempt is forgotten, the
    // half-downloaded file is removed.
    fs::write(&paths.new, b"partial").unwrap();
    paths.write_state(&state(Phase::Swapping, "0.2.0")).unwrap();
    assert_eq!(recover(&paths, "0.1.0"), Recovery::Clean);
    assert!(!paths.new.exists() && !paths.state.exists());

    // Killed after the rename: the new binary runs and goes on with probation.
    paths.write_state(&state(Phase::Swapping, "0.2.0")).unwrap();
    let Recovery::Probation(s) = recover(&paths, "0.2.0") else {
        panic!("expected probation")
    };
    assert_eq!(s.phase, Phase::Swapped);
    assert_eq!(paths.read_state().unwrap().phase, Phase::Swapped);

    paths.write_state(&state(Phase::Failed, "0.2.0")).unwrap();
    assert!(matches!(recover(&paths, "0.1.0"), Recovery::Failed(_)));
}

#[test]
fn swap_keeps_the_previous_binary_and_roll_back_restores_it() {
    let (_dir, paths) = swapped_to_0_2_0();
    assert_eq!(fs::read(&paths.exe).unwrap(), b"new");
    assert_eq!(fs::read(&paths.prev).unwrap(), b"old");
    assert!(!paths.new.exists());
    let s = paths.read_state().unwrap();
    assert_eq!((s.phase, s.to.as_str()), (Phase::Swapped, "0.2.0"));

    roll_back(&paths, &s, "no heartbeats").unwrap();
    assert_eq!(fs::read(&paths.exe).unwrap(), b"old");
    let s = paths.read_state().unwrap();
    assert_eq!(
        (s.phase, s.reason.as_str()),
        (Phase::Failed, "no heartbeats")
    );
}

#[test]
fn configured_keys_are_checked() {
    let good = "11".repeat(32);
    let k = manifest::decode_key(&good);
    // Not every 32-byte string is a curve point; this one must be for the test to mean
    // anything.
    assert!(k.is_some());
    assert!(trusted_keys(&[good]).unwrap().contains(&k.unwrap()));
    let err = trusted_keys(&["nope".into()]).unwrap_err();
    assert!(err.to_string().contains("[update] trusted_keys"), "{err}");
}
