//! Taking access away with the real console and agent: a replaced password stops working at
//! once (for enrollment and for the web console, whose sessions end), a revoked install link's
//! script is refused, a deleted user takes its links and sessions with it, and the audit log
//! records each change with who made it, paged, a user seeing their own project's only.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;
use tasknode_tests::web::WebClient;
use tasknode_tests::{Agent, console_serving_agent, hostname, stderr};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn passwords_links_and_users_are_taken_away_at_once_and_the_audit_log_says_who() {
    // User etl of project default, made by the helper.
    let (console, _agents) = console_serving_agent(&[]);
    console.cli_ok(&["project", "create", "other"]);
    let ann: Value =
        json(&console.cli_ok(&["user", "create", "ann", "--project", "other", "--json"]));
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);

    // A new password: the old one fails at once, for enrollment and for signing in, and the
    // web session it opened ends.
    let old = console.cli_ok(&["user", "password", "etl", "--json"]);
    let old = json(&old)["password"].as_str().unwrap().to_owned();
    let session = WebClient::new(&console.url, LOCAL).sign_in("etl", &old);
    assert_eq!(session.get("/ui/groups").0, 200);
    let new = json(&console.cli_ok(&["user", "password", "etl", "--json"]));
    let new = new["password"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let (status, _) = session.get("/ui/groups");
    assert_ne!(status, 200, "the old password's session still works");
    let refused = WebClient::new(&console.url, LOCAL)
        .sign_in_attempt("etl", &old)
        .unwrap();
    assert_ne!(refused.status(), 303, "the old password signs in");
    let agent = Agent::new();
    let o = agent.enroll(&console.url, "etl", &old, false);
    assert!(!o.status.success(), "the old password enrolls");
    assert!(
        stderr(&o).contains("user name or password"),
        "{}",
        stderr(&o)
    );

    // Links: listed while unspent, revoked, then refused.
    let cmd = json(&console.cli_ok(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--json",
    ]));
    let links = json(&console.cli_ok(&["install-link", "list", "--json"]));
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links[0]["user_name"], "etl");
    let id = links[0]["id"].as_i64().unwrap().to_string();
    console.cli_ok(&["install-link", "revoke", &id]);
    let script = console
        .http()
        .get(cmd["url"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(script.headers()["x-tasknode-refused"], "unknown");
    let again = console.cli(&["install-link", "revoke", &id]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no unspent install link"),
        "{}",
        stderr(&again)
    );
    let links = json(&console.cli_ok(&["install-link", "list", "--json"]));
    assert_eq!(links.as_array().unwrap().len(), 0, "{links}");

    // The user signs in with the new password and reads its own project's log only.
    let user = WebClient::new(&console.url, LOCAL).sign_in("etl", &new);
    let (status, page) = user.get("/ui/audit");
    assert_eq!(status, 200);
    assert!(
        page.contains("install_link.revoke") && page.contains("user.password"),
        "{page}"
    );
    assert!(
        !page.contains("user ann"),
        "another project's entry shows: {page}"
    );

    // Deleting the user ends its session and its links (the one made since), and the
    // password with it.
    console.cli_ok(&[
        "install-command",
        "--group",
        "etl",
        "--user",
        "etl",
        "--json",
    ]);
    let gone = json(&console.cli_ok(&["user", "delete", "etl", "--json"]));
    assert_eq!(
        (
            gone["links_revoked"].as_u64(),
            gone["sessions_ended"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_ne!(user.get("/ui/groups").0, 200);
    let o = agent.enroll(&console.url, "etl", &new, false);
    assert!(!o.status.success(), "a deleted user enrolls");
    let users = console.cli_ok(&["user", "list", "--json"]);
    assert!(!users.contains("\"etl\""), "{users}");
    let missing = console.cli(&["user", "delete", "etl"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("etl"), "{}", stderr(&missing));

    // The log, newest first, says who did what; pages follow each other without a gap.
    let all = json(&console.cli_ok(&["audit", "--json", "--limit", "500"]));
    let actions: Vec<&str> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.delete",
            "install_link.create",
            "install_link.revoke",
            "install_link.create",
            "user.password",
            "user.password",
            "server.add",
            "group.create",
            "user.create",
            "project.create",
            "user.create",
        ]
    );
    assert!(
        all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "admin")
    );
    assert_eq!(
        all["entries"][8]["object"],
        format!("user {}", ann["user_name"].as_str().unwrap())
    );
    let first = json(&console.cli_ok(&["audit", "--json", "--limit", "4"]));
    let next = first["next_before"].as_i64().unwrap().to_string();
    let second = json(&console.cli_ok(&["audit", "--json", "--limit", "4", "--before", &next]));
    assert_eq!(second["entries"][0], all["entries"][4]);
    let bad = console.cli(&["audit", "--limit", "0"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("limit"), "{}", stderr(&bad));
}

#[test]
fn the_web_audit_log_pages_and_shows_a_user_their_own_project_only() {
    let (console, _agents) = console_serving_agent(&[]);
    let password = json(&console.cli_ok(&["user", "password", "etl", "--json"]));
    let password = password["password"].as_str().unwrap().to_owned();
    console.cli_ok(&["project", "create", "other"]);
    console.cli_ok(&[
        "group",
        "create",
        "theirs",
        "--project",
        "other",
        "--network",
        "vpc",
    ]);
    // More of the user's project's entries than a page holds (50).
    let http = console.http();
    for i in 0..55 {
        let res = http
            .post(console.api("/groups"))
            .bearer_auth(console.token())
            .json(&serde_json::json!({"name": format!("g{i}"), "project": "default", "network": "vpc"}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let user = WebClient::new(&console.url, LOCAL).sign_in("etl", &password);
    let (status, first) = user.get("/ui/audit");
    assert_eq!(status, 200);
    assert_eq!(first.matches("<tr id=\"audit-").count(), 50, "{first}");
    assert!(first.contains("group g54 (vpc)") && !first.contains("group g4 (vpc)"));
    assert!(
        !first.contains("theirs") && !first.contains("project other"),
        "{first}"
    );
    // The page links to the older one, which goes on where the first stopped.
    let older = first
        .split("href=\"/ui/audit?before=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no link to older entries: {first}"))
        .to_owned();
    let (status, second) = user.get(&format!("/ui/audit?before={older}"));
    assert_eq!(status, 200);
    assert!(
        second.contains("group g4 (vpc)") && second.contains("user etl"),
        "{second}"
    );
    assert!(!second.contains("group g5 (vpc)"), "{second}");
    assert!(!second.contains("href=\"/ui/audit?before="), "{second}");
    // A cursor that is not a number shows the newest page.
    let (status, again) = user.get("/ui/audit?before=x");
    assert_eq!((status, again.contains("group g54 (vpc)")), (200, true));
}
