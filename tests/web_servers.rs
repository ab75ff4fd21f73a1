//! Removing and moving servers in the web console, in a real headless Chromium: a busy
//! server's removal is refused with the way out beside the form, drained, then forced; a
//! server moves to another group of its project; another project's user reaches neither.
//! Screenshots land in target/screenshots/ (or $TASKNODE_SCREENSHOTS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tasknode_tests::browser::{Browser, TIMEOUT};
use tasknode_tests::{Agent, Console};

const U1: &str = "4c4c4544-0042-3510-8051-b4c04f3332b1";
const U2: &str = "4c4c4544-0042-3510-8051-b4c04f3332b2";

#[test]
fn an_operator_removes_and_moves_servers_in_the_browser() {
    let console = Console::start(&["--heartbeat-interval", "1s"]);
    let password = console.create_user("ops");
    console.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    console.cli_ok(&["group", "create", "nightly", "--network", "vpc"]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    for uuid in [U1, U2] {
        console.cli_ok(&["server", "add", "--group", "batch", "--name", uuid]);
    }
    let mut agent = Agent::with_uuid(U1);
    agent.enroll_ok(&console.url, "ops", &password, true);
    agent.allow_tasks();
    agent.run();
    console.wait_status(U1, "available", Duration::from_secs(20));
    let task = console.submit_script("batch", "sleep 60\n");
    console.wait_task(task, &["running"], Duration::from_secs(15));

    let b = Browser::start();
    b.goto(&format!("{}/ui/login", console.url));
    b.fill("#token", &console.token());
    b.click("#login-token button[type=submit]");
    b.wait_text("#signed-in-as", "admin", TIMEOUT);

    // From the group's table to the server's page.
    b.goto(&format!("{}/ui/groups/default/batch", console.url));
    b.click(&format!("#server-{U1} .server-link"));
    b.wait_text("h1", U1, TIMEOUT);
    // Only groups of its network type are offered.
    assert!(b.exists("#move-server select option[value=nightly]"));
    assert!(!b.exists("#move-server select option[value=etl]"));

    // Refused while it runs a task: the way out is on the page.
    b.click("#remove-server button[type=submit]");
    let refused = b.wait_text("#form-error", "holds 1 task", TIMEOUT);
    assert!(
        refused.contains("drain") && refused.contains("force"),
        "{refused}"
    );
    b.screenshot("server-remove-refused");

    // Drained: it stays until its task ends, and says so.
    b.click("#remove-server input[value=drain]");
    b.click("#remove-server button[type=submit]");
    b.wait_text("#remove-notice", "is draining", TIMEOUT);
    b.wait_text("#server-reason", "draining", TIMEOUT);
    b.screenshot("server-draining");

    // Forced: gone at once, its task cancelled.
    b.click("#remove-server input[value=force]");
    b.click("#remove-server button[type=submit]");
    b.wait_text(
        "#notice",
        &format!("Server {U1} was removed from batch"),
        TIMEOUT,
    );
    assert!(!b.exists(&format!("#server-{U1}")));
    assert_eq!(console.task(task)["state"], "cancelled");

    // Moved to nightly: it shows there.
    b.click(&format!("#server-{U2} .server-link"));
    b.wait_text("h1", U2, TIMEOUT);
    b.select("#group", "nightly");
    b.click("#move-server button[type=submit]");
    b.wait_for(&format!("#server-{U2}"), TIMEOUT);
    assert!(b.current_url().ends_with("/ui/groups/default/nightly"));
    assert_eq!(console.server(U2)["group"], "nightly");
    b.screenshot("server-moved");

    // Another project's user reaches neither the page nor the server, and is not told it
    // exists.
    console.cli_ok(&["project", "create", "finance"]);
    let fin = String::from_utf8(
        console
            .cli(&["user", "create", "fin", "--project", "finance", "--json"])
            .stdout,
    )
    .unwrap();
    let fin: serde_json::Value = serde_json::from_str(&fin).unwrap();
    b.click(".signout button");
    b.wait_for("#login-user", TIMEOUT);
    b.fill("#user_name", "fin");
    b.fill("#password", fin["password"].as_str().unwrap());
    b.click("#login-user button[type=submit]");
    b.wait_text("#signed-in-as", "fin", TIMEOUT);
    b.goto(&format!(
        "{}/ui/groups/default/nightly/servers/{U2}",
        console.url
    ));
    let said = b.wait_text("#page-error", "no project \"default\"", TIMEOUT);
    assert!(!said.contains(U2), "{said}");
    assert_eq!(console.server(U2)["group"], "nightly");
    agent.kill();
}
