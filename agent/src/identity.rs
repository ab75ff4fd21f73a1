//! This server's identity: its hostname (classic network) or its DMI product UUID (VPC), read
//! from sysfs with dmidecode as the fallback. Placeholder and malformed UUIDs are refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use tasknode_protocol::{Identity, validate};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("this host's name {0:?} cannot be used: {1}")]
    Hostname(String, String),
    #[error(
        "no DMI product UUID: {path}: {sysfs}; dmidecode: {dmidecode}. Run enroll as root, or use a classic group and --enable-uuid false"
    )]
    NoUuid {
        path: PathBuf,
        sysfs: String,
        dmidecode: String,
    },
    #[error("the DMI product UUID from {source_name} cannot identify this server: {message}")]
    BadUuid {
        source_name: String,
        message: String,
    },
}

/// The identity to enroll with.
pub fn detect(enable_uuid: bool, root: &Path) -> Result<Identity, IdentityError> {
    if enable_uuid {
        dmi_uuid(root).map(Identity::Uuid)
    } else {
        hostname().map(Identity::Hostname)
    }
}

/// The kernel's host name, validated and lowercased.
pub fn hostname() -> Result<String, IdentityError> {
    let raw = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    validate::hostname("hostname", &raw)
        .map_err(|e| IdentityError::Hostname(raw.clone(), e.message))
}

/// The DMI product UUID: `<root>/sys/class/dmi/id/product_uuid`, else `dmidecode -s system-uuid`.
pub fn dmi_uuid(root: &Path) -> Result<String, IdentityError> {
    let path = root.join("sys/class/dmi/id/product_uuid");
    let sysfs_err = match std::fs::read_to_string(&path) {
        Ok(text) => return check(text.trim(), &path.display().to_string()),
        Err(e) => e.to_string(),
    };
    match Command::new("dmidecode")
        .args(["-s", "system-uuid"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match parse_dmidecode(&text) {
                Some(v) => check(v, "dmidecode"),
                None => Err(IdentityError::NoUuid {
                    path,
                    sysfs: sysfs_err,
                    dmidecode: "printed no UUID".to_owned(),
                }),
            }
        }
        Ok(out) => Err(IdentityError::NoUuid {
            path,
            sysfs: sysfs_err,
            dmidecode: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
        Err(e) => Err(IdentityError::NoUuid {
            path,
            sysfs: sysfs_err,
            dmidecode: e.to_string(),
        }),
    }
}

fn check(value: &str, source_name: &str) -> Result<String, IdentityError> {
    validate::uuid("product_uuid", value).map_err(|e| IdentityError::BadUuid {
        source_name: source_name.to_owned(),
        message: e.message,
    })
}

/// The UUID line of `dmidecode -s system-uuid` output: the last line that is not a comment
/// (dmidecode prints `# ...` notes first on some firmware).
fn parse_dmidecode(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(uuid: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("product_uuid"), format!("{uuid}\n")).unwrap();
        dir
    }

    #[test]
    fn reads_and_normalizes_the_sysfs_uuid() {
        let root = root_with("4C4C4544-0042-3510-8051-B4C04F333232");
        assert_eq!(
            dmi_uuid(root.path()).unwrap(),
            "4c4c4544-0042-3510-8051-b4c04f333232"
        );
    }

    #[test]
    fn refuses_placeholder_and_malformed_uuids() {
        for bad in [
            "00000000-0000-0000-0000-000000000000",
            "Not Settable",
            "4c4c4544-0042",
        ] {
            let root = root_with(bad);
            let err = dmi_uuid(root.path()).unwrap_err();
            assert!(matches!(err, IdentityError::BadUuid { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn dmidecode_output_parsing_skips_comments() {
        let out = "# SMBIOS implementations newer than version 3.2.0 are not\n# fully supported.\n4C4C4544-0042-3510-8051-B4C04F333232\n";
        assert_eq!(
            parse_dmidecode(out),
            Some("4C4C4544-0042-3510-8051-B4C04F333232")
        );
        assert_eq!(parse_dmidecode("# only a note\n"), None);
    }

    #[test]
    fn this_hosts_name_is_valid() {
        hostname().unwrap();
    }
}
