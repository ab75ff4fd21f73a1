//! The agent without a service manager: started in the background by `serverctl start`, found
//! again through a pid file. Before signalling a pid it checks that the process is this agent,
//! so a stale pid file never makes serverctl signal an unrelated process. It runs as the agent
//! user, never as root: the pid file, its directory and the logs are that user's to change, so
//! root following them could be made to create, chown or signal anything.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::{Manager, ServiceError, State};

/// By default stop waits this long for the agent to exit after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long start watches the new agent before calling it started.
const START_GRACE: Duration = Duration::from_millis(1000);

pub struct Pidfile {
    /// Where /etc/passwd is looked up (a root prefix).
    pub root: PathBuf,
    pub pid_file: PathBuf,
    pub config: PathBuf,
    /// Where the agent's own standard output and error go.
    pub out_file: PathBuf,
    pub stop_timeout: Duration,
}

impl Pidfile {
    /// The agent with `config`, its pid file `pid_file` (the config's) and its own output in
    /// `log_dir`/agent.out.
    pub fn new(root: &Path, config: &Path, pid_file: &Path, log_dir: &Path) -> Pidfile {
        Pidfile {
            root: root.to_owned(),
            pid_file: pid_file.to_owned(),
            config: config.to_owned(),
            out_file: log_dir.join("agent.out"),
            stop_timeout: STOP_TIMEOUT,
        }
    }

    fn io_err(&self) -> impl FnOnce(std::io::Error) -> ServiceError + '_ {
        |source| ServiceError::PidFile {
            path: self.pid_file.clone(),
            source,
        }
    }

    /// Refuses root unless the agent user is root itself: `serverctl` run as root hands over
    /// to the agent user before it gets here (commands/serverctl.rs).
    fn not_as_root(&self) -> Result<(), ServiceError> {
        if rustix::process::geteuid().is_root() && agent_user(&self.root)?.0 != 0 {
            return Err(ServiceError::NotAsRoot {
                path: self.pid_file.clone(),
            });
        }
        Ok(())
    }

    /// The pid in the pid file, if it names a live `tasknode run` process.
    fn running_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_agent(pid).then_some(pid)
    }
}

/// The uid and gid of the agent user, from `<root>/etc/passwd`.
pub fn agent_user(root: &Path) -> Result<(u32, u32), ServiceError> {
    let path = root.join("etc/passwd");
    if let Err(source) = fs::metadata(&path) {
        return Err(ServiceError::PidFile { path, source });
    }
    crate::passwd::by_name(root, super::AGENT_USER)
        .map(|e| (e.uid, e.gid))
        .ok_or(ServiceError::NoAgentUser {
            user: super::AGENT_USER,
        })
}

/// Whether `pid` is alive and is a `tasknode ... run` process.
fn is_agent(pid: u32) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let exe_ok = args
        .first()
        .is_some_and(|a| a.ends_with(b"tasknode") || a.ends_with(b"tasknode (deleted)"));
    exe_ok && args.iter().any(|a| *a == b"run")
}

