//! The control plane as an operator deploys it: three real consoles on one throwaway
//! PostgreSQL behind a real HAProxy running the recommended config (docs/haproxy.cfg), and
//! everything going through the balancer: agents, install commands, the CLI, a browser's
//! session. With tasks running, queued and being submitted, a rollout in its batches, an
//! install under way and a user signed in, the console holding the engine lease is killed with
//! SIGKILL. Then: every task ran exactly once and ended, every submit was answered with the
//! task it made (`task submit` sends one whose answer the kill cut off again, under its
//! idempotency key, and gets the task it made if it was committed), no server was ever stopped, the
//! rollout finished on another console, the session still works on every console left, and
//! the install completed with its server available. Through the balancer the consoles see a
//! client's own address (`--trusted-proxy`, `X-Forwarded-For`). Needs root (the install's
//! chroot, and tasks run as `nobody`); CI runs it as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tasknode_tests::haproxy::LoadBalancer;
use tasknode_tests::postgres::SharedDatabase;
use tasknode_tests::sandbox::{Os, Sandbox, require_root};
use tasknode_tests::web::WebClient;
use tasknode_tests::{
    Agent, Console, SHARED_LIVENESS, admin_cli, admin_cli_ok, agent_dir, build_release, dist_json,
    free_port, install_binary, static_agent, stderr, update_agent, wait_for,
};

/// Servers that run tasks (VPC, three tasks at a time each).
const WORKERS: [&str; 3] = [
    "4c4c4544-0000-4000-8000-00000000a101",
    "4c4c4544-0000-4000-8000-00000000a102",
    "4c4c4544-0000-4000-8000-00000000a103",
];
/// Servers a rollout moves from 0.1.0 to 0.2.0, one at a time.
const FLEET: [&str; 3] = [
    "4c4c4544-0000-4000-8000-00000000b101",
    "4c4c4544-0000-4000-8000-00000000b102",
    "4c4c4544-0000-4000-8000-00000000b103",
];
/// The server the install command installs, in a chroot.
const INSTALLED: &str = "4c4c4544-0000-4000-8000-00000000c101";

/// Tasks queued at once just before the kill.
const QUEUED: usize = 24;

/// The admin's view of the control plane through the balancer, over HTTP with the admin token
/// and with the CLI (`TASKNODE_CONSOLE` set to the balancer).
struct Operator {
    http: reqwest::blocking::Client,
    lb: String,
    token: String,
    /// A data directory holding the admin token, for the CLI.
    data: PathBuf,
}

impl Operator {
    fn new(lb: &LoadBalancer, console: &Console) -> Operator {
        Operator {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            lb: lb.url.clone(),
            token: console.token(),
            data: console.data(),
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        admin_cli_ok(&self.lb, &self.data, args)
    }

    /// `GET /api/v1{path}`, or why it failed (no answer, or a status other than 200).
    fn get(&self, path: &str) -> Result<Value, String> {
        let res = self
            .http
            .get(format!("{}/api/v1{path}", self.lb))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| format!("no answer: {e} ({:?})", std::error::Error::source(&e)))?;
        let status = res.status().as_u16();
        if status != 200 {
            return Err(format!("HTTP {status}: {}", res.text().unwrap_or_default()));
        }
        res.json().map_err(|e| format!("not JSON: {e}"))
    }

    /// Submits `script` to group `work` with `task submit --idempotency-key TOKEN`, which sends
    /// it again (same key) while no console answers: the task's id, or why the submit failed,
    /// and whether the command had to send it again.
    fn submit(&self, token: &str, script: &str) -> (Result<i64, String>, bool) {
        let file = self.data.join(format!("submit-{token}.sh"));
        std::fs::write(&file, script).unwrap();
        let args = ["task", "submit", "--group", "work", "--json", "--script"];
        let file = file.to_str().unwrap();
        let out = admin_cli(
            &self.lb,
            &self.data,
            &[&args[..], &[file, "--idempotency-key", token]].concat(),
        );
        let said = stderr(&out);
        let again = said.contains("sending the submit again");
        if !out.status.success() {
            return (Err(format!("{}: {said}", out.status)), again);
        }
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        (Ok(view["id"].as_i64().unwrap()), again)
    }

