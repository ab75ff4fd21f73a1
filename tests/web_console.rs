//! The web console in a real headless Chromium: an operator signs in, creates a resource group,
//! adds a server, gets its install command, runs it on the server (a sandbox root), watches the
//! server turn available without reloading, and runs a task whose log streams into the page.
//! Every form is sent bad input, and the error must show beside the field. Screenshots of each
//! page land in target/screenshots/ (or $TASKNODE_SCREENSHOTS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tasknode_tests::browser::{Browser, TIMEOUT};
use tasknode_tests::sandbox::{Os, Sandbox, require_root};
use tasknode_tests::{Console, static_agent};

const UUID: &str = "4c4c4544-0042-3510-8051-b4c04f3332a1";

/// A console serving the static agent (so install commands can install it), heartbeats every
/// second.
fn console() -> (Console, tempfile::TempDir) {
    let agents = tasknode_tests::agent_dir();
    let console = Console::start(&[
        "--heartbeat-interval",
        "1s",
        "--agent-dir",
        agents.path().to_str().unwrap(),
    ]);
    (console, agents)
}

fn sign_in_as_user(b: &Browser, console: &Console, user: &str, password: &str) {
    b.goto(&format!("{}/ui/groups", console.url));
    // Not signed in: the console sends the browser to its sign-in page, and back afterwards.
    b.wait_for("#login-user", TIMEOUT);
    assert!(
        b.current_url().contains("/ui/login?next=/ui/groups"),
        "{}",
        b.current_url()
    );
    b.fill("#user_name", user);
    b.fill("#password", password);
    b.click("#login-user button[type=submit]");
    b.wait_text("#signed-in-as", user, TIMEOUT);
}

/// Signs out, and waits until the sign-in page is there.
fn sign_out(b: &Browser) {
    b.click(".signout button");
    b.wait_for("#login-user", TIMEOUT);
}

fn sign_in_as_admin(b: &Browser, console: &Console) {
    b.goto(&format!("{}/ui/login", console.url));
    b.fill("#token", &console.token());
    b.click("#login-token button[type=submit]");
    b.wait_text("#signed-in-as", "admin", TIMEOUT);
}

/// The install command as the page shows it, run as an operator pastes it into a root shell on
/// the server: the sandbox, which has curl and the group's UUID.
fn run_install_command(sb: &Sandbox, command: &str) -> std::process::Output {
    sb.add_program("curl");
    let head = command
        .strip_suffix(" | sh")
        .unwrap_or_else(|| panic!("{command} does not end in | sh"));
    sb.sh("/bin/sh", &format!("{head} | /bin/sh"))
}

