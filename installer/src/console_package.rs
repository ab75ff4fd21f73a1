//! The tasknode-console package: an RPM for each dist rpm/targets.toml marks `console = true`
//! and a .deb, built the way the agent's are (the rpm crate; cargo-deb from console/Cargo.toml's
//! metadata). Each holds the static musl console (one binary for glibc 2.17 through Debian 12),
//! a sandboxed systemd unit that runs it as the system user tasknode-console, and its settings
//! in /etc/tasknode-console/console.env, a config file upgrades keep. Templates are under
//! templates/console/. Upgrades restart the service; erasing keeps the data and the user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::arch::Arch;
use crate::error::BuildError;

/// The console is packaged for x86_64 alone.
const RUST_TARGET: &str = Arch::X86_64.rust_target();
use crate::rpm_package::RpmError;
use crate::target::{RpmTarget, Version};
use crate::templates::{self, Templates};

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
const DESCRIPTION: &str = "The tasknode console serves the HTTP API agents enroll and heartbeat
with, the web console and the admin CLI, over an embedded SQLite store
or a shared PostgreSQL. It runs as the system user tasknode-console
under a sandboxed systemd unit; its flags are in
/etc/tasknode-console/console.env.";
const LICENSE: &str = "Apache-2.0";
const URL: &str = "https://github.com/tasknode/tasknode";
const PACKAGER: &str = "tasknode release <release@tasknode.invalid>";
/// rpm 4.8 knows xz payloads; the rpm crate adds the other rpmlib() features it needs.
const PAYLOAD_IS_XZ: (&str, &str) = ("PayloadIsXz", "5.2-1");

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

#[derive(Serialize)]
struct ChangelogContext<'a> {
    version: &'a str,
    packager: &'a str,
    date: String,
}

