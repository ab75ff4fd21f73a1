//! One agent RPM for one dist, built with the `rpm` crate: v4 header, xz payload, SHA-256 file
//! digests, an RSA signature made at the release's source date, and only rpmlib() features
//! that rpm 4.8 provides.

use serde::Serialize;

use crate::rpm_build::{self, RpmPackage, text};
use crate::rpm_payload::Unsealed;
use crate::target::{Init, RpmTarget, Version};
use tasknode_render::arch::Arch;
use tasknode_render::layout::{AGENT_USER, InstallMethod, Layout};
use tasknode_render::templates::{self, TemplateError, Templates};

pub const PACKAGE_NAME: &str = "tasknode";
/// Where the SysV script goes on el6.
pub const INIT_SCRIPT: &str = tasknode_render::layout::PACKAGE_INIT;
/// Where the systemd unit goes.
pub const SYSTEMD_UNIT: &str = tasknode_render::layout::PACKAGE_UNIT;
/// The agent's working state (its home directory when %pre creates the user).
pub const STATE_DIR: &str = tasknode_render::layout::PACKAGE_STATE_DIR;
const SUMMARY: &str = "tasknode agent: runs scheduled data tasks for the tasknode console";

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
    #[error("compressing and signing the RPMs: {0}")]
    Seal(#[source] rpm::Error),
}

/// What goes into one RPM.
#[derive(Debug)]
pub struct RpmInputs<'a> {
    pub target: &'a RpmTarget,
    pub version: &'a Version,
    pub arch: Arch,
    /// The static agent binary.
    pub agent: &'a [u8],
    /// Its man pages and completions.
    pub docs: &'a crate::docs::AgentDocs,
    /// SOURCE_DATE_EPOCH: build time and file times.
    pub source_date: u32,
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
pub fn file_name(version: &Version, target: &RpmTarget, arch: Arch) -> String {
    format!(
        "{PACKAGE_NAME}-{version}-{release}.{arch}.rpm",
        release = target.release,
        arch = arch.uname()
    )
}

/// The agent RPM for one dist, to be sealed (compressed and signed) by
/// [`crate::rpm_payload::seal_all`] with the release's other RPMs.
pub fn unsealed(t: &Templates, inputs: &RpmInputs<'_>) -> Result<Unsealed, RpmError> {
    let target = inputs.target;
    let layout = Layout::package();
    let ctx = ScriptletContext {
        init: target.init.name(),
        user: AGENT_USER,
        gecos: "tasknode agent",
        state_dir: STATE_DIR,
        config: &layout.config,
        service: &format!("{}.service", tasknode_render::layout::SERVICE),
        name: tasknode_render::layout::SERVICE,
        init_script: INIT_SCRIPT,
    };
    let pre = t.render(templates::RPM_PRE, &ctx)?;
    let post = t.render(templates::RPM_POST, &ctx)?;
    let preun = t.render(templates::RPM_PREUN, &ctx)?;
    let postun = t.render(templates::RPM_POSTUN, &ctx)?;
    let config = package_config(t, &layout, InstallMethod::Rpm)?;

    let mut entries = vec![rpm_build::file(
        inputs.agent,
        rpm::FileOptions::new(layout.bin.clone()).permissions(0o755),
    )];
    match target.init {
        Init::Systemd => {
            let unit = tasknode_render::render::unit(t, &layout).map_err(render_to_template)?;
            entries.push(rpm_build::file(
                unit,
                rpm::FileOptions::new(SYSTEMD_UNIT).permissions(0o644),
            ));
        }
        Init::Sysv => {
            let init = tasknode_render::render::init(t, &layout).map_err(render_to_template)?;
            entries.push(rpm_build::file(
                init,
                rpm::FileOptions::new(INIT_SCRIPT).permissions(0o755),
            ));
        }
    }
    entries.push(rpm_build::dir(
        // root's, so the agent user cannot swap the config in it for a link (root enrolls and
        // rpm writes there); readable by the agent's group.
        rpm::FileOptions::dir(tasknode_render::layout::PACKAGE_CONFIG_DIR)
            .user("root")
            .group(AGENT_USER)
            .permissions(0o750),
    ));
    entries.push(rpm_build::file(
        config,
        rpm::FileOptions::new(layout.config.clone())
            .user(AGENT_USER)
            .group(AGENT_USER)
            .permissions(0o600)
            .config()
            .noreplace(),
    ));
    if !inputs.docs.is_empty() {
        for dir in crate::docs::completion_dirs(&target.bash_completions) {
            entries.push(rpm_build::dir(
                rpm::FileOptions::dir(dir).permissions(0o755),
            ));
        }
    }
    for (path, bytes) in inputs.docs.files(&target.bash_completions) {
        // Man pages are documentation (`rpm --excludedocs` leaves them out); completions are not.
        let page = path.starts_with(tasknode_clidocs::MAN1);
        let options = rpm::FileOptions::new(path).permissions(0o644);
        let options = if page { options.doc() } else { options };
        entries.push(rpm_build::file(bytes, options));
    }
    for dir in [layout.log_dir.as_str(), STATE_DIR] {
        entries.push(rpm_build::dir(
            rpm::FileOptions::dir(dir)
                .user(AGENT_USER)
                .group(AGENT_USER)
                .permissions(0o750),
        ));
    }
    let info = rpm_build::TextContext {
        version: inputs.version.as_str(),
        dist: &target.description,
    };
    let service_tool = match target.init {
        Init::Systemd => "systemd",
        Init::Sysv => "chkconfig",
    };
    rpm_build::unsealed(RpmPackage {
        name: PACKAGE_NAME,
        target,
        version: inputs.version,
        arch: inputs.arch,
        summary: SUMMARY,
        description: &text(t, templates::RPM_DESCRIPTION, &info)?,
        changelog: text(t, templates::RPM_CHANGELOG, &info)?,
        entries,
        scripts: [pre, post, preun, postun],
        service_tool,
        source_date: inputs.source_date,
        what: target.dist.to_string(),
    })
}

fn render_to_template(e: tasknode_render::render::RenderError) -> TemplateError {
    match e {
        tasknode_render::render::RenderError::Template(t) => t,
        tasknode_render::render::RenderError::Field(f) => TemplateError::Render {
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
    let ctx = tasknode_render::context::ConfigContext::new(String::new(), install_method, layout);
    t.render(templates::AGENT_CONFIG, &ctx)
}