#[test]
fn an_operator_adds_a_server_and_runs_a_task_in_the_browser() {
    if !require_root() {
        return;
    }
    let (console, _agents) = console();
    let password = console.create_user("etl");
    let b = Browser::start();

    sign_in_as_user(&b, &console, "etl", &password);
    b.screenshot("login-done-groups-empty");
    assert!(
        b.exists("#no-groups"),
        "a new project shows its empty state"
    );

    // The session cookie is out of scripts' reach and never sent by other sites.
    let cookies = b.cookies();
    let session = cookies
        .iter()
        .find(|c| c.name == "tasknode_session")
        .expect("a session cookie");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    assert_eq!(
        b.eval("return document.cookie.includes('tasknode_session')"),
        serde_json::json!(false)
    );

    // A VPC group: servers by DMI UUID, so the install command carries enable_uuid=true.
    b.fill("#name", "etl-vpc");
    b.click("#network-vpc");
    b.click("#create-group button[type=submit]");
    b.wait_for("#no-servers", TIMEOUT);
    assert!(b.current_url().ends_with("/ui/groups/default/etl-vpc"));
    b.screenshot("group-empty");

    // Add the server: the UUID is checked as it is typed, and the calculator fills in the max
    // concurrency from cores and memory.
    b.click("#add-server");
    b.wait_for("#add-server-form", TIMEOUT);
    b.fill("#name", "not-a-uuid");
    b.wait_text("#name-check", "is not a UUID", TIMEOUT);
    b.fill("#name", UUID);
    b.wait_text("#name-check", "can be added", TIMEOUT);
    b.fill("#cores", "4");
    b.fill("#memory_gib", "32");
    b.wait_text("#calc-result", "8 tasks at once", TIMEOUT);
    b.wait_text("#calc-result", "CPU is the limit", TIMEOUT);
    b.click("#use-calculated");
    assert_eq!(b.value("#max_concurrency"), "8");
    b.screenshot("add-server");
    b.click("#add-server-form button[type=submit]");
    let row = format!("#server-{UUID}");
    b.wait_text(&row, "pending", TIMEOUT);
    b.wait_text(&row, "8 (configured)", TIMEOUT);

    // The install command: one-time, with a copy button, enable_uuid following the group.
    b.click("#install-command");
    b.wait_for("#install-form", TIMEOUT);
    b.click("#install-form button[type=submit]");
    b.wait_for("#command", TIMEOUT);
    let command = b.text("#command");
    assert!(command.contains("/install/"), "{command}");
    assert!(b.text("#created").contains("enable_uuid=true"));
    assert!(!b.text("#expires").is_empty());
    b.click("#copy-command");
    b.wait_text("#copy-command", "Copied", Duration::from_secs(5));
    b.screenshot("install-command");

    // The operator runs it on the server. The group page, left open, turns the server
    // available by itself: the marker set on this page load survives, so nothing reloaded.
    b.goto(&format!("{}/ui/groups/default/etl-vpc", console.url));
    b.wait_text(&row, "pending", TIMEOUT);
    b.eval("window.__sameLoad = 42; return null");
    let sb = Sandbox::new(Os::CentOs7);
    sb.set_uuid(UUID);
    let out = run_install_command(&sb, &command);
    assert!(
        out.status.success(),
        "install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    b.wait_text(
        &format!("{row} .badge"),
        "available",
        Duration::from_secs(30),
    );
    assert_eq!(
        b.eval("return window.__sameLoad"),
        serde_json::json!(42),
        "the page reloaded instead of refreshing its table"
    );
    // The first heartbeat has no clock offset yet (the agent measures it from the answer): the
    // table shows it once a later heartbeat carries it.
    let offset_cell = format!("{row} td:nth-of-type(4)");
    b.wait_text(&offset_cell, " s", Duration::from_secs(30));
    let row_text = b.text(&row);
    assert!(row_text.contains("ago"), "last heartbeat shown: {row_text}");
    assert!(row_text.contains("0.1.0"), "version shown: {row_text}");
    b.screenshot("group-available");

    // A task, submitted from the page, with its log streaming in. Markup in the log stays text.
    b.goto(&format!("{}/ui/tasks", console.url));
    b.select("#group", "default/etl-vpc");
    b.fill(
        "#script",
        "echo hello-from-the-web-console\necho '<img id=injected src=x>'\nsleep 1\necho done",
    );
    b.click("#submit-task button[type=submit]");
    b.wait_text(
        "#log",
        "hello-from-the-web-console",
        Duration::from_secs(30),
    );
    b.wait_text("#task-state", "succeeded", Duration::from_secs(30));
    let log = b.text("#log");
    assert!(log.contains("<img id=injected src=x>"), "{log}");
    assert!(log.ends_with("done") || log.ends_with("done\n"), "{log}");
    assert!(!b.exists("#injected"), "log text became markup");
    b.wait_text("#log-state", "succeeded; its whole log", TIMEOUT);
    // The page reads the task's result in once it ends.
    b.wait_text("#exit-code", "0", TIMEOUT);
    b.screenshot("task-log");

    // The form carries a key of its own. Sent twice (a double click, a browser sending it again
    // after a lost answer), it makes one task; sent again edited (a page the browser kept), a
    // new one.
    b.goto(&format!("{}/ui/tasks?group=default/etl-vpc", console.url));
    b.fill("#script", "echo sent-twice");
    let post = "const f = document.querySelector('#submit-task'); \
        const x = new XMLHttpRequest(); x.open('POST', f.action, false); \
        x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded'); \
        x.send(new URLSearchParams(new FormData(f)).toString()); return x.responseURL;";
    let first = b.eval(post);
    assert!(
        first.as_str().is_some_and(|u| u.contains("/ui/tasks/")),
        "the submit did not lead to its task: {first}"
    );
    assert_eq!(
        b.eval(post),
        first,
        "the same form sent twice made two tasks"
    );
    b.fill("#script", "echo edited");
    let edited = b.eval(post);
    assert!(
        edited.as_str().is_some_and(|u| u.contains("/ui/tasks/")) && edited != first,
        "an edited form sent again was not a new task: {edited} after {first}"
    );
    // A key the form did not make is refused, and the form comes back with a good one.
    b.eval(
        "document.querySelector('#submit-task input[name=key]').value = 'not a key!'; return null",
    );
    b.click("#submit-task button[type=submit]");
    b.wait_text(
        "#form-error",
        "hidden key must be 1 to 128 characters",
        TIMEOUT,
    );
    let key = b
        .attr("#submit-task input[name=key]", "value")
        .unwrap_or_default();
    assert!(key.starts_with("web-") && key.len() == 36, "{key}");

    // A long task, cancelled from its page while its log streams.
    b.goto(&format!("{}/ui/tasks?group=default/etl-vpc", console.url));
    b.fill(
        "#script",
        "echo started-and-waiting\nsleep 60\necho never-printed",
    );
    b.click("#submit-task button[type=submit]");
    b.wait_text("#log", "started-and-waiting", Duration::from_secs(30));
    b.click("#cancel-form button[type=submit]");
    b.wait_text("#task-state", "cancelled", Duration::from_secs(30));
    assert!(!b.text("#log").contains("never-printed"));

    b.click("a[href='/ui/tasks']");
    b.wait_for("#tasks", TIMEOUT);
    assert!(b.text("#tasks").contains("succeeded"));
    b.screenshot("tasks");

    b.click("a[href='/ui/releases']");
    b.wait_for("#no-releases", TIMEOUT);
    b.screenshot("releases");

    // Signing out ends the session: the old cookie no longer opens a page.
    b.click(".signout button");
    b.wait_for("#login-user", TIMEOUT);
    b.goto(&format!("{}/ui/groups/default/etl-vpc", console.url));
    b.wait_for("#login-user", TIMEOUT);
}

