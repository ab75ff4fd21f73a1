//! Password checks are bounded: a flood of wrong passwords is answered 429 with Retry-After
//! past the hashing queue, repeated failures for a user name or from an address are refused
//! with 429 without hashing, and a valid user still gets in once the flood stops. Statuses
//! only; how fast is measured by `scripts/bench.sh signin` (docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};

use reqwest::blocking::{Client, Response};
use serde_json::json;
use tasknode_tests::web::WebClient;
use tasknode_tests::{Console, hostname};

fn addr(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// A 429's Retry-After, which must be whole seconds, at least 1.
fn retry_after(res: &Response) -> u64 {
    let v = res
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("a {} without Retry-After", res.status()));
    let secs: u64 = v.to_str().unwrap().parse().unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

#[test]
fn floods_and_repeated_failures_get_429_and_a_valid_user_still_gets_in() {
    let console = Console::start(&[]);
    let password = console.create_user("etl");
    let victim_password = console.create_user("victim");

    // Five wrong passwords for one user name: each an ordinary 401. The sixth is refused
    // before any check, even with the right password, from another address too.
    let attacker = WebClient::new(&console.url, addr(2, 1));
    for _ in 0..5 {
        let res = attacker
            .sign_in_attempt("victim", "wrong-password")
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = WebClient::new(&console.url, addr(2, 2))
        .sign_in_attempt("victim", &victim_password)
        .unwrap();
    assert_eq!(res.status(), 429);
    retry_after(&res);
    let body = res.text().unwrap();
    assert!(body.contains("too many failed sign-ins"), "{body}");
    // The address that failed is held back too, whichever user it names.
    let res = attacker.sign_in_attempt("etl", &password).unwrap();
    assert_eq!(res.status(), 429);
    retry_after(&res);

    // The same backoff guards enrollment with an access key (the API), per user name.
    let api = Client::builder().local_address(addr(4, 1)).build().unwrap();
    let enroll = |user: &str, pw: &str| {
        api.post(console.api("/enroll"))
            .json(&json!({
                "user_name": user, "password": pw,
                "identity": { "kind": "hostname", "value": hostname() },
                "facts": { "hostname": hostname(), "cpu_cores": 1.0, "memory_bytes": 1_073_741_824u64,
                           "os": "t", "arch": "x86_64", "kernel": "k", "agent_version": "0.1.0" }
            }))
            .send()
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(enroll("enroller", "wrong-password").status(), 401);
    }
    let res = enroll("enroller", "wrong-password");
    assert_eq!(res.status(), 429);
    retry_after(&res);
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");

    // A flood: many wrong sign-ins at once, spread over addresses and user names. Past the
    // hashing queue they are answered 429 at once; none gets anything but 401 or 429.
    const FLOOD: usize = 300;
    let barrier = Arc::new(Barrier::new(FLOOD));
    let url = console.url.clone();
    let threads: Vec<_> = (0..FLOOD)
        .map(|i| {
            let (barrier, url) = (Arc::clone(&barrier), url.clone());
            std::thread::spawn(move || {
                let client = WebClient::new(&url, addr(3, (i % 60 + 1) as u8));
                barrier.wait();
                let res = client
                    .sign_in_attempt(&format!("sprayed-{i}"), "wrong-password")
                    .unwrap();
                let status = res.status().as_u16();
                let busy = status == 429 && {
                    retry_after(&res);
                    res.text().unwrap().contains("checking too many passwords")
                };
                (status, busy)
            })
        })
        .collect();
    let answers: Vec<(u16, bool)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        answers.iter().all(|(s, _)| *s == 401 || *s == 429),
        "{answers:?}"
    );
    let busy = answers.iter().filter(|(_, b)| *b).count();
    let checked = answers.iter().filter(|(s, _)| *s == 401).count();
    assert!(busy > 0, "no 429 past the queue: {answers:?}");
    assert!(checked > 0, "nothing was checked at all: {answers:?}");

    // The flood is over: a valid user signs in, from an address that never failed.
    let res = WebClient::new(&console.url, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .sign_in_attempt("etl", &password)
        .unwrap();
    assert_eq!(res.status(), 303, "a valid sign-in after the flood");
}
