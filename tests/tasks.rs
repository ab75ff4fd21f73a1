//! Tasks end to end with a real console and real agents on loopback: dispatch within each
//! server's max concurrency, exactly once, through a console killed mid-run; cancel, timeout and
//! runaway scripts leave no process behind; a lost agent's task is reported, not run again; a
//! renamed group's agent gets its tasks at once, and only an empty group is deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tasknode_tests::{
    Agent, Console, bin, enrolled_classic, hostname, root_without_service_manager, run_serverctl,
    serverctl_wrapper, stderr, wait_for,
};

const UUIDS: [&str; 2] = [
    "4c4c4544-0042-3510-8051-b4c04f335301",
    "4c4c4544-0042-3510-8051-b4c04f335302",
];

/// A console (1 s heartbeats, and `flags`) with a vpc group `batch` holding two servers of max
/// concurrency 3 and 2, and their agents enrolled, allowed to run tasks, running, available.
fn two_agents(flags: &[&str]) -> (Console, Vec<Agent>) {
    let mut all = vec!["--heartbeat-interval", "1s"];
    all.extend_from_slice(flags);
    let console = Console::start(&all);
    let password = console.create_user("ops");
    console.cli_ok(&["group", "create", "batch", "--network", "vpc"]);
    let mut agents = Vec::new();
    for (uuid, max) in UUIDS.iter().zip(["3", "2"]) {
        console.cli_ok(&[
            "server",
            "add",
            "--group",
            "batch",
            "--name",
            uuid,
            "--max-concurrency",
            max,
        ]);
        let mut agent = Agent::with_uuid(uuid);
        agent.enroll_ok(&console.url, "ops", &password, true);
        agent.allow_tasks();
        agent.run();
        agents.push(agent);
    }
    for uuid in UUIDS {
        console.wait_status(uuid, "available", Duration::from_secs(20));
    }
    (console, agents)
}

/// A console with a classic group `etl` holding this host, and its agent running.
fn one_agent(flags: &[&str]) -> (Console, Agent) {
    let mut all = vec!["--heartbeat-interval", "1s"];
    all.extend_from_slice(flags);
    let (console, mut agent) = enrolled_classic(&all);
    agent.allow_tasks();
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    (console, agent)
}