#[test]
fn every_form_shows_bad_input_beside_the_field() {
    let (console, _agents) = console();
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "taken", "--network", "classic"]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "taken",
        "--name",
        "web01.example.com",
    ]);
    let b = Browser::start();

    // Sign-in: each field's error beside it, and the page usable from the keyboard.
    b.goto(&format!("{}/ui/login", console.url));
    assert_eq!(b.focused_id().as_deref(), Some("user_name"));
    b.tab();
    assert_eq!(b.focused_id().as_deref(), Some("password"));
    b.click("#login-user button[type=submit]");
    b.wait_text("#user_name-error", "must not be empty", TIMEOUT);
    b.wait_text("#password-error", "must not be empty", TIMEOUT);
    assert_eq!(
        b.attr("#user_name", "aria-invalid").as_deref(),
        Some("true")
    );
    b.fill("#user_name", "etl");
    b.fill("#password", "wrong-password");
    b.click("#login-user button[type=submit]");
    b.wait_text("#password-error", "wrong user name or password", TIMEOUT);
    assert_eq!(b.value("#user_name"), "etl", "the user name is kept");
    b.fill("#token", "not-the-token");
    b.click("#login-token button[type=submit]");
    b.wait_text("#token-error", "wrong admin token", TIMEOUT);
    b.screenshot("login-errors");

    sign_in_as_admin(&b, &console);

    // Resource groups.
    b.goto(&format!("{}/ui/groups", console.url));
    b.fill("#name", "bad name!");
    b.click("#create-group button[type=submit]");
    b.wait_text("#name-error", "is not a valid name", TIMEOUT);
    assert_eq!(b.value("#name"), "bad name!", "the typed value is kept");
    b.fill("#name", "taken");
    b.click("#create-group button[type=submit]");
    b.wait_text("#name-error", "already exists", TIMEOUT);
    b.screenshot("groups-errors");

    // A group: rename and delete.
    b.goto(&format!("{}/ui/groups/default/taken", console.url));
    b.fill("#new_name", "");
    b.click("#rename-group button[type=submit]");
    b.wait_text("#new_name-error", "must not be empty", TIMEOUT);
    console.cli_ok(&["group", "create", "other", "--network", "vpc"]);
    b.fill("#new_name", "other");
    b.click("#rename-group button[type=submit]");
    b.wait_text("#new_name-error", "already exists", TIMEOUT);
    b.screenshot("group-errors");
    b.click("#delete-group");
    b.click("#delete-form button[type=submit]");
    b.wait_text("#form-error", "1 server", TIMEOUT);
    b.screenshot("group-delete-refused");

    // Adding a server: a name checked as typed, a server of another group, a bad max.
    b.goto(&format!(
        "{}/ui/groups/default/other/add-server",
        console.url
    ));
    b.fill("#name", "web01.example.com");
    b.wait_text("#name-check", "is not a UUID", TIMEOUT);
    b.goto(&format!("{}/ui/groups/default/taken", console.url));
    b.fill("#new_name", "taken2");
    b.click("#rename-group button[type=submit]");
    b.wait_text("h1", "taken2", TIMEOUT);
    assert!(b.current_url().ends_with("/ui/groups/default/taken2"));
    console.cli_ok(&["group", "create", "classic2", "--network", "classic"]);
    b.goto(&format!(
        "{}/ui/groups/default/classic2/add-server",
        console.url
    ));
    b.fill("#name", "web01.example.com");
    b.wait_text(
        "#name-check",
        "already in resource group \"taken2\"",
        TIMEOUT,
    );
    b.fill("#max_concurrency", "0");
    b.click("#add-server-form button[type=submit]");
    b.wait_text("#max_concurrency-error", "from 1 to 256", TIMEOUT);
    b.fill("#max_concurrency", "");
    b.click("#add-server-form button[type=submit]");
    b.wait_text(
        "#name-error",
        "already in resource group \"taken2\"",
        TIMEOUT,
    );
    b.fill("#name", "bad_host!");
    b.click("#add-server-form button[type=submit]");
    b.wait_text("#name-error", "classic group", TIMEOUT);
    b.goto(&format!("{}/ui/groups/default/other/delete", console.url));
    b.click("#delete-form button[type=submit]");
    b.wait_text("#notice", "other was deleted", TIMEOUT);
    assert!(!b.text("#groups").contains("other"));
    b.goto(&format!(
        "{}/ui/groups/default/classic2/add-server",
        console.url
    ));
    b.fill("#cores", "-1");
    b.wait_text("#calc-result", "not a number above 0", TIMEOUT);
    assert_eq!(
        b.attr("#use-calculated", "disabled").as_deref(),
        Some("true")
    );
    b.screenshot("add-server-errors");

    // The install command: a user that is not in the project.
    b.goto(&format!(
        "{}/ui/groups/default/classic2/install",
        console.url
    ));
    b.eval("document.querySelector('#user_name').innerHTML = '<option value=\"ghost\">ghost</option>'; return null");
    b.click("#install-form button[type=submit]");
    b.wait_text("#user_name-error", "ghost", TIMEOUT);
    b.screenshot("install-errors");

    // Tasks.
    b.goto(&format!("{}/ui/tasks", console.url));
    b.fill("#timeout", "soon");
    b.click("#submit-task button[type=submit]");
    b.wait_text("#group-error", "choose the resource group", TIMEOUT);
    b.wait_text("#timeout-error", "not a duration", TIMEOUT);
    b.select("#group", "default/classic2");
    b.fill("#timeout", "10m");
    b.fill("#script", "   ");
    b.click("#submit-task button[type=submit]");
    b.wait_text("#script-error", "is empty", TIMEOUT);
    b.fill("#script", "echo hi");
    b.click("#submit-task button[type=submit]");
    b.wait_text("#group-error", "has no servers", TIMEOUT);
    b.screenshot("tasks-errors");

    // A user does not see other projects' groups, and is refused admin work.
    console.cli_ok(&["project", "create", "finance"]);
    console.cli_ok(&[
        "group",
        "create",
        "ledger",
        "--project",
        "finance",
        "--network",
        "classic",
    ]);
    sign_out(&b);
    sign_in_as_user(&b, &console, "etl", &password);
    assert!(!b.text("#groups").contains("ledger"));
    b.goto(&format!("{}/ui/groups/finance/ledger", console.url));
    b.wait_text("#page-error", "no project \"finance\"", TIMEOUT);
}