    fn tasks(&self) -> Vec<Value> {
        let all: Vec<Value> =
            serde_json::from_str(&self.cli(&["task", "list", "--limit", "10000", "--json"]))
                .unwrap();
        all.into_iter().filter(|t| t["group"] == "work").collect()
    }

    fn rollout(&self, group: &str) -> Value {
        let list: Value = serde_json::from_str(&self.cli(&["release", "list", "--json"])).unwrap();
        list["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == group)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn status_of(&self, name: &str) -> Option<String> {
        let servers = self.get("/servers").ok()?;
        servers
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["status"].as_str())
            .map(str::to_owned)
    }
}

/// The script of a task that records `TASK_ID TOKEN` in `markers` and runs a while.
fn recording(markers: &Path, token: &str) -> String {
    format!(
        "echo \"$TASKNODE_TASK_ID {token}\" >> {}\nsleep 2\n",
        markers.display()
    )
}

/// The lines tasks appended to `markers`: (task id, token).
fn marks(markers: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(markers)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (id, token) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), token.to_owned())
        })
        .collect()
}

/// Releases 0.1.0 (what the fleet runs) and 0.2.0 in `dir/dist`, signed with fresh keys in
/// `dir/keys`; returns the manifest key agents trust.
fn releases(dir: &Path) -> String {
    let p = |s: &str| dir.join(s);
    let keys = dist_json(&["keygen", "--out", p("keys").to_str().unwrap()]);
    install_binary(&static_agent(), &p("tasknode-0.1.0"));
    build_release(
        &p("dist"),
        &p("keys"),
        "0.1.0",
        &p("tasknode-0.1.0"),
        "none",
    );
    build_release(&p("dist"), &p("keys"), "0.2.0", &update_agent(), "none");
    keys["manifest_public_key"].as_str().unwrap().to_owned()
}

