//! How a server is identified: by hostname on a classic network, by DMI product UUID on a VPC.
//! A resource group's network type decides which, and enrollment must present the same kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::{self, FieldError};

/// A resource group's network type, chosen when the group is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// Servers are identified by hostname; the console reads task logs from the agent.
    Classic,
    /// Servers are identified by DMI product UUID; agents push their logs.
    Vpc,
}

impl NetworkType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Classic => "classic",
            NetworkType::Vpc => "vpc",
        }
    }

    /// What identifies a server in a group of this type, for messages.
    pub fn identity_kind(self) -> &'static str {
        match self {
            NetworkType::Classic => "hostname",
            NetworkType::Vpc => "DMI UUID",
        }
    }

    /// The agent's `--enable-uuid` value that matches this network type.
    pub fn enable_uuid(self) -> bool {
        self == NetworkType::Vpc
    }

    /// Checks a server name for a group of this type and returns it normalized.
    pub fn parse_server_name(self, field: &str, value: &str) -> Result<String, FieldError> {
        match self {
            NetworkType::Classic => validate::hostname(field, value),
            NetworkType::Vpc => validate::uuid(field, value),
        }
    }
}

impl fmt::Display for NetworkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkType {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(NetworkType::Classic),
            "vpc" => Ok(NetworkType::Vpc),
            other => Err(FieldError::new(
                "network",
                format!(
                    "{} is not a network type; use classic (servers by hostname) or vpc (servers by DMI UUID)",
                    validate::show(other)
                ),
            )),
        }
    }
}

/// The identity an agent enrolls with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum Identity {
    Hostname(String),
    Uuid(String),
}

impl Identity {
    /// The network type whose groups identify servers this way.
    pub fn network(&self) -> NetworkType {
        match self {
            Identity::Hostname(_) => NetworkType::Classic,
            Identity::Uuid(_) => NetworkType::Vpc,
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Identity::Hostname(v) | Identity::Uuid(v) => v,
        }
    }

    /// Checks the value for its kind and returns the identity normalized (lowercased).
    pub fn normalized(&self, field: &str) -> Result<Identity, FieldError> {
        Ok(match self {
            Identity::Hostname(v) => Identity::Hostname(validate::hostname(field, v)?),
            Identity::Uuid(v) => Identity::Uuid(validate::uuid(field, v)?),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Hostname(v) => write!(f, "hostname {v}"),
            Identity::Uuid(v) => write!(f, "UUID {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_wire_form_is_kind_and_value() {
        let id = Identity::Uuid("4c4c4544-0042-3510-8051-b4c04f333232".into());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"uuid","value":"4c4c4544-0042-3510-8051-b4c04f333232"}"#
        );
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
        assert!(serde_json::from_str::<Identity>(r#"{"kind":"mac","value":"x"}"#).is_err());
    }

    #[test]
    fn network_type_decides_how_names_are_checked() {
        assert!(
            NetworkType::Classic
                .parse_server_name("name", "db-1")
                .is_ok()
        );
        assert!(NetworkType::Vpc.parse_server_name("name", "db-1").is_err());
        let err = "ipv6".parse::<NetworkType>().unwrap_err();
        assert!(err.message.contains("classic"));
    }
}