/// Runs its closure when dropped, on success and on panic alike.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A directory every task user may append to, where tasks record what they did.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn submit(console: &Console, group: &str, script: &str, timeout_secs: Option<u64>) -> i64 {
    let res = console
        .http()
        .post(console.api("/tasks"))
        .bearer_auth(console.token())
        .json(&json!({"project": "default", "group": group, "script": script, "timeout_secs": timeout_secs}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    res.json::<Value>().unwrap()["id"].as_i64().unwrap()
}

fn all_tasks(console: &Console) -> Vec<Value> {
    serde_json::from_str(&console.cli_ok(&["task", "list", "--limit", "10000", "--json"])).unwrap()
}

fn log_of(console: &Console, id: i64) -> String {
    console.cli_ok(&["task", "log", &id.to_string()])
}

/// Lines `ID start|end NANOS SERVER` that tasks appended to `path`.
fn records(path: &Path) -> Vec<(i64, String, i128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].to_owned(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// The script of a task that records its start and end in `runs`.
fn recording_script(runs: &Path, sleep: &str) -> String {
    format!(
        "echo \"$TASKNODE_TASK_ID start $(date +%s%N)\" >> {runs}\n\
         echo \"task $TASKNODE_TASK_ID says hello\"\n\
         sleep {sleep}\n\
         echo \"$TASKNODE_TASK_ID end $(date +%s%N)\" >> {runs}\n",
        runs = runs.display()
    )
}

/// Checks every task ran exactly once (one start, one end) and no server ever ran more at once
/// than its max concurrency; returns the tasks each server ran.
fn check_runs(
    console: &Console,
    runs: &Path,
    ids: &[i64],
    max: &HashMap<&str, usize>,
) -> BTreeMap<String, usize> {
    let recs = records(runs);
    let tasks: HashMap<i64, Value> = all_tasks(console)
        .into_iter()
        .map(|t| (t["id"].as_i64().unwrap(), t))
        .collect();
    let mut per_server: BTreeMap<String, Vec<(i128, i32)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut peaks: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        let starts: Vec<_> = recs
            .iter()
            .filter(|r| r.0 == *id && r.1 == "start")
            .collect();
        let ends: Vec<_> = recs.iter().filter(|r| r.0 == *id && r.1 == "end").collect();
        assert_eq!(starts.len(), 1, "task {id} started {} times", starts.len());
        assert_eq!(ends.len(), 1, "task {id} ended {} times", ends.len());
        let t = &tasks[id];
        assert_eq!(t["state"], "succeeded", "{t:#}");
        assert_eq!(t["exit_code"], 0);
        let server = t["server"].as_str().unwrap().to_owned();
        let events = per_server.entry(server.clone()).or_default();
        events.push((starts[0].2, 1));
        events.push((ends[0].2, -1));
        *counts.entry(server).or_default() += 1;
    }
    for (server, mut events) in per_server {
        // At equal times an end comes before a start: the slot was free.
        events.sort();
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            peak = peak.max(now);
        }
        let limit = max[server.as_str()];
        assert!(
            peak as usize <= limit,
            "server {server} ran {peak} tasks at once; its max concurrency is {limit}"
        );
        peaks.insert(server, peak as usize);
    }
    // The limit was reached, not merely respected by running one task at a time.
    assert!(
        peaks.iter().any(|(s, p)| *p == max[s.as_str()]),
        "no server ever ran its max concurrency: {peaks:?}"
    );
    counts
}

#[test]
fn a_hundred_tasks_over_two_agents_run_once_each_within_max_concurrency() {
    let (console, _agents) = two_agents(&[]);
    let shared = shared_dir();
    let runs = shared.path().join("runs");
    let ids: Vec<i64> = (0..100)
        .map(|_| submit(&console, "batch", &recording_script(&runs, "0.2"), None))
        .collect();
    wait_for(Duration::from_secs(120), "100 tasks to finish", || {
        all_tasks(&console)
            .iter()
            .all(|t| t["state"] != "queued" && t["state"] != "assigned" && t["state"] != "running")
            .then_some(())
    });
    let max = HashMap::from([(UUIDS[0], 3), (UUIDS[1], 2)]);
    let counts = check_runs(&console, &runs, &ids, &max);
    // Both servers took work.
    assert_eq!(counts.len(), 2, "{counts:?}");
    // Each log is whole, and says what its task printed.
    for id in ids.iter().step_by(10) {
        assert_eq!(log_of(&console, *id), format!("task {id} says hello\n"));
        let t = console.task(*id);
        assert_eq!(
            t["log_bytes"].as_u64().unwrap(),
            format!("task {id} says hello\n").len() as u64
        );
    }
    // The agents kept the logs too.
    let on_disk: usize = _agents
        .iter()
        .map(|a| std::fs::read_dir(a.logs().join("tasks")).unwrap().count())
        .sum();
    assert_eq!(on_disk, 100);
}

