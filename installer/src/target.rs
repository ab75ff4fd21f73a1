//! Release targets: the four RPM dists (facts in rpm/targets.toml, their architectures
//! included) and the .deb, and the version strings a release may carry.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use tasknode_render::arch::Arch;
use tasknode_render::dist::Dist;

/// rpm/targets.toml, embedded.
const TARGETS_TOML: &str = include_str!("../../rpm/targets.toml");

/// Who every package's changelog and Packager (RPM) or Maintainer (.deb) field names.
pub const PACKAGER: &str = "tasknode release <release@tasknode.invalid>";

/// What `build --targets` names: a dist's RPMs (and yum repositories), or the .deb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Rpm(Dist),
    Deb,
}

impl Target {
    /// Every target `build` knows, in build order.
    pub const ALL: [Target; 5] = [
        Target::Rpm(Dist::El6),
        Target::Rpm(Dist::El7),
        Target::Rpm(Dist::Al7),
        Target::Rpm(Dist::Al8),
        Target::Deb,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Target::Rpm(dist) => dist.name(),
            Target::Deb => "deb",
        }
    }

    /// The dist, for an RPM target.
    pub const fn dist(self) -> Option<Dist> {
        match self {
            Target::Rpm(dist) => Some(dist),
            Target::Deb => None,
        }
    }

    /// `el6, el7, al7, al8, deb`, for messages that list the choices.
    fn names() -> String {
        Target::ALL.map(Target::name).join(", ")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| TargetError::Unknown(s.to_owned()))
    }
}

/// The init system a package installs its service for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Systemd,
    Sysv,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Sysv => "sysv",
        }
    }
}

/// One RPM dist, as rpm/targets.toml describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmTarget {
    /// Filled in from the table's key by [`rpm_targets`].
    #[serde(skip, default = "placeholder_dist")]
    pub dist: Dist,
    pub description: String,
    /// The RPM release, e.g. `1.el6`.
    pub release: String,
    /// The architectures it is built for.
    pub arches: Vec<Arch>,
    pub init: Init,
    /// Capabilities the package requires from the base system.
    pub requires: Vec<String>,
    /// Where bash completions go on this dist.
    pub bash_completions: String,
    /// Whether the tasknode-console package is built for this dist.
    #[serde(default)]
    pub console: bool,
}

fn placeholder_dist() -> Dist {
    Dist::El6
}

/// The RPM dists' facts, by dist.
pub fn rpm_targets() -> Result<BTreeMap<Dist, RpmTarget>, TargetError> {
    let mut targets: BTreeMap<Dist, RpmTarget> =
        toml::from_str(TARGETS_TOML).map_err(|e| TargetError::Facts(e.to_string()))?;
    for (dist, t) in targets.iter_mut() {
        t.dist = *dist;
    }
    Ok(targets)
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("rpm/targets.toml is not valid: {0}")]
    Facts(String),
    #[error("--targets: {0:?} is not a target; choose from {targets}", targets = Target::names())]
    Unknown(String),
    #[error(
        "--targets is empty; choose from {}, or none (the agent and its update manifest only)",
        Target::names()
    )]
    Empty,
    #[error("--version: {value:?} {why}")]
    Version { value: String, why: String },
}

/// Parses `--targets el6,el7,...`: known names, each once, in the order of [`Target::ALL`].
pub fn parse_targets(list: &str) -> Result<Vec<Target>, TargetError> {
    if list.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let known: Target = name.parse()?;
        if !chosen.contains(&known) {
            chosen.push(known);
        }
    }
    if chosen.is_empty() {
        return Err(TargetError::Empty);
    }
    chosen.sort_by_key(|t| Target::ALL.iter().position(|a| a == t));
    Ok(chosen)
}

/// A release version: dot-separated numbers without leading zeros (`1.4.0`), at most four
/// parts. rpm, dpkg and the update manifests all order these the same way; `~`, `-`, letters
/// (`1.0rc1` sorts *after* `1.0` in rpm) and `1.01` (equal to `1.1` in rpm) are refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    parts: Vec<u64>,
    text: String,
}

impl Version {
    pub fn parse(value: &str) -> Result<Version, TargetError> {
        let bad = |why: &str| TargetError::Version {
            value: value.to_owned(),
            why: why.to_owned(),
        };
        if value.is_empty() {
            return Err(bad("is empty; use numbers separated by dots, e.g. 1.4.0"));
        }
        if value.contains('~') {
            return Err(bad(
                "contains '~', which rpm 4.8 (CentOS 6) cannot order; use numbers separated by dots, e.g. 1.4.0",
            ));
        }
        let mut parts = Vec::new();
        for part in value.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    "is not numbers separated by dots; pre-release tags and letters sort differently in rpm, dpkg and semver, so use e.g. 1.4.0",
                ));
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err(bad(
                    "has a part with a leading zero, which rpm reads as the same version without it; drop the zero",
                ));
            }
            parts.push(
                part.parse::<u64>()
                    .map_err(|_| bad("has a part too large to be a number"))?,
            );
        }
        if parts.len() > 4 {
            return Err(bad("has more than four parts; use e.g. 1.4.0"));
        }
        Ok(Version {
            parts,
            text: value.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_facts_name_four_dists_with_their_release_and_init() {
        let t = rpm_targets().unwrap();
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), Dist::ALL);
        assert_eq!(t[&Dist::El6].init, Init::Sysv);
        assert_eq!(t[&Dist::El6].release, "1.el6");
        assert!(t[&Dist::El6].requires.iter().any(|r| r == "chkconfig"));
        for d in [Dist::El7, Dist::Al7, Dist::Al8] {
            assert_eq!(t[&d].dist, d);
            assert_eq!(t[&d].init, Init::Systemd);
            assert_eq!(t[&d].release, format!("1.{d}"));
        }
        assert_eq!(t[&Dist::El6].arches, [Arch::X86_64]);
        assert_eq!(t[&Dist::Al7].arches, [Arch::X86_64]);
        for d in [Dist::El7, Dist::Al8] {
            assert_eq!(t[&d].arches, [Arch::X86_64, Arch::Aarch64]);
        }
    }

    #[test]
    fn targets_are_checked_deduplicated_and_ordered() {
        assert_eq!(
            parse_targets("deb,al8,el6,el6").unwrap(),
            [Target::Rpm(Dist::El6), Target::Rpm(Dist::Al8), Target::Deb]
        );
        for t in Target::ALL {
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        let e = parse_targets("el6,el9").unwrap_err().to_string();
        assert!(
            e.contains("\"el9\"") && e.contains("el6, el7, al7, al8, deb"),
            "{e}"
        );
        assert!(matches!(parse_targets(" , "), Err(TargetError::Empty)));
        assert_eq!(parse_targets("none").unwrap(), Vec::<Target>::new());
    }

    #[test]
    fn versions_rpm_cannot_order_or_would_sort_wrongly_are_refused() {
        for ok in ["1", "1.4.0", "10.0.1.2", "0.1.0"] {
            Version::parse(ok).unwrap();
        }
        for (bad, says) in [
            ("1.0~rc1", "'~'"),
            ("1.0-rc1", "numbers separated by dots"),
            ("1.0rc1", "numbers separated by dots"),
            ("1.01", "leading zero"),
            ("1..2", "numbers separated by dots"),
            ("", "empty"),
            ("1.2.3.4.5", "four parts"),
            ("v1.2", "numbers separated by dots"),
        ] {
            let e = Version::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--version:") && e.contains(says),
                "{bad}: {e}"
            );
        }
        assert!(Version::parse("1.10.0").unwrap() > Version::parse("1.9.9").unwrap());
    }
}
