//! Request and response bodies of the `/api/v1` HTTP API. Every request type refuses unknown
//! fields, so a typo in a client is an error rather than a silently ignored value.
//! docs/api.md describes each endpoint with these types.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, NetworkType};
use crate::validate::{self, FieldError};

/// Implemented by request bodies: checks every field and names the first one that is wrong.
pub trait Validate {
    /// Largest body the console reads for this request.
    const MAX_BODY: usize = crate::MAX_BODY_BYTES;

    fn validate(&self) -> Result<(), FieldError>;
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_field`, `unauthorized`, `not_found`, `conflict`,
    /// `method_not_allowed`, `payload_too_large`, `limit_reached`, `request_timeout`,
    /// `unsupported_media_type`, `internal`, `bad_gateway`.
    pub code: String,
    /// The request field at fault, where one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What went wrong and how to fix it, for a person.
    pub message: String,
}

/// `GET /api/v1/health`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub console_time_ms: i64,
}

/// What an agent knows about its host, sent at enrollment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    pub hostname: String,
    /// CPU cores available to the agent (fractional under a CPU quota).
    pub cpu_cores: f64,
    /// Memory available to the agent, in bytes.
    pub memory_bytes: u64,
    /// e.g. `CentOS release 6.10 (Final)`.
    pub os: String,
    /// e.g. `x86_64`.
    pub arch: String,
    /// e.g. `2.6.32-754.el6.x86_64`.
    pub kernel: String,
    pub agent_version: String,
}

/// Most memory a host may report: 1 PiB.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// Most tasks or free slots a heartbeat may report (the most tasks an agent may hold).
pub const MAX_REPORTED_TASKS: u32 = crate::tasks::MAX_HELD_TASKS as u32;

impl Validate for HostFacts {
    fn validate(&self) -> Result<(), FieldError> {
        validate::text("facts.hostname", &self.hostname)?;
        if !(self.cpu_cores.is_finite() && self.cpu_cores > 0.0 && self.cpu_cores <= 65_536.0) {
            return Err(FieldError::new(
                "facts.cpu_cores",
                "must be a number of cores above 0",
            ));
        }
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(FieldError::new(
                "facts.memory_bytes",
                format!(
                    "{} is not a memory size; it must be above 0 and at most {MAX_MEMORY_BYTES} (1 PiB)",
                    self.memory_bytes
                ),
            ));
        }
        validate::text("facts.os", &self.os)?;
        validate::text("facts.arch", &self.arch)?;
        validate::text("facts.kernel", &self.kernel)?;
        validate::version("facts.agent_version", &self.agent_version)
    }
}

/// `POST /api/v1/enroll`: an agent trades a credential for node credentials. The credential
/// is either a user's access key (`user_name` and `password`) or a one-time
/// `enrollment_token` from an install command, never both.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_token: Option<String>,
    pub identity: Identity,
    pub facts: HostFacts,
}

/// The credential of an [`EnrollRequest`], once checked.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    AccessKey {
        user_name: &'a str,
        password: &'a str,
    },
    Token(&'a str),
}

impl EnrollRequest {
    /// The one credential the request carries.
    pub fn credential(&self) -> Result<Credential<'_>, FieldError> {
        match (&self.user_name, &self.password, &self.enrollment_token) {
            (Some(user_name), Some(password), None) => Ok(Credential::AccessKey {
                user_name,
                password,
            }),
            (None, None, Some(token)) => Ok(Credential::Token(token)),
            (_, _, Some(_)) => Err(FieldError::new(
                "enrollment_token",
                "send either enrollment_token or user_name and password, not both",
            )),
            (None, _, None) => Err(FieldError::new(
                "user_name",
                "missing: send user_name and password, or an enrollment_token",
            )),
            (Some(_), None, None) => Err(FieldError::new("password", "missing")),
        }
    }
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("user_name", &self.user_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "enrollment_token",
                &self.enrollment_token.as_ref().map(|_| "<redacted>"),
            )
            .field("identity", &self.identity)
            .field("facts", &self.facts)
            .finish()
    }
}

impl Validate for EnrollRequest {
    fn validate(&self) -> Result<(), FieldError> {
        match self.credential()? {
            Credential::AccessKey {
                user_name,
                password,
            } => {
                validate::name("user_name", user_name)?;
                validate::password("password", password)?;
            }
            Credential::Token(token) => validate::enrollment_token("enrollment_token", token)?,
        }
        self.identity.normalized("identity.value")?;
        self.facts.validate()
    }
}

/// The answer to a successful enrollment. The secret is shown to the agent once; the console
/// keeps only its hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub node_id: String,
    pub node_secret: String,
    pub server_name: String,
    pub group: String,
    pub project: String,
    pub network: NetworkType,
    pub heartbeat_interval_secs: u64,
    pub console_time_ms: i64,
}

impl fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("node_id", &self.node_id)
            .field("node_secret", &"<redacted>")
            .field("server_name", &self.server_name)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/nodes/{node_id}/heartbeat`, authenticated by the node secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub agent_version: String,
    /// Console clock minus agent clock, as the agent last measured it (half the round trip
    /// taken off); absent until the agent has measured once.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    pub running_tasks: u32,
    pub free_slots: u32,
    /// The port of the agent's log service (classic servers); the console reads task logs
    /// there, at the address the heartbeat came from.
    #[serde(default)]
    pub log_port: Option<u16>,
}

