//! The agent as the systemd unit `tasknode.service`.

use super::{Manager, SERVICE, ServiceError, State, run};

pub struct Systemd;

impl Manager for Systemd {
    fn name(&self) -> &'static str {
        "systemd"
    }

    fn start(&self) -> Result<(), ServiceError> {
        run("systemd", "systemctl", &["start", SERVICE]).map(drop)
    }

    fn stop(&self) -> Result<(), ServiceError> {
        run("systemd", "systemctl", &["stop", SERVICE]).map(drop)
    }

    fn restart(&self) -> Result<(), ServiceError> {
        run("systemd", "systemctl", &["restart", SERVICE]).map(drop)
    }

    fn status(&self) -> Result<State, ServiceError> {
        let out = run(
            "systemd",
            "systemctl",
            &["show", SERVICE, "--property=ActiveState,MainPID"],
        )?;
        Ok(parse_show(&out))
    }
}

/// Reads `ActiveState=` and `MainPID=` from `systemctl show`.
fn parse_show(text: &str) -> State {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    match value("ActiveState") {
        Some("active" | "activating" | "reloading" | "deactivating") => State::Running {
            pid: value("MainPID")
                .and_then(|p| p.parse().ok())
                .filter(|&p| p != 0),
        },
        Some("failed") => State::Dead,
        _ => State::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_systemctl_show() {
        assert_eq!(
            parse_show("ActiveState=active\nMainPID=4242\n"),
            State::Running { pid: Some(4242) }
        );
        assert_eq!(
            parse_show("MainPID=0\nActiveState=inactive\n"),
            State::Stopped
        );
        assert_eq!(parse_show("ActiveState=failed\nMainPID=0\n"), State::Dead);
    }
}
