//! The service layer confines a project's user to that project whichever front end calls it:
//! another project's groups, servers, tasks and rollouts are not listed, read as missing (with
//! the message a missing one has) and cannot be changed; only the admin starts rollouts; a
//! user makes install links for themselves only. Against a real SQLite store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tasknode_protocol::NetworkType;
use tasknode_protocol::tasks::SubmitTask;
use tasknode_protocol::updates::{Batch, SetRollout};
use tasknode_protocol::wire::{AddServer, CreateGroup, CreateInstallCommand};

use super::{Caller, ServiceError};
use crate::app::AppState;
use crate::liveness::LivenessMap;
use crate::store::LogLimits;
use crate::store::{ServerFilter, SqliteStore, Store, TaskFilter};

const USER: Caller<'static> = Caller::User {
    name: "ops",
    project: "default",
};

/// A console with group `etl` (one server) in project `default` and in project `other`.
async fn console(dir: &std::path::Path) -> AppState {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("t.db")).unwrap());
    let state = crate::app::testing::state(crate::app::testing::TestConsole {
        store,
        live: Arc::new(LivenessMap::default()),
        admin_token: "admin",
        limits: LogLimits::default(),
    });
    super::projects::create_project(&state, "other")
        .await
        .unwrap();
    for (project, host) in [("default", "h1"), ("other", "h2")] {
        let group = CreateGroup {
            name: "etl".into(),
            project: project.into(),
            network: NetworkType::Classic,
        };
        super::groups::create(&state, Caller::Admin, group)
            .await
            .unwrap();
        let server = AddServer {
            project: project.into(),
            group: "etl".into(),
            name: host.into(),
            max_concurrency: None,
        };
        super::servers::add(&state, Caller::Admin, server)
            .await
            .unwrap();
    }
    state
}

fn submit(project: &str) -> SubmitTask {
    SubmitTask {
        project: project.into(),
        group: "etl".into(),
        script: "true".into(),
        timeout_secs: None,
        idempotency_key: None,
    }
}