#[test]
fn a_console_killed_mid_run_loses_and_duplicates_nothing() {
    let (mut console, _agents) = two_agents(&[]);
    let shared = shared_dir();
    let runs = shared.path().join("runs");
    let ids: Vec<i64> = (0..30)
        .map(|_| submit(&console, "batch", &recording_script(&runs, "1"), None))
        .collect();
    wait_for(Duration::from_secs(30), "tasks to start", || {
        (records(&runs).len() >= 3).then_some(())
    });
    console.kill();
    // Tasks go on while the console is away; their results wait.
    std::thread::sleep(Duration::from_secs(3));
    console.restart();
    wait_for(Duration::from_secs(120), "30 tasks to finish", || {
        all_tasks(&console)
            .iter()
            .all(|t| t["state"] == "succeeded" || t["state"] == "failed" || t["state"] == "lost")
            .then_some(())
    });
    let max = HashMap::from([(UUIDS[0], 3), (UUIDS[1], 2)]);
    check_runs(&console, &runs, &ids, &max);
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn cancel_timeout_and_runaway_scripts_leave_no_process_behind() {
    let (console, _agent) = one_agent(&[]);

    // Cancel: the script and what it started in the background all go.
    let id = submit(
        &console,
        "etl",
        "sleep 31337 &\nsleep 31337 &\necho started\nwait\n",
        None,
    );
    console.wait_task(id, &["running"], Duration::from_secs(20));
    wait_for(Duration::from_secs(10), "the task's sleeps", || {
        (processes_with("sleep 31337").len() == 2).then_some(())
    });
    let out = console.cli_ok(&["task", "cancel", &id.to_string()]);
    assert!(out.contains("cancel requested"), "{out}");
    let t = console.wait_task(id, &["cancelled"], Duration::from_secs(20));
    assert!(t["reason"].as_str().unwrap().contains("killed"), "{t:#}");
    assert!(processes_with("sleep 31337").is_empty());
    assert_eq!(log_of(&console, id), "started\n");
    // A finished task cannot be cancelled, and says why.
    let out = console.cli(&["task", "cancel", &id.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("nothing to cancel"),
        "{}",
        stderr(&out)
    );

    // Timeout, with a script that ignores SIGTERM: SIGKILL follows.
    let id = submit(
        &console,
        "etl",
        "trap '' TERM\nsleep 31338 &\nwhile :; do sleep 1; done\n",
        Some(2),
    );
    let t = console.wait_task(id, &["timed_out"], Duration::from_secs(30));
    assert!(
        t["reason"].as_str().unwrap().contains("timeout of 2 s"),
        "{t:#}"
    );
    assert!(processes_with("sleep 31338").is_empty());

    // A script that forks without end is stopped at its timeout, its children with it.
    let id = submit(
        &console,
        "etl",
        "while :; do sleep 31339 & sleep 0.01; done\n",
        Some(2),
    );
    console.wait_task(id, &["timed_out"], Duration::from_secs(30));
    assert!(processes_with("sleep 31339").is_empty());

    // A script that exits non-zero fails with its code; what it left running is killed.
    let id = submit(
        &console,
        "etl",
        "sleep 31340 &\necho oops >&2\nexit 7\n",
        None,
    );
    let t = console.wait_task(id, &["failed"], Duration::from_secs(20));
    assert_eq!(t["exit_code"], 7);
    assert!(t["reason"].as_str().unwrap().contains("code 7"), "{t:#}");
    assert_eq!(log_of(&console, id), "oops\n");
    assert!(processes_with("sleep 31340").is_empty());

    // A clean environment and its own working directory.
    let id = submit(
        &console,
        "etl",
        "echo \"pwd=$(pwd)\"\necho \"secret=${TASKNODE_CONFIG:-unset}\"\nid -u\n",
        None,
    );
    console.wait_task(id, &["succeeded"], Duration::from_secs(20));
    let log = log_of(&console, id);
    assert!(
        log.contains(&format!(
            "pwd={}",
            _agent
                .dir
                .path()
                .join("tasknode/work")
                .join(id.to_string())
                .display()
        )),
        "{log}"
    );
    assert!(log.contains("secret=unset"), "{log}");
    if rustix::process::geteuid().is_root() {
        assert!(log.ends_with("65534\n"), "tasks never run as root: {log}");
    }
    // The working directory goes when the task ends.
    assert!(
        !_agent
            .dir
            .path()
            .join("tasknode/work")
            .join(id.to_string())
            .exists()
    );
}

#[test]
fn a_huge_log_is_capped_and_the_task_still_succeeds() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    agent.set_config("tasks", "log_max_bytes", 100_000.into());
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    // 50 MB of output.
    let id = submit(&console, "etl", "yes 0123456789 | head -c 50000000\n", None);
    let t = console.wait_task(id, &["succeeded"], Duration::from_secs(60));
    let log = log_of(&console, id);
    assert!(log.starts_with("0123456789\n0123456789\n"));
    assert!(
        log.ends_with("log truncated at 100000 bytes; further output was discarded\n"),
        "{}",
        &log[log.len() - 200..]
    );
    assert_eq!(t["log_bytes"].as_u64().unwrap(), log.len() as u64);
    assert!(log.len() < 100_200);
}

/// A VPC server's log past the console's limit: the console keeps what fits, refuses the rest
/// with 413, and the agent takes that as final: the result still arrives.
#[test]
fn a_pushed_log_past_the_consoles_limit_still_delivers_the_result() {
    let (console, _agents) = two_agents(&["--max-task-log", "64K"]);
    let id = submit(
        &console,
        "batch",
        "yes 0123456789 | head -c 1000000\n",
        None,
    );
    let t = console.wait_task(id, &["succeeded"], Duration::from_secs(60));
    let log = log_of(&console, id);
    assert!(
        log.starts_with("0123456789\n"),
        "{}",
        &log[..log.len().min(200)]
    );
    assert_eq!(
        log.len(),
        64 * 1024,
        "the console keeps the head of the log, up to its limit"
    );
    assert_eq!(t["log_bytes"].as_u64().unwrap(), 64 * 1024, "{t}");
}

#[test]
fn a_lost_agents_task_is_reported_and_not_run_again() {
    let (console, mut agent) = one_agent(&[
        "--degraded-after",
        "2s",
        "--stopped-after",
        "4s",
        "--persist-interval",
        "1s",
    ]);
    let shared = shared_dir();
    let runs = shared.path().join("runs");
    let id = submit(&console, "etl", &recording_script(&runs, "31341"), None);
    console.wait_task(id, &["running"], Duration::from_secs(20));
    // The agent dies outright, and its task with it, as when a host goes down.
    agent.kill();
    for pid in processes_with("sleep 31341") {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let pgid: i32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(pgid).unwrap(),
            rustix::process::Signal::Kill,
        );
    }
    let t = console.wait_task(id, &["lost"], Duration::from_secs(30));
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("stopped") && reason.contains("not run again"),
        "{reason}"
    );
    // Nothing runs it again: a later task runs, this one stays lost.
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let next = submit(&console, "etl", "echo later\n", None);
    console.wait_task(next, &["succeeded"], Duration::from_secs(20));
    assert_eq!(console.task(id)["state"], "lost");
    let starts = records(&runs)
        .iter()
        .filter(|r| r.0 == id && r.1 == "start")
        .count();
    assert_eq!(starts, 1);
}