/// Makes `curl` in the sandbox stop before it downloads the agent binary until the test lets
/// it go: the install is then under way (its script fetched through the balancer, the host
/// checked, the user created) when the console is killed, and everything after (download,
/// enrollment, waiting for available) happens after the kill. Returns the file that says the
/// install reached that point and the one that lets it go on.
fn hold_before_download(sb: &Sandbox) -> (PathBuf, PathBuf) {
    sb.add_program("curl");
    std::fs::rename(sb.path("/usr/bin/curl"), sb.path("/usr/bin/curl.real")).unwrap();
    std::fs::write(
        sb.path("/usr/bin/curl"),
        "#!/bin/sh\n\
         case \"$*\" in\n\
         */dist/agent/*)\n\
         \x20   : > /tmp/held\n\
         \x20   while [ ! -e /tmp/go ]; do sleep 1; done ;;\n\
         esac\n\
         exec /usr/bin/curl.real \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        sb.path("/usr/bin/curl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    (sb.path("/tmp/held"), sb.path("/tmp/go"))
}

/// Runs its closure when dropped, on success and on panic alike.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// What a thread submitting tasks through the balancer saw: per token, the id or the error.
type Submits = Vec<(String, Result<i64, String>, Instant)>;

#[test]
fn a_console_killed_behind_the_load_balancer_loses_nothing() {
    if !require_root() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let key_hex = releases(scratch.path());
    let dist = scratch.path().join("dist");
    let agents_dir = agent_dir();

    // Three consoles on one database, each telling agents and install commands the
    // balancer's URL.
    let db = SharedDatabase::new();
    let lb_port = free_port();
    let lb_url = format!("http://127.0.0.1:{lb_port}");
    let args = [
        "--public-url",
        &lb_url,
        "--agent-url",
        &lb_url,
        "--trusted-proxy",
        "127.0.0.1",
        "--agent-dir",
        agents_dir.path().to_str().unwrap(),
        "--dist",
        dist.to_str().unwrap(),
    ];
    let args = [&args[..], &SHARED_LIVENESS].concat();
    let mut consoles = db.consoles(3, &args);
    let ports: Vec<u16> = consoles.iter().map(|c| c.port).collect();
    let lb = LoadBalancer::start(lb_port, &ports);
    assert_eq!(lb.url, lb_url);
    let op = Operator::new(&lb, &consoles[0]);

    let user: Value = serde_json::from_str(&op.cli(&["user", "create", "etl", "--json"])).unwrap();
    let password = user["password"].as_str().unwrap().to_owned();
    op.cli(&["group", "create", "work", "--network", "vpc"]);
    op.cli(&["group", "create", "fleet", "--network", "vpc"]);
    op.cli(&["group", "create", "fresh", "--network", "vpc"]);
    for uuid in WORKERS {
        op.cli(&[
            "server",
            "add",
            "--group",
            "work",
            "--name",
            uuid,
            "--max-concurrency",
            "3",
        ]);
    }
    for uuid in FLEET {
        op.cli(&["server", "add", "--group", "fleet", "--name", uuid]);
    }
    op.cli(&["server", "add", "--group", "fresh", "--name", INSTALLED]);

    // Agents enrolled through the balancer, which is all they know.
    let mut agents = Vec::new();
    for uuid in WORKERS {
        let mut agent = Agent::with_uuid(uuid);
        agent.enroll_ok(&lb.url, "etl", &password, true);
        agent.allow_tasks();
        agent.run();
        agents.push(agent);
    }
    for uuid in FLEET {
        let mut agent = Agent::with_uuid(uuid).with_own_binary(&static_agent());
        agent.enroll_ok(&lb.url, "etl", &password, true);
        agent.set_config(
            "update",
            "trusted_keys",
            toml::Value::Array(vec![key_hex.clone().into()]),
        );
        agent.set_config("update", "health_heartbeats", 2.into());
        agent.run();
        agents.push(agent);
    }
    assert_eq!(agents[0].config_value("console_url"), lb.url);
    // Every console says so (each learns of an agent another enrolled within a few seconds):
    // from here on, any other status of these servers is a flap.
    for c in &consoles {
        for uuid in WORKERS.iter().chain(&FLEET) {
            c.wait_status(uuid, "available", Duration::from_secs(60));
        }
    }

    // The consoles see a client's own address through the balancer (`--trusted-proxy`): a
    // wrong password from 127.0.0.2 is logged as from there, not from the balancer.
    let wrong = WebClient::new(&lb.url, "127.0.0.2".parse().unwrap())
        .sign_in_attempt("etl", "not the password")
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        consoles.iter().any(|c| c
            .log_text()
            .lines()
            .any(|l| l.contains("sign-in refused") && l.contains("peer=127.0.0.2"))),
        "no console logged the refused sign-in as from 127.0.0.2"
    );

    // A user signed in through the balancer.
    let session = WebClient::new(&lb.url, "127.0.0.1".parse().unwrap()).sign_in("etl", &password);
    let (status, page) = session.get("/ui/groups");
    assert_eq!(status, 200);
    assert!(page.contains("fleet"), "{page:.300}");

    // An install under way: its script fetched through the balancer, held before its download.
    let sb = Sandbox::new(Os::CentOs6);
    sb.set_uuid(INSTALLED);
    let (held, go) = hold_before_download(&sb);
    let cmd: Value = serde_json::from_str(&op.cli(&[
        "install-command",
        "--group",
        "fresh",
        "--user",
        "etl",
        "--json",
    ]))
    .unwrap();
    let printed = cmd["command"].as_str().unwrap().to_owned();
    assert!(printed.contains(&lb.url), "{printed}");

    let markers_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(markers_dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let markers = markers_dir.path().join("ran");

    let stop_submitting = AtomicBool::new(false);
    // Submits the CLI had to send again because no console answered.
    let sent_again = std::sync::Mutex::new(Vec::<String>::new());
    let stop_watching = AtomicBool::new(false);
    let killed_at: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let (installed, submits, seen, watch_errors, killed, admitted_at_kill) =
        std::thread::scope(|s| {
            // Whatever happens below, the threads end, so a failure is reported, not a hang.
            let _end = OnDrop(|| {
                stop_submitting.store(true, Ordering::SeqCst);
                stop_watching.store(true, Ordering::SeqCst);
                let _ = std::fs::write(&go, "");
            });
            let install = s.spawn(|| sb.sh("/bin/sh", &printed));
            // Every status of every server, as the API through the balancer shows them.
            let watcher = s.spawn(|| {
                let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                let mut errors = Vec::new();
                while !stop_watching.load(Ordering::SeqCst) {
                    match op.get("/servers") {
                        Ok(list) => {
                            for srv in list.as_array().unwrap() {
                                seen.entry(srv["name"].as_str().unwrap().to_owned())
                                    .or_default()
                                    .insert(srv["status"].as_str().unwrap().to_owned());
                            }
                        }
                        Err(e) => errors.push((Instant::now(), e)),
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                (seen, errors)
            });
            wait_for(
                Duration::from_secs(60),
                "the install to reach its download",
                || (held.exists() || install.is_finished()).then_some(()),
            );
            assert!(
                !install.is_finished(),
                "the install ended before its download"
            );

            // A rollout in its first batch.
            op.cli(&[
                "release",
                "publish",
                dist.join("releases/0.2.0/manifest.stable.json")
                    .to_str()
                    .unwrap(),
            ]);
            op.cli(&[
                "release",
                "rollout",
                "--group",
                "fleet",
                "--version",
                "0.2.0",
                "--batch",
                "1",
                "--max-failures",
                "0",
            ]);
            wait_for(Duration::from_secs(60), "the rollout's first batch", || {
                (op.rollout("fleet")["admitted"].as_u64() >= Some(1)).then_some(())
            });

            // Tasks queued and running, and more being submitted.
            let queued: Submits = (0..QUEUED)
                .map(|i| {
                    let token = format!("q{i}");
                    let (r, _) = op.submit(&token, &recording(&markers, &token));
                    assert!(r.is_ok(), "{r:?}");
                    (token, r, Instant::now())
                })
                .collect();
            let submitter = s.spawn(|| {
                let mut out: Submits = Vec::new();
                let mut n = 0;
                // Until 5 s after the kill.
                while !stop_submitting.load(Ordering::SeqCst) {
                    let token = format!("s{n}");
                    n += 1;
                    let (r, again) = op.submit(&token, &recording(&markers, &token));
                    if again {
                        sent_again.lock().unwrap().push(token.clone());
                    }
                    out.push((token, r, Instant::now()));
                    std::thread::sleep(Duration::from_millis(100));
                }
                out
            });
            wait_for(Duration::from_secs(60), "tasks running", || {
                (marks(&markers).len() >= 3).then_some(())
            });
            let before = op.tasks();
            let count = |state: &str| before.iter().filter(|t| t["state"] == state).count();
            assert!(
                count("running") >= 1 && count("queued") >= 1,
                "nothing in flight: {before:#?}"
            );

            // Kill the console running the rollout engine.
            let pid = db
                .engine_holder_pid()
                .expect("a holder of the engine lease");
            let idx = consoles
                .iter()
                .position(|c| c.pid() == pid)
                .expect("the holder is one of the consoles");
            let admitted_at_kill = op.rollout("fleet")["admitted"].as_u64().unwrap();
            consoles[idx].kill();
            killed_at.set(Instant::now()).unwrap();
            std::fs::write(&go, "").unwrap();

            std::thread::sleep(Duration::from_secs(5));
            stop_submitting.store(true, Ordering::SeqCst);
            let mut submits = queued;
            submits.extend(submitter.join().unwrap());
            let installed = install.join().unwrap();

            // The rollout goes on where the engine moved, and every task ends.
            wait_for(Duration::from_secs(120), "the rollout to finish", || {
                let r = op.rollout("fleet");
                (r["state"] == "done" && r["updated"] == 3).then_some(())
            });
            wait_for(Duration::from_secs(120), "every task to end", || {
                op.tasks()
                    .iter()
                    .all(|t| {
                        !matches!(t["state"].as_str(), Some("queued" | "assigned" | "running"))
                    })
                    .then_some(())
            });
            stop_watching.store(true, Ordering::SeqCst);
            let (seen, errors) = watcher.join().unwrap();
            (installed, submits, seen, errors, idx, admitted_at_kill)
        });
    let killed_at = *killed_at.get().unwrap();
    let survivors: Vec<&Console> = consoles
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != killed)
        .map(|(_, c)| c)
        .collect();

    // The balancer took the dead console out by its health check.
    let lb_log = lb.log_text();
    // Requests that did not end normally (a termination state other than `----`), and servers
    // going down or up.
    let troubled: Vec<&str> = lb_log
        .lines()
        .filter(|l| {
            l.contains("is DOWN")
                || l.contains("is UP")
                || l.split(" - - ")
                    .nth(1)
                    .is_some_and(|t| !t.starts_with("----"))
        })
        .collect();
    eprintln!(
        "haproxy, requests cut off and servers going down:\n{}",
        troubled.join("\n")
    );
    assert!(
        lb_log.contains(&format!("consoles/console-{killed} is DOWN")),
        "{lb_log}"
    );

    // Tasks: every task in the group ran exactly once and succeeded.
    let tasks = op.tasks();
    let ran = marks(&markers);
    let mut runs_of: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (id, token) in &ran {
        runs_of.entry(*id).or_default().push(token.clone());
    }
    let task_ids: BTreeSet<i64> = tasks.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    for t in &tasks {
        let id = t["id"].as_i64().unwrap();
        assert_eq!(t["state"], "succeeded", "{t:#}");
        assert_eq!(t["exit_code"], 0, "{t:#}");
        assert_eq!(
            runs_of.get(&id).map(Vec::len),
            Some(1),
            "task {id} ran {:?} times",
            runs_of.get(&id)
        );
    }
    assert_eq!(
        runs_of.keys().copied().collect::<BTreeSet<_>>(),
        task_ids,
        "runs of tasks that are not in the group"
    );
    // Every submit was answered, the one cut off by the kill too (the CLI sent it again under
    // its key), and each made exactly one task: the one it answered.
    let mut failed = Vec::new();
    for (token, answer, at) in &submits {
        let runs: Vec<i64> = ran
            .iter()
            .filter(|(_, t)| t == token)
            .map(|(id, _)| *id)
            .collect();
        match answer {
            Ok(id) => assert_eq!(runs, vec![*id], "submit {token} answered task {id}"),
            Err(e) => failed.push(format!(
                "{token} at kill{:+.1}s: {e}",
                signed(*at, killed_at)
            )),
        }
    }
    let sent_again = sent_again.into_inner().unwrap();
    eprintln!(
        "{} tasks ({} queued at once, {} submitted one by one across the kill); sent again by the CLI: {sent_again:?}",
        tasks.len(),
        QUEUED,
        submits.len() - QUEUED,
    );
    assert!(failed.is_empty(), "{failed:#?}\nhaproxy:\n{lb_log}");
    assert_eq!(tasks.len(), submits.len());

    // No server was ever stopped, nor taken for one that never heartbeated; reads through the
    // balancer never failed (a GET cut off by the kill is sent to another console).
    for (name, statuses) in &seen {
        assert!(
            !statuses.contains("stopped"),
            "{name} was seen {statuses:?}"
        );
        if name != INSTALLED {
            assert!(
                !statuses.contains("pending"),
                "{name} was seen {statuses:?}"
            );
        }
    }
    eprintln!("statuses seen: {seen:?}");
    assert!(
        watch_errors.is_empty(),
        "{watch_errors:#?}\nhaproxy:\n{lb_log}"
    );

    // The rollout was in its batches when its console died, and finished on another.
    assert!(
        admitted_at_kill < 3,
        "admitted {admitted_at_kill} before the kill"
    );
    assert!(
        survivors
            .iter()
            .any(|c| c.log_text().contains("took the engine lease")),
        "no console took the engine over"
    );
    for agent in &mut agents {
        assert!(agent.is_running());
    }

    // The install completed after the kill, and its server is available.
    assert!(
        installed.status.success(),
        "install failed:\n{}{}",
        String::from_utf8_lossy(&installed.stdout),
        stderr(&installed)
    );
    assert_eq!(op.status_of(INSTALLED).as_deref(), Some("available"));

    // The session signed in before the kill still works, through the balancer and on each
    // console left.
    for _ in 0..6 {
        let (status, page) = session.get("/ui/groups");
        assert_eq!(status, 200, "{page:.300}");
        assert!(page.contains("fleet"), "{page:.300}");
    }
    for c in &survivors {
        let res = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/ui/groups", c.url))
            .header("Cookie", session.cookie())
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "on {}", c.url);
    }
}

/// `at` relative to `zero`, negative when before.
fn signed(at: Instant, zero: Instant) -> f64 {
    if at >= zero {
        (at - zero).as_secs_f64()
    } else {
        -(zero - at).as_secs_f64()
    }
}
