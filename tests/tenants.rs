//! Tenants are isolated: two projects add the same host name; neither learns of the other
//! from any answer or page; the first enrollment binds the name and the other is refused
//! without being told where; listings, tasks and pages of one project never show the other's
//! server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;
use tasknode_tests::web::{WebClient, WebSession};
use tasknode_tests::{Agent, Console, hostname, stderr};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What a project's operator could read and that must not name the other project.
fn assert_silent_about(what: &str, text: &str, others: &[&str]) {
    for o in others {
        assert!(!text.contains(o), "{what} names {o:?}: {text}");
    }
}

fn servers_of(console: &Console, project: &str) -> Vec<Value> {
    serde_json::from_str(&console.cli_ok(&["server", "list", "--project", project, "--json"]))
        .unwrap()
}

fn submit(console: &Console, project: &str, group: &str, script: &str) -> i64 {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let out = console.cli_ok(&[
        "task",
        "submit",
        "--project",
        project,
        "--group",
        group,
        "--script",
        file.path().to_str().unwrap(),
        "--json",
    ]);
    serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn check(session: &WebSession, project: &str, group: &str, name: &str) -> Value {
    let (status, body) = session.get(&format!(
        "/ui/groups/{project}/{group}/check-server?name={name}"
    ));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn two_projects_add_one_host_name_and_the_first_enrollment_wins_unseen() {
    let console = Console::start(&["--heartbeat-interval", "1s"]);
    let host = hostname();
    let mut passwords = Vec::new();
    for (project, user) in [("crimson", "crimson-ann"), ("azurite", "azurite-bob")] {
        console.cli_ok(&["project", "create", project]);
        for group in ["etl", "bi"] {
            console.cli_ok(&[
                "group",
                "create",
                group,
                "--project",
                project,
                "--network",
                "classic",
            ]);
        }
        let v: Value = serde_json::from_str(&console.cli_ok(&[
            "user",
            "create",
            user,
            "--project",
            project,
            "--json",
        ]))
        .unwrap();
        passwords.push(v["password"].as_str().unwrap().to_owned());
    }
    let (red_pw, blue_pw) = (&passwords[0], &passwords[1]);
    // Words that would give blue away to red, and red to blue.
    let blue_words = ["azurite"];
    let red_words = ["crimson"];

    // Both projects add the host: neither blocks the other.
    for project in ["azurite", "crimson"] {
        console.cli_ok(&[
            "server",
            "add",
            "--project",
            project,
            "--group",
            "etl",
            "--name",
            &host,
        ]);
    }
    // Inside one project, a name is still in one group, and the refusal names only that
    // project's group.
    let out = console.cli(&[
        "server",
        "add",
        "--project",
        "crimson",
        "--group",
        "bi",
        "--name",
        &host,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("etl"), "{}", stderr(&out));
    assert_silent_about("the one-group refusal", &stderr(&out), &blue_words);

    // The add-server check as typed in each project's web console: its own group is named,
    // the other project's server is not there at all.
    let red = WebClient::new(&console.url, LOCAL).sign_in("crimson-ann", red_pw);
    let blue = WebClient::new(&console.url, LOCAL).sign_in("azurite-bob", blue_pw);
    let c = check(&red, "crimson", "bi", &host);
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["message"].as_str().unwrap().contains("etl"), "{c}");
    assert_silent_about("red's check", &c.to_string(), &blue_words);
    console.cli_ok(&[
        "server",
        "add",
        "--project",
        "azurite",
        "--group",
        "bi",
        "--name",
        "shared-2.example",
    ]);
    let c = check(&red, "crimson", "bi", "shared-2.example");
    assert_eq!(c["ok"], true, "a name only blue has is free for red: {c}");
    assert_silent_about("red's check", &c.to_string(), &blue_words);
    let c = check(&blue, "azurite", "bi", &host);
    assert_eq!(c["ok"], false, "{c}");
    assert_silent_about("blue's check", &c.to_string(), &red_words);
    // Nor may red look into blue's groups.
    let (status, body) = red.get("/ui/groups/azurite/etl/check-server?name=x");
    assert_eq!(status, 404, "{body}");

    // Blue's agent enrolls first and binds the name to blue.
    let mut blue_agent = Agent::new();
    blue_agent.enroll_ok(&console.url, "azurite-bob", blue_pw, false);
    blue_agent.allow_tasks();
    blue_agent.run();
    console.cli_ok(&[
        "server",
        "add",
        "--project",
        "crimson",
        "--group",
        "bi",
        "--name",
        "shared-2.example",
    ]);

    // Red's agent on the same host is refused, told the server enrolled elsewhere, and not
    // where; nothing is written.
    let red_agent = Agent::new();
    let out = red_agent.enroll(&console.url, "crimson-ann", red_pw, false);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("this server enrolled elsewhere"),
        "{}",
        stderr(&out)
    );
    assert_silent_about("red's refused enrollment", &stderr(&out), &blue_words);
    assert!(!red_agent.config().exists());
    // The same holds on a retry: the name stays blue's.
    let out = red_agent.enroll(&console.url, "crimson-ann", red_pw, false);
    assert!(stderr(&out).contains("this server enrolled elsewhere"));

    // Listings: each project has its own row; blue's is available, red's stays pending.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let b = servers_of(&console, "azurite");
        if b.iter()
            .any(|s| s["name"] == host.as_str() && s["status"] == "available")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "blue never available: {b:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = servers_of(&console, "crimson");
    let mine = r.iter().find(|s| s["name"] == host.as_str()).unwrap();
    assert_eq!(mine["status"], "pending", "{mine}");
    assert!(
        mine["enrolled_at"].is_null() && mine["version"].is_null(),
        "{mine}"
    );
    assert_silent_about(
        "red's server list",
        &Value::from(r.clone()).to_string(),
        &blue_words,
    );

    // Tasks: blue's task runs on blue's server; red's stays queued, for its server never
    // enrolled; neither project sees the other's task.
    let blue_task = submit(&console, "azurite", "etl", "echo blue-ran\n");
    let red_task = submit(&console, "crimson", "etl", "echo red-ran\n");
    let done = console.wait_task(blue_task, &["succeeded"], Duration::from_secs(30));
    assert_eq!(done["server"], host.as_str());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(console.task(red_task)["state"], "queued");

    // Red's pages: its groups, its group's servers, its tasks, releases; none tells of blue.
    for page in [
        "/ui/groups".to_owned(),
        "/ui/groups/crimson/etl".to_owned(),
        "/ui/groups/crimson/etl/servers".to_owned(),
        "/ui/tasks".to_owned(),
        format!("/ui/tasks/{red_task}"),
        "/ui/releases".to_owned(),
    ] {
        let (status, body) = red.get(&page);
        assert_eq!(status, 200, "{page}: {body}");
        assert_silent_about(&page, &body, &blue_words);
        assert!(!body.contains("blue-ran"), "{page}");
    }
    let (status, body) = red.get("/ui/groups/crimson/etl/servers");
    assert!(body.contains("pending"), "{status}: {body}");
    let (status, _) = red.get(&format!("/ui/tasks/{blue_task}"));
    assert_eq!(status, 404, "red opened blue's task");
    let (status, _) = red.get("/ui/groups/azurite/etl");
    assert_eq!(status, 404, "red opened blue's group");
    // And blue's pages say nothing of red.
    for page in ["/ui/groups", "/ui/groups/azurite/etl/servers", "/ui/tasks"] {
        let (status, body) = blue.get(page);
        assert_eq!(status, 200, "{page}: {body}");
        assert_silent_about(page, &body, &red_words);
    }
    drop(blue_agent);
}