#[test]
fn bad_submissions_are_refused_and_change_nothing() {
    let (console, _agent) = one_agent(&[]);
    console.cli_ok(&["group", "create", "empty", "--network", "classic"]);
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "echo hi\n").unwrap();
    let path = script.path().to_str().unwrap();
    for (args, expect) in [
        (vec!["--group", "empty"], "has no servers"),
        (vec!["--group", "nope"], "no resource group named \"nope\""),
        (vec!["--group", "etl", "--timeout", "8d"], "at most 7 days"),
    ] {
        let mut all = vec!["task", "submit", "--script", path];
        all.extend(args);
        let out = console.cli(&all);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expect), "{all:?}: {}", stderr(&out));
    }
    let dir = shared_dir();
    let empty: PathBuf = dir.path().join("empty.sh");
    std::fs::write(&empty, "  \n").unwrap();
    let out = console.cli(&[
        "task",
        "submit",
        "--group",
        "etl",
        "--script",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("field script"), "{}", stderr(&out));
    let out = console.cli(&["task", "show", "999"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no task 999"), "{}", stderr(&out));
    assert!(all_tasks(&console).is_empty());
    let out = console.cli(&["task", "list", "--state", "done"]);
    assert!(stderr(&out).contains("--state done"), "{}", stderr(&out));
}

#[test]
fn a_stopping_agent_drains_then_kills_what_outlives_the_drain_timeout() {
    let (console, mut agent) = one_agent(&[]);
    // A running task finishes before the agent exits, and its result reaches the console.
    let id = submit(&console, "etl", "sleep 3\necho done\n", None);
    console.wait_task(id, &["running"], Duration::from_secs(20));
    assert!(
        agent.stop(),
        "agent did not exit cleanly: {}",
        agent.agent_log()
    );
    let t = console.task(id);
    assert_eq!(t["state"], "succeeded", "{t:#}");
    let log = agent.agent_log();
    assert!(log.contains("waiting for running tasks to finish"), "{log}");
    // A classic server keeps its task logs: with its agent stopped the console says where the
    // log is and why it cannot read it.
    let out = console.cli(&["task", "log", &id.to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("serves it on its log service"),
        "{}",
        stderr(&out)
    );
    let first = id;

    // Past the drain timeout the agent kills the task and says so.
    agent.set_config("tasks", "drain_timeout_secs", 1.into());
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    assert_eq!(log_of(&console, first), "done\n");
    let id = submit(&console, "etl", "sleep 31342\n", None);
    console.wait_task(id, &["running"], Duration::from_secs(20));
    wait_for(Duration::from_secs(10), "the task's sleep", || {
        (!processes_with("sleep 31342").is_empty()).then_some(())
    });
    assert!(agent.stop());
    let t = console.task(id);
    assert_eq!(t["state"], "failed", "{t:#}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("drain timeout (1 s) passed"), "{reason}");
    assert!(processes_with("sleep 31342").is_empty());
    // While it drained, the console kept the server available (heartbeats went on) and
    // handed it nothing new.
    assert!(!agent.agent_log().contains("heartbeat failed"));
}

#[test]
fn serverctl_stop_says_which_tasks_it_waits_for_and_lets_them_finish() {
    let (console, agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    let root = root_without_service_manager(agent.dir.path());
    let wrapper = serverctl_wrapper(agent.dir.path(), &bin("tasknode"), &agent.config());
    let serverctl = |action: &str| {
        let out = run_serverctl(&wrapper, &root, action);
        assert!(out.status.success(), "serverctl {action}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    serverctl("start");
    // Whatever happens below, the agent serverctl started does not outlive the test.
    let _stop = OnDrop(|| {
        run_serverctl(&wrapper, &root, "stop");
    });
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let id = submit(&console, "etl", "sleep 3\necho finished\n", None);
    console.wait_task(id, &["running"], Duration::from_secs(20));
    let said = serverctl("restart");
    assert!(
        said.contains(&format!(
            "waits up to 60 s for 1 running task ({id}) to finish"
        )),
        "{said}\n{:?}",
        std::fs::read_to_string(agent.dir.path().join("tasknode/work/.running"))
    );
    // The restart waited for the task: it finished, and its result reached the console.
    let t = console.task(id);
    assert_eq!(t["state"], "succeeded", "{t:#}");
    assert_eq!(log_of(&console, id), "finished\n");
    // The restarted agent takes work again.
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let next = submit(&console, "etl", "echo again\n", None);
    console.wait_task(next, &["succeeded"], Duration::from_secs(20));
    let said = serverctl("stop");
    assert!(!said.contains("running task"), "{said}");
}

#[test]
fn the_console_lifts_its_open_file_limit_for_long_polls() {
    // Every agent holds a long poll open: started with a soft limit of 256 open files, the
    // console raises it to the hard limit.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(tasknode_tests::which("prlimit"))
        .arg("--nofile=256:4096")
        .arg(bin("tasknode-console"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _stop = OnDrop(|| {
        let _ = child.kill();
        let _ = child.wait();
    });
    wait_for(Duration::from_secs(10), "the console to start", || {
        data.join("console.url").exists().then_some(())
    });
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(data.to_str().unwrap()))
        })
        .unwrap()
        .path();
    let limits = std::fs::read_to_string(pid.join("limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
}

#[test]
fn a_renamed_group_keeps_its_agent_working_and_only_an_empty_group_is_deleted() {
    let (console, _agent) = one_agent(&[]);
    let host = hostname();
    let out = console.cli_ok(&["group", "rename", "--group", "etl", "--to", "etl-2"]);
    assert_eq!(
        out.trim(),
        "renamed resource group etl of project default to etl-2"
    );
    assert_eq!(console.server(&host)["group"], "etl-2");
    // The agent's long poll, registered under the old name, is woken by a task submitted
    // under the new one: the task starts long before the poll's 25 s are up.
    let id = console.submit_script("etl-2", "echo renamed\n");
    let t = console.wait_task(id, &["succeeded"], Duration::from_secs(15));
    assert_eq!(t["group"], "etl-2");
    assert_eq!(log_of(&console, id), "renamed\n");

    console.cli_ok(&["group", "create", "other", "--network", "vpc"]);
    let refusals: [(&[&str], &str); 3] = [
        (
            &["group", "rename", "--group", "etl-2", "--to", "other"],
            "field new_name: resource group \"other\" already exists",
        ),
        (
            &["group", "delete", "--group", "etl-2"],
            "group etl-2 still has 1 server; a group is deleted only when it is empty",
        ),
        (
            &["group", "delete", "--group", "etl"],
            "no resource group named \"etl\"",
        ),
    ];
    for (args, expect) in refusals {
        let out = console.cli(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }

    let deleted: Value =
        serde_json::from_str(&console.cli_ok(&["group", "delete", "--group", "other", "--json"]))
            .unwrap();
    assert_eq!(
        deleted,
        json!({"name": "other", "project": "default", "deleted_tasks": []})
    );
    let groups: Vec<Value> =
        serde_json::from_str(&console.cli_ok(&["group", "list", "--json"])).unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["etl-2"]);
    // The name is free again; the refused commands changed nothing.
    console.cli_ok(&["group", "create", "other", "--network", "classic"]);
    assert_eq!(console.task(id)["state"], "succeeded");
    let out = console.cli_ok(&["group", "delete", "--group", "other"]);
    assert_eq!(
        out.trim(),
        "deleted resource group other of project default with 0 finished tasks"
    );
}

#[test]
fn a_task_goes_to_the_agents_newest_poll_not_to_one_a_gone_process_left_open() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    // The long poll of a process that is gone (restarted, or exec'd its update) before the
    // console saw its connection close: made by hand with the node's credentials.
    let url = format!(
        "{}/api/v1/nodes/{}/tasks/poll",
        console.url,
        agent.config_value("node.id")
    );
    let secret = agent.config_value("node.secret");
    let stale = std::thread::spawn(move || -> Value {
        reqwest::blocking::Client::new()
            .post(url)
            .bearer_auth(secret)
            .json(&json!({"held": [], "accepting": true, "wait_secs": 25}))
            .timeout(Duration::from_secs(40))
            .send()
            .unwrap()
            .json()
            .unwrap()
    });
    // The old poll is in before the agent's own: a loopback request takes milliseconds.
    std::thread::sleep(Duration::from_secs(1));
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));

    // Submitting wakes both polls; only the agent's may take the task, and it runs at once
    // rather than after the old poll's assignment is found unheld.
    let id = console.submit_script("etl", "echo newest\n");
    console.wait_task(id, &["succeeded"], Duration::from_secs(10));
    assert_eq!(log_of(&console, id), "newest\n");
    // Superseded, the old poll answered when the submit woke it, not at its 25 s deadline.
    wait_for(Duration::from_secs(5), "the old poll to answer", || {
        stale.is_finished().then_some(())
    });
    let answer = stale.join().unwrap();
    assert_eq!(answer, json!({"assign": [], "cancel": []}));
}