fn alive(pid: u32) -> bool {
    Pid::from_raw(pid as i32).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

impl Manager for Pidfile {
    fn name(&self) -> &'static str {
        "pidfile"
    }

    fn start(&self) -> Result<(), ServiceError> {
        self.not_as_root()?;
        if let Some(pid) = self.running_pid() {
            println!("the agent is already running (pid {pid})");
            return Ok(());
        }
        if let Some(dir) = self.pid_file.parent() {
            fs::create_dir_all(dir).map_err(self.io_err())?;
        }
        if let Some(dir) = self.out_file.parent() {
            fs::create_dir_all(dir).map_err(self.io_err())?;
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.out_file)
            .map_err(self.io_err())?;
        let err = out.try_clone().map_err(self.io_err())?;
        let exe = std::env::current_exe().map_err(self.io_err())?;
        let mut command = Command::new(&exe);
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir("/")
            // Its own process group: a terminal's Ctrl-C or hangup does not reach it.
            .process_group(0)
            .spawn()
            .map_err(|source| ServiceError::Spawn {
                manager: "pidfile",
                command: format!("{} run", exe.display()),
                source,
            })?;
        let pid = child.id();
        let tmp = self.pid_file.with_extension("pid.tmp");
        let mut f = fs::File::create(&tmp).map_err(self.io_err())?;
        writeln!(f, "{pid}").map_err(self.io_err())?;
        fs::rename(&tmp, &self.pid_file).map_err(self.io_err())?;

        let deadline = Instant::now() + START_GRACE;
        while Instant::now() < deadline {
            if child.try_wait().map_err(self.io_err())?.is_some() {
                let _ = fs::remove_file(&self.pid_file);
                return Err(ServiceError::DidNotStart {
                    pid,
                    log: self.out_file.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "started the agent (pid {pid}); its output goes to {}",
            self.out_file.display()
        );
        Ok(())
    }

    fn stop(&self) -> Result<(), ServiceError> {
        self.not_as_root()?;
        let Some(pid) = self.running_pid() else {
            let _ = fs::remove_file(&self.pid_file);
            println!("the agent is not running");
            return Ok(());
        };
        let Some(p) = Pid::from_raw(pid as i32) else {
            return Ok(());
        };
        println!(
            "stopping the agent (pid {pid}): waiting up to {} s for it to tell the console and exit",
            self.stop_timeout.as_secs()
        );
        let _ = rustix::process::kill_process(p, Signal::Term);
        let deadline = Instant::now() + self.stop_timeout;
        while alive(pid) {
            if Instant::now() >= deadline {
                let _ = rustix::process::kill_process(p, Signal::Kill);
                let _ = fs::remove_file(&self.pid_file);
                return Err(ServiceError::DidNotStop {
                    pid,
                    secs: self.stop_timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_file(&self.pid_file);
        println!("stopped");
        Ok(())
    }

    fn status(&self) -> Result<State, ServiceError> {
        self.not_as_root()?;
        if let Some(pid) = self.running_pid() {
            return Ok(State::Running { pid: Some(pid) });
        }
        Ok(if self.pid_file.exists() {
            State::Dead
        } else {
            State::Stopped
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_agent_user() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nadmin:x:500:501::/home/admin:/bin/bash\n",
        )
        .unwrap();
        assert_eq!(agent_user(root.path()).unwrap(), (500, 501));
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .unwrap();
        assert!(matches!(
            agent_user(root.path()),
            Err(ServiceError::NoAgentUser { .. })
        ));
    }

    #[test]
    fn a_stale_pid_naming_another_process_is_not_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        passwd_with_admin(dir.path(), rustix::process::getuid().as_raw());
        let p = pidfile_in(dir.path());
        // Our own pid: alive, but a test binary, not `tasknode run`.
        fs::write(&p.pid_file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(p.status().unwrap(), State::Dead);
        p.stop().unwrap();
        assert!(!p.pid_file.exists());
        assert_eq!(p.status().unwrap(), State::Stopped);
    }

    fn pidfile_in(dir: &Path) -> Pidfile {
        Pidfile::new(
            dir,
            &dir.join("tasknode.conf"),
            &dir.join("tasknode.pid"),
            dir,
        )
    }

    fn passwd_with_admin(root: &Path, uid: u32) {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/passwd"),
            format!("root:x:0:0:root:/root:/bin/sh\nadmin:x:{uid}:{uid}::/home/admin:/bin/sh\n"),
        )
        .unwrap();
    }

    #[test]
    fn root_never_follows_the_agent_users_pid_file() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        passwd_with_admin(dir.path(), 4242);
        let p = pidfile_in(dir.path());
        // A pid file naming init: root must not even read it, let alone signal.
        fs::write(&p.pid_file, "1\n").unwrap();
        for result in [p.start(), p.stop(), p.status().map(drop)] {
            let err = result.unwrap_err();
            assert!(matches!(err, ServiceError::NotAsRoot { .. }), "{err}");
            assert!(err.to_string().contains("tasknode.pid"), "{err}");
        }
        assert!(!dir.path().join("agent.out").exists());
    }
}