/// Largest clock offset an agent may report: a year. Anything beyond is a broken clock or a
/// broken agent, and refusing it keeps every later computation in range.
pub const MAX_REPORTED_OFFSET_MS: i64 = 366 * 24 * 3600 * 1000;

impl Validate for HeartbeatRequest {
    fn validate(&self) -> Result<(), FieldError> {
        validate::version("agent_version", &self.agent_version)?;
        let max = u64::from(MAX_REPORTED_TASKS);
        validate::at_most("running_tasks", self.running_tasks.into(), max)?;
        validate::at_most("free_slots", self.free_slots.into(), max)?;
        if self.log_port == Some(0) {
            return Err(FieldError::new(
                "log_port",
                "0 is not a port; leave log_port out when the log service is off",
            ));
        }
        match self.clock_offset_ms {
            Some(o) if !(-MAX_REPORTED_OFFSET_MS..=MAX_REPORTED_OFFSET_MS).contains(&o) => {
                Err(FieldError::new(
                    "clock_offset_ms",
                    format!("{o} is beyond a year; the agent's clock is broken"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// What the console asks of an agent in a heartbeat answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Re-read configuration.
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub console_time_ms: i64,
    pub heartbeat_interval_secs: u64,
    /// The version the agent should run, once releases exist; `None` means "stay".
    #[serde(default)]
    pub desired_version: Option<String>,
    #[serde(default)]
    pub commands: Vec<AgentCommand>,
    /// The console's public log key (see [`crate::logtoken`]), which the agent's log service
    /// checks tokens with.
    #[serde(default)]
    pub log_key: Option<String>,
}

/// `POST /api/v1/nodes/{node_id}/shutdown`: the agent is stopping cleanly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    pub reason: String,
}

impl Validate for ShutdownRequest {
    fn validate(&self) -> Result<(), FieldError> {
        validate::text("reason", &self.reason)
    }
}

/// A server's state as the console sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    /// Added to a group, never enrolled.
    Pending,
    /// Heartbeating on time.
    Available,
    /// Heartbeats missing for less than the tolerance: still schedulable.
    Degraded,
    /// No heartbeat for the tolerance, or a clean agent shutdown.
    Stopped,
    /// The agent's clock is more than 120 s from the console's: no tasks until fixed.
    ClockSkew,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Pending => "pending",
            ServerStatus::Available => "available",
            ServerStatus::Degraded => "degraded",
            ServerStatus::Stopped => "stopped",
            ServerStatus::ClockSkew => "clock_skew",
        }
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /api/v1/nodes/{node_id}`: how the console sees the calling node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub server_name: String,
    pub group: String,
    pub project: String,
    pub status: ServerStatus,
    pub reason: String,
    /// The version the console wants this agent to run, when it wants another.
    #[serde(default)]
    pub desired_version: Option<String>,
}

// ---- admin API ----

/// `POST /api/v1/projects`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
}

impl Validate for CreateProject {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectView {
    pub name: String,
    pub created_at: String,
}

/// `POST /api/v1/users`: the console generates the password and returns it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    pub project: String,
}

impl Validate for CreateUser {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)?;
        validate::name("project", &self.project)
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedUser {
    pub user_name: String,
    pub password: String,
    pub project: String,
}

impl fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedUser")
            .field("user_name", &self.user_name)
            .field("password", &"<redacted>")
            .field("project", &self.project)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    pub user_name: String,
    pub project: String,
    pub created_at: String,
}

/// `POST /api/v1/groups`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
    pub project: String,
    pub network: NetworkType,
}

impl Validate for CreateGroup {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("name", &self.name)?;
        validate::name("project", &self.project)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    pub project: String,
    pub network: NetworkType,
    pub servers: u32,
    pub created_at: String,
}

/// `POST /api/v1/groups/rename`: give a group another name in its project. Its servers,
/// tasks, rollout and install commands stay with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameGroup {
    pub project: String,
    pub name: String,
    pub new_name: String,
}

impl Validate for RenameGroup {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        validate::name("name", &self.name)?;
        validate::name("new_name", &self.new_name)
    }
}

/// `POST /api/v1/groups/delete`: delete an empty group with its finished tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteGroup {
    pub project: String,
    pub name: String,
}

impl Validate for DeleteGroup {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        validate::name("name", &self.name)
    }
}

/// The answer to `POST /api/v1/groups/delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedGroupView {
    pub name: String,
    pub project: String,
    /// Ids of the finished tasks deleted with the group (their logs too), ascending.
    pub deleted_tasks: Vec<i64>,
}

/// Largest max concurrency an operator can set.
pub const MAX_CONFIGURED_CONCURRENCY: u32 = 1024;

/// `POST /api/v1/servers`: add a server (by hostname or UUID, as the group's network type
/// says) to a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    pub project: String,
    pub group: String,
    pub name: String,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}

impl Validate for AddServer {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        validate::name("group", &self.group)?;
        if self.name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        match self.max_concurrency {
            Some(n) if n == 0 || n > MAX_CONFIGURED_CONCURRENCY => Err(FieldError::new(
                "max_concurrency",
                format!("must be between 1 and {MAX_CONFIGURED_CONCURRENCY}, got {n}"),
            )),
            _ => Ok(()),
        }
    }
}

/// What a removal does with the tasks the server holds (assigned or running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveMode {
    /// Refuse while it holds tasks (or is the last server of a group with queued tasks).
    #[default]
    Refuse,
    /// Hand it no new tasks, and remove it once the ones it holds have finished.
    Drain,
    /// Remove it now: tasks it has not started are queued again for its group, running ones
    /// are cancelled with a reason.
    Force,
}

impl fmt::Display for RemoveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoveMode::Refuse => "refuse",
            RemoveMode::Drain => "drain",
            RemoveMode::Force => "force",
        })
    }
}