fn assert_not_found(e: ServiceError, message: &str) {
    match e {
        ServiceError::NotFound { message: m, .. } => assert_eq!(m, message),
        other => panic!("expected not found ({message}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_user_reaches_only_their_own_project() {
    let dir = tempfile::tempdir().unwrap();
    let state = console(dir.path()).await;
    let unseen = "there is no project \"other\" you can see";

    // Lists are confined, whatever project is asked for.
    let groups = super::groups::list(&state, USER, Some("other"))
        .await
        .unwrap();
    assert_eq!(
        groups
            .iter()
            .map(|g| g.project.as_str())
            .collect::<Vec<_>>(),
        ["default"]
    );
    let servers = super::servers::views(
        &state,
        USER,
        ServerFilter {
            project: Some("other".into()),
            group: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["h1"]
    );
    assert_eq!(
        super::groups::projects(&state, USER).await.unwrap(),
        ["default"]
    );
    assert_eq!(
        super::groups::projects(&state, Caller::Admin)
            .await
            .unwrap()
            .len(),
        2
    );

    // Another project's group reads as missing and does not change.
    assert_not_found(
        super::groups::find(&state, USER, "other", "etl")
            .await
            .unwrap_err(),
        unseen,
    );
    assert_not_found(
        super::groups::rename(&state, USER, "other", "etl", "x")
            .await
            .unwrap_err(),
        unseen,
    );
    assert_not_found(
        super::groups::delete(&state, USER, "other", "etl")
            .await
            .unwrap_err(),
        unseen,
    );
    assert!(
        super::groups::find(&state, Caller::Admin, "other", "etl")
            .await
            .is_ok()
    );
    let check = super::servers::check_name(&state, USER, "other", "etl", "h2").await;
    assert_not_found(check.unwrap_err(), unseen);

    // No task goes into another project's group.
    assert_not_found(
        super::tasks::submit(&state, USER, submit("other"))
            .await
            .unwrap_err(),
        unseen,
    );
    let all = TaskFilter {
        limit: 100,
        ..TaskFilter::default()
    };
    assert!(state.store.list_tasks(&all).await.unwrap().is_empty());

    // Another project's task reads exactly like one that does not exist, and stays queued.
    let (theirs, _) = super::tasks::submit(&state, Caller::Admin, submit("other"))
        .await
        .unwrap();
    let (own, _) = super::tasks::submit(&state, USER, submit("default"))
        .await
        .unwrap();
    let missing =
        |id: i64| format!("there is no task {id}; `tasknode-console task list` shows the tasks");
    assert_not_found(
        super::tasks::get(&state, USER, theirs.id)
            .await
            .unwrap_err(),
        &missing(theirs.id),
    );
    assert_not_found(
        super::tasks::get(&state, USER, 999).await.unwrap_err(),
        &missing(999),
    );
    assert_not_found(
        super::tasks::cancel(&state, USER, theirs.id)
            .await
            .unwrap_err(),
        &missing(theirs.id),
    );
    let t = state.store.task(theirs.id).await.unwrap().unwrap();
    assert!(!t.cancel_requested, "{t:?}");
    let mut asked = all.clone();
    asked.project = Some("other".into());
    let listed = super::tasks::list(&state, USER, asked).await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), [own.id]);
    assert_eq!(
        super::tasks::list(&state, Caller::Admin, all)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn only_the_admin_starts_rollouts_and_users_make_their_own_install_links() {
    let dir = tempfile::tempdir().unwrap();
    let state = console(dir.path()).await;
    let rollout = SetRollout {
        project: "default".into(),
        group: "etl".into(),
        version: "0.2.0".into(),
        batch: Batch::All,
        max_failures: 0,
    };
    match super::releases::set_rollout(&state, USER, rollout.clone()).await {
        Err(ServiceError::Forbidden { message }) => assert_eq!(
            message,
            "only the admin can start a rollout; sign in with the admin token"
        ),
        other => panic!("{other:?}"),
    }
    // The admin passes the check and meets the next rule: the version is not published.
    match super::releases::set_rollout(&state, Caller::Admin, rollout).await {
        Err(e @ ServiceError::NotFound { .. }) => {
            assert_eq!(e.field().as_deref(), Some("version"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(
        super::install::users(&state, USER, "default")
            .await
            .unwrap(),
        ["ops"]
    );
    assert_not_found(
        super::install::users(&state, USER, "other")
            .await
            .unwrap_err(),
        "there is no project \"other\" you can see",
    );
    let link = |user: &str| CreateInstallCommand {
        project: "default".into(),
        group: "etl".into(),
        user_name: user.into(),
        ttl_secs: None,
    };
    assert!(matches!(
        super::install::create_command(&state, USER, link("someone-else")).await,
        Err(ServiceError::Forbidden { .. })
    ));
    // Their own link meets the next rule: this console serves no agent binaries.
    match super::install::create_command(&state, USER, link("ops")).await {
        Err(ServiceError::Conflict { message, .. }) => {
            assert!(message.contains("--agent-dir"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_user_removes_and_moves_only_their_own_projects_servers_and_learns_of_no_other() {
    use tasknode_protocol::wire::{MoveServer, RemoveMode};
    let dir = tempfile::tempdir().unwrap();
    let state = console(dir.path()).await;
    // Another project's server, named through that project or through one's own, reads as
    // missing, exactly as a server that exists nowhere does.
    let unseen = "there is no project \"other\" you can see";
    for mode in [RemoveMode::Refuse, RemoveMode::Drain, RemoveMode::Force] {
        let e = super::removal::remove(&state, USER, "other", "h2", mode)
            .await
            .unwrap_err();
        assert_not_found(e, unseen);
        let theirs = super::removal::remove(&state, USER, "default", "h2", mode)
            .await
            .unwrap_err();
        let nowhere = super::removal::remove(&state, USER, "default", "h9", mode)
            .await
            .unwrap_err();
        assert_eq!(
            theirs.to_string().replace("h2", "h9"),
            nowhere.to_string(),
            "the same answer as for a server that does not exist"
        );
    }
    let moving = |project: &str, name: &str| MoveServer {
        project: project.into(),
        name: name.into(),
        group: "etl".into(),
    };
    let e = super::removal::move_to(&state, USER, moving("other", "h2"))
        .await
        .unwrap_err();
    assert_not_found(e, unseen);
    let e = super::removal::move_to(&state, USER, moving("default", "h2"))
        .await
        .unwrap_err();
    assert_not_found(e, "there is no server \"h2\" in project \"default\"");
    // Their server is where it was; one's own goes.
    let theirs = state.store.server_by_name("other", "h2").await.unwrap();
    assert_eq!(theirs.map(|s| s.group), Some("etl".to_owned()));
    let r = super::removal::remove(&state, USER, "default", "h1", RemoveMode::Refuse)
        .await
        .unwrap();
    assert_eq!(r.state, "removed");
}
