//! Liveness end to end: missing heartbeats walk a server from available to degraded to stopped,
//! a clean shutdown stops it at once, a console restart loses nothing and the agent carries on
//! without enrolling again, a console clock 5 minutes ahead shows clock_skew, and the agent
//! talks sd_notify under systemd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use tasknode_tests::{enrolled_classic, hostname, wait_for};

#[test]
fn a_silent_agent_goes_degraded_then_stopped() {
    let (console, mut agent) = enrolled_classic(&[
        "--heartbeat-interval",
        "1s",
        "--degraded-after",
        "3s",
        "--stopped-after",
        "6s",
    ]);
    let host = hostname();
    agent.run();
    console.wait_status(&host, "available", Duration::from_secs(15));
    agent.kill();
    let killed = Instant::now();

    let degraded = console.wait_status(&host, "degraded", Duration::from_secs(10));
    let reason = degraded["reason"].as_str().unwrap();
    assert!(
        reason.contains("no heartbeat for") && reason.contains("still schedulable"),
        "{reason}"
    );
    let stopped = console.wait_status(&host, "stopped", Duration::from_secs(15));
    // Six seconds after the last heartbeat, which came at most a beat or two before the kill.
    assert!(
        killed.elapsed() >= Duration::from_secs(3),
        "stopped too early"
    );
    let reason = stopped["reason"].as_str().unwrap();
    assert!(
        reason.contains("no heartbeat for") && reason.contains("serverctl status"),
        "{reason}"
    );
}

#[test]
fn a_clean_shutdown_is_stopped_at_once_and_a_restart_is_available_again() {
    // Only the shutdown notice can explain "stopped" within the 10 minute tolerance.
    let (console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    let host = hostname();
    agent.run();
    console.wait_status(&host, "available", Duration::from_secs(15));
    assert!(agent.stop(), "agent did not exit 0 on SIGTERM");
    let stopped = console.wait_status(&host, "stopped", Duration::from_secs(5));
    let reason = stopped["reason"].as_str().unwrap();
    assert!(
        reason.contains("shut down cleanly") && reason.contains("SIGTERM"),
        "{reason}"
    );
    assert!(
        agent.agent_log().contains("console told"),
        "{}",
        agent.agent_log()
    );
    // Its last heartbeat is seconds old, but the console says stopped: not healthy.
    let (status, healthy) = agent.status();
    assert!(!healthy, "{status:#}");
    assert_eq!(status["console_status"], "stopped");

    agent.run();
    console.wait_status(&host, "available", Duration::from_secs(15));
}

#[test]
fn a_console_restart_loses_nothing_and_the_agent_carries_on() {
    let (mut console, mut agent) =
        enrolled_classic(&["--heartbeat-interval", "1s", "--persist-interval", "1s"]);
    let host = hostname();
    console.cli_ok(&["project", "create", "finance"]);
    console.cli_ok(&[
        "group",
        "create",
        "fin",
        "--network",
        "vpc",
        "--project",
        "finance",
    ]);
    console.cli_ok(&[
        "server",
        "add",
        "--group",
        "fin",
        "--project",
        "finance",
        "--name",
        "4c4c4544-0042-3510-8051-b4c04f333232",
        "--max-concurrency",
        "7",
    ]);
    let node_id = agent.config_value("node.id");
    agent.run();
    console.wait_status(&host, "available", Duration::from_secs(15));
    let before = console.servers();

    for crash in [false, true] {
        if crash {
            console.kill();
        } else {
            console.stop();
        }
        // The agent keeps trying while the console is away, and does not exit.
        wait_for(Duration::from_secs(10), "a failed heartbeat", || {
            agent
                .heartbeat_lines()
                .iter()
                .any(|l| l.contains("status=- "))
                .then_some(())
        });
        assert!(
            agent.is_running(),
            "agent exited while the console was away"
        );
        let failures_before_restart = agent.heartbeat_lines().len();
        console.restart();

        let after = console.wait_status(&host, "available", Duration::from_secs(40));
        assert_eq!(after["group"], "etl");
        // Heartbeats resumed with the same node credentials: nothing enrolled again.
        assert_eq!(agent.config_value("node.id"), node_id);
        wait_for(
            Duration::from_secs(10),
            "a heartbeat after the restart",
            || {
                let lines = agent.heartbeat_lines();
                lines[failures_before_restart..]
                    .iter()
                    .any(|l| l.contains("status=200"))
                    .then_some(())
            },
        );
        // Everything registered is still there.
        let now = console.servers();
        assert_eq!(now.len(), before.len());
        for (b, n) in before.iter().zip(&now) {
            for field in [
                "name",
                "group",
                "project",
                "network",
                "max_concurrency",
                "enrolled_at",
            ] {
                assert_eq!(b[field], n[field], "{field} changed across a restart");
            }
        }
        let users = console.cli_ok(&["user", "list"]);
        assert!(users.contains("etl"), "{users}");
        let groups = console.cli_ok(&["group", "list"]);
        assert!(groups.contains("etl") && groups.contains("fin"), "{groups}");
    }
    assert!(agent.agent_log().contains("console reachable again"));
}

#[test]
fn liveness_survives_a_clean_console_restart_without_heartbeats() {
    // Heartbeat times live in memory and are persisted in batches; a clean stop writes them.
    let (mut console, mut agent) =
        enrolled_classic(&["--heartbeat-interval", "1s", "--persist-interval", "1h"]);
    let host = hostname();
    agent.run();
    let seen = console.wait_status(&host, "available", Duration::from_secs(15));
    agent.kill();
    console.stop();
    console.restart();
    let after = console.server(&host);
    assert_ne!(after["status"], "pending", "{after}");
    assert!(after["last_heartbeat"].as_str().unwrap() >= seen["last_heartbeat"].as_str().unwrap());
    assert_eq!(after["version"], seen["version"]);
}

#[test]
fn a_console_clock_five_minutes_ahead_shows_clock_skew() {
    let (console, mut agent) =
        enrolled_classic(&["--heartbeat-interval", "1s", "--clock-offset", "300"]);
    let host = hostname();
    agent.run();
    let skewed = console.wait_status(&host, "clock_skew", Duration::from_secs(15));
    let offset = skewed["clock_offset_ms"].as_i64().unwrap();
    assert!((299_000..=301_000).contains(&offset), "offset {offset}");
    let reason = skewed["reason"].as_str().unwrap();
    assert!(
        reason.contains("s behind the console") && reason.contains("chronyc makestep"),
        "{reason}"
    );
    wait_for(
        Duration::from_secs(5),
        "the agent to log how to fix its clock",
        || {
            agent
                .agent_log()
                .contains("taking no work until it is fixed")
                .then_some(())
        },
    );
    let (status, healthy) = agent.status();
    assert!(!healthy);
    assert_eq!(status["clock_ok"], false);
}

#[test]
fn the_agent_notifies_systemd() {
    let (_console, mut agent) = enrolled_classic(&["--heartbeat-interval", "1s"]);
    let socket_path = agent.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    agent.run_with_env(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(agent.stop());
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
