//! Every environment variable tasknode-console reads, in one place.

/// Console URL for the admin commands (same as `--console`).
pub const CONSOLE: &str = "TASKNODE_CONSOLE";
/// File holding the admin token for the admin commands (same as `--token-file`).
pub const TOKEN_FILE: &str = "TASKNODE_TOKEN_FILE";
/// The database `serve` uses (same as `--database`).
pub const DATABASE: &str = "TASKNODE_DATABASE";
/// The PostgreSQL password for `serve --database` (unless `--database-password-file` gives one).
pub const DATABASE_PASSWORD: &str = "TASKNODE_DATABASE_PASSWORD";
/// The console's data directory (same as `--data`).
pub const DATA: &str = "TASKNODE_DATA";
/// Log filter, e.g. `info` or `tasknode_console=debug` (falls back to `RUST_LOG`).
pub const LOG: &str = "TASKNODE_LOG";
/// Where the default data directory lives for non-root users (`$HOME/.local/share/...`).
pub const HOME: &str = "HOME";
