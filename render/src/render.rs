//! Rendering each file from validated inputs. Inputs are checked here, where they enter, so
//! that a bad value is refused with the field it came from before anything is written.

use tasknode_protocol::validate::{self, FieldError};

use crate::arch::Arch;
use crate::artifacts::AgentArtifacts;
use crate::context::{
    ConfigContext, InstallContext, InstallLayoutContext, RepoContext, ServiceContext,
};
use crate::dist::Dist;
use crate::layout::{InstallMethod, Layout};
use crate::templates::{self, TemplateError, Templates};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// A console URL as the rendered files may carry it: http(s), a host, no credentials, query or
/// fragment, no whitespace or quotes.
pub fn console_url(field: &str, value: &str) -> Result<String, FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            field,
            format!(
                "{} is not a console URL: {why}; use http://HOST:PORT or https://HOST:PORT",
                validate::show(value)
            ),
        )
    };
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| bad("it must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    if host.contains('@') {
        return Err(bad("credentials do not belong in it"));
    }
    if value.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '"' | '\'' | '`' | '\\' | '?' | '#' | '$')
    }) {
        return Err(bad("it contains whitespace, quotes, '$', '?' or '#'"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// An absolute path on the host, as a line of a .repo file carries it: no whitespace, control
/// characters or `$` (yum would expand it as a variable).
fn host_path(field: &str, value: &str) -> Result<String, FieldError> {
    if !value.starts_with('/')
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '$')
    {
        return Err(FieldError::new(
            field,
            format!(
                "{} is not a path yum can use: give an absolute path without spaces or '$'",
                validate::show(value)
            ),
        ));
    }
    Ok(value.to_owned())
}

/// PEM certificates, and nothing else: the text a script writes to a file and hands to curl.
pub fn ca_pem(field: &str, pem: &str) -> Result<String, FieldError> {
    let bad = |why: &str| FieldError::new(field, format!("not a PEM CA certificate: {why}"));
    let text = pem.trim();
    if !text.starts_with("-----BEGIN CERTIFICATE-----")
        || !text.ends_with("-----END CERTIFICATE-----")
    {
        return Err(bad(
            "it must start with -----BEGIN CERTIFICATE----- and end with -----END CERTIFICATE-----",
        ));
    }
    let ok = text.lines().all(|l| {
        l.starts_with("-----")
            || l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    });
    if !ok || text.len() > 64 * 1024 {
        return Err(bad("it holds something besides base64 lines"));
    }
    Ok(format!("{text}\n"))
}

/// The systemd unit for `layout`.
pub fn unit(t: &Templates, layout: &Layout) -> Result<String, RenderError> {
    Ok(t.render(templates::SYSTEMD_UNIT, &ServiceContext::from(layout))?)
}

/// The SysV init script for `layout`.
pub fn init(t: &Templates, layout: &Layout) -> Result<String, RenderError> {
    Ok(t.render(templates::SYSV_INIT, &ServiceContext::from(layout))?)
}

/// bin/serverctl for `layout`.
pub fn serverctl(t: &Templates, layout: &Layout) -> Result<String, RenderError> {
    Ok(t.render(templates::SERVERCTL, &ServiceContext::from(layout))?)
}

/// root's entry point for `layout` (installed as [`crate::layout::ROOT_SERVERCTL`]).
pub fn root_serverctl(t: &Templates, layout: &Layout) -> Result<String, RenderError> {
    Ok(t.render(templates::ROOT_SERVERCTL, &ServiceContext::from(layout))?)
}

/// The pre-enrollment agent config.
pub fn config(
    t: &Templates,
    layout: &Layout,
    console: &str,
    install_method: InstallMethod,
) -> Result<String, RenderError> {
    let console_url = console_url("--console", console)?;
    let ctx = ConfigContext::new(console_url, install_method, layout);
    Ok(t.render(templates::AGENT_CONFIG, &ctx)?)
}

/// What install.sh enrolls with.
#[derive(Clone)]
pub enum InstallCredential {
    /// A one-time enrollment token (from an install command).
    Token(String),
    /// A user's access key. The rendered script then holds the password: keep it 0600.
    AccessKey { user_name: String, password: String },
}

impl std::fmt::Debug for InstallCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallCredential::Token(_) => f.write_str("Token(<redacted>)"),
            InstallCredential::AccessKey { user_name, .. } => {
                write!(f, "AccessKey({user_name}, <redacted>)")
            }
        }
    }
}

