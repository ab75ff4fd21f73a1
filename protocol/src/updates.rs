//! Releases, rollouts and agents' update reports, as they cross the wire.
//!
//! - `POST /api/v1/releases` (admin) publishes a signed manifest file ([`crate::manifest`]).
//! - `GET /api/v1/releases` lists them, `GET /api/v1/rollouts` shows each group's rollout.
//! - `POST /api/v1/rollouts` (admin) sets the version a group should run: all at once (a pin)
//!   or in batches that halt when updated agents fail.
//! - Heartbeat answers carry the version the agent should run; the agent fetches that version's
//!   manifest from `GET /api/v1/nodes/{id}/manifest/{version}` and reports what happened to
//!   `POST /api/v1/nodes/{id}/update`.

use serde::{Deserialize, Serialize};

use crate::manifest::{self, ManifestError};
use crate::validate::{self, FieldError};
use crate::wire::Validate;

/// One published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    pub version: String,
    pub channel: String,
    /// The targets it has binaries for.
    pub targets: Vec<String>,
    /// Whether a signed rollback manifest was published for it too.
    pub rollback: bool,
    /// RFC 3339, when the (newest) manifest was signed.
    pub issued_at: String,
    pub published_at: String,
    /// The key that signed it (hex).
    pub signed_by: String,
}

/// How many servers a staged rollout moves at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Batch {
    /// Every server at once.
    All,
    /// This many servers per batch.
    Count(u32),
    /// This percentage of the group's servers per batch (rounded up, at least one).
    Percent(u32),
}

impl Batch {
    /// Parses `all`, `5` or `25%`.
    pub fn parse(text: &str) -> Result<Batch, FieldError> {
        let t = text.trim();
        let bad = || {
            FieldError::new(
                "batch",
                format!(
                    "{t:?} is not a batch size; use a count like 5, a percentage like 25%, or all"
                ),
            )
        };
        if t == "all" {
            return Ok(Batch::All);
        }
        let batch = match t.strip_suffix('%') {
            Some(p) => Batch::Percent(p.parse().map_err(|_| bad())?),
            None => Batch::Count(t.parse().map_err(|_| bad())?),
        };
        batch.validate()?;
        Ok(batch)
    }

    fn validate(&self) -> Result<(), FieldError> {
        match *self {
            Batch::Count(0) => Err(FieldError::new("batch", "a batch of 0 servers never ends")),
            Batch::Percent(p) if p == 0 || p > 100 => Err(FieldError::new(
                "batch",
                format!("{p}% is not between 1% and 100%"),
            )),
            _ => Ok(()),
        }
    }

    /// How many of `total` servers one batch holds.
    pub fn size(&self, total: u32) -> u32 {
        match *self {
            Batch::All => total.max(1),
            Batch::Count(n) => n,
            Batch::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100).max(1) as u32,
        }
    }
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Batch::All => f.write_str("all"),
            Batch::Count(n) => write!(f, "{n}"),
            Batch::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `POST /api/v1/rollouts`: what a group should run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRollout {
    pub project: String,
    pub group: String,
    /// A published version.
    pub version: String,
    /// [`Batch::All`] pins the group at once.
    pub batch: Batch,
    /// How many agents may fail to update before the rollout halts. [default: 0]
    #[serde(default)]
    pub max_failures: u32,
}

impl Validate for SetRollout {
    fn validate(&self) -> Result<(), FieldError> {
        validate::name("project", &self.project)?;
        validate::name("group", &self.group)?;
        manifest::release_version("version", &self.version)
            .map_err(|e| FieldError::new("version", field_why(e)))?;
        self.batch.validate()
    }
}

fn field_why(e: ManifestError) -> String {
    match e {
        ManifestError::Field { why, .. } => why,
        other => other.to_string(),
    }
}

/// Where a group's rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Moving servers batch by batch.
    Running,
    /// Stopped because more agents failed than allowed; set a rollout again to go on.
    Halted,
    /// Every server of the group was offered the version.
    Done,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Halted => "halted",
            RolloutState::Done => "done",
        }
    }
}

/// One group's rollout, as `release list` and `GET /api/v1/rollouts` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub project: String,
    pub group: String,
    pub version: String,
    pub batch: Batch,
    pub max_failures: u32,
    pub state: RolloutState,
    /// Why it is in that state.
    pub reason: String,
    /// Servers in the group.
    pub servers: u32,
    /// Servers offered the version so far.
    pub admitted: u32,
    /// Servers that report running it.
    pub updated: u32,
    /// Servers that failed to update to it.
    pub failed: u32,
    pub started_at: String,
}

/// What an agent reports about an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// It began: the download and the trial of the new binary.
    Started,
    /// The new version runs and passed its health check.
    Updated,
    /// It did not happen, or was rolled back; the agent runs the version it ran before.
    Failed,
    /// The agent was installed by a package manager, which updates it instead.
    Managed,
}

impl UpdateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Started => "started",
            UpdateOutcome::Updated => "updated",
            UpdateOutcome::Failed => "failed",
            UpdateOutcome::Managed => "managed",
        }
    }
}

/// `POST /api/v1/nodes/{id}/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReport {
    /// The version the update was to.
    pub version: String,
    pub outcome: UpdateOutcome,
    /// For failures, why; for managed installs, the package manager (`rpm` or `deb`).
    #[serde(default)]
    pub reason: String,
}

impl Validate for UpdateReport {
    fn validate(&self) -> Result<(), FieldError> {
        validate::version("version", &self.version)?;
        if self.reason.len() > 2000 {
            return Err(FieldError::new("reason", "is longer than 2000 bytes"));
        }
        if self.reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(FieldError::new("reason", "contains a control character"));
        }
        Ok(())
    }
}

/// A server's update state, as `server list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateView {
    /// The version the console wants it to run.
    pub desired_version: String,
    /// `current`, `waiting` (not in a batch yet), `offered`, `updating`, `failed` or `managed`.
    pub state: String,
    /// What happened, and for managed installs the command to run.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batches_parse_and_round_up() {
        assert_eq!(Batch::parse("all").unwrap(), Batch::All);
        assert_eq!(Batch::parse("5").unwrap(), Batch::Count(5));
        assert_eq!(Batch::parse("25%").unwrap(), Batch::Percent(25));
        for bad in ["0", "0%", "101%", "-1", "x", "5 %", ""] {
            assert_eq!(Batch::parse(bad).unwrap_err().field, "batch", "{bad}");
        }
        assert_eq!(Batch::Percent(25).size(10), 3);
        assert_eq!(Batch::Percent(1).size(10), 1);
        assert_eq!(Batch::Count(4).size(2), 4);
        assert_eq!(Batch::All.size(7), 7);
        assert_eq!(
            serde_json::to_string(&Batch::Percent(25)).unwrap(),
            r#"{"kind":"percent","value":25}"#
        );
        assert_eq!(
            serde_json::from_str::<Batch>(r#"{"kind":"all"}"#).unwrap(),
            Batch::All
        );
    }

    #[test]
    fn reports_refuse_hostile_text() {
        let mut r = UpdateReport {
            version: "0.2.0".into(),
            outcome: UpdateOutcome::Failed,
            reason: "sha256 mismatch".into(),
        };
        r.validate().unwrap();
        r.reason = "a\u{1b}[2J".into();
        assert_eq!(r.validate().unwrap_err().field, "reason");
        r.reason = String::new();
        r.version = "1;rm".into();
        assert_eq!(r.validate().unwrap_err().field, "version");
    }
}
