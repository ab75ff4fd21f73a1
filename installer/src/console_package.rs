//! The tasknode-console package: an RPM for each dist rpm/targets.toml marks `console = true`
//! and a .deb, built the way the agent's are (the rpm crate; cargo-deb from console/Cargo.toml's
//! metadata). Each holds the static musl console (one binary for glibc 2.17 through Debian 12),
//! a sandboxed systemd unit that runs it as the system user tasknode-console, and its settings
//! in /etc/tasknode-console/console.env, a config file upgrades keep. Templates are under
//! templates/console/. Upgrades restart the service; erasing keeps the data and the user.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::deb::{DebPackage, DebTexts, Staged};
use crate::error::BuildError;
use tasknode_render::arch::Arch;

/// The console is packaged for x86_64 alone.
const RUST_TARGET: &str = Arch::X86_64.rust_target();
use crate::rpm_build::{self, RpmPackage, text};
use crate::rpm_package::RpmError;
use crate::rpm_payload::Unsealed;
use crate::target::{RpmTarget, Version};
use tasknode_render::templates::{self, Templates};

pub const PACKAGE: &str = "tasknode-console";
/// The system user the service runs as; it owns [`STATE_DIR`].
pub const USER: &str = "tasknode-console";
pub const BIN: &str = "/usr/bin/tasknode-console";
pub const SERVICE: &str = "tasknode-console.service";
pub const RPM_UNIT: &str = "/usr/lib/systemd/system/tasknode-console.service";
pub const DEB_UNIT: &str = "/lib/systemd/system/tasknode-console.service";
pub const CONFIG_DIR: &str = "/etc/tasknode-console";
/// The service's EnvironmentFile (the unit template names it too).
pub const CONFIG: &str = "/etc/tasknode-console/console.env";
/// The console's data directory (the unit's StateDirectory; the root default of `--data`).
pub const STATE_DIR: &str = "/var/lib/tasknode-console";
/// Where the .deb's rendered inputs go, relative to the workspace (console/Cargo.toml names them).
pub const STAGING: &str = "target/tasknode-dist/console-deb";
const SUMMARY: &str = "tasknode console: control plane of tasknode execution nodes";

#[derive(Serialize)]
struct ScriptContext<'a> {
    user: &'a str,
    gecos: &'a str,
    state_dir: &'a str,
    config: &'a str,
    service: &'a str,
    name: &'a str,
    package: &'a str,
}

fn script_context() -> ScriptContext<'static> {
    ScriptContext {
        user: USER,
        gecos: "tasknode console",
        state_dir: STATE_DIR,
        config: CONFIG,
        service: SERVICE,
        name: PACKAGE,
        package: PACKAGE,
    }
}

/// NAME-VERSION-RELEASE.ARCH.rpm.
pub fn rpm_file_name(version: &Version, target: &RpmTarget, arch: Arch) -> String {
    format!(
        "{PACKAGE}-{version}-{release}.{arch}.rpm",
        release = target.release,
        arch = arch.uname()
    )
}

/// The .deb's file name for `version`.
pub fn deb_file_name(version: &Version) -> String {
    format!("{PACKAGE}_{version}-1_amd64.deb")
}

/// Compiles the static console in `workspace` and returns the path of the binary.
pub fn compile(workspace: &Path) -> Result<PathBuf, BuildError> {
    crate::release::inputs::cargo_build(
        workspace,
        &crate::release::inputs::CargoBuild {
            package: PACKAGE,
            profile: "release",
            target: RUST_TARGET,
            env: &[],
            what: "the console",
            needs: "musl-tools",
        },
    )
}

/// Reads the console at `path` and checks it is an x86_64 ELF executable with no program
/// interpreter: statically linked, so it runs on el7's glibc 2.17 as on Debian 12.
pub fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    let bad = |why: String| BuildError::Console {
        path: path.to_owned(),
        why,
    };
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    match static_x86_64(&bytes) {
        Ok(()) => Ok(bytes),
        Err(why) => Err(bad(format!(
            "{why}; build it with `cargo build --release --target {RUST_TARGET} -p {PACKAGE}`"
        ))),
    }
}

/// Why `elf` is not a statically linked x86_64 ELF executable, if it is not.
fn static_x86_64(elf: &[u8]) -> Result<(), &'static str> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit, little-endian, machine 62 (x86-64).
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") || u16_at(18) != Some(62) {
        return Err("not an x86_64 ELF executable");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("a truncated ELF header");
    };
    let phoff = usize::try_from(phoff).map_err(|_| "a program header table out of range")?;
    for i in 0..usize::from(phnum) {
        let at = phoff
            .checked_add(i * usize::from(phentsize))
            .ok_or("a program header table out of range")?;
        match u32_at(at) {
            Some(PT_INTERP) => {
                return Err(
                    "it is dynamically linked (it names a program interpreter), so it would need this build host's libc",
                );
            }
            Some(_) => {}
            None => return Err("a truncated program header table"),
        }
    }
    Ok(())
}

/// What one console RPM is built from.
#[derive(Debug)]
pub struct RpmInputs<'a> {
    pub target: &'a RpmTarget,
    pub version: &'a Version,
    pub arch: Arch,
    pub console: &'a [u8],
    pub source_date: u32,
}

