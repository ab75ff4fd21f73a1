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

/// Default config path of a script install.
pub const DEFAULT_CONFIG: &str = tasknode_protocol::layout::SCRIPT_CONFIG;

/// The root prefix for host files: `TASKNODE_ROOT`, or `/`.
pub fn root() -> std::path::PathBuf {
    std::env::var_os(ROOT).map_or_else(|| "/".into(), Into::into)
}
