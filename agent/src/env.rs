//! Every environment variable the agent reads, in one place.

/// Path of the agent config (same as `--config`).
pub const CONFIG: &str = "TASKNODE_CONFIG";
/// Root prefix for the host files the agent reads (`/sys/class/dmi/id/product_uuid`,
/// `/proc/meminfo`, cgroup limits, `/etc/os-release`). Tests point it at a throwaway tree.
pub const ROOT: &str = "TASKNODE_ROOT";
/// Log filter for agent.log, e.g. `info` or `tasknode=debug`.
pub const LOG: &str = "TASKNODE_LOG";
/// Set by systemd for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Set by systemd for every unit it starts: the agent runs its tasks in cgroups of their own
/// only under systemd (see [`crate::tasks::contain`]).
pub const INVOCATION_ID: &str = "INVOCATION_ID";
/// Read when the agent is *built*, never when it runs: a test build made with
/// `TASKNODE_TEST_EXIT_AFTER_SECS=N` exits 1 N seconds after `tasknode run` starts (a release
/// that passes its trial and then dies). Release builds leave it unset.
pub const TEST_EXIT_AFTER_SECS: Option<&str> = option_env!("TASKNODE_TEST_EXIT_AFTER_SECS");

/// Default config path of a script install.
pub const DEFAULT_CONFIG: &str = tasknode_protocol::layout::SCRIPT_CONFIG;

/// The root prefix for host files: `TASKNODE_ROOT`, or `/`.
pub fn root() -> std::path::PathBuf {
    std::env::var_os(ROOT).map_or_else(|| "/".into(), Into::into)
}