/// Everything install.sh is rendered from.
#[derive(Debug, Clone)]
pub struct InstallInputs<'a> {
    /// The console the script checks and downloads from.
    pub console_url: &'a str,
    /// The URLs the agent talks to, in order (a load balancer, or each console), written into
    /// its config; empty: `console_url` alone.
    pub agent_urls: &'a [String],
    /// The console's own CA certificate (PEM), which the script and the agent then trust
    /// alone; `None` when the console's certificate comes from a CA the system trusts, or for
    /// plain HTTP.
    pub console_ca: Option<&'a str>,
    pub credential: InstallCredential,
    pub group: &'a str,
    /// true for a VPC group (enroll by DMI UUID), false for a classic one (by hostname).
    pub enable_uuid: bool,
    /// The agent binaries the script downloads; their version is the one it installs.
    pub artifacts: &'a AgentArtifacts,
}

/// The URLs an agent is enrolled with: each checked as a console URL (named by `field`) with
/// the scheme of `console_url`, so that one CA pin, or none, holds for all; duplicates
/// dropped; `console_url` alone when there are none.
pub fn agent_urls(
    field: &str,
    console_url: &str,
    urls: &[String],
) -> Result<Vec<String>, FieldError> {
    let scheme = console_url.split_once("://").map_or("http", |(s, _)| s);
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        let url = self::console_url(field, u)?;
        if !url.starts_with(&format!("{scheme}://")) {
            return Err(FieldError::new(
                field,
                format!(
                    "{} is not {scheme}:// like {console_url}: every URL an agent uses has one scheme, so one CA pin covers them all",
                    validate::show(&url)
                ),
            ));
        }
        if !out.contains(&url) {
            out.push(url);
        }
    }
    if out.is_empty() {
        out.push(console_url.to_owned());
    }
    Ok(out)
}

/// The URL install.sh downloads the agent for `arch` from.
pub fn agent_url(console_url: &str, arch: Arch) -> String {
    format!(
        "{}/dist/agent/{}",
        console_url.trim_end_matches('/'),
        crate::artifacts::file_name(arch)
    )
}

/// install.sh for one group and credential. The unit, init script and serverctl it installs
/// are rendered here too, with the same environment.
pub fn install_sh(t: &Templates, inputs: &InstallInputs<'_>) -> Result<String, RenderError> {
    let console_url = console_url("--console", inputs.console_url)?;
    validate::name("--group", inputs.group)?;
    let agent_version = inputs.artifacts.version().ok_or_else(|| {
        FieldError::new(
            "--agent-dir",
            "there is no agent binary for the script to install; give the directory of tasknode-x86_64",
        )
    })?;
    let console_ca = console_ca_text(&console_url, inputs.console_ca)?;
    let console_urls = agent_urls("--agent-url", &console_url, inputs.agent_urls)?.join(" ");
    let (enrollment_token, user_name, password) = match &inputs.credential {
        InstallCredential::Token(token) => {
            validate::enrollment_token("enrollment token", token)?;
            (token.clone(), String::new(), String::new())
        }
        InstallCredential::AccessKey {
            user_name,
            password,
        } => {
            validate::name("--user-name", user_name)?;
            validate::password("password", password)?;
            (String::new(), user_name.clone(), password.clone())
        }
    };
    let download = |arch: Arch| match inputs.artifacts.get(arch) {
        Some(b) => (agent_url(&console_url, arch), b.sha256.clone()),
        None => (String::new(), String::new()),
    };
    let (x86_url, x86_sha) = download(Arch::X86_64);
    let (arm_url, arm_sha) = download(Arch::Aarch64);
    let ctx = InstallContext {
        enrollment_token,
        user_name,
        password,
        console_ca,
        enable_uuid: inputs.enable_uuid.to_string(),
        group: inputs.group.to_owned(),
        agent_version: agent_version.to_owned(),
        agent_x86_64_url: x86_url,
        agent_x86_64_sha256: x86_sha,
        agent_aarch64_url: arm_url,
        agent_aarch64_sha256: arm_sha,
        console_urls,
        console_url,
        refused: String::new(),
        layout: install_layout(t)?,
    };
    Ok(t.render(templates::INSTALL_SH, &ctx)?)
}

