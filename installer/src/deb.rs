//! The .deb, built by cargo-deb from `[package.metadata.deb]` in agent/Cargo.toml. That
//! metadata names files under `target/tasknode-dist/deb/`, which this module renders first
//! from the same templates as the RPMs: the agent, the systemd unit, the config, the
//! maintainer scripts (templates/deb/) and the Debian changelog.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::{BuildError, io};
use crate::fsutil;
use crate::rpm_package::STATE_DIR;
use crate::target::{PACKAGER, Version};
use tasknode_render::arch::Arch;
use tasknode_render::layout::{AGENT_USER, Layout};
use tasknode_render::templates::{self, TemplateError, Templates};

/// Where the rendered inputs go, relative to the workspace (agent/Cargo.toml names them).
pub const STAGING: &str = "target/tasknode-dist/deb";

#[derive(Serialize)]
struct ScriptContext<'a> {
    user: &'a str,
    gecos: &'a str,
    state_dir: &'a str,
    log_dir: &'a str,
    config: &'a str,
    config_dir: &'a str,
    /// The systemd unit (`tasknode.service`).
    service: &'a str,
    /// The service name, and the package's.
    name: &'a str,
    package: &'a str,
}

#[derive(Serialize)]
struct ChangelogContext<'a> {
    version: &'a str,
    packager: &'a str,
    date: String,
}

/// The .deb's file name for `version` on `arch`.
pub fn file_name(version: &Version, arch: Arch) -> String {
    format!("tasknode_{version}-1_{}.deb", arch.deb())
}

/// Says how to get cargo-deb when it is missing.
pub fn check_tool() -> Result<(), BuildError> {
    let ok = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err(BuildError::Tool {
            what: "the deb target".to_owned(),
            why: "cargo-deb is not installed; install it with `cargo install cargo-deb --locked`"
                .to_owned(),
        })
    }
}

/// Where Debian's zsh looks for the completions packages install (not site-functions).
const DEBIAN_ZSH: &str = "/usr/share/zsh/vendor-completions";

/// `path` as Debian places it.
fn debian_place(path: &str) -> String {
    match path.strip_prefix("/usr/share/zsh/site-functions") {
        Some(rest) => format!("{DEBIAN_ZSH}{rest}"),
        None => path.to_owned(),
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Builds the .deb of `version` for the `arch` agent in `workspace` and returns its bytes.
/// cargo-deb takes the Debian architecture from the Rust target.
pub fn build(
    t: &Templates,
    agent: &[u8],
    arch: Arch,
    docs: &crate::docs::AgentDocs,
    version: &Version,
    source_date: u32,
    workspace: &Path,
) -> Result<Vec<u8>, BuildError> {
    let workspace = &workspace_root(workspace)?;
    let layout = Layout::package();
    let ctx = ScriptContext {
        user: AGENT_USER,
        gecos: "tasknode agent",
        state_dir: STATE_DIR,
        log_dir: &layout.log_dir,
        config: &layout.config,
        config_dir: tasknode_render::layout::PACKAGE_CONFIG_DIR,
        service: &format!("{}.service", tasknode_render::layout::SERVICE),
        name: tasknode_render::layout::SERVICE,
        package: tasknode_render::layout::PACKAGE_NAME,
    };
    let unit = tasknode_render::render::unit(t, &layout).map_err(|e| BuildError::Tool {
        what: "rendering the systemd unit".to_owned(),
        why: e.to_string(),
    })?;
    let config = crate::rpm_package::package_config(
        t,
        &layout,
        tasknode_render::layout::InstallMethod::Deb,
    )?;
    let texts = texts(
        t,
        &DebTexts {
            changelog: templates::DEB_CHANGELOG,
            postinst: templates::DEB_POSTINST,
            prerm: templates::DEB_PRERM,
            postrm: templates::DEB_POSTRM,
        },
        &ctx,
        version,
        source_date,
    )?;
    let mut files = vec![
        ("tasknode.service", unit, 0o644),
        ("tasknode.conf", config, 0o600),
    ];
    files.extend(texts);
    let mut staged: Vec<Staged<'_>> = files
        .iter()
        .map(|(name, text, mode)| Staged::new(*name, text.as_bytes(), *mode))
        .collect();
    staged.push(Staged::new("tasknode", agent, 0o755));
    // The man pages and completions, at their places under docs/ (agent/Cargo.toml's assets).
    for (path, bytes) in docs.files(tasknode_clidocs::BASH_COMPLETIONS) {
        let at = format!("docs/{}", debian_place(&path).trim_start_matches('/'));
        staged.push(Staged::new(at, bytes, 0o644));
    }
    pack(
        workspace,
        &DebPackage {
            package: tasknode_render::layout::PACKAGE_NAME,
            staging: STAGING,
            target: arch.rust_target(),
            file_name: file_name(version, arch),
            files: &staged,
        },
        version,
        source_date,
    )
}

/// The templates of a .deb's own text.
#[derive(Debug)]
pub(crate) struct DebTexts {
    pub(crate) changelog: &'static str,
    pub(crate) postinst: &'static str,
    pub(crate) prerm: &'static str,
    pub(crate) postrm: &'static str,
}

/// Renders a .deb's Debian changelog (dated at `source_date`) and maintainer scripts (with
/// `ctx`), each with its path under the staging directory and its mode.
pub(crate) fn texts<C: Serialize>(
    t: &Templates,
    names: &DebTexts,
    ctx: &C,
    version: &Version,
    source_date: u32,
) -> Result<[(&'static str, String, u32); 4], TemplateError> {
    let changelog = t.render(
        names.changelog,
        &ChangelogContext {
            version: version.as_str(),
            packager: PACKAGER,
            date: rfc2822(source_date),
        },
    )?;
    Ok([
        ("changelog", changelog, 0o644),
        ("scripts/postinst", t.render(names.postinst, ctx)?, 0o755),
        ("scripts/prerm", t.render(names.prerm, ctx)?, 0o755),
        ("scripts/postrm", t.render(names.postrm, ctx)?, 0o755),
    ])
}

/// One file cargo-deb packs, staged where the package's Cargo.toml metadata names it.
#[derive(Debug)]
pub(crate) struct Staged<'a> {
    /// Relative to the staging directory.
    pub(crate) path: String,
    pub(crate) bytes: &'a [u8],
    pub(crate) mode: u32,
}

impl<'a> Staged<'a> {
    pub(crate) fn new(path: impl Into<String>, bytes: &'a [u8], mode: u32) -> Staged<'a> {
        Staged {
            path: path.into(),
            bytes,
            mode,
        }
    }
}

/// A .deb for cargo-deb to make from `[package.metadata.deb]` of a workspace package.
#[derive(Debug)]
pub(crate) struct DebPackage<'a> {
    /// The cargo package whose metadata describes the .deb.
    pub(crate) package: &'a str,
    /// The staging directory that metadata names, relative to the workspace.
    pub(crate) staging: &'a str,
    /// The Rust target of the binary (cargo-deb takes the Debian architecture from it).
    pub(crate) target: &'a str,
    pub(crate) file_name: String,
    pub(crate) files: &'a [Staged<'a>],
}

/// The one packaging step of every .deb (the agent's and the console's): stages `deb.files`
/// with their modes in a fresh staging directory (one build at a time holds it), runs
/// cargo-deb on the package's metadata and returns the .deb's bytes.
pub(crate) fn pack(
    workspace: &Path,
    deb: &DebPackage<'_>,
    version: &Version,
    source_date: u32,
) -> Result<Vec<u8>, BuildError> {
    // Builds share the staging directory the metadata names: one at a time.
    let lock_path = workspace.join(format!("{}.lock", deb.staging));
    if let Some(dir) = lock_path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(&lock_path)(e.into()))?;
    let staging = workspace.join(deb.staging);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    for file in deb.files {
        let path = staging.join(&file.path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        fsutil::write_staged(&path, file.bytes, file.mode).map_err(io(&path))?;
    }

    let out = staging.join(&deb.file_name);
    let status = Command::new(cargo())
        .args([
            "deb",
            "-p",
            deb.package,
            "--no-build",
            "--no-strip",
            "--quiet",
            "--target",
            deb.target,
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
            what: format!("cargo deb -p {}", deb.package),
            why: format!(
                "failed ({}): {}",
                status.status,
                String::from_utf8_lossy(&status.stderr).trim()
            ),
        });
    }
    fs::read(&out).map_err(io(&out))
}

