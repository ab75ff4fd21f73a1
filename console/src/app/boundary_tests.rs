//! An enrolled agent is untrusted input: property tests that throw arbitrary bodies at every
//! agent-facing endpoint of the real router (in process, with a real SQLite store) and check
//! after each that every operator view still answers; times already stored out of range (by an
//! older console) still render; a panicking handler costs one 500, not the connection; pushed
//! logs stop at their limits; and a log service that sends more than asked is cut off.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tasknode_protocol::NetworkType;
use tasknode_protocol::wire::HostFacts;
use tower::ServiceExt;

use super::AppState;
use crate::auth;
use crate::clock::Clock;
use crate::liveness::LivenessMap;
use crate::store::LogLimits;
use crate::store::{Enrollment, Liveness, SqliteStore, Store};

const ADMIN: &str = "admin-token-for-tests";
const NODE: &str = "node-1";
const SECRET: &str = "node-secret-1";
const PASSWORD: &str = "correct horse battery";

/// A console's state over a fresh data directory: group `etl` (VPC, so logs are pushed) with
/// server `h1` enrolled as node-1, server `h2` to enroll, and user `ops`.
async fn console(dir: &std::path::Path) -> (AppState, String) {
    console_with(dir, NetworkType::Vpc, LogLimits::default()).await
}

async fn console_with(
    dir: &std::path::Path,
    network: NetworkType,
    limits: LogLimits,
) -> (AppState, String) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("t.db")).unwrap());
    let clock = Clock::default();
    let now = clock.now_ms();
    store
        .create_group("default", "etl", network, now)
        .await
        .unwrap();
    let facts = HostFacts {
        hostname: "h1".into(),
        cpu_cores: 4.0,
        memory_bytes: 8 << 30,
        os: "o".into(),
        arch: "x86_64".into(),
        kernel: "k".into(),
        agent_version: "0.1.0".into(),
    };
    let uuid = "4c4c4544-0042-3510-8051-b4c04f333231";
    let h1 = store
        .add_server("default", "etl", uuid, None, now)
        .await
        .unwrap();
    store
        .add_server(
            "default",
            "etl",
            "4c4c4544-0042-3510-8051-b4c04f333232",
            None,
            now,
        )
        .await
        .unwrap();
    let e = Enrollment {
        node_id: NODE.into(),
        secret_sha256: hex::encode(auth::digest(SECRET)),
        enrolled_ms: now,
        cpu_cores: 4.0,
        memory_bytes: 8 << 30,
    };
    let generation = store.enroll(h1.id, &e, &facts, None).await.unwrap();
    let hash = auth::hash_password(PASSWORD).unwrap();
    store
        .create_user("default", "ops", &hash, now)
        .await
        .unwrap();
    let live = Arc::new(LivenessMap::default());
    live.enroll(
        h1.id,
        generation,
        NODE,
        auth::digest(SECRET),
        Liveness::default(),
    );
    let state = super::testing::state(super::testing::TestConsole {
        store,
        live,
        admin_token: ADMIN,
        limits,
    });
    let session = state
        .web
        .sessions
        .create(crate::web::session::Principal::Admin, now)
        .await
        .unwrap();
    (state, session)
}

/// One request through the router, as a peer at 127.0.0.1 would send it.
async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let mut req = req;
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))));
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

fn post(path: &str, bearer: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body)).unwrap()
}

fn get(path: &str, session: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(
            header::COOKIE,
            format!("{}={session}", crate::web::session::COOKIE),
        )
        .body(Body::empty())
        .unwrap()
}

/// Every operator view answers 2xx or 4xx (never 5xx, never a dropped connection).
async fn views_answer(router: &axum::Router, session: &str, task: i64, what: &str) {
    for path in [
        "/api/v1/tasks".to_owned(),
        format!("/api/v1/tasks/{task}"),
        "/api/v1/servers".to_owned(),
        "/api/v1/groups".to_owned(),
        "/ui/tasks".to_owned(),
        format!("/ui/tasks/{task}"),
        "/ui/groups".to_owned(),
        "/ui/groups/default/etl".to_owned(),
        "/ui/groups/default/etl/servers".to_owned(),
    ] {
        let (status, body) = call(router, get(&path, session)).await;
        assert!(
            status.is_success(),
            "GET {path} answered {status} after {what}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

// ---- what agents send ----

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(253_402_300_800_000_i64)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        (0i64..4_000_000_000_000).prop_map(|n| json!(n)),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z0-9.]{0,12}".prop_map(Value::from),
        "\\PC{0,80}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from("a".repeat(5000))),
        Just(Value::from("0.1.0")),
        Just(Value::from("a\nb\u{0}c\u{1b}[2J")),
    ]
}