/// install.sh for a link the console refused (used, expired, unknown): it prints `reason` and
/// exits 1, except with `--uninstall`, which works as in any install script. So the command an
/// operator ran once still removes what it installed.
pub fn refused_install_sh(
    t: &Templates,
    console_url: &str,
    console_ca: Option<&str>,
    reason: &str,
) -> Result<String, RenderError> {
    let console_url = self::console_url("--console", console_url)?;
    let console_ca = console_ca_text(&console_url, console_ca)?;
    let ctx = InstallContext {
        enrollment_token: String::new(),
        user_name: String::new(),
        password: String::new(),
        console_ca,
        enable_uuid: "false".to_owned(),
        group: String::new(),
        agent_version: String::new(),
        agent_x86_64_url: String::new(),
        agent_x86_64_sha256: String::new(),
        agent_aarch64_url: String::new(),
        agent_aarch64_sha256: String::new(),
        console_urls: console_url.clone(),
        console_url,
        refused: if reason.is_empty() {
            "the console refused this install link".to_owned()
        } else {
            reason.to_owned()
        },
        layout: install_layout(t)?,
    };
    Ok(t.render(templates::INSTALL_SH, &ctx)?)
}

/// install.sh's layout half, the same in a working script and a refused link's: the script
/// layout, and the unit, init script and serverctl rendered for it.
fn install_layout(t: &Templates) -> Result<InstallLayoutContext, RenderError> {
    let layout = Layout::script();
    Ok(InstallLayoutContext {
        unit_file: unit(t, &layout)?,
        init_script: init(t, &layout)?,
        serverctl_script: serverctl(t, &layout)?,
        root_serverctl_script: root_serverctl(t, &layout)?,
        root_serverctl: crate::layout::ROOT_SERVERCTL.to_owned(),
        agent_user: crate::layout::AGENT_USER.to_owned(),
        unit_path: crate::layout::SCRIPT_UNIT.to_owned(),
        init_path: layout.init_script.clone(),
        install_state_dir: crate::layout::INSTALL_STATE_DIR.to_owned(),
        bin: layout.bin,
        config: layout.config,
        log_dir: layout.log_dir,
        work_dir: layout.work_dir,
        pid_file: layout.pid_file,
    })
}

/// The CA text a script carries: checked PEM over HTTPS, empty without a CA.
fn console_ca_text(console_url: &str, pem: Option<&str>) -> Result<String, FieldError> {
    match pem {
        None => Ok(String::new()),
        Some(_) if !console_url.starts_with("https://") => Err(FieldError::new(
            "--console-ca",
            format!("a CA is only used over HTTPS, and {console_url} is not https://"),
        )),
        Some(pem) => ca_pem("--console-ca", pem),
    }
}

