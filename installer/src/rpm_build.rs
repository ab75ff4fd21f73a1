//! The one packaging step of every RPM (the agent's and the console's): a package described as
//! data (its header, its files and directories with their modes and owners, its scriptlets
//! and requirements), built with the `rpm` crate as a v4 package, left for
//! [`crate::rpm_payload`] to compress and sign. Each package module says what goes in; this
//! says how it is made.

use crate::rpm_package::RpmError;
use crate::rpm_payload::{PAYLOAD_IS_XZ, Unsealed};
use crate::target::{PACKAGER, RpmTarget, Version};
use tasknode_render::arch::Arch;
use tasknode_render::templates::{TemplateError, Templates};

pub const LICENSE: &str = "Apache-2.0";
pub const URL: &str = "https://github.com/tasknode/tasknode";
pub const VENDOR: &str = "tasknode";

/// What a package's description and changelog templates are rendered with.
#[derive(Debug, serde::Serialize)]
pub struct TextContext<'a> {
    pub version: &'a str,
    /// The dist's description, from rpm/targets.toml.
    pub dist: &'a str,
}

/// Renders a header text template (a description, a changelog entry): the file's last newline
/// is not part of the text.
pub fn text(t: &Templates, name: &str, ctx: &TextContext<'_>) -> Result<String, TemplateError> {
    let mut text = t.render(name, ctx)?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// One entry of a package's payload, in the order it is added.
#[derive(Debug)]
pub enum Entry {
    File(Vec<u8>, rpm::FileOptions),
    Dir(rpm::FileOptions),
}

/// A file of `bytes` with the options `options` give it.
pub fn file(bytes: impl Into<Vec<u8>>, options: impl Into<rpm::FileOptions>) -> Entry {
    Entry::File(bytes.into(), options.into())
}

/// A directory the package owns.
pub fn dir(options: impl Into<rpm::FileOptions>) -> Entry {
    Entry::Dir(options.into())
}

/// One RPM, described.
#[derive(Debug)]
pub struct RpmPackage<'a> {
    pub name: &'a str,
    pub target: &'a RpmTarget,
    pub version: &'a Version,
    /// The architecture (its RPM name is its `uname -m`).
    pub arch: Arch,
    pub summary: &'a str,
    pub description: &'a str,
    /// The changelog entry's text (its name and time are the packager's and the release's).
    pub changelog: String,
    pub entries: Vec<Entry>,
    /// %pre, %post, %preun, %postun.
    pub scripts: [String; 4],
    /// The tool the scriptlets run after %pre (systemd or chkconfig), so rpm orders the base
    /// system's packages before them.
    pub service_tool: &'a str,
    /// SOURCE_DATE_EPOCH: build time and file times.
    pub source_date: u32,
    /// What the build error names (the dist, and the package when it is not the agent).
    pub what: String,
}

/// Builds `p` with its final header over an uncompressed archive, for
/// [`crate::rpm_payload::seal_all`] to compress and sign with the release's other RPMs.
pub fn unsealed(p: RpmPackage<'_>) -> Result<Unsealed, RpmError> {
    let err = |source| RpmError::Build {
        dist: p.what.clone(),
        source,
    };
    let config = crate::rpm_payload::config(p.source_date);
    let mut b = rpm::PackageBuilder::new(
        p.name,
        p.version.as_str(),
        LICENSE,
        p.arch.uname(),
        p.summary,
    );
    b.using_config(config)
        .release(p.target.release.clone())
        .description(p.description)
        .url(URL)
        .vendor(VENDOR)
        .packager(PACKAGER)
        .group("System Environment/Daemons")
        .build_host("tasknode-dist")
        .add_changelog_entry(
            format!("{PACKAGER} - {}-{}", p.version, p.target.release),
            p.changelog.clone(),
            rpm::Timestamp(p.source_date),
        );
    for entry in p.entries {
        match entry {
            Entry::File(bytes, options) => {
                b.with_file_contents(bytes, options).map_err(err)?;
            }
            Entry::Dir(options) => {
                b.with_dir_entry(options).map_err(err)?;
            }
        }
    }
    let [pre, post, preun, postun] = p.scripts;
    b.pre_install_script(pre)
        .post_install_script(post)
        .pre_uninstall_script(preun)
        .post_uninstall_script(postun);
    b.requires(rpm::Dependency::rpmlib(PAYLOAD_IS_XZ.0, PAYLOAD_IS_XZ.1));
    for cap in &p.target.requires {
        b.requires(rpm::Dependency::any(cap.clone()));
    }
    b.requires(rpm::Dependency::script_pre("shadow-utils"));
    b.requires(rpm::Dependency::script_post(p.service_tool));
    b.requires(rpm::Dependency::script_preun(p.service_tool));
    b.requires(rpm::Dependency::script_postun(p.service_tool));

    crate::rpm_payload::unsealed(&mut b).map_err(err)
}
