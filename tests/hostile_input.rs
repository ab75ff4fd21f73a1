//! Bad and hostile input against the real console: every refusal is a 4xx whose body names the
//! field, and nothing is stored. Also: tokens, node secrets that try to act for another node,
//! and the console-time header on every answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use tasknode_tests::{Console, stderr};

const HOSTILE: &[&str] = &[
    "it's",
    "say \"hi\"",
    "$(reboot)",
    "`id`",
    "a\nb",
    "a\0b",
    "a;b",
    "../x",
    "",
];

fn ten_kb() -> String {
    "x".repeat(10 * 1024)
}

/// Sends a request and returns the status and the parsed error body.
fn call(req: RequestBuilder) -> (u16, Value) {
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    assert!(
        res.headers().contains_key("x-tasknode-time"),
        "response without the console-time header"
    );
    let body = res.text().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn admin(console: &Console, http: &Client, path: &str, body: &Value) -> (u16, Value) {
    call(
        http.post(console.api(path))
            .bearer_auth(console.token())
            .json(body),
    )
}

fn assert_refused(res: &(u16, Value), status: u16, field: &str) {
    assert_eq!(res.0, status, "{:#}", res.1);
    assert_eq!(res.1["error"]["field"], field, "{:#}", res.1);
    let message = res.1["error"]["message"].as_str().unwrap();
    assert!(!message.is_empty());
    assert!(
        !message.contains('\n') && !message.contains('\0'),
        "message echoes raw input: {message:?}"
    );
}

#[test]
fn hostile_names_are_refused_and_nothing_is_stored() {
    let console = Console::start(&[]);
    let http = Client::new();
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let long = ten_kb();
    for value in HOSTILE.iter().copied().chain([long.as_str()]) {
        assert_refused(
            &admin(&console, &http, "/projects", &json!({"name": value})),
            400,
            "name",
        );
        assert_refused(
            &admin(
                &console,
                &http,
                "/users",
                &json!({"name": value, "project": "default"}),
            ),
            400,
            "name",
        );
        assert_refused(
            &admin(
                &console,
                &http,
                "/groups",
                &json!({"name": value, "project": "default", "network": "vpc"}),
            ),
            400,
            "name",
        );
        assert_refused(
            &admin(
                &console,
                &http,
                "/users",
                &json!({"name": "ok", "project": value}),
            ),
            400,
            "project",
        );
        let server = admin(
            &console,
            &http,
            "/servers",
            &json!({"project": "default", "group": "etl", "name": value}),
        );
        assert_refused(&server, 400, "name");
    }
    // Nothing was stored.
    let list = |path: &str| -> Vec<Value> {
        let (status, v) = call(http.get(console.api(path)).bearer_auth(console.token()));
        assert_eq!(status, 200);
        v.as_array().unwrap().clone()
    };
    assert_eq!(list("/projects").len(), 1);
    assert_eq!(list("/users").len(), 0);
    assert_eq!(list("/groups").len(), 1);
    assert_eq!(list("/servers").len(), 0);

    // The CLI refuses before sending, naming its argument, and stores nothing either.
    let out = console.cli(&["group", "create", "$(reboot)", "--network", "classic"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NAME:"), "{}", stderr(&out));
    assert_eq!(list("/groups").len(), 1);
}

#[test]
fn wrong_types_unknown_fields_and_oversized_bodies() {
    let console = Console::start(&[]);
    let http = Client::new();
    let post = |path: &str, body: &Value| admin(&console, &http, path, body);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);

    assert_refused(
        &post(
            "/groups",
            &json!({"name": 5, "project": "default", "network": "vpc"}),
        ),
        400,
        "name",
    );
    assert_refused(
        &post(
            "/groups",
            &json!({"name": "g", "project": "default", "network": "ipv6"}),
        ),
        400,
        "network",
    );
    assert_refused(
        &post("/groups", &json!({"name": "g", "project": "default"})),
        400,
        "network",
    );
    let unknown = post(
        "/groups",
        &json!({"name": "g", "project": "default", "network": "vpc", "admin": true}),
    );
    assert_eq!(unknown.0, 400);
    assert!(
        unknown.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `admin`"),
        "{}",
        unknown.1
    );
    assert_refused(&post("/groups", &json!(["g"])), 400, "body");
    for bad in [json!(0), json!(-1), json!("8"), json!(1_000_000)] {
        let body =
            json!({"project": "default", "group": "etl", "name": "db-1", "max_concurrency": bad});
        assert_refused(&post("/servers", &body), 400, "max_concurrency");
    }
    // A host name in a vpc group (and the other way round) is refused with the reason.
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    let res = post(
        "/servers",
        &json!({"project": "default", "group": "vpc", "name": "db-1"}),
    );
    assert_refused(&res, 400, "name");
    assert!(
        res.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("by DMI UUID")
    );
    // An unknown group is a 404 naming it.
    assert_refused(
        &post(
            "/servers",
            &json!({"project": "default", "group": "nope", "name": "db-1"}),
        ),
        404,
        "group",
    );

    let token = console.token();
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(100 * 1024));
    let res = call(
        http.post(console.api("/projects"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big),
    );
    assert_eq!(res.0, 413, "{}", res.1);
    assert_eq!(res.1["error"]["code"], "payload_too_large");
    let res = call(
        http.post(console.api("/projects"))
            .bearer_auth(&token)
            .body("{\"name\":\"p\"}"),
    );
    assert_refused(&res, 415, "content-type");
    let res = call(
        http.post(console.api("/projects"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{\"name\": "),
    );
    assert_refused(&res, 400, "body");
    let res = call(
        http.get(console.api("/servers?colour=red"))
            .bearer_auth(&token),
    );
    assert_refused(&res, 400, "query");
    let res = call(
        http.get(console.api("/servers?group=%24(id)"))
            .bearer_auth(&token),
    );
    assert_refused(&res, 400, "group");

    let (status, groups) = call(http.get(console.api("/groups")).bearer_auth(&token));
    assert_eq!(status, 200);
    assert_eq!(
        groups.as_array().unwrap().len(),
        2,
        "a refused request stored something"
    );
    let (_, servers) = call(http.get(console.api("/servers")).bearer_auth(&token));
    assert_eq!(servers.as_array().unwrap().len(), 0);
}

#[test]
fn admin_endpoints_need_the_admin_token() {
    let console = Console::start(&[]);
    let http = Client::new();
    let body = json!({"name": "p"});
    assert_refused(
        &call(http.post(console.api("/projects")).json(&body)),
        401,
        "authorization",
    );
    assert_refused(
        &call(
            http.post(console.api("/projects"))
                .bearer_auth("wrong")
                .json(&body),
        ),
        401,
        "authorization",
    );
    assert_refused(
        &call(
            http.post(console.api("/projects"))
                .header("authorization", "Basic YTpi")
                .json(&body),
        ),
        401,
        "authorization",
    );
    assert_refused(
        &call(http.get(console.api("/servers"))),
        401,
        "authorization",
    );
    let (status, _) = call(http.get(console.api("/health")));
    assert_eq!(status, 200, "health needs no token");
    let (status, body) = call(http.get(console.api("/no/such/thing")));
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    // The CLI with a wrong token file: refused, exit status 3, and nothing created.
    let wrong = console.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-not-the-token-not-the-token\n").unwrap();
    let out = std::process::Command::new(tasknode_tests::bin("tasknode-console"))
        .args(["project", "create", "p", "--token-file"])
        .arg(&wrong)
        .env("TASKNODE_CONSOLE", &console.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrong admin token"),
        "{}",
        stderr(&out)
    );
    assert!(!console.cli_ok(&["project", "list"]).contains("\np "));
}

fn facts() -> Value {
    json!({
        "hostname": "h", "cpu_cores": 8.0, "memory_bytes": 17179869184u64,
        "os": "CentOS release 6.10 (Final)", "arch": "x86_64",
        "kernel": "2.6.32-754.el6.x86_64", "agent_version": "0.1.0"
    })
}

fn enroll_body(user: &str, password: &str, uuid: &str) -> Value {
    json!({"user_name": user, "password": password, "identity": {"kind": "uuid", "value": uuid}, "facts": facts()})
}

#[test]
fn enrollment_refuses_hostile_values() {
    let console = Console::start(&[]);
    let http = Client::new();
    let password = console.create_user("etl");
    let uuid = "4c4c4544-0042-3510-8051-b4c04f333232";
    let enroll = |body: &Value| call(http.post(console.api("/enroll")).json(body));

    for bad in ["$(id)", "`id`", "a'b", "a\nb"] {
        assert_refused(
            &enroll(&enroll_body(bad, &password, uuid)),
            400,
            "user_name",
        );
    }
    assert_refused(
        &enroll(&enroll_body("etl", "with\nnewline", uuid)),
        400,
        "password",
    );
    assert_refused(
        &enroll(&enroll_body("etl", &ten_kb(), uuid)),
        400,
        "password",
    );
    assert_refused(
        &enroll(&enroll_body("etl", &password, "not-a-uuid")),
        400,
        "identity.value",
    );
    assert_refused(
        &enroll(&enroll_body(
            "etl",
            &password,
            "00000000-0000-0000-0000-000000000000",
        )),
        400,
        "identity.value",
    );
    let mut body = enroll_body("etl", &password, uuid);
    body["facts"]["cpu_cores"] = json!(-1);
    assert_refused(&enroll(&body), 400, "facts.cpu_cores");
    let mut body = enroll_body("etl", &password, uuid);
    body["facts"]["os"] = json!("CentOS\n$(reboot)");
    assert_refused(&enroll(&body), 400, "facts.os");
    let mut body = enroll_body("etl", &password, uuid);
    body["identity"] = json!({"kind": "mac", "value": "aa:bb"});
    assert_eq!(enroll(&body).0, 400);
    let mut body = enroll_body("etl", &password, uuid);
    body["node_id"] = json!("chosen-by-me");
    assert_eq!(enroll(&body).0, 400);
}

#[test]
fn a_node_secret_cannot_act_for_another_node() {
    let console = Console::start(&[]);
    let http = Client::new();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    let uuids = [
        "4c4c4544-0042-3510-8051-b4c04f333232",
        "4c4c4544-0042-3510-8051-b4c04f333233",
    ];
    let mut nodes = Vec::new();
    for uuid in uuids {
        console.cli_ok(&["server", "add", "--group", "vpc", "--name", uuid]);
        let (status, v) = call(
            http.post(console.api("/enroll"))
                .json(&enroll_body("etl", &password, uuid)),
        );
        assert_eq!(status, 200, "{v}");
        nodes.push((
            v["node_id"].as_str().unwrap().to_owned(),
            v["node_secret"].as_str().unwrap().to_owned(),
        ));
    }
    let hb = json!({"agent_version": "0.1.0", "running_tasks": 0, "free_slots": 4});
    let (a, b) = (&nodes[0], &nodes[1]);
    let beat = |id: &str, secret: Option<&str>| {
        let mut req = http
            .post(console.api(&format!("/nodes/{id}/heartbeat")))
            .json(&hb);
        if let Some(s) = secret {
            req = req.bearer_auth(s);
        }
        call(req)
    };
    assert_eq!(beat(&a.0, Some(&a.1)).0, 200);
    assert_refused(&beat(&b.0, Some(&a.1)), 401, "authorization");
    assert_refused(&beat(&b.0, None), 401, "authorization");
    assert_refused(&beat("not-a-node", Some(&a.1)), 401, "authorization");
    assert_eq!(
        beat("../../users", Some(&a.1)).0,
        404,
        "a node path must not reach other routes"
    );
    // Nor can it stop another node.
    let res = call(
        http.post(console.api(&format!("/nodes/{}/shutdown", b.0)))
            .bearer_auth(&a.1)
            .json(&json!({"reason": "evil"})),
    );
    assert_refused(&res, 401, "authorization");
    // Nor remove another node's server from the console: its own secret names its own
    // server alone, and no field of the body names another.
    let res = call(
        http.post(console.api(&format!("/nodes/{}/leave", b.0)))
            .bearer_auth(&a.1)
            .json(&json!({"mode": "force"})),
    );
    assert_refused(&res, 401, "authorization");
    let res = call(
        http.post(console.api(&format!("/nodes/{}/leave", a.0)))
            .bearer_auth(&a.1)
            .json(&json!({"name": uuids[1]})),
    );
    assert_refused(&res, 400, "name");
    assert_eq!(console.servers().len(), 2);
    assert_eq!(console.server(uuids[0])["status"], "available");
    assert_eq!(
        console.server(uuids[1])["status"],
        "pending",
        "node b was touched"
    );
}

#[test]
fn a_server_is_in_one_group_and_the_refusal_says_where() {
    let console = Console::start(&[]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["group", "create", "bi", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", "DB-1"]);
    let out = console.cli(&["server", "add", "--group", "bi", "--name", "db-1"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("resource group \"etl\" of project \"default\""),
        "{err}"
    );
    let servers = console.servers();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["group"], "etl");
    assert_eq!(
        servers[0]["name"], "db-1",
        "host names are stored lower case"
    );
}

#[test]
fn parser_errors_name_the_field_and_echo_little() {
    let console = Console::start(&[]);
    let http = Client::new();
    let post = |path: &str, body: &Value| admin(&console, &http, path, body);
    assert_refused(&post("/projects", &json!({})), 400, "name");
    assert_refused(
        &post("/groups", &json!({"name": "g", "project": "default"})),
        400,
        "network",
    );
    let res = post("/projects", &json!({"name": "p", "x": 1}));
    assert_refused(&res, 400, "x");
    let long = ten_kb();
    let res = post(
        "/groups",
        &json!({"name": "g", "project": "default", "network": long}),
    );
    assert_refused(&res, 400, "network");
    let message = res.1["error"]["message"].as_str().unwrap();
    assert!(
        message.len() < 400,
        "a 10 KB value came back: {} bytes",
        message.len()
    );
    let res = post("/projects", &json!({"name": "p", long.as_str(): 1}));
    assert!(res.1.to_string().len() < 1_000, "a 10 KB key came back");
    let res = post(
        "/groups",
        &json!({"name": "g", "project": "default", "network": "a\nb"}),
    );
    assert_refused(&res, 400, "network");
}

#[test]
fn bodies_must_be_json_objects() {
    let console = Console::start(&[]);
    let http = Client::new();
    for body in [json!(["positional"]), json!("name"), json!(5), json!(null)] {
        assert_refused(&admin(&console, &http, "/projects", &body), 400, "body");
    }
    let (_, projects) = call(
        http.get(console.api("/projects"))
            .bearer_auth(console.token()),
    );
    assert_eq!(
        projects.as_array().unwrap().len(),
        1,
        "an array body created a project"
    );
}

#[test]
fn methods_queries_and_schemes() {
    let console = Console::start(&[]);
    let http = Client::new();
    let token = console.token();
    let res = call(http.delete(console.api("/projects")).bearer_auth(&token));
    assert_eq!(res.0, 405);
    assert_eq!(res.1["error"]["code"], "method_not_allowed");
    for path in [
        "/projects?x=1",
        "/users?group=g",
        "/groups?group=g",
        "/servers?colour=red",
    ] {
        assert_refused(
            &call(http.get(console.api(path)).bearer_auth(&token)),
            400,
            "query",
        );
    }
    // The auth scheme is case-insensitive.
    let res = call(
        http.get(console.api("/projects"))
            .header("authorization", format!("bearer {token}")),
    );
    assert_eq!(res.0, 200, "{}", res.1);
}

#[test]
fn node_endpoints_check_the_secret_before_the_body_and_bound_offsets() {
    let console = Console::start(&[]);
    let http = Client::new();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "vpc", "--network", "vpc"]);
    let uuid = "4c4c4544-0042-3510-8051-b4c04f333232";
    console.cli_ok(&["server", "add", "--group", "vpc", "--name", uuid]);
    let (status, v) = call(
        http.post(console.api("/enroll"))
            .json(&enroll_body("etl", &password, uuid)),
    );
    assert_eq!(status, 200, "{v}");
    let (id, secret) = (
        v["node_id"].as_str().unwrap(),
        v["node_secret"].as_str().unwrap(),
    );
    let url = console.api(&format!("/nodes/{id}/heartbeat"));

    // Without the secret, a broken body still gets 401, not a parser error.
    let res = call(
        http.post(&url)
            .header("content-type", "application/json")
            .body("{"),
    );
    assert_refused(&res, 401, "authorization");
    let res = call(http.post(&url).bearer_auth("wrong").body("not json"));
    assert_refused(&res, 401, "authorization");

    for offset in [i64::MIN, i64::MAX, 400 * 24 * 3600 * 1000] {
        let hb = json!({"agent_version": "0.1.0", "clock_offset_ms": offset, "running_tasks": 0, "free_slots": 1});
        assert_refused(
            &call(http.post(&url).bearer_auth(secret).json(&hb)),
            400,
            "clock_offset_ms",
        );
    }
    // The list still answers, and the node is not skewed by what was refused.
    assert_eq!(console.server(uuid)["status"], "pending");
}