/// The console RPM for one dist, to be sealed (compressed and signed) by
/// [`crate::rpm_payload::seal_all`] with the release's other RPMs.
pub fn unsealed_rpm(t: &Templates, inputs: &RpmInputs<'_>) -> Result<Unsealed, RpmError> {
    let target = inputs.target;
    let ctx = script_context();
    let pre = t.render(templates::CONSOLE_RPM_PRE, &ctx)?;
    let post = t.render(templates::CONSOLE_RPM_POST, &ctx)?;
    let preun = t.render(templates::CONSOLE_RPM_PREUN, &ctx)?;
    let postun = t.render(templates::CONSOLE_RPM_POSTUN, &ctx)?;
    let unit = t.render(templates::CONSOLE_UNIT, &ctx)?;
    let env = t.render(templates::CONSOLE_ENV, &ctx)?;
    let info = rpm_build::TextContext {
        version: inputs.version.as_str(),
        dist: &target.description,
    };
    let entries = vec![
        rpm_build::file(
            inputs.console,
            rpm::FileOptions::new(BIN).permissions(0o755),
        ),
        rpm_build::file(unit, rpm::FileOptions::new(RPM_UNIT).permissions(0o644)),
        rpm_build::dir(rpm::FileOptions::dir(CONFIG_DIR).permissions(0o755)),
        // root's alone: it may hold the PostgreSQL password, and systemd reads it as root.
        rpm_build::file(
            env,
            rpm::FileOptions::new(CONFIG)
                .permissions(0o600)
                .config()
                .noreplace(),
        ),
        // systemd before 235 (el7's 219) knows no StateDirectory=: the package makes it.
        rpm_build::dir(
            rpm::FileOptions::dir(STATE_DIR)
                .user(USER)
                .group(USER)
                .permissions(0o700),
        ),
    ];
    rpm_build::unsealed(RpmPackage {
        name: PACKAGE,
        target,
        version: inputs.version,
        arch: inputs.arch,
        summary: SUMMARY,
        description: &text(t, templates::CONSOLE_RPM_DESCRIPTION, &info)?,
        changelog: text(t, templates::CONSOLE_RPM_CHANGELOG, &info)?,
        entries,
        scripts: [pre, post, preun, postun],
        service_tool: "systemd",
        source_date: inputs.source_date,
        what: format!("{} ({PACKAGE})", target.dist),
    })
}

/// Builds the console .deb of `version` with cargo-deb in `workspace` and returns its bytes.
pub fn build_deb(
    t: &Templates,
    console: &[u8],
    version: &Version,
    source_date: u32,
    workspace: &Path,
) -> Result<Vec<u8>, BuildError> {
    let workspace = &crate::deb::workspace_root(workspace)?;
    let ctx = script_context();
    let texts = crate::deb::texts(
        t,
        &DebTexts {
            changelog: templates::CONSOLE_DEB_CHANGELOG,
            postinst: templates::CONSOLE_DEB_POSTINST,
            prerm: templates::CONSOLE_DEB_PRERM,
            postrm: templates::CONSOLE_DEB_POSTRM,
        },
        &ctx,
        version,
        source_date,
    )?;
    let mut files = vec![
        (SERVICE, t.render(templates::CONSOLE_UNIT, &ctx)?, 0o644),
        (
            "console.env",
            t.render(templates::CONSOLE_ENV, &ctx)?,
            0o600,
        ),
    ];
    files.extend(texts);
    let mut staged: Vec<Staged<'_>> = files
        .iter()
        .map(|(name, text, mode)| Staged::new(*name, text.as_bytes(), *mode))
        .collect();
    staged.push(Staged::new(PACKAGE, console, 0o755));
    crate::deb::pack(
        workspace,
        &DebPackage {
            package: PACKAGE,
            staging: STAGING,
            target: RUST_TARGET,
            file_name: deb_file_name(version),
            files: &staged,
        },
        version,
        source_date,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An ELF header with one program header of type `p_type`.
    fn elf(p_type: u32) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[18] = 62;
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        e[64..68].copy_from_slice(&p_type.to_le_bytes());
        e
    }

    #[test]
    fn only_a_static_x86_64_elf_is_packaged() {
        static_x86_64(&elf(1)).unwrap();
        let e = static_x86_64(&elf(3)).unwrap_err();
        assert!(e.contains("dynamically linked"), "{e}");
        let mut arm = elf(1);
        arm[18] = 183;
        assert!(static_x86_64(&arm).is_err());
        assert!(static_x86_64(b"#!/bin/sh\n").is_err());
        // A header table past the end is refused, not read out of bounds.
        let mut cut = elf(1);
        cut.truncate(66);
        assert_eq!(static_x86_64(&cut), Err("a truncated program header table"));
    }

    #[test]
    fn the_deb_assets_go_where_the_rpm_puts_them() {
        let manifest: toml::Value =
            toml::from_str(include_str!("../../console/Cargo.toml")).unwrap();
        let assets = manifest["package"]["metadata"]["deb"]["assets"]
            .as_array()
            .unwrap();
        let places: Vec<String> = assets
            .iter()
            .map(|a| format!("/{}", a[1].as_str().unwrap()))
            .collect();
        assert_eq!(places, [BIN, DEB_UNIT, CONFIG]);
        for a in assets {
            assert!(
                a[0].as_str()
                    .unwrap()
                    .starts_with(&format!("../{STAGING}/"))
            );
        }
    }

    #[test]
    fn the_unit_reads_the_packaged_settings_as_the_packaged_user() {
        let t = Templates::embedded().unwrap();
        let unit = t
            .render(templates::CONSOLE_UNIT, &script_context())
            .unwrap();
        for line in [
            format!("User={USER}"),
            format!("EnvironmentFile={CONFIG}"),
            format!("ExecStart={BIN} serve $TASKNODE_CONSOLE_OPTIONS"),
            "StateDirectory=tasknode-console".to_owned(),
            "CapabilityBoundingSet=".to_owned(),
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} in {unit}");
        }
        let env = t.render(templates::CONSOLE_ENV, &script_context()).unwrap();
        assert!(
            env.lines()
                .any(|l| l == format!("TASKNODE_DATA={STATE_DIR}")),
            "{env}"
        );
    }
}