/// NAME-VERSION-RELEASE.ARCH.rpm.
pub fn rpm_file_name(version: &Version, target: &RpmTarget, arch: &str) -> String {
    format!(
        "{PACKAGE}-{version}-{release}.{arch}.rpm",
        release = target.release
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
    pub arch: &'a str,
    pub console: &'a [u8],
    pub source_date: u32,
    pub signature_time: u32,
}

/// Builds and signs the console RPM for one dist and returns its bytes.
pub fn build_rpm(
    t: &Templates,
    inputs: &RpmInputs<'_>,
    signer: &rpm::signature::pgp::Signer,
) -> Result<Vec<u8>, RpmError> {
    let target = inputs.target;
    let err = |source| RpmError::Build {
        dist: format!("{} ({PACKAGE})", target.dist),
        source,
    };
    let ctx = script_context();
    let pre = t.render(templates::CONSOLE_RPM_PRE, &ctx)?;
    let post = t.render(templates::CONSOLE_RPM_POST, &ctx)?;
    let preun = t.render(templates::CONSOLE_RPM_PREUN, &ctx)?;
    let postun = t.render(templates::CONSOLE_RPM_POSTUN, &ctx)?;
    let unit = t.render(templates::CONSOLE_UNIT, &ctx)?;
    let env = t.render(templates::CONSOLE_ENV, &ctx)?;

    let config = rpm::BuildConfig::v4()
        .compression(rpm::CompressionWithLevel::Xz(2))
        .source_date(inputs.source_date)
        .reserved_space(None);
    let mut b = rpm::PackageBuilder::new(
        PACKAGE,
        inputs.version.as_str(),
        LICENSE,
        inputs.arch,
        SUMMARY,
    );
    b.using_config(config)
        .release(target.release.clone())
        .description(DESCRIPTION)
        .url(URL)
        .vendor("tasknode")
        .packager(PACKAGER)
        .group("System Environment/Daemons")
        .build_host("tasknode-dist")
        .add_changelog_entry(
            format!("{PACKAGER} - {}-{}", inputs.version, target.release),
            format!(
                "- tasknode-console {} for {}",
                inputs.version, target.description
            ),
            rpm::Timestamp(inputs.source_date),
        );
    b.with_file_contents(
        inputs.console.to_vec(),
        rpm::FileOptions::new(BIN).permissions(0o755),
    )
    .map_err(err)?;
    b.with_file_contents(
        unit.into_bytes(),
        rpm::FileOptions::new(RPM_UNIT).permissions(0o644),
    )
    .map_err(err)?;
    b.with_dir_entry(rpm::FileOptions::dir(CONFIG_DIR).permissions(0o755))
        .map_err(err)?;
    // root's alone: it may hold the PostgreSQL password, and systemd reads it as root.
    b.with_file_contents(
        env.into_bytes(),
        rpm::FileOptions::new(CONFIG)
            .permissions(0o600)
            .config()
            .noreplace(),
    )
    .map_err(err)?;
    // systemd before 235 (el7's 219) knows no StateDirectory=: the package makes it.
    b.with_dir_entry(
        rpm::FileOptions::dir(STATE_DIR)
            .user(USER)
            .group(USER)
            .permissions(0o700),
    )
    .map_err(err)?;
    b.pre_install_script(pre)
        .post_install_script(post)
        .pre_uninstall_script(preun)
        .post_uninstall_script(postun);
    b.requires(rpm::Dependency::rpmlib(PAYLOAD_IS_XZ.0, PAYLOAD_IS_XZ.1));
    for cap in &target.requires {
        b.requires(rpm::Dependency::any(cap.clone()));
    }
    b.requires(rpm::Dependency::script_pre("shadow-utils"));
    b.requires(rpm::Dependency::script_post("systemd"));
    b.requires(rpm::Dependency::script_preun("systemd"));
    b.requires(rpm::Dependency::script_postun("systemd"));

    let mut package = b.build().map_err(err)?;
    package
        .sign_with_timestamp(signer, rpm::Timestamp(inputs.signature_time))
        .map_err(err)?;
    let mut bytes = Vec::with_capacity(inputs.console.len() / 2);
    package.write(&mut bytes).map_err(err)?;
    Ok(bytes)
}

/// Builds the console .deb of `version` with cargo-deb in `workspace` and returns its bytes.
pub fn build_deb(
    t: &Templates,
    console: &[u8],
    version: &Version,
    source_date: u32,
    workspace: &Path,
) -> Result<Vec<u8>, BuildError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io { path, source }
    };
    let workspace = &crate::deb::workspace_root(workspace)?;
    // Builds share the staging directory console/Cargo.toml names: one at a time.
    let lock_path = workspace.join("target/tasknode-dist/console-deb.lock");
    fs::create_dir_all(workspace.join("target/tasknode-dist")).map_err(io(workspace))?;
    let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        BuildError::Io {
            path: lock_path.clone(),
            source: e.into(),
        }
    })?;
    let staging = workspace.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let scripts = staging.join("scripts");
    fs::create_dir_all(&scripts).map_err(io(&scripts))?;

    let ctx = script_context();
    let changelog = t.render(
        templates::CONSOLE_DEB_CHANGELOG,
        &ChangelogContext {
            version: version.as_str(),
            packager: PACKAGER,
            date: crate::deb::rfc2822(source_date),
        },
    )?;
    let files: [(&str, String, u32); 6] = [
        (SERVICE, t.render(templates::CONSOLE_UNIT, &ctx)?, 0o644),
        (
            "console.env",
            t.render(templates::CONSOLE_ENV, &ctx)?,
            0o600,
        ),
        ("changelog", changelog, 0o644),
        (
            "scripts/postinst",
            t.render(templates::CONSOLE_DEB_POSTINST, &ctx)?,
            0o755,
        ),
        (
            "scripts/prerm",
            t.render(templates::CONSOLE_DEB_PRERM, &ctx)?,
            0o755,
        ),
        (
            "scripts/postrm",
            t.render(templates::CONSOLE_DEB_POSTRM, &ctx)?,
            0o755,
        ),
    ];
    for (name, text, mode) in &files {
        write(&staging.join(name), text.as_bytes(), *mode)?;
    }
    write(&staging.join(PACKAGE), console, 0o755)?;

    let out = staging.join(deb_file_name(version));
    let status = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args([
            "deb",
            "-p",
            PACKAGE,
            "--no-build",
            "--no-strip",
            "--quiet",
            "--target",
            RUST_TARGET,
            "--deb-version",
        ])
        .arg(format!("{version}-1"))
        .arg("--output")
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", source_date.to_string())
        .env("CARGO_TARGET_DIR", workspace.join("target"))
        .current_dir(workspace)
        .output()
        .map_err(|e| BuildError::Tool {
            what: "cargo deb".to_owned(),
            why: e.to_string(),
        })?;
    if !status.status.success() {
        return Err(BuildError::Tool {
            what: format!("cargo deb -p {PACKAGE}"),
            why: format!(
                "failed ({}): {}",
                status.status,
                String::from_utf8_lossy(&status.stderr).trim()
            ),
        });
    }
    fs::read(&out).map_err(io(&out))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BuildError> {
    let err = |source| BuildError::Io {
        path: PathBuf::from(path),
        source,
    };
    fs::write(path, bytes).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
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
