//! The one template environment of tasknode. Templates are embedded at build time and looked up
//! by the constants below; a directory can override any of them. Undefined values are errors,
//! and every interpolated value is escaped for the file it lands in, chosen by the template's
//! name: `.sh` shell, `.service` systemd, `.toml` TOML, `.repo` and `.changelog` literal text
//! on one line (INI). There is no `|safe`: a template that wants text verbatim writes it
//! itself.

use std::path::{Path, PathBuf};

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde::Serialize;

use crate::escape::{self, Format};

/// The bootstrap script the console hands out (`curl | sh`).
pub const INSTALL_SH: &str = "install.sh";
/// The systemd unit (el7, al7, al8, deb).
pub const SYSTEMD_UNIT: &str = "tasknode.service";
/// The SysV init script (el6), installed as /etc/init.d/tasknode.
pub const SYSV_INIT: &str = "tasknode.init.sh";
/// bin/serverctl beside the agent binary.
pub const SERVERCTL: &str = "serverctl.sh";
/// root's entry point, /usr/sbin/tasknode-serverctl (script installs).
pub const ROOT_SERVERCTL: &str = "tasknode-serverctl.sh";
/// The agent config before enrollment.
pub const AGENT_CONFIG: &str = "tasknode.conf.toml";
/// The yum repository definition.
pub const YUM_REPO: &str = "tasknode.repo";
/// RPM scriptlets (templates/rpm/), rendered per target.
pub const RPM_PRE: &str = "rpm-pre.sh";
pub const RPM_POST: &str = "rpm-post.sh";
pub const RPM_PREUN: &str = "rpm-preun.sh";
pub const RPM_POSTUN: &str = "rpm-postun.sh";
/// The agent RPM's description and changelog entry (templates/rpm/).
pub const RPM_DESCRIPTION: &str = "rpm-description.txt";
pub const RPM_CHANGELOG: &str = "rpm-changelog.txt";
/// .deb maintainer scripts and changelog (templates/deb/).
pub const DEB_POSTINST: &str = "deb-postinst.sh";
pub const DEB_PRERM: &str = "deb-prerm.sh";
pub const DEB_POSTRM: &str = "deb-postrm.sh";
pub const DEB_CHANGELOG: &str = "deb.changelog";
/// The tasknode-console package (templates/console/): its systemd unit, its settings
/// (an EnvironmentFile), RPM scriptlets, .deb maintainer scripts and changelog.
pub const CONSOLE_UNIT: &str = "console/tasknode-console.service";
pub const CONSOLE_ENV: &str = "console/tasknode-console.env";
pub const CONSOLE_RPM_PRE: &str = "console/rpm-pre.sh";
pub const CONSOLE_RPM_POST: &str = "console/rpm-post.sh";
pub const CONSOLE_RPM_PREUN: &str = "console/rpm-preun.sh";
pub const CONSOLE_RPM_POSTUN: &str = "console/rpm-postun.sh";
pub const CONSOLE_DEB_POSTINST: &str = "console/deb-postinst.sh";
pub const CONSOLE_DEB_PRERM: &str = "console/deb-prerm.sh";
pub const CONSOLE_DEB_POSTRM: &str = "console/deb-postrm.sh";
pub const CONSOLE_DEB_CHANGELOG: &str = "console/deb.changelog";
pub const CONSOLE_RPM_DESCRIPTION: &str = "console/rpm-description.txt";
pub const CONSOLE_RPM_CHANGELOG: &str = "console/rpm-changelog.txt";

