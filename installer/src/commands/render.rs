//! `tasknode-dist render ...`: one install file rendered offline from the templates.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tasknode_dist::fsutil;
use tasknode_render::Layout;
use tasknode_render::dist::Dist;
use tasknode_render::layout::InstallMethod;
use tasknode_render::render;
use tasknode_render::templates::Templates;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    /// install.sh: /home/admin/tasknode/{bin,conf,logs,run,work}
    Script,
    /// RPM and .deb: /usr/bin, /etc/tasknode, /var/log/tasknode, /var/run/tasknode,
    /// /var/lib/tasknode/work
    Package,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Which install's paths to use.
    #[arg(long, value_enum, default_value = "script")]
    pub layout: LayoutArg,
    /// Directory whose files replace embedded templates of the same name.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Write here instead of standard output (atomically; the mode suits the file).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `render install-sh`.
#[derive(Debug, Args)]
pub struct InstallShArgs {
    /// Console URL the script checks and downloads from.
    #[arg(long, value_name = "URL")]
    console: String,
    /// A URL the agent talks to (a load balancer, or each console), written into its config
    /// in order; repeatable, with the scheme of --console. [default: --console]
    #[arg(long = "agent-url", value_name = "URL")]
    agent_urls: Vec<String>,
    /// The console's CA certificate (PEM; a `serve --tls` console keeps it in
    /// DATA/tls/ca.pem): the script and the agent then trust it alone.
    #[arg(long, value_name = "FILE")]
    console_ca: Option<PathBuf>,
    /// User name of the access key.
    #[arg(long, value_name = "NAME")]
    user_name: String,
    /// File whose first line is the access key's password.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// The resource group the server joins.
    #[arg(long, value_name = "NAME")]
    group: String,
    /// true: enroll by DMI UUID (VPC group); false: by hostname (classic group).
    #[arg(long, value_name = "true|false", value_parser = clap::builder::BoolValueParser::new(), action = clap::ArgAction::Set)]
    enable_uuid: bool,
    /// Directory with the agent binaries (tasknode-x86_64, tasknode-aarch64) the console
    /// serves, to take their SHA-256 from.
    #[arg(long, value_name = "DIR")]
    agent_dir: PathBuf,
    /// File to write (mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RenderCmd {
    /// install.sh carrying a user's access key (the file then holds the password: it is
    /// written 0600). The console hands out scripts with one-time tokens instead.
    InstallSh(InstallShArgs),
    /// The systemd unit (tasknode.service).
    Unit(Common),
    /// The SysV init script (/etc/init.d/tasknode, el6).
    Init(Common),
    /// bin/serverctl, the wrapper beside the agent binary.
    Serverctl(Common),
    /// /usr/sbin/tasknode-serverctl, root's entry point (never runs the agent user's files).
    RootServerctl(Common),
    /// The agent config before enrollment.
    Config {
        /// Console URL the agent enrolls with.
        #[arg(long, value_name = "URL")]
        console: String,
        /// script, rpm, deb or manual.
        #[arg(long, default_value = "script")]
        install_method: InstallMethod,
        #[command(flatten)]
        common: Common,
    },
    /// The yum .repo file for a dist.
    Repo {
        /// Console URL serving the repository.
        #[arg(long, value_name = "URL")]
        console: String,
        /// The dist whose repository it names.
        #[arg(long, value_enum)]
        dist: Dist,
        /// The CA file on the host that yum trusts for this repository alone (`sslcacert`),
        /// for an https:// console with its own CA.
        #[arg(long, value_name = "PATH")]
        sslcacert: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// Renders the file `cmd` names, to --out (atomically, with the file's mode) or standard output.
pub fn run(cmd: &RenderCmd) -> anyhow::Result<()> {
    let (common, text, mode) = match cmd {
        RenderCmd::InstallSh(args) => {
            let text = install_sh(args)?;
            return write_out(&args.out, &text, 0o600);
        }
        RenderCmd::Unit(c) => (c, render::unit(&templates(c)?, &layout(c))?, 0o644),
        RenderCmd::Init(c) => (c, render::init(&templates(c)?, &layout(c))?, 0o755),
        RenderCmd::Serverctl(c) => (c, render::serverctl(&templates(c)?, &layout(c))?, 0o755),
        RenderCmd::RootServerctl(c) => (
            c,
            render::root_serverctl(&templates(c)?, &layout(c))?,
            0o755,
        ),
        RenderCmd::Config {
            console,
            install_method,
            common: c,
        } => (
            c,
            render::config(&templates(c)?, &layout(c), console, *install_method)?,
            0o600,
        ),
        RenderCmd::Repo {
            console,
            dist,
            sslcacert,
            common: c,
        } => (
            c,
            render::repo(&templates(c)?, console, *dist, sslcacert.as_deref())?,
            0o644,
        ),
    };
    match &common.out {
        Some(path) => write_out(path, &text, mode),
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

/// install.sh with an access key, for `render install-sh`.
fn install_sh(args: &InstallShArgs) -> anyhow::Result<String> {
    let password = std::fs::read_to_string(&args.password_file)
        .with_context(|| format!("--password-file: reading {}", args.password_file.display()))?;
    let password = password.lines().next().unwrap_or("").to_owned();
    let artifacts =
        tasknode_render::artifacts::AgentArtifacts::scan(&args.agent_dir).context("--agent-dir")?;
    let console_ca = match &args.console_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--console-ca: reading {}", path.display()))?,
        ),
        None => None,
    };
    let t = match &args.templates {
        Some(d) => Templates::with_overrides(d)?,
        None => Templates::embedded()?,
    };
    let inputs = render::InstallInputs {
        console_url: &args.console,
        agent_urls: &args.agent_urls,
        console_ca: console_ca.as_deref(),
        credential: render::InstallCredential::AccessKey {
            user_name: args.user_name.clone(),
            password,
        },
        group: &args.group,
        enable_uuid: args.enable_uuid,
        artifacts: &artifacts,
    };
    Ok(render::install_sh(&t, &inputs)?)
}

fn layout(c: &Common) -> Layout {
    match c.layout {
        LayoutArg::Script => Layout::script(),
        LayoutArg::Package => Layout::package(),
    }
}

fn templates(c: &Common) -> anyhow::Result<Templates> {
    Ok(match &c.templates {
        Some(dir) => Templates::with_overrides(dir)?,
        None => Templates::embedded()?,
    })
}

/// Writes `text` to `path` atomically with `mode` (0600 for a file that holds a secret).
fn write_out(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    fsutil::write_atomic(path, text.as_bytes(), mode)
        .with_context(|| format!("--out: cannot write {}", path.display()))
}
