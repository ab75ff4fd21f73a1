//! A task cannot outlive itself: whatever it starts in the background and detaches (`setsid`,
//! a double fork, with its environment cleared) is gone once the console shows the task ended.
//! On the host the agent runs as a plain process (no systemd: process group plus subreaper);
//! in a booted Debian container it runs under systemd, each task in a cgroup of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tasknode_tests::container::{classic_tls_console, installed_under_systemd};
use tasknode_tests::sandbox::require_root;
use tasknode_tests::{enrolled_classic, hostname};

/// Sleeps of unusual lengths, so that they can be told from every other process; the script
/// detaches each of them from the task in another way.
fn script(marks: &[String]) -> String {
    format!(
        "setsid sleep {} &\n( sleep {} & )\n( env -i /usr/bin/setsid sleep {} & )\nsleep 1\necho started\n",
        marks[0], marks[1], marks[2]
    )
}

/// Under systemd, the task runs as the user that owns the delegated cgroup, so it tries to
/// leave its own: into the agent's, into a new one beside it, and into one below its own.
fn escapes(marks: &[String]) -> String {
    format!(
        r#"cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
for m in /sys/fs/cgroup /sys/fs/cgroup/unified; do [ -f "$m$cg/cgroup.procs" ] && own=$m$cg && break; done
setsid sh -c 'echo 0 > "$1/../agent/cgroup.procs" && exec sleep {}' sh "$own" &
setsid sh -c 'mkdir "$1/../escape" && echo 0 > "$1/../escape/cgroup.procs" && exec sleep {}' sh "$own" &
setsid sh -c 'mkdir "$1/nested" && echo 0 > "$1/nested/cgroup.procs" && exec sleep {}' sh "$own" &
"#,
        marks[3], marks[4], marks[5]
    )
}

/// Sleep lengths of this test process and of test `test`: the tests here run at once, and the
/// host sees the container's processes, so one test must not count (or kill) the other's.
fn marks(test: u32) -> Vec<String> {
    let pid = std::process::id();
    (1..=6).map(|i| format!("600.{pid}{test}{i}")).collect()
}

/// Processes on this host whose command line is `sleep MARK` for one of `marks`.
fn sleepers(marks: &[String]) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.len() >= 2 && args[0].ends_with("sleep") && marks.contains(&args[1]) {
            found.push((pid, args[1].clone()));
        }
    }
    found
}

#[test]
fn without_systemd_what_a_task_detaches_ends_with_it() {
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    agent.allow_tasks();
    agent.run();
    console.wait_status(&hostname(), "available", Duration::from_secs(20));
    let marks = marks(1);
    let id = console.submit_script("etl", &script(&marks));
    let done = console.wait_task(id, &["succeeded", "failed"], Duration::from_secs(30));
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(
        console.cli_ok(&["task", "log", &id.to_string()]),
        "started\n"
    );
    let left = sleepers(&marks);
    for (pid, _) in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(left.is_empty(), "the task left {left:?} running");
    let log = agent.agent_log();
    assert!(
        log.contains(
            "tasks are contained by process group, and their orphans are re-parented to the agent"
        ),
        "{log}"
    );
}

#[test]
fn under_systemd_each_task_runs_in_its_own_cgroup_and_nothing_outlives_it() {
    if !require_root() {
        return;
    }
    let host = "tn-contain";
    let (console, _agents) = classic_tls_console(host, &[]);
    let c = installed_under_systemd(&console, host);
    let conf = c.path("/home/admin/tasknode/conf/tasknode.conf");
    tasknode_tests::set_config_value(&conf, "logs", "listen", "127.0.0.1:0".into());
    c.sh_ok("/home/admin/tasknode/bin/serverctl restart");
    console.wait_status(host, "available", Duration::from_secs(15));
    let agent_log = || {
        std::fs::read_to_string(c.path("/home/admin/tasknode/logs/agent.log")).unwrap_or_default()
    };

    // The agent moved itself into the leaf `agent/` of the unit's delegated cgroup.
    let main = c.sh_ok("systemctl show -p MainPID --value tasknode");
    let own = c.sh_ok(&format!("grep '^0::' /proc/{main}/cgroup"));
    let cgroups = c.sh(
        "systemctl cat tasknode; grep cgroup /proc/mounts; \
         ls -la /sys/fs/cgroup/unified/system.slice/tasknode.service /sys/fs/cgroup/system.slice/tasknode.service /sys/fs/cgroup/systemd/system.slice/tasknode.service",
    );
    assert_eq!(
        own,
        "0::/system.slice/tasknode.service/agent",
        "{}\n{}{}",
        agent_log(),
        String::from_utf8_lossy(&cgroups.stdout),
        String::from_utf8_lossy(&cgroups.stderr)
    );

    let marks = marks(2);
    let id = console.submit_script(
        "classic",
        &format!(
            "grep '^0::' /proc/self/cgroup\n{}{}",
            escapes(&marks),
            script(&marks)
        ),
    );
    let done = console.wait_task(id, &["succeeded", "failed"], Duration::from_secs(30));
    assert_eq!(done["state"], "succeeded", "{done:#}\n{}", agent_log());
    assert_eq!(
        console.cli_ok(&["task", "log", &id.to_string()]),
        format!("0::/system.slice/tasknode.service/task-{id}\nstarted\n")
    );
    // Nothing of it runs, and its cgroup is gone; only the agent's leaf is left.
    let left = c.sh(&format!("pgrep -af 'sleep ({})'", marks.join("|")));
    assert!(
        left.stdout.is_empty(),
        "the task left {}",
        String::from_utf8_lossy(&left.stdout)
    );
    let root = c.sh_ok(
        "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo /sys/fs/cgroup; else echo /sys/fs/cgroup/unified; fi",
    );
    let children = c.sh_ok(&format!(
        "cd {root}/system.slice/tasknode.service && for d in */; do echo \"${{d%/}}\"; done"
    ));
    assert_eq!(children, "agent", "{}", agent_log());
    let log = agent_log();
    assert!(
        log.contains("each task runs in a cgroup of its own"),
        "{log}"
    );
    // The escapes were made, and undone.
    assert!(
        log.contains("killing a process that moved itself into the agent's cgroup"),
        "{log}"
    );
    assert!(
        log.contains("emptying a cgroup no running task owns"),
        "{log}"
    );
}