/// Any JSON value, shallow.
fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        int(),
        text(),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Usually the shape an endpoint wants with hostile values in it, sometimes anything at all.
fn shaped(body: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop_oneof![4 => body, 1 => junk()]
}

fn facts() -> impl Strategy<Value = Value> {
    (text(), int(), int(), text(), text(), text(), text()).prop_map(
        |(hostname, cores, memory, os, arch, kernel, version)| {
            json!({"hostname": hostname, "cpu_cores": cores, "memory_bytes": memory, "os": os,
                   "arch": arch, "kernel": kernel, "agent_version": version})
        },
    )
}

fn outcome() -> impl Strategy<Value = Value> {
    prop_oneof![
        int().prop_map(|code| json!({"type": "exited", "code": code})),
        int().prop_map(|signal| json!({"type": "signaled", "signal": signal})),
        Just(json!({"type": "timed_out"})),
        Just(json!({"type": "cancelled"})),
        text().prop_map(|reason| json!({"type": "killed", "reason": reason})),
        text().prop_map(|reason| json!({"type": "not_started", "reason": reason})),
    ]
}

/// A request an agent could send: which endpoint, and its body.
#[derive(Debug, Clone)]
enum Agent {
    Enroll(Value),
    Heartbeat(Value),
    Shutdown(Value),
    Poll(Value),
    Start(Value),
    Finish(Value),
    Push {
        lease: Value,
        offset: Value,
        body: Vec<u8>,
    },
    Update(Value),
}

fn agent_request() -> impl Strategy<Value = Agent> {
    let enroll = (
        prop::option::of(text()),
        prop::bool::ANY,
        prop_oneof![
            Just(json!({"kind": "uuid", "value": "4c4c4544-0042-3510-8051-b4c04f333232"})),
            (text(), text()).prop_map(|(k, v)| json!({"kind": k, "value": v})),
        ],
        facts(),
    )
        .prop_map(|(token, with_password, identity, facts)| {
            let mut v = json!({"identity": identity, "facts": facts});
            match token {
                Some(t) => v["enrollment_token"] = t,
                None => {
                    v["user_name"] = json!("ops");
                    if with_password {
                        v["password"] = json!(PASSWORD);
                    }
                }
            }
            v
        });
    let heartbeat = (
        text(),
        prop::option::of(int()),
        int(),
        int(),
        prop::option::of(int()),
    )
        .prop_map(|(v, offset, running, free, port)| {
            json!({"agent_version": v, "clock_offset_ms": offset, "running_tasks": running,
                   "free_slots": free, "log_port": port})
        });
    let poll = (
        prop::collection::vec((int(), int()), 0..4),
        any::<bool>(),
        prop_oneof![Just(json!(0)), Just(json!(31)), int()],
    )
        .prop_map(|(held, accepting, wait)| {
            // A wait within 1..=30 s is honoured: keep the cases quick.
            let wait = match wait.as_i64() {
                Some(1..=30) => json!(0),
                _ => wait,
            };
            let held: Vec<Value> = held
                .into_iter()
                .map(|(id, lease)| json!({"id": id, "lease": lease}))
                .collect();
            json!({"held": held, "accepting": accepting, "wait_secs": wait})
        });
    let start = (prop_oneof![Just(json!(1)), int()], int())
        .prop_map(|(lease, at)| json!({"lease": lease, "at_ms": at}));
    let finish = (
        prop_oneof![Just(json!(1)), int()],
        outcome(),
        prop::option::of(int()),
        int(),
        int(),
    )
        .prop_map(|(lease, outcome, started, finished, bytes)| {
            json!({"lease": lease, "outcome": outcome, "started_ms": started,
                   "finished_ms": finished, "log_bytes": bytes})
        });
    let push = (
        prop_oneof![Just(json!(1)), int()],
        prop_oneof![Just(json!(0)), int()],
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(lease, offset, body)| Agent::Push {
            lease,
            offset,
            body,
        });
    let update = (text(), text(), text())
        .prop_map(|(v, o, r)| json!({"version": v, "outcome": o, "reason": r}));
    prop_oneof![
        shaped(enroll).prop_map(Agent::Enroll),
        shaped(heartbeat).prop_map(Agent::Heartbeat),
        shaped(text().prop_map(|r| json!({"reason": r}))).prop_map(Agent::Shutdown),
        shaped(poll).prop_map(Agent::Poll),
        shaped(start).prop_map(Agent::Start),
        shaped(finish).prop_map(Agent::Finish),
        push,
        shaped(update).prop_map(Agent::Update),
    ]
}