#[test]
fn releases_and_rollouts_in_the_browser() {
    // A real signed release of the static agent, served and published by the console.
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_str().unwrap().to_owned();
    tasknode_tests::dist_json(&["keygen", "--out", &p("keys")]);
    let agent = dir.path().join("tasknode-0.1.0");
    tasknode_tests::install_binary(&static_agent(), &agent);
    tasknode_tests::build_release(
        &dir.path().join("dist"),
        &dir.path().join("keys"),
        "0.1.0",
        &agent,
        "none",
    );
    let mut console = Console::start(&["--dist", &p("dist")]);
    console.cli_ok(&[
        "release",
        "publish",
        &p("dist/releases/0.1.0/manifest.stable.json"),
    ]);
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "etl",
        "--name",
        "web01.example.com",
    ]);
    let password = console.create_user("etl");

    let b = Browser::start();
    sign_in_as_admin(&b, &console);
    // The browser stays signed in across a restart of the console (same port, same cookie).
    console.stop();
    console.restart();
    b.goto(&format!("{}/ui/releases", console.url));
    assert!(
        !b.current_url().contains("/ui/login"),
        "signed out by a restart: {}",
        b.current_url()
    );
    b.wait_text("#signed-in-as", "admin", TIMEOUT);
    b.wait_text("#releases", "0.1.0", TIMEOUT);
    assert!(b.exists("#no-rollouts"));
    b.select("#group", "default/etl");
    b.fill("#batch", "0%");
    b.fill("#max_failures", "many");
    b.click("#rollout-form button[type=submit]");
    b.wait_text("#batch-error", "0%", TIMEOUT);
    b.wait_text("#max_failures-error", "not a whole number", TIMEOUT);
    b.screenshot("releases-errors");
    b.fill("#batch", "50%");
    b.fill("#max_failures", "1");
    b.click("#rollout-form button[type=submit]");
    b.wait_text("#rollouts", "0.1.0", TIMEOUT);
    assert!(
        b.text("#rollouts").contains("50%"),
        "{}",
        b.text("#rollouts")
    );
    b.screenshot("releases-rollout");
    // The group's servers show where they stand in it.
    b.goto(&format!("{}/ui/groups/default/etl", console.url));
    b.wait_text("#server-web01\\.example\\.com", "update", TIMEOUT);

    // With a release directory, the install page offers the signed yum repository too.
    b.goto(&format!("{}/ui/groups/default/etl/install", console.url));
    b.wait_text("#yum", "yum install tasknode", TIMEOUT);
    assert!(b.text("#yum").contains("--enable-uuid false"));
    // The same command `tasknode-console yum-command` prints (tests/yum.rs runs it).
    assert!(
        b.text("#yum").contains(&format!(
            "curl -fsS -o /etc/yum.repos.d/tasknode.repo {}/yum/el7/tasknode.repo",
            console.url
        )),
        "{}",
        b.text("#yum")
    );
    // It enrolls the config the package installed, not the script install's default.
    assert!(
        b.text("#yum")
            .contains("tasknode enroll --config /etc/tasknode/tasknode.conf --console"),
        "{}",
        b.text("#yum")
    );
    b.screenshot("install-yum");

    // A user sees releases and rollouts, and gets no rollout form.
    sign_out(&b);
    sign_in_as_user(&b, &console, "etl", &password);
    b.goto(&format!("{}/ui/releases", console.url));
    b.wait_text("#rollouts", "0.1.0", TIMEOUT);
    assert!(!b.exists("#rollout-form"));
}

