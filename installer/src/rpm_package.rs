//! One agent RPM for one dist, built with the `rpm` crate: v4 header, xz payload, SHA-256 file
//! digests, an RSA signature made at the release's source date, and only rpmlib() features
//! that rpm 4.8 provides.

use serde::Serialize;

use crate::layout::{AGENT_USER, InstallMethod, Layout};
use crate::target::{Init, RpmTarget, Version};
use crate::templates::{self, TemplateError, Templates};

pub const PACKAGE_NAME: &str = "tasknode";
/// Where the SysV script goes on el6.
pub const INIT_SCRIPT: &str = crate::layout::PACKAGE_INIT;
/// Where the systemd unit goes.
pub const SYSTEMD_UNIT: &str = crate::layout::PACKAGE_UNIT;
/// The agent's working state (its home directory when %pre creates the user).
pub const STATE_DIR: &str = crate::layout::PACKAGE_STATE_DIR;
const SUMMARY: &str = "tasknode agent: runs scheduled data tasks for the tasknode console";
const DESCRIPTION: &str = "The tasknode agent enrolls this server with a tasknode console,
heartbeats, and runs the data tasks the console assigns, as the user admin.
Enroll it with `tasknode enroll`, then start the tasknode service.";
const LICENSE: &str = "Apache-2.0";
const URL: &str = "https://github.com/tasknode/tasknode";
const VENDOR: &str = "tasknode";
/// Who the changelog and Packager tag name.
const PACKAGER: &str = "tasknode release <release@tasknode.invalid>";
/// The rpmlib() features the package needs beyond what the rpm crate adds
/// (CompressedFileNames, FileDigests, PayloadFilesHavePrefix), all in rpm 4.8.
const PAYLOAD_IS_XZ: (&str, &str) = ("PayloadIsXz", "5.2-1");

#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("building the {dist} RPM: {source}")]
    Build {
        dist: String,
        #[source]
        source: rpm::Error,
    },
}

/// What goes into one RPM.
#[derive(Debug)]
pub struct RpmInputs<'a> {
    pub target: &'a RpmTarget,
    pub version: &'a Version,
    /// RPM architecture, e.g. x86_64.
    pub arch: &'a str,
    /// The static agent binary.
    pub agent: &'a [u8],
    /// Its man pages and completions.
    pub docs: &'a crate::docs::AgentDocs,
    /// SOURCE_DATE_EPOCH: build time and file times.
    pub source_date: u32,
    /// When the signature says it was made (see [`crate::keys::ReleaseKeys::signature_time`]).
    pub signature_time: u32,
}

#[derive(Serialize)]
struct ScriptletContext<'a> {
    init: &'a str,
    user: &'a str,
    gecos: &'a str,
    state_dir: &'a str,
    config: &'a str,
    /// The systemd unit (`tasknode.service`).
    service: &'a str,
    /// The service name chkconfig and `service` know it by.
    name: &'a str,
    init_script: &'a str,
}

/// The file name yum and rpm expect: NAME-VERSION-RELEASE.ARCH.rpm.
pub fn file_name(version: &Version, target: &RpmTarget, arch: &str) -> String {
    format!(
        "{PACKAGE_NAME}-{version}-{release}.{arch}.rpm",
        release = target.release
    )
}