/// Brings the node back to a sane state and hands it a fresh task; returns the task's id.
async fn fresh_task(router: &axum::Router, state: &AppState) -> i64 {
    let hb = json!({"agent_version": "0.1.0", "clock_offset_ms": 0, "running_tasks": 0, "free_slots": 4});
    let path = format!("/api/v1/nodes/{NODE}/heartbeat");
    let (status, body) = call(router, post(&path, Some(SECRET), hb.to_string().into())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let t = state
        .store
        .submit_task("default", "etl", "true", 60, state.clock.now_ms())
        .await
        .unwrap();
    let poll = json!({"held": [], "accepting": true, "wait_secs": 0});
    let path = format!("/api/v1/nodes/{NODE}/tasks/poll");
    let (status, _) = call(router, post(&path, Some(SECRET), poll.to_string().into())).await;
    assert_eq!(status, StatusCode::OK);
    t.id
}

fn to_query(v: &Value) -> String {
    match v {
        Value::String(s) => s.replace(['&', '#', ' '], "_"),
        other => other.to_string(),
    }
}

#[test]
fn no_agent_body_breaks_an_endpoint_or_an_operator_view() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, session) = rt.block_on(console(dir.path()));
    let router = super::router(state.clone());
    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&agent_request(), |req| {
            rt.block_on(async {
                let task = fresh_task(&router, &state).await;
                let node = |tail: &str| format!("/api/v1/nodes/{NODE}/{tail}");
                let json = |v: &Value| v.to_string().into_bytes();
                let request = match &req {
                    Agent::Enroll(v) => post("/api/v1/enroll", None, json(v)),
                    Agent::Heartbeat(v) => post(&node("heartbeat"), Some(SECRET), json(v)),
                    Agent::Shutdown(v) => post(&node("shutdown"), Some(SECRET), json(v)),
                    Agent::Poll(v) => post(&node("tasks/poll"), Some(SECRET), json(v)),
                    Agent::Start(v) => {
                        post(&node(&format!("tasks/{task}/start")), Some(SECRET), json(v))
                    }
                    Agent::Finish(v) => post(
                        &node(&format!("tasks/{task}/finish")),
                        Some(SECRET),
                        json(v),
                    ),
                    Agent::Push {
                        lease,
                        offset,
                        body,
                    } => {
                        let path = node(&format!(
                            "tasks/{task}/log?lease={}&offset={}",
                            to_query(lease),
                            to_query(offset)
                        ));
                        Request::post(path)
                            .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .body(Body::from(body.clone()))
                            .unwrap()
                    }
                    Agent::Update(v) => post(&node("update"), Some(SECRET), json(v)),
                };
                let (status, body) = call(&router, request).await;
                assert!(
                    !status.is_server_error(),
                    "{req:?} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                if status == StatusCode::BAD_REQUEST {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    assert!(v["error"]["field"].is_string(), "{req:?}: {v}");
                }
                views_answer(&router, &session, task, &format!("{req:?}")).await;
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn times_out_of_range_are_refused_and_name_the_field() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = rt.block_on(console(dir.path()));
    let router = super::router(state.clone());
    rt.block_on(async {
        for at in [-1, i64::MAX, 253_402_300_800_000, 0] {
            let task = fresh_task(&router, &state).await;
            let path = format!("/api/v1/nodes/{NODE}/tasks/{task}/start");
            let body = json!({"lease": 1, "at_ms": at}).to_string();
            let (status, body) = call(&router, post(&path, Some(SECRET), body.into())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{at}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["field"], "at_ms", "{v}");
            // Nothing was stored: the task is still only assigned.
            let t = state.store.task(task).await.unwrap().unwrap();
            assert_eq!(t.started_ms, None);
        }
    });
}

#[test]
fn times_an_older_console_stored_out_of_range_still_render() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, session) = rt.block_on(console(dir.path()));
    let router = super::router(state.clone());
    rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(fresh_task(&router, &state).await);
        }
        // Straight into SQLite, as a console without the checks would have stored them.
        let db = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        let bad = [
            (-1, i64::MAX),
            (i64::MIN, i64::MAX),
            (253_402_300_800_000, -1),
            (i64::MAX, i64::MIN),
        ];
        for (id, (started, finished)) in ids.iter().zip(bad) {
            db.execute(
                "UPDATE tasks SET state = 'succeeded', started_ms = ?2, finished_ms = ?3, submitted_ms = ?2, exit_code = 0 WHERE id = ?1",
                rusqlite::params![id, started, finished],
            )
            .unwrap();
        }
        db.execute(
            "UPDATE servers SET last_heartbeat_ms = ?1, clock_offset_ms = ?2",
            rusqlite::params![i64::MAX, i64::MIN],
        )
        .ok();
        for id in &ids {
            views_answer(&router, &session, *id, "stored times out of range").await;
        }
        let (_, body) = call(&router, get(&format!("/api/v1/tasks/{}", ids[0]), &session)).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["started_at"], "1969-12-31T23:59:59.999Z", "{v}");
        assert_eq!(v["finished_at"], "+292278994-08-17T07:12:55.807Z", "{v}");
    });
}