/// Longest server name a removal or move accepts (a host name is at most 253 characters).
const MAX_SERVER_NAME: usize = 253;

fn server_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > MAX_SERVER_NAME || name.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!(
                "must be the server's host name or UUID as `server list` shows it (1 to {MAX_SERVER_NAME} characters)"
            ),
        ));
    }
    Ok(())
}

/// `POST /api/v1/servers/remove`: remove a server from its group (see [`RemoveMode`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveServer {
    pub project: String,
    pub name: String,
    #[serde(default)]
    pub mode: RemoveMode,
}

impl Validate for RemoveServer {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        server_name("name", &self.name)
    }
}

/// What a removal did: `removed`, or `draining` (it is removed when the tasks it holds finish;
/// asking again with `drain` removes it once they have).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedServerView {
    pub name: String,
    pub group: String,
    pub project: String,
    /// `removed` or `draining`.
    pub state: String,
    /// Tasks it still holds (draining).
    #[serde(default)]
    pub holding: Vec<i64>,
    /// Running tasks cancelled (force).
    #[serde(default)]
    pub cancelled: Vec<i64>,
    /// Tasks it had not started, queued again for its group (force).
    #[serde(default)]
    pub requeued: Vec<i64>,
    /// Tasks queued to its group that now have no server to run them.
    #[serde(default)]
    pub stranded: u64,
    /// What happened, in a sentence, with what to do next.
    pub message: String,
}

/// `POST /api/v1/nodes/{node_id}/leave`: the node's agent asks the console to remove the
/// server it is enrolled as (install.sh --uninstall does), and no other.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    #[serde(default)]
    pub mode: RemoveMode,
}

impl Validate for LeaveRequest {
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// `POST /api/v1/servers/move`: move a server to another group of its project.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveServer {
    pub project: String,
    pub name: String,
    /// The group it moves to.
    pub group: String,
}

impl Validate for MoveServer {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        server_name("name", &self.name)?;
        validate::name("group", &self.group)
    }
}

/// One server as `GET /api/v1/servers` and `server list --json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    pub name: String,
    pub group: String,
    pub project: String,
    pub network: NetworkType,
    pub status: ServerStatus,
    /// Why the server is in this state, and what to do about it.
    pub reason: String,
    /// RFC 3339, UTC.
    pub last_heartbeat: Option<String>,
    pub version: Option<String>,
    /// The configured value, or the one computed from the reported CPU and memory; `None`
    /// until an agent has reported its size.
    pub max_concurrency: Option<u32>,
    /// `configured` or `computed`.
    pub max_concurrency_source: Option<String>,
    pub clock_offset_ms: Option<i64>,
    pub running_tasks: u32,
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub enrolled_at: Option<String>,
    /// Where the server stands with the version its group's rollout wants; `None` when the
    /// group has no rollout.
    #[serde(default)]
    pub update: Option<crate::updates::UpdateView>,
}

