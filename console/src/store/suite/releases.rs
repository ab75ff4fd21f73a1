//! The suite's tests of releases, rollouts and update reports.

use crate::store::*;
use tasknode_protocol::NetworkType;

use super::Harness;

use ed25519_dalek::SigningKey;
use tasknode_protocol::manifest::{self, Artifact, Manifest};
use tasknode_protocol::updates::{Batch, RolloutState, SetRollout, UpdateOutcome, UpdateReport};

pub(super) fn manifest(version: &str, rollback: bool, sha: &str) -> Manifest {
    Manifest {
        format: manifest::FORMAT,
        channel: "stable".into(),
        version: version.into(),
        rollback,
        issued_ms: if rollback { 50 } else { 10 },
        expires_ms: rollback.then_some(1_000),
        artifacts: vec![Artifact {
            target: "x86_64-unknown-linux-musl".into(),
            url: format!("releases/{version}/tasknode-x86_64-unknown-linux-musl"),
            size: 10,
            sha256: sha.repeat(32),
        }],
    }
}

pub(super) fn signed(m: Manifest) -> NewRelease {
    let key = SigningKey::from_bytes(&[9; 32]);
    NewRelease {
        text: m.sign(&key).unwrap(),
        signed_by: manifest::encode_key(&key.verifying_key()),
        manifest: m,
    }
}

/// A store with a classic group `etl` holding server `a`.
pub(super) async fn group_with_server(h: &dyn Harness) -> (Box<dyn Store>, Server) {
    let store = h.open().await;
    store
        .create_group("default", "etl", NetworkType::Classic, 1)
        .await
        .unwrap();
    let a = store
        .add_server("default", "etl", "a", None, 1)
        .await
        .unwrap();
    (store, a)
}

pub(super) fn rollout(version: &str) -> SetRollout {
    SetRollout {
        project: "default".into(),
        group: "etl".into(),
        version: version.into(),
        batch: Batch::Percent(50),
        max_failures: 0,
    }
}

pub(super) async fn a_published_version_never_changes_but_may_gain_a_rollback(h: &dyn Harness) {
    let store = h.open().await;
    let first = signed(manifest("0.2.0", false, "ab"));
    let (r, p) = store.publish_release(first.clone(), 100).await.unwrap();
    assert_eq!(p, Published::New);
    assert_eq!(
        (
            r.targets.as_slice(),
            r.rollback,
            r.issued_ms,
            r.published_ms
        ),
        (
            &["x86_64-unknown-linux-musl".to_owned()][..],
            false,
            10,
            100
        )
    );
    // The same file again: nothing changes.
    let (r, p) = store.publish_release(first.clone(), 200).await.unwrap();
    assert_eq!((p, r.published_ms), (Published::Unchanged, 100));
    // Other content for the version: refused.
    let err = store
        .publish_release(signed(manifest("0.2.0", false, "cd")), 300)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "version 0.2.0 was already published with other content; release a new version"
    );
    // A rollback for other binaries: refused. For the same ones: kept beside it, and
    // handed to agents from then on.
    let err = store
        .publish_release(signed(manifest("0.2.0", true, "cd")), 300)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let rollback = signed(manifest("0.2.0", true, "ab"));
    let (r, p) = store.publish_release(rollback.clone(), 400).await.unwrap();
    assert_eq!(
        (p, r.rollback, r.issued_ms),
        (Published::Rollback, true, 50)
    );
    assert_eq!(
        store.release_manifest("0.2.0", 999).await.unwrap(),
        Some(rollback.text.clone())
    );
    assert_eq!(r.rollback_expires_ms, Some(1_000));
    // Once the rollback expired, agents get the release's own manifest again.
    assert_eq!(
        store.release_manifest("0.2.0", 1_000).await.unwrap(),
        Some(first.text.clone())
    );
    let (_, p) = store.publish_release(rollback, 500).await.unwrap();
    assert_eq!(p, Published::Unchanged);
    assert_eq!(store.release_manifest("0.9.9", 1).await.unwrap(), None);

    // A version first published by its rollback takes its release manifest later.
    let rollback = signed(manifest("0.1.0", true, "ef"));
    store.publish_release(rollback.clone(), 600).await.unwrap();
    let (r, p) = store
        .publish_release(signed(manifest("0.1.0", false, "ef")), 700)
        .await
        .unwrap();
    assert_eq!((p, r.rollback), (Published::New, true));
    assert_eq!(
        store.release_manifest("0.1.0", 1).await.unwrap(),
        Some(rollback.text)
    );

    store
        .publish_release(signed(manifest("0.10.0", false, "ab")), 800)
        .await
        .unwrap();
    let versions: Vec<String> = store
        .list_releases()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, ["0.10.0", "0.2.0", "0.1.0"], "newest first");
}

pub(super) async fn setting_a_rollout_again_starts_it_over(h: &dyn Harness) {
    let (store, a) = group_with_server(h).await;
    let err = store
        .set_rollout(&rollout("0.3.0"), "x", 1)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`tasknode-console release publish FILE`"),
        "{err}"
    );
    let err = store
        .set_rollout(
            &SetRollout {
                group: "nope".into(),
                ..rollout("0.3.0")
            },
            "x",
            1,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

    store
        .publish_release(signed(manifest("0.3.0", false, "ab")), 1)
        .await
        .unwrap();
    let r = store
        .set_rollout(&rollout("0.3.0"), "set", 10)
        .await
        .unwrap();
    assert_eq!(
        (r.state, r.batch, r.started_ms),
        (RolloutState::Running, Batch::Percent(50), 10)
    );
    let step = Advance {
        group_id: r.group_id,
        started_ms: 10,
        admit: vec![a.id],
        state: RolloutState::Running,
        reason: "offered".into(),
        fence: None,
    };
    assert!(store.advance_rollout(&step, 11).await.unwrap());
    let listed = store.list_rollouts(Some("default")).await.unwrap();
    assert_eq!(listed[0].members.get(&a.id), Some(&11));
    assert_eq!(listed[0].reason, "offered");
    assert!(store.list_rollouts(Some("other")).await.unwrap().is_empty());

    let r = store
        .set_rollout(&rollout("0.3.0"), "again", 20)
        .await
        .unwrap();
    let listed = store.list_rollouts(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].members.is_empty(), "members are cleared");
    assert_eq!(listed[0].reason, "again");
    // A step decided for the rollout before changes nothing.
    assert!(!store.advance_rollout(&step, 21).await.unwrap());
    assert!(
        store.list_rollouts(None).await.unwrap()[0]
            .members
            .is_empty()
    );
    assert_eq!(r.started_ms, 20);
}

pub(super) async fn only_the_latest_update_report_is_kept(h: &dyn Harness) {
    let (store, a) = group_with_server(h).await;
    for (outcome, at) in [(UpdateOutcome::Started, 5), (UpdateOutcome::Failed, 6)] {
        let report = UpdateReport {
            version: "0.3.0".into(),
            outcome,
            reason: "why".into(),
        };
        store.record_update_report(a.id, &report, at).await.unwrap();
    }
    let reports = store.update_reports().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].server_id, reports[0].outcome, reports[0].at_ms),
        (a.id, UpdateOutcome::Failed, 6)
    );
}
