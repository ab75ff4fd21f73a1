//! Command-line interface of tasknode-dist.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::layout::Layout;
use crate::render;
use crate::templates::Templates;

#[derive(Debug, Parser)]
#[command(
    name = "tasknode-dist",
    version,
    about = "Render tasknode's service units, init script, agent config and yum .repo file"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render one file offline, from the embedded templates (or --templates DIR).
    #[command(subcommand)]
    Render(RenderCmd),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    /// install.sh: /home/admin/tasknode/{bin,conf,logs,run}
    Script,
    /// RPM and .deb: /usr/bin, /etc/tasknode, /var/log/tasknode, /var/run/tasknode
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
    /// Console URL the agent enrolls with and downloads from.
    #[arg(long, value_name = "URL")]
    console: String,
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
    /// The agent config before enrollment.
    Config {
        /// Console URL the agent enrolls with.
        #[arg(long, value_name = "URL")]
        console: String,
        /// script, rpm, deb or manual.
        #[arg(long, default_value = "script")]
        install_method: String,
        #[command(flatten)]
        common: Common,
    },
    /// The yum .repo file for a dist.
    Repo {
        /// Console URL serving the repository.
        #[arg(long, value_name = "URL")]
        console: String,
        /// el6, el7, al7 or al8.
        #[arg(long)]
        dist: String,
        #[command(flatten)]
        common: Common,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Render(cmd) = cli.command;
    let (common, text, mode) = match &cmd {
        RenderCmd::InstallSh(args) => {
            let text = install_sh(args)?;
            return write_atomically(&args.out, &text, 0o600);
        }
        RenderCmd::Unit(c) => (c, render::unit(&templates(c)?, &layout(c))?, 0o644),
        RenderCmd::Init(c) => (c, render::init(&templates(c)?, &layout(c))?, 0o755),
        RenderCmd::Serverctl(c) => (c, render::serverctl(&templates(c)?, &layout(c))?, 0o755),
        RenderCmd::Config {
            console,
            install_method,
            common: c,
        } => (
            c,
            render::config(&templates(c)?, &layout(c), console, install_method)?,
            0o600,
        ),
        RenderCmd::Repo {
            console,
            dist,
            common: c,
        } => (c, render::repo(&templates(c)?, console, dist)?, 0o644),
    };
    match &common.out {
        Some(path) => write_atomically(path, &text, mode),
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
        crate::artifacts::AgentArtifacts::scan(&args.agent_dir).context("--agent-dir")?;
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

/// Writes `text` to a temporary file beside `path` with `mode`, then renames it into place.
fn write_atomically(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("--out: {} names no file", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("--out: cannot write {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