/// Longest life of an install command's enrollment token.
pub const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// `POST /api/v1/install-commands`: a one-time install link for a group, rendered for a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInstallCommand {
    pub project: String,
    pub group: String,
    /// The user the install script is rendered for.
    pub user_name: String,
    /// How long the link works; by default 24 hours, at most 7 days.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

impl Validate for CreateInstallCommand {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        validate::name("group", &self.group)?;
        validate::name("user_name", &self.user_name)?;
        match self.ttl_secs {
            Some(t) if t == 0 || t > MAX_TOKEN_TTL_SECS => Err(FieldError::new(
                "ttl_secs",
                format!("must be between 1 and {MAX_TOKEN_TTL_SECS} seconds (7 days), got {t}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The answer to [`CreateInstallCommand`]. The link carries the token: it is shown once.
#[derive(Clone, Serialize, Deserialize)]
pub struct InstallCommand {
    /// The command to run as root on the server: curl fetches the script (reading the link
    /// from standard input, so the token is on no command line) and pipes it to `sh`. With a
    /// console CA, it first downloads the CA and checks it against `ca_sha256`.
    pub command: String,
    /// The same with GNU wget, for hosts without curl.
    pub wget_command: String,
    /// The install script's URL (it carries the one-time token).
    pub url: String,
    /// Where the console's CA certificate is served, when the console has its own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_url: Option<String>,
    /// SHA-256 of that CA certificate (PEM), which the command checks before trusting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    pub group: String,
    pub project: String,
    pub user_name: String,
    pub network: NetworkType,
    /// The `enable_uuid` the script enrolls with (true for a VPC group).
    pub enable_uuid: bool,
    /// RFC 3339: after this the link no longer works.
    pub expires_at: String,
}

/// `GET /api/v1/yum/{dist}`: how a host points yum at this console's signed repository.
/// Everything in it is public; it carries no credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YumSetup {
    /// `el6`, `el7`, `al7` or `al8`.
    pub dist: String,
    /// The .repo file to fetch.
    pub repo_url: String,
    /// Where the host keeps it.
    pub repo_file: String,
    /// With the console's own CA: where it is served, its SHA-256 (PEM), and where the host
    /// keeps it for yum (the .repo's `sslcacert`) and for `tasknode enroll --console-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The command to run as root: with a CA it downloads the CA without checking the server,
    /// checks the file against `ca_sha256`, and fetches the .repo trusting only that CA.
    pub command: String,
}

impl fmt::Debug for InstallCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallCommand")
            .field("group", &self.group)
            .field("user_name", &self.user_name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_takes_exactly_one_credential() {
        let req = |body: &str| serde_json::from_str::<EnrollRequest>(body).unwrap();
        let facts = r#""facts":{"hostname":"h","cpu_cores":1.0,"memory_bytes":1,"os":"o","arch":"a","kernel":"k","agent_version":"0.1.0"}"#;
        let id = r#""identity":{"kind":"hostname","value":"h"}"#;
        let token = format!("tn_{}", "a".repeat(43));
        let both = req(&format!(
            r#"{{"user_name":"u","password":"p12345678","enrollment_token":"{token}",{id},{facts}}}"#
        ));
        assert_eq!(both.validate().unwrap_err().field, "enrollment_token");
        let none = req(&format!("{{{id},{facts}}}"));
        assert_eq!(none.validate().unwrap_err().field, "user_name");
        let half = req(&format!(r#"{{"user_name":"u",{id},{facts}}}"#));
        assert_eq!(half.validate().unwrap_err().field, "password");
        let ok = req(&format!(r#"{{"enrollment_token":"{token}",{id},{facts}}}"#));
        ok.validate().unwrap();
        assert!(!format!("{ok:?}").contains(&token));
        let bad = req(&format!(
            r#"{{"enrollment_token":"tn_$(id)",{id},{facts}}}"#
        ));
        assert_eq!(bad.validate().unwrap_err().field, "enrollment_token");
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let err = serde_json::from_str::<CreateGroup>(
            r#"{"name":"g","project":"p","network":"vpc","admin":true}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `admin`"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let created = CreatedUser {
            user_name: "etl".into(),
            password: "hunter2hunter2".into(),
            project: "default".into(),
        };
        assert!(!format!("{created:?}").contains("hunter2"));
    }

    #[test]
    fn add_server_bounds_max_concurrency() {
        let mut add = AddServer {
            project: "default".into(),
            group: "g".into(),
            name: "h".into(),
            max_concurrency: Some(0),
        };
        assert_eq!(add.validate().unwrap_err().field, "max_concurrency");
        add.max_concurrency = Some(8);
        add.validate().unwrap();
    }
}
