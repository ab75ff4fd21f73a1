//! The static agent as CentOS 6 runs it: with only Linux 2.6.32's system calls (the filters of
//! `tasknode_tests::old_kernel` answer newer ones as that kernel does), it enrolls, heartbeats,
//! answers `status`, is restarted through serverctl and stops, with the console watching.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tasknode_tests::old_kernel::{FIRST_MISSING_SYSCALL, Linux2632};
use tasknode_tests::{
    Agent, Console, hostname, root_without_service_manager, serverctl_wrapper, static_agent,
    stderr, wait_for,
};

/// errno of a raw system call that failed, or None when it succeeded.
#[allow(unsafe_code)]
fn raw_syscall_errno(nr: i64, args: [usize; 3]) -> Option<i32> {
    // SAFETY: every call below passes arguments valid for its system call (a live buffer and
    // its length, or none).
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    (rc < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

#[allow(unsafe_code)]
fn set_tcp_user_timeout(stream: &TcpStream) -> Option<i32> {
    let ms: libc::c_int = 30_000;
    // SAFETY: a live socket, and a pointer to an int with its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            std::ptr::from_ref(&ms).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    (rc < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

/// The instrument first: under the filters a system call after 2.6.32 fails with ENOSYS and
/// one of 2.6.32 still works. The filters go on a thread of its own, which ends with them.
#[test]
fn the_filters_answer_as_linux_2632_does() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let kernel = Linux2632::new();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let mut getrandom =
            || raw_syscall_errno(libc::SYS_getrandom, [buf.as_mut_ptr() as usize, 16, 0]);
        assert_eq!(getrandom(), None, "getrandom works before the filters");
        kernel.apply_to_this_thread();

        assert_eq!(libc::SYS_getrandom, 318);
        assert_eq!(getrandom(), Some(libc::ENOSYS), "getrandom (3.17)");
        assert_eq!(
            raw_syscall_errno(FIRST_MISSING_SYSCALL, [0, 0, 0]),
            Some(libc::ENOSYS),
            "recvmmsg (2.6.33)"
        );
        assert_eq!(
            raw_syscall_errno(libc::SYS_statx, [0, 0, 0]),
            Some(libc::ENOSYS),
            "statx (4.11)"
        );
        // perf_event_open, the last call of 2.6.32, reaches the kernel: EFAULT for a null
        // attribute pointer, not ENOSYS.
        assert_eq!(libc::SYS_perf_event_open, FIRST_MISSING_SYSCALL - 1);
        assert_ne!(
            raw_syscall_errno(libc::SYS_perf_event_open, [0, 0, 0]),
            Some(libc::ENOSYS)
        );
        assert_eq!(raw_syscall_errno(libc::SYS_getpid, [0, 0, 0]), None);

        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        assert_eq!(set_tcp_user_timeout(&stream), Some(libc::ENOPROTOOPT));
    })
    .join()
    .unwrap();

    // This thread is untouched.
    let mut buf = [0u8; 16];
    assert_eq!(
        raw_syscall_errno(libc::SYS_getrandom, [buf.as_mut_ptr() as usize, 16, 0]),
        None
    );
    let stream = TcpStream::connect(addr).unwrap();
    assert_eq!(set_tcp_user_timeout(&stream), None);
}

fn seccomp_mode(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn the_static_agent_enrolls_heartbeats_restarts_and_stops_on_linux_2632() {
    let console = Console::start(&["--heartbeat-interval", "1s"]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    let host = hostname();
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &host]);

    let mut agent = Agent::static_on_linux_2632();
    agent.enroll_ok(&console.url, "etl", &password, false);
    agent.allow_tasks();

    agent.run();
    assert_eq!(
        seccomp_mode(agent.pid()),
        "2",
        "the agent runs under the filters"
    );
    let listed = console.wait_status(&host, "available", Duration::from_secs(15));
    assert_eq!(listed["version"], env!("CARGO_PKG_VERSION"));
    let beats = wait_for(Duration::from_secs(10), "three heartbeats", || {
        let lines = agent.heartbeat_lines();
        (lines.len() >= 3).then_some(lines)
    });
    for line in &beats {
        assert!(line.contains(" status=200 "), "{line}");
        assert!(line.ends_with("error=-"), "{line}");
    }
    let (report, healthy) = agent.status();
    assert!(healthy, "status under 2.6.32: {report}");
    assert_eq!(report["enrolled"], true);

    // A task: its process group, pipe, timeout and log push under the same filters.
    let id = console.submit_script("etl", "echo ran under 2.6.32\nexit 3\n");
    let done = console.wait_task(id, &["failed"], Duration::from_secs(20));
    assert_eq!(done["exit_code"], 3, "{done:#}");
    assert_eq!(
        console.cli_ok(&["task", "log", &id.to_string()]),
        "ran under 2.6.32\n"
    );

    assert!(agent.stop(), "the agent exits 0 on SIGTERM");
    let stopped = console.wait_status(&host, "stopped", Duration::from_secs(5));
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("shut down cleanly"),
        "{stopped}"
    );
    let log = agent.agent_log();
    assert!(
        !log.contains("panicked") && !log.contains(" ERROR "),
        "agent.log:\n{log}"
    );

    // serverctl restart, as an operator runs it: the wrapper, the pid-file path (no service
    // manager), every process under the filters.
    let root = root_without_service_manager(agent.dir.path());
    let wrapper = serverctl_wrapper(agent.dir.path(), &static_agent(), &agent.config());
    let kernel = Linux2632::new();
    let serverctl = |action: &str| {
        let mut cmd = Command::new(&wrapper);
        cmd.arg(action)
            .env("TASKNODE_ROOT", &root)
            .env_remove("TASKNODE_CONFIG")
            .env_remove("NOTIFY_SOCKET");
        kernel.apply_on_exec(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "serverctl {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    };
    let pid_file = agent.dir.path().join("tasknode/run/tasknode.pid");
    let pid = || {
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    serverctl("start");
    let first = pid();
    assert_eq!(seccomp_mode(first), "2");
    console.wait_status(&host, "available", Duration::from_secs(15));
    serverctl("restart");
    let second = pid();
    assert_ne!(first, second);
    assert_eq!(seccomp_mode(second), "2");
    assert!(!Path::new(&format!("/proc/{first}")).exists());
    let before = agent.heartbeat_lines().len();
    wait_for(
        Duration::from_secs(15),
        "the restarted agent to heartbeat",
        || (agent.heartbeat_lines().len() > before + 1).then_some(()),
    );
    assert_eq!(console.server(&host)["status"], "available");
    serverctl("stop");
    assert!(!Path::new(&format!("/proc/{second}")).exists());
    console.wait_status(&host, "stopped", Duration::from_secs(5));
}
