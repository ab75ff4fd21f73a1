//! Failover of the client against real HTTP servers on loopback: which failures move a request
//! to the next console and which stay the console's word.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use tasknode_protocol::tasks::FinishTask;

use super::*;

/// A console that answers every task report with `status` (and a JSON error body), counting
/// the requests it gets. Returns its URL.
async fn console(status: StatusCode, hits: Arc<AtomicU32>) -> String {
    let app = axum::Router::new().route(
        "/api/v1/nodes/{node}/tasks/{id}/finish",
        post(move || {
            let hits = Arc::clone(&hits);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({"error": {"code": "conflict", "message": "judged"}});
                (status, axum::Json(body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A loopback port where nothing listens.
fn dead_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn finish() -> FinishTask {
    FinishTask {
        lease: 1,
        outcome: tasknode_protocol::tasks::Outcome::Exited { code: 0 },
        started_ms: Some(1),
        finished_ms: 2,
        log_bytes: 0,
    }
}

#[tokio::test]
async fn a_final_refusal_stays_with_the_console_that_gave_it() {
    let (a_hits, b_hits) = (Arc::default(), Arc::default());
    let a = console(StatusCode::CONFLICT, Arc::clone(&a_hits)).await;
    let b = console(StatusCode::NO_CONTENT, Arc::clone(&b_hits)).await;
    let client = ConsoleClient::new(&[a.clone(), b], None).unwrap();
    let err = client
        .finish_task("n1", "s", 7, &finish())
        .await
        .unwrap_err();
    assert!(err.is_final(), "{err}");
    assert!(!err.fails_over());
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        0,
        "a 409 went to the next console"
    );
    assert_eq!(client.consoles().current_url(), a);
    assert!(client.consoles().take_switches().is_empty());
    // 401 is not final (a re-enrollment mends it), and still not a console failure.
    let (c_hits, d_hits) = (Arc::default(), Arc::default());
    let c = console(StatusCode::UNAUTHORIZED, Arc::clone(&c_hits)).await;
    let d = console(StatusCode::NO_CONTENT, Arc::clone(&d_hits)).await;
    let client = ConsoleClient::new(&[c, d], None).unwrap();
    let err = client
        .finish_task("n1", "s", 7, &finish())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(d_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_answer_or_a_5xx_moves_on_round_robin_and_stays() {
    let (a_hits, b_hits) = (Arc::default(), Arc::default());
    let dead = dead_port();
    let a = console(StatusCode::SERVICE_UNAVAILABLE, Arc::clone(&a_hits)).await;
    let b = console(StatusCode::NO_CONTENT, Arc::clone(&b_hits)).await;
    let client = ConsoleClient::new(&[dead.clone(), a.clone(), b.clone()], None).unwrap();
    client.finish_task("n1", "s", 7, &finish()).await.unwrap();
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    assert_eq!(b_hits.load(Ordering::SeqCst), 1);
    assert_eq!(client.consoles().current_url(), b);
    let switches = client.consoles().take_switches();
    assert_eq!(switches.len(), 1);
    assert_eq!(
        (switches[0].from.as_str(), switches[0].to.as_str()),
        (dead.as_str(), b.as_str())
    );
    // The next request goes straight to b.
    client.finish_task("n1", "s", 8, &finish()).await.unwrap();
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    assert_eq!(b_hits.load(Ordering::SeqCst), 2);
    let views = client.consoles().views();
    assert!(
        views[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("cannot reach")
    );
    assert!(views[1].last_error.as_deref().unwrap().contains("503"));
    assert!(views[2].in_use && views[2].last_error.is_none());
    // When every console fails, the request fails with the error of the console in use,
    // which stays in use.
    let client = ConsoleClient::new(&[a.clone(), dead.clone()], None).unwrap();
    let err = client
        .finish_task("n1", "s", 9, &finish())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(
        err.to_string()
            .ends_with("(and the other console failed too)"),
        "{err}"
    );
    assert_eq!(client.consoles().current_url(), a);
    assert!(client.consoles().take_switches().is_empty());
}

#[tokio::test]
async fn a_removed_answer_stays_with_its_console_and_tells_the_agent_once() {
    let (a_hits, b_hits) = (Arc::default(), Arc::default());
    let a = console(StatusCode::GONE, Arc::clone(&a_hits)).await;
    let b = console(StatusCode::NO_CONTENT, Arc::clone(&b_hits)).await;
    let client = ConsoleClient::new(&[a.clone(), b], None).unwrap();
    // Nothing said yet: waiting for it does not end.
    let waiting =
        tokio::time::timeout(std::time::Duration::from_millis(50), client.removed()).await;
    assert!(waiting.is_err());
    let err = client
        .finish_task("n1", "s", 7, &finish())
        .await
        .unwrap_err();
    assert!(err.is_removed() && !err.fails_over(), "{err}");
    // It is the console's word on this node, not a failure of that console: no other console
    // is asked, none is switched to.
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        0,
        "a 410 went to the next console"
    );
    assert_eq!(client.consoles().current_url(), a);
    assert!(client.consoles().take_switches().is_empty());
    let said = tokio::time::timeout(std::time::Duration::from_secs(1), client.removed())
        .await
        .unwrap();
    assert!(said.contains("HTTP 410"), "{said}");
}

/// A console whose enroll answers `failures` times with a balancer's 502, then with
/// `then`: an enrollment (200) or a refusal. Counts the requests it gets.
async fn flaky_enroll(failures: u32, then: StatusCode, hits: Arc<AtomicU32>) -> String {
    let app = axum::Router::new().route(
        "/api/v1/enroll",
        post(move || {
            let hits = Arc::clone(&hits);
            async move {
                if hits.fetch_add(1, Ordering::SeqCst) < failures {
                    return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
                }
                if then != StatusCode::OK {
                    let body = serde_json::json!({"error": {"code": "forbidden", "message": "wrong token"}});
                    return (then, axum::Json(body)).into_response();
                }
                axum::Json(serde_json::json!({
                    "node_id": "n1", "node_secret": "s", "server_name": "h", "group": "g",
                    "project": "p", "network": "classic", "heartbeat_interval_secs": 10,
                    "console_time_ms": 1
                }))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn enroll_request() -> EnrollRequest {
    EnrollRequest {
        user_name: None,
        password: None,
        enrollment_token: Some("t".into()),
        identity: tasknode_protocol::Identity::Hostname("h".into()),
        facts: tasknode_protocol::wire::HostFacts {
            hostname: "h".into(),
            cpu_cores: 2.0,
            memory_bytes: 1 << 30,
            os: "x".into(),
            arch: "x86_64".into(),
            kernel: "k".into(),
            agent_version: "0.1.0".into(),
        },
    }
}

#[tokio::test]
async fn an_enrollment_is_asked_again_while_the_console_fails_and_never_after_a_refusal() {
    // Two 502s (a console behind the balancer dying mid-request), then the enrollment.
    let hits = Arc::new(AtomicU32::new(0));
    let url = flaky_enroll(2, StatusCode::OK, Arc::clone(&hits)).await;
    let client = ConsoleClient::new(&[url], None).unwrap();
    let mut told = Vec::new();
    let answer = client
        .enroll_patiently(&enroll_request(), Duration::from_secs(30), |e, _| {
            told.push(e.to_string())
        })
        .await
        .unwrap();
    assert_eq!(answer.body.node_id, "n1");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(told.len(), 2);
    assert!(told[0].contains("502"), "{told:?}");

    // A refusal after a 502 is final at once.
    let hits = Arc::new(AtomicU32::new(0));
    let url = flaky_enroll(1, StatusCode::FORBIDDEN, Arc::clone(&hits)).await;
    let client = ConsoleClient::new(&[url], None).unwrap();
    let err = client
        .enroll_patiently(&enroll_request(), Duration::from_secs(30), |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Out of patience: the last failure is the answer.
    let hits = Arc::new(AtomicU32::new(0));
    let url = flaky_enroll(u32::MAX, StatusCode::OK, Arc::clone(&hits)).await;
    let client = ConsoleClient::new(&[url], None).unwrap();
    let err = client
        .enroll_patiently(&enroll_request(), Duration::from_secs(2), |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502), "{err}");
    assert!(hits.load(Ordering::SeqCst) >= 2);
}