/// Builds and signs one RPM and returns its bytes.
pub fn build(
    t: &Templates,
    inputs: &RpmInputs<'_>,
    signer: &rpm::signature::pgp::Signer,
) -> Result<Vec<u8>, RpmError> {
    let target = inputs.target;
    let layout = Layout::package();
    let err = |source| RpmError::Build {
        dist: target.dist.clone(),
        source,
    };

    let ctx = ScriptletContext {
        init: target.init.name(),
        user: AGENT_USER,
        gecos: "tasknode agent",
        state_dir: STATE_DIR,
        config: &layout.config,
        service: &format!("{}.service", crate::layout::SERVICE),
        name: crate::layout::SERVICE,
        init_script: INIT_SCRIPT,
    };
    let pre = t.render(templates::RPM_PRE, &ctx)?;
    let post = t.render(templates::RPM_POST, &ctx)?;
    let preun = t.render(templates::RPM_PREUN, &ctx)?;
    let postun = t.render(templates::RPM_POSTUN, &ctx)?;
    let config = package_config(t, &layout, InstallMethod::Rpm)?;

    let config_build = rpm::BuildConfig::v4()
        // A fast preset: the payload is one compact static binary, and level 9 makes it barely
        // smaller at many times the cost.
        .compression(rpm::CompressionWithLevel::Xz(2))
        .source_date(inputs.source_date)
        // rpm 4.8 and 4.11 know no reserved-space tag, and signature headers must stay small.
        .reserved_space(None);
    let mut b = rpm::PackageBuilder::new(
        PACKAGE_NAME,
        inputs.version.as_str(),
        LICENSE,
        inputs.arch,
        SUMMARY,
    );
    b.using_config(config_build)
        .release(target.release.clone())
        .description(DESCRIPTION)
        .url(URL)
        .vendor(VENDOR)
        .packager(PACKAGER)
        .group("System Environment/Daemons")
        .build_host("tasknode-dist")
        .add_changelog_entry(
            format!("{PACKAGER} - {}-{}", inputs.version, target.release),
            format!("- tasknode {} for {}", inputs.version, target.description),
            rpm::Timestamp(inputs.source_date),
        );

    b.with_file_contents(
        inputs.agent.to_vec(),
        rpm::FileOptions::new(layout.bin.clone()).permissions(0o755),
    )
    .map_err(err)?;
    match target.init {
        Init::Systemd => {
            let unit = crate::render::unit(t, &layout).map_err(render_to_template)?;
            b.with_file_contents(
                unit.into_bytes(),
                rpm::FileOptions::new(SYSTEMD_UNIT).permissions(0o644),
            )
            .map_err(err)?;
        }
        Init::Sysv => {
            let init = crate::render::init(t, &layout).map_err(render_to_template)?;
            b.with_file_contents(
                init.into_bytes(),
                rpm::FileOptions::new(INIT_SCRIPT).permissions(0o755),
            )
            .map_err(err)?;
        }
    }
    b.with_dir_entry(
        // root's, so the agent user cannot swap the config in it for a link (root enrolls and
        // rpm writes there); readable by the agent's group.
        rpm::FileOptions::dir(crate::layout::PACKAGE_CONFIG_DIR)
            .user("root")
            .group(AGENT_USER)
            .permissions(0o750),
    )
    .map_err(err)?;
    b.with_file_contents(
        config.into_bytes(),
        rpm::FileOptions::new(layout.config.clone())
            .user(AGENT_USER)
            .group(AGENT_USER)
            .permissions(0o600)
            .config()
            .noreplace(),
    )
    .map_err(err)?;
    if !inputs.docs.is_empty() {
        for dir in crate::docs::completion_dirs(&target.bash_completions) {
            b.with_dir_entry(rpm::FileOptions::dir(dir).permissions(0o755))
                .map_err(err)?;
        }
    }
    for (path, bytes) in inputs.docs.files(&target.bash_completions) {
        // Man pages are documentation (`rpm --excludedocs` leaves them out); completions are not.
        let page = path.starts_with(tasknode_clidocs::MAN1);
        let options = rpm::FileOptions::new(path).permissions(0o644);
        let options = if page { options.doc() } else { options };
        b.with_file_contents(bytes.to_vec(), options).map_err(err)?;
    }
    for dir in [layout.log_dir.as_str(), STATE_DIR] {
        b.with_dir_entry(
            rpm::FileOptions::dir(dir)
                .user(AGENT_USER)
                .group(AGENT_USER)
                .permissions(0o750),
        )
        .map_err(err)?;
    }

    b.pre_install_script(pre)
        .post_install_script(post)
        .pre_uninstall_script(preun)
        .post_uninstall_script(postun);
    b.requires(rpm::Dependency::rpmlib(PAYLOAD_IS_XZ.0, PAYLOAD_IS_XZ.1));
    for cap in &target.requires {
        b.requires(rpm::Dependency::any(cap.clone()));
    }
    // What the scriptlets run, so rpm orders the base system's packages before them.
    b.requires(rpm::Dependency::script_pre("shadow-utils"));
    let service_tool = match target.init {
        Init::Systemd => "systemd",
        Init::Sysv => "chkconfig",
    };
    b.requires(rpm::Dependency::script_post(service_tool));
    b.requires(rpm::Dependency::script_preun(service_tool));
    b.requires(rpm::Dependency::script_postun(service_tool));

    let mut package = b.build().map_err(err)?;
    package
        .sign_with_timestamp(signer, rpm::Timestamp(inputs.signature_time))
        .map_err(err)?;
    let mut bytes = Vec::with_capacity(inputs.agent.len() / 2);
    package.write(&mut bytes).map_err(err)?;
    Ok(bytes)
}

fn render_to_template(e: crate::render::RenderError) -> TemplateError {
    match e {
        crate::render::RenderError::Template(t) => t,
        crate::render::RenderError::Field(f) => TemplateError::Render {
            name: "package layout".to_owned(),
            detail: f.to_string(),
        },
    }
}

/// The config a package installs: no console yet (`tasknode enroll --console URL` writes it),
/// the package's log and work directories, and `install_method` (`rpm` or `deb`) so that the
/// agent never updates itself: the package manager does.
pub(crate) fn package_config(
    t: &Templates,
    layout: &Layout,
    install_method: InstallMethod,
) -> Result<String, TemplateError> {
    let ctx = crate::context::ConfigContext::new(String::new(), install_method, layout);
    t.render(templates::AGENT_CONFIG, &ctx)
}
