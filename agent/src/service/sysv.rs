//! The agent as the SysV service /etc/init.d/tasknode (CentOS 6), driven through its script.

use std::path::PathBuf;

use super::{Manager, ServiceError, State, run};

pub struct Sysv {
    pub script: PathBuf,
}

impl Sysv {
    fn call(&self, action: &str) -> Result<String, ServiceError> {
        let script = self.script.to_string_lossy();
        run("sysv", "sh", &[&script, action])
    }
}

impl Manager for Sysv {
    fn name(&self) -> &'static str {
        "sysv"
    }

    fn start(&self) -> Result<(), ServiceError> {
        self.call("start").map(drop)
    }

    fn stop(&self) -> Result<(), ServiceError> {
        self.call("stop").map(drop)
    }

    fn restart(&self) -> Result<(), ServiceError> {
        self.call("restart").map(drop)
    }

    /// LSB status codes: 0 running, 1 dead with a pid file, 3 stopped.
    fn status(&self) -> Result<State, ServiceError> {
        match self.call("status") {
            Ok(text) => Ok(State::Running {
                pid: text
                    .split(|c: char| !c.is_ascii_digit())
                    .find(|w| !w.is_empty())
                    .and_then(|w| w.parse().ok()),
            }),
            Err(ServiceError::Command { code: Some(1), .. }) => Ok(State::Dead),
            Err(ServiceError::Command { code: Some(3), .. }) => Ok(State::Stopped),
            Err(e) => Err(e),
        }
    }
}