/// The forgeries a browser could be tricked into, sent by hand: each is refused and changes
/// nothing.
#[test]
fn sessions_cookies_and_csrf_hold_without_a_browser() {
    let console = Console::start(&[]);
    console.create_user("etl");
    console.cli_ok(&["project", "create", "finance"]);
    console.cli_ok(&[
        "group",
        "create",
        "ledger",
        "--project",
        "finance",
        "--network",
        "classic",
    ]);
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{}{path}", console.url);

    // Not signed in: pages send the browser to sign in; the console's script gets 401.
    let res = http.get(url("/ui/groups")).send().unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/ui/login?next=/ui/groups");
    let res = http
        .get(url("/ui/groups/default/x/servers"))
        .header("X-Tasknode-Script", "1")
        .send()
        .unwrap();
    assert_eq!(res.status(), 401);

    // The sign-in page sets its CSRF cookie; signing in without it is refused.
    let page = http.get(url("/ui/login")).send().unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let login_cookie = set_cookie(&page, "tasknode_login");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    let login_token = cookie_value(&login_cookie);
    let res = http
        .post(url("/ui/login/token"))
        .form(&[("csrf", login_token.as_str()), ("token", &console.token())])
        .send()
        .unwrap();
    assert_eq!(res.status(), 403, "a sign-in without its cookie");
    let res = http
        .post(url("/ui/login/token"))
        .header("Cookie", format!("tasknode_login={login_token}"))
        .form(&[("csrf", login_token.as_str()), ("token", &console.token())])
        .send()
        .unwrap();
    assert_eq!(res.status(), 303);
    let session_cookie = set_cookie(&res, "tasknode_session");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"));
    let session = format!("tasknode_session={}", cookie_value(&session_cookie));

    // A signed-in page carries the session's CSRF token; a post without it, with another, or
    // from another origin is refused and creates nothing.
    let page = http
        .get(url("/ui/groups"))
        .header("Cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let create = |csrf: &str, origin: Option<&str>| {
        let mut req = http
            .post(url("/ui/groups"))
            .header("Cookie", &session)
            .form(&[
                ("csrf", csrf),
                ("name", "forged"),
                ("network", "classic"),
                ("project", "default"),
            ]);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(create("", None), 403);
    assert_eq!(create("not-the-token", None), 403);
    assert_eq!(create(&csrf, Some("http://evil.example")), 403);
    assert!(!console.cli_ok(&["group", "list"]).contains("forged"));
    let own_origin = console.url.clone();
    assert_eq!(create(&csrf, Some(&own_origin)), 303);
    assert!(console.cli_ok(&["group", "list"]).contains("forged"));

    // Signing out ends the session for good.
    let res = http
        .post(url("/ui/logout"))
        .header("Cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(res.status(), 303);
    let res = http
        .get(url("/ui/groups"))
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(res.status(), 303, "the old session still opens pages");
}

fn set_cookie(res: &reqwest::blocking::Response, name: &str) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_owned()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap()
}
