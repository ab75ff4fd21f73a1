//! The RPM dists a release is built for and a yum .repo file points at (el6, el7, al7, al8):
//! one enum, so no other code spells their names. Their per-dist facts (release, init system,
//! architectures) are data, in rpm/targets.toml, which tasknode-dist reads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One RPM dist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    El6,
    El7,
    Al7,
    Al8,
}

impl Dist {
    /// Every dist, in build order.
    pub const ALL: [Dist; 4] = [Dist::El6, Dist::El7, Dist::Al7, Dist::Al8];

    /// Its name, as paths (`repo/el7/x86_64`), RPM releases and `--targets` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Dist::El6 => "el6",
            Dist::El7 => "el7",
            Dist::Al7 => "al7",
            Dist::Al8 => "al8",
        }
    }

    /// `el6, el7, al7, al8`, for messages that list the choices.
    pub fn names() -> String {
        Dist::ALL.map(Dist::name).join(", ")
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a dist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a dist; use one of {names}", names = Dist::names())]
pub struct UnknownDist(pub String);

impl FromStr for Dist {
    type Err = UnknownDist;

    fn from_str(s: &str) -> Result<Dist, UnknownDist> {
        Dist::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDist(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        for d in Dist::ALL {
            assert_eq!(d.to_string().parse::<Dist>().unwrap(), d);
        }
        assert_eq!(Dist::names(), "el6, el7, al7, al8");
        let e = "el9".parse::<Dist>().unwrap_err().to_string();
        assert!(e.contains("\"el9\"") && e.ends_with(&Dist::names()), "{e}");
        assert!("EL7".parse::<Dist>().is_err());
    }
}