/// The root of the cargo workspace `dir` is in.
pub(crate) fn workspace_root(dir: &Path) -> Result<PathBuf, BuildError> {
    let out = Command::new(cargo())
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(dir)
        .output()
        .map_err(|e| BuildError::Tool {
            what: "cargo locate-project".to_owned(),
            why: e.to_string(),
        })?;
    let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    match manifest.parent() {
        Some(root) if out.status.success() && root.join("agent/Cargo.toml").is_file() => {
            Ok(root.to_owned())
        }
        _ => Err(BuildError::Tool {
            what: format!("--workspace {}", dir.display()),
            why: "not in the tasknode workspace (agent/Cargo.toml holds the .deb's metadata); run in the checkout or pass --workspace".to_owned(),
        }),
    }
}

/// `Tue, 14 Nov 2023 22:13:20 +0000`, as Debian changelogs date entries.
pub(crate) fn rfc2822(secs: u32) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = i64::from(secs);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_dates_are_rfc_2822() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    /// cargo-deb takes the .deb's file places from agent/Cargo.toml, which cannot be rendered:
    /// they must be the layout's.
    #[test]
    fn the_deb_assets_go_where_the_layout_says() {
        let manifest: toml::Value = toml::from_str(include_str!("../../agent/Cargo.toml")).unwrap();
        let assets = manifest["package"]["metadata"]["deb"]["assets"]
            .as_array()
            .unwrap();
        let places: Vec<String> = assets
            .iter()
            .map(|a| format!("/{}", a[1].as_str().unwrap()))
            .collect();
        let layout = Layout::package();
        assert_eq!(
            places[..3],
            [
                layout.bin,
                tasknode_render::layout::DEB_UNIT.to_owned(),
                layout.config
            ]
        );
        // Then the man pages, and each shell's completions where Debian's shells look.
        let mut docs = vec![format!("{}/", tasknode_clidocs::MAN1)];
        for shell in tasknode_clidocs::Shell::ALL {
            let path = shell.package_path("tasknode", tasknode_clidocs::BASH_COMPLETIONS);
            docs.push(debian_place(&path));
        }
        assert_eq!(places[3..], docs);
        // The staged files are found where the assets read them.
        for a in &assets[3..] {
            let from = a[0].as_str().unwrap().trim_end_matches('*');
            let staged = format!(
                "../target/tasknode-dist/deb/docs/{}",
                a[1].as_str().unwrap()
            );
            assert_eq!(from, staged);
        }
    }
}