#[test]
fn a_panicking_handler_answers_500_and_the_next_request_is_served() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = rt.block_on(console(dir.path()));
    let routes = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                let v: Vec<u8> = Vec::new();
                // An out-of-bounds index: a bug, as a handler could have.
                let i = v.len() + 1;
                v[i].to_string()
            }),
        )
        .route("/fine", axum::routing::get(|| async { "fine" }));
    let router = super::with_layers(routes, state);
    rt.block_on(async {
        let (status, body) = call(&router, get("/boom", "")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal", "{v}");
        let res = router.clone().oneshot(get("/boom", "")).await.unwrap();
        assert!(res.headers().contains_key(tasknode_protocol::TIME_HEADER));
        let (status, body) = call(&router, get("/fine", "")).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"fine"[..]));
    });
}

fn push(task: i64, offset: u64, bytes: usize) -> Request<Body> {
    Request::post(format!(
        "/api/v1/nodes/{NODE}/tasks/{task}/log?lease=1&offset={offset}"
    ))
    .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
    .header(header::CONTENT_TYPE, "application/octet-stream")
    .body(Body::from(vec![b'x'; bytes]))
    .unwrap()
}

#[test]
fn pushed_logs_stop_at_the_task_and_server_limits_with_413_naming_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let limits = LogLimits {
        per_task: 1000,
        per_server: 1500,
    };
    let (state, session) = rt.block_on(console_with(dir.path(), NetworkType::Vpc, limits));
    let router = super::router(state.clone());
    rt.block_on(async {
        let refused = |body: &[u8], flag: &str| {
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["error"]["code"], "limit_reached", "{v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(flag),
                "{v}"
            );
        };
        let first = fresh_task(&router, &state).await;
        let (status, _) = call(&router, push(first, 0, 1000)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(&router, push(first, 1000, 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        refused(&body, "--max-task-log");

        let second = fresh_task(&router, &state).await;
        let (status, _) = call(&router, push(second, 0, 500)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(&router, push(second, 500, 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        refused(&body, "--max-server-logs");
        // Nothing refused was kept, and everything else goes on.
        assert_eq!(
            state.store.log_sizes(&[second]).await.unwrap().get(&second),
            Some(&500)
        );
        views_answer(&router, &session, second, "a full server").await;
        fresh_task(&router, &state).await;
    });
}

#[test]
fn a_log_service_that_sends_more_than_asked_is_cut_off() {
    use std::io::{Read, Write};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, session) = rt.block_on(console_with(
        dir.path(),
        NetworkType::Classic,
        LogLimits::default(),
    ));
    let router = super::router(state.clone());
    // A hostile log service: whatever is asked, it sends 8 MiB.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in service.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 8388608\r\n\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..128 {
                if c.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    rt.block_on(async {
        let task = fresh_task(&router, &state).await;
        let hb = json!({"agent_version": "0.1.0", "clock_offset_ms": 0, "running_tasks": 0,
                        "free_slots": 4, "log_port": port});
        let path = format!("/api/v1/nodes/{NODE}/heartbeat");
        let (status, _) = call(&router, post(&path, Some(SECRET), hb.to_string().into())).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(
            &router,
            get(&format!("/api/v1/tasks/{task}/log?limit=1000"), &session),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than the 1000 bytes asked for"),
            "{v}"
        );
        views_answer(&router, &session, task, "a hostile log service").await;
    });
}