/// The yum .repo file for `dist`. With `ca_file` (an absolute path on the host), yum trusts
/// only that CA for the repository; it needs an https:// console.
pub fn repo(
    t: &Templates,
    console: &str,
    dist: Dist,
    ca_file: Option<&str>,
) -> Result<String, RenderError> {
    let base_url = console_url("--console", console)?;
    let ca_file = match ca_file {
        None => String::new(),
        Some(_) if !base_url.starts_with("https://") => {
            return Err(FieldError::new(
                "--sslcacert",
                format!("a CA is only used over HTTPS, and {base_url} is not https://"),
            )
            .into());
        }
        Some(path) => host_path("--sslcacert", path)?,
    };
    let ctx = RepoContext {
        base_url,
        dist,
        ca_file,
    };
    Ok(t.render(templates::YUM_REPO, &ctx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_urls_are_checked_before_rendering() {
        assert_eq!(
            console_url("c", "https://c.example.com:8443/").unwrap(),
            "https://c.example.com:8443"
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://u:p@x",
            "http://x/$(id)",
            "http://x/'a'",
            "http://x\n/",
            "http://x/?a",
        ] {
            assert_eq!(
                console_url("--console", bad).unwrap_err().field,
                "--console",
                "{bad}"
            );
        }
    }

    #[test]
    fn config_is_valid_toml_and_the_agent_layout() {
        let t = Templates::embedded().unwrap();
        let text = config(
            &t,
            &Layout::script(),
            "http://127.0.0.1:8080",
            InstallMethod::Script,
        )
        .unwrap();
        assert!(
            text.contains("console_url = \"http://127.0.0.1:8080\"\n"),
            "{text}"
        );
        assert!(
            text.contains("log_dir = \"/home/admin/tasknode/logs\"\n"),
            "{text}"
        );
        assert!(
            text.contains("pid_file = \"/home/admin/tasknode/run/tasknode.pid\"\n"),
            "{text}"
        );
        assert!(
            text.contains("work_dir = \"/home/admin/tasknode/work\"\n"),
            "{text}"
        );
    }

    #[test]
    fn repo_points_at_the_dist_and_key() {
        let t = Templates::embedded().unwrap();
        let text = repo(&t, "https://c.example.com", Dist::El6, None).unwrap();
        assert!(
            text.contains("baseurl=https://c.example.com/repo/el6/$basearch/\n"),
            "{text}"
        );
        assert!(text.contains("gpgcheck=1\nrepo_gpgcheck=1\n"), "{text}");
        assert!(!text.contains("sslcacert"), "{text}");
    }

    #[test]
    fn repo_of_a_console_with_its_own_ca_trusts_that_ca() {
        let t = Templates::embedded().unwrap();
        let ca = tasknode_protocol::layout::YUM_CA_FILE;
        let text = repo(&t, "https://c.example.com", Dist::Al8, Some(ca)).unwrap();
        assert!(
            text.ends_with(&format!("sslverify=1\nsslcacert={ca}\n")),
            "{text}"
        );
        let field = |r: Result<String, RenderError>| {
            r.unwrap_err()
                .to_string()
                .split(':')
                .next()
                .map(str::to_owned)
        };
        // Plain HTTP has no certificate to check.
        assert_eq!(
            field(repo(&t, "http://c.example.com", Dist::Al8, Some(ca))).as_deref(),
            Some("--sslcacert")
        );
        for bad in [
            "relative.pem",
            "/etc/pki/$basearch.pem",
            "/a b.pem",
            "/a\nsslverify=0",
        ] {
            assert_eq!(
                field(repo(&t, "https://c", Dist::Al8, Some(bad))).as_deref(),
                Some("--sslcacert"),
                "{bad:?}"
            );
        }
    }

    /// The variables of install.sh's header block, in order, each with its value as the script
    /// writes it (single-quoted runs and `\'`).
    fn header_vars(script: &str) -> Vec<(String, String)> {
        let start = script.find("\n{\n").unwrap() + 3;
        let mut rest = &script[start..];
        let mut vars = Vec::new();
        while !rest.starts_with("}\n") {
            let (name, after) = rest.split_once('=').unwrap();
            let mut end = 0;
            let bytes = after.as_bytes();
            while bytes[end] != b'\n' {
                end += match bytes[end] {
                    b'\'' => after[end + 1..].find('\'').unwrap() + 2,
                    b'\\' => 2,
                    other => panic!("{name}: unquoted {:?}", other as char),
                };
            }
            vars.push((name.to_owned(), after[..end].to_owned()));
            rest = &after[end + 1..];
        }
        vars
    }

    /// A refused link's script still uninstalls, so it must know every path, unit and file a
    /// working script installs. Only what belongs to one link may differ; a variable this list
    /// does not name is layout and must be the same in both.
    #[test]
    fn a_refused_script_has_the_layout_of_a_working_one() {
        const PER_LINK: &[&str] = &[
            "CONSOLE_URL",
            "CONSOLE_URLS",
            "CONSOLE_CA",
            "ENROLLMENT_TOKEN",
            "USER_NAME",
            "PASSWORD",
            "ENABLE_UUID",
            "GROUP",
            "AGENT_VERSION",
            "AGENT_X86_64_URL",
            "AGENT_X86_64_SHA256",
            "AGENT_AARCH64_URL",
            "AGENT_AARCH64_SHA256",
            "REFUSED",
        ];
        let t = Templates::embedded().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for arch in [Arch::X86_64, Arch::Aarch64] {
            std::fs::write(
                dir.path().join(crate::artifacts::file_name(arch)),
                crate::artifacts::stand_in_binary(
                    "0.1.0",
                    crate::artifacts::file_name(arch).as_bytes(),
                ),
            )
            .unwrap();
        }
        let artifacts = AgentArtifacts::scan(dir.path()).unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIU\n-----END CERTIFICATE-----\n";
        let working = install_sh(
            &t,
            &InstallInputs {
                console_url: "https://console.example.com:8443",
                agent_urls: &[],
                console_ca: Some(pem),
                credential: InstallCredential::Token(format!("tn_{}", "a".repeat(43))),
                group: "etl",
                enable_uuid: true,
                artifacts: &artifacts,
            },
        )
        .unwrap();
        let refused = refused_install_sh(
            &t,
            "https://console.example.com:8443",
            Some(pem),
            "this link was used",
        )
        .unwrap();
        let (working, refused) = (header_vars(&working), header_vars(&refused));
        let names = |vars: &[(String, String)]| -> Vec<String> {
            vars.iter().map(|(n, _)| n.clone()).collect()
        };
        assert_eq!(names(&working), names(&refused));
        for (name, value) in &working {
            if PER_LINK.contains(&name.as_str()) {
                continue;
            }
            assert!(value.len() > 2, "{name} is empty: {value}");
            let other = &refused.iter().find(|(n, _)| n == name).unwrap().1;
            assert_eq!(value, other, "{name} differs in the refused script");
        }
        let layout: Vec<&str> = working
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !PER_LINK.contains(n))
            .collect();
        for name in [
            "BIN",
            "CONF",
            "PIDFILE",
            "UNIT_FILE",
            "INIT_SCRIPT",
            "SERVERCTL_SCRIPT",
            "ROOT_SERVERCTL",
            "UNIT_PATH",
            "INIT_PATH",
            "STATE_DIR",
        ] {
            assert!(layout.contains(&name), "{name} not in {layout:?}");
        }
        // The block was read value by value: the per-link ones differ where they must.
        let value = |vars: &[(String, String)], name: &str| {
            vars.iter().find(|(n, _)| n == name).unwrap().1.clone()
        };
        assert_eq!(value(&working, "GROUP"), "'etl'");
        assert_eq!(value(&refused, "GROUP"), "''");
        assert_eq!(value(&refused, "REFUSED"), "'this link was used'");
    }

    #[test]
    fn unit_quotes_paths_for_systemd() {
        let t = Templates::embedded().unwrap();
        let mut layout = Layout::script();
        layout.bin = "/opt/task node/100%/tasknode".into();
        let text = unit(&t, &layout).unwrap();
        assert!(
            text.contains("ExecStart=\"/opt/task node/100%%/tasknode\" run --config \"/home/admin/tasknode/conf/tasknode.conf\"\n"),
            "{text}"
        );
        assert!(text.contains("User=admin\n"));
    }
}