/// Every template, by name, as embedded at build time.
pub const EMBEDDED: &[(&str, &str)] = &[
    (INSTALL_SH, include_str!("../../templates/install.sh")),
    (
        SYSTEMD_UNIT,
        include_str!("../../templates/tasknode.service"),
    ),
    (SYSV_INIT, include_str!("../../templates/tasknode.init.sh")),
    (SERVERCTL, include_str!("../../templates/serverctl.sh")),
    (
        ROOT_SERVERCTL,
        include_str!("../../templates/tasknode-serverctl.sh"),
    ),
    (
        AGENT_CONFIG,
        include_str!("../../templates/tasknode.conf.toml"),
    ),
    (YUM_REPO, include_str!("../../templates/tasknode.repo")),
    (RPM_PRE, include_str!("../../templates/rpm/pre.sh")),
    (RPM_POST, include_str!("../../templates/rpm/post.sh")),
    (RPM_PREUN, include_str!("../../templates/rpm/preun.sh")),
    (RPM_POSTUN, include_str!("../../templates/rpm/postun.sh")),
    (
        RPM_DESCRIPTION,
        include_str!("../../templates/rpm/description.txt"),
    ),
    (
        RPM_CHANGELOG,
        include_str!("../../templates/rpm/changelog.txt"),
    ),
    (
        DEB_POSTINST,
        include_str!("../../templates/deb/postinst.sh"),
    ),
    (DEB_PRERM, include_str!("../../templates/deb/prerm.sh")),
    (DEB_POSTRM, include_str!("../../templates/deb/postrm.sh")),
    (DEB_CHANGELOG, include_str!("../../templates/deb/changelog")),
    (
        CONSOLE_UNIT,
        include_str!("../../templates/console/tasknode-console.service"),
    ),
    (
        CONSOLE_ENV,
        include_str!("../../templates/console/tasknode-console.env"),
    ),
    (
        CONSOLE_RPM_PRE,
        include_str!("../../templates/console/rpm-pre.sh"),
    ),
    (
        CONSOLE_RPM_POST,
        include_str!("../../templates/console/rpm-post.sh"),
    ),
    (
        CONSOLE_RPM_PREUN,
        include_str!("../../templates/console/rpm-preun.sh"),
    ),
    (
        CONSOLE_RPM_POSTUN,
        include_str!("../../templates/console/rpm-postun.sh"),
    ),
    (
        CONSOLE_DEB_POSTINST,
        include_str!("../../templates/console/deb-postinst.sh"),
    ),
    (
        CONSOLE_DEB_PRERM,
        include_str!("../../templates/console/deb-prerm.sh"),
    ),
    (
        CONSOLE_DEB_POSTRM,
        include_str!("../../templates/console/deb-postrm.sh"),
    ),
    (
        CONSOLE_DEB_CHANGELOG,
        include_str!("../../templates/console/deb.changelog"),
    ),
    (
        CONSOLE_RPM_DESCRIPTION,
        include_str!("../../templates/console/rpm-description.txt"),
    ),
    (
        CONSOLE_RPM_CHANGELOG,
        include_str!("../../templates/console/rpm-changelog.txt"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading template override {path}: {source}")]
    Override {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name}: {detail}")]
    Load { name: String, detail: String },
    #[error("rendering {name}: {detail}")]
    Render { name: String, detail: String },
}

/// The format a template's values are escaped for, by its name.
pub fn format_of(name: &str) -> Option<Format> {
    match name.rsplit('.').next()? {
        "sh" => Some(Format::Shell),
        "service" => Some(Format::Systemd),
        "toml" => Some(Format::Toml),
        "repo" => Some(Format::Ini),
        // A Debian changelog line takes values as literal text on one line, as INI does.
        "changelog" => Some(Format::Ini),
        // An RPM header's text (description, changelog entry): values literal, on one line.
        "txt" => Some(Format::Ini),
        // systemd's EnvironmentFile reads values quoted as a shell would.
        "env" => Some(Format::Shell),
        _ => None,
    }
}

fn auto_escape(name: &str) -> AutoEscape {
    format_of(name).map_or(AutoEscape::None, |f| AutoEscape::Custom(f.name()))
}

/// Writes a value escaped for the template's format. Every value is escaped, marked safe or
/// not; `none` is refused, since it has no spelling in a shell or unit file.
fn format_value(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> Result<(), Error> {
    let AutoEscape::Custom(name) = state.auto_escape() else {
        return minijinja::escape_formatter(out, state, value);
    };
    let format = Format::from_name(name).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("unknown escape format {name}"),
        )
    })?;
    if value.is_none() || value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "a value is missing (none) where the template writes it",
        ));
    }
    let text = match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    };
    let escaped = escape::escape(format, &text)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    out.write_str(&escaped).map_err(Error::from)
}

/// The template environment.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The embedded templates.
    pub fn embedded() -> Result<Templates, TemplateError> {
        Templates::build(
            EMBEDDED
                .iter()
                .map(|(n, s)| (*n, (*s).to_owned()))
                .collect(),
        )
    }

    /// The embedded templates, each replaced by a file of the same name in `dir` where one
    /// exists.
    pub fn with_overrides(dir: &Path) -> Result<Templates, TemplateError> {
        let mut sources = Vec::new();
        for (name, embedded) in EMBEDDED {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*embedded).to_owned(),
                Err(source) => return Err(TemplateError::Override { path, source }),
            };
            sources.push((*name, source));
        }
        Templates::build(sources)
    }

    fn build(sources: Vec<(&'static str, String)>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(auto_escape);
        env.set_formatter(format_value);
        env.set_keep_trailing_newline(true);
        for (name, source) in sources {
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Load {
                    name: name.to_owned(),
                    detail: format!("{e:#}"),
                })?;
        }
        Ok(Templates { env })
    }

    /// Renders template `name` with `context`.
    pub fn render<C: Serialize>(&self, name: &str, context: &C) -> Result<String, TemplateError> {
        let err = |e: Error| TemplateError::Render {
            name: name.to_owned(),
            detail: match e.detail() {
                Some(d) => format!("{} ({d})", e.kind()),
                None => e.to_string(),
            },
        };
        let template = self.env.get_template(name).map_err(err)?;
        template.render(context).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_resolves_and_has_a_format() {
        let t = Templates::embedded().unwrap();
        for (name, _) in EMBEDDED {
            assert!(t.env.get_template(name).is_ok(), "{name}");
            assert!(format_of(name).is_some(), "{name} would render unescaped");
        }
    }

    #[test]
    fn values_are_escaped_even_when_marked_safe_and_none_is_refused() {
        let mut t = Templates::embedded().unwrap();
        t.env
            .add_template("probe.sh", "X={{ v }}\nY={{ v|safe }}\n")
            .unwrap();
        let out = t
            .render("probe.sh", &serde_json::json!({"v": "$(id)'"}))
            .unwrap();
        assert_eq!(out, "X='$(id)'\\'''\nY='$(id)'\\'''\n");
        let err = t
            .render("probe.sh", &serde_json::json!({"v": null}))
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let err = t.render("probe.sh", &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(YUM_REPO), "[custom]\nname={{ name }}\n").unwrap();
        let t = Templates::with_overrides(dir.path()).unwrap();
        let out = t
            .render(YUM_REPO, &serde_json::json!({"name": "x"}))
            .unwrap();
        assert_eq!(out, "[custom]\nname=x\n");
        assert!(t.env.get_template(SYSTEMD_UNIT).is_ok());
    }
}
