//! Command-line interface of tasknode-dist.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::layout::Layout;
use crate::render;
use crate::templates::Templates;

#[derive(Debug, Parser)]
#[command(
    name = "tasknode-dist",
    version,
    about = "Build tasknode releases (static agent, signed RPMs and yum repositories) and render its install files",
    long_about = "Build tasknode releases and render its install files.\n\n\
        `keygen` makes the release keys once; `build` turns a version into the agent tarball, a .deb, \
        signed RPMs for el6/el7/al7/al8 and their signed yum repositories; `render` writes one \
        install file offline."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the release keys: an OpenPGP RSA-4096 key for packages and repodata, and an
    /// ed25519 key for update manifests. Private keys are written 0600; existing keys are
    /// never replaced.
    Keygen(KeygenArgs),
    /// Build a release: the static agent (tarball and SHA256SUMS), a .deb, signed RPMs and signed yum
    /// repositories. Adding a version to an existing --out re-indexes its repositories.
    Build(BuildArgs),
    /// Sign a rollback manifest for a version already built in --out: agents that run a newer
    /// version accept it and move back to this one (until it expires). Publish the file it
    /// writes with `tasknode-console release publish`, then `release pin` the version.
    Rollback(RollbackArgs),
    /// Re-index one yum repository directory: write its repodata for the RPMs in it, sign
    /// repomd.xml, and swap the new metadata in atomically. Packages already indexed are not
    /// read again. `build` does this for the repositories it adds to.
    Index(IndexArgs),
    /// Render one file offline, from the embedded templates (or --templates DIR).
    #[command(subcommand)]
    Render(RenderCmd),
    /// Print a completion script for bash, zsh or fish (packages install them).
    Completions(tasknode_clidocs::CompletionsArgs),
    /// Print the man page, or write every page (one per subcommand too) with --out DIR.
    Man(tasknode_clidocs::ManArgs),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The release directory the version was built in.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Directory of the release keys (from `keygen`).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// The version to roll back to.
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The update channel.
    #[arg(long, default_value = tasknode_protocol::manifest::DEFAULT_CHANNEL)]
    pub channel: String,
    /// How long agents accept the rollback manifest.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub expires_in: std::time::Duration,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The repository directory (e.g. OUT/repo/el7/x86_64): its *.rpm files are indexed.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Directory of the release keys (from `keygen`).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Time stamp of the metadata and its signature. [default: SOURCE_DATE_EPOCH, else the
    /// commit time of the current directory's HEAD]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u32>,
    /// Print what was indexed as JSON.
    #[arg(long)]
    pub json: bool,
    /// Threads to read packages and compress metadata on; any number gives the same bytes.
    /// [default: one per core]
    #[arg(long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to create the keys in (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The OpenPGP user ID of the package key.
    #[arg(long, value_name = "TEXT", default_value = "tasknode release signing")]
    pub user_id: String,
    /// Print what was made as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Release directory: repo/, releases/, agents/ and the public key go here.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The release version: numbers separated by dots, e.g. 1.4.0.
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// Comma-separated targets: el6, el7, al7, al8 (RPMs and their yum repositories) and deb
    /// (needs cargo-deb); or none, for the agent and its signed update manifest only.
    #[arg(long, value_name = "LIST", default_value = "el6,el7,al7,al8,deb")]
    pub targets: String,
    /// Directory of the release keys (from `keygen`); needed for RPM targets.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// A static agent built with TASKNODE_VERSION=VERSION, instead of building them here
    /// (`cargo build --profile agent --target x86_64-unknown-linux-musl -p tasknode`, and
    /// aarch64-unknown-linux-musl). Repeatable, one per architecture (read from the file); the
    /// release is made for the architectures given.
    #[arg(long, value_name = "FILE")]
    pub agent: Vec<PathBuf>,
    /// A static x86_64 console to package as tasknode-console (RPMs for el7 and al8, a .deb)
    /// instead of building it here (`cargo build --release --target x86_64-unknown-linux-musl
    /// -p tasknode-console`). Without it, the console is built here when the agents are (no
    /// --agent), and a release of given --agent files holds no console packages.
    #[arg(long, value_name = "FILE", conflicts_with = "no_console")]
    pub console: Option<PathBuf>,
    /// Build no console packages, even when the agents are built here.
    #[arg(long)]
    pub no_console: bool,
    /// The workspace to build the agent (and the .deb) in.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// Time stamp of every file and signature. [default: SOURCE_DATE_EPOCH, else the commit
    /// time of the workspace's HEAD]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u32>,
    /// Directory whose files replace embedded templates of the same name.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// The update channel the release's manifest is signed for.
    #[arg(long, default_value = tasknode_protocol::manifest::DEFAULT_CHANNEL)]
    pub channel: String,
    /// Another update-manifest public key (64 hex digits) the agent built here trusts, beside
    /// the one in --keys: the next key, before a rotation. Repeatable.
    #[arg(long = "trust-key", value_name = "HEX")]
    pub trust_keys: Vec<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many packages, signatures and repository indexes to make at once; any number gives
    /// the same bytes (1 builds one thing after another). [default: one per core]
    #[arg(long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
}

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
        /// The CA file on the host that yum trusts for this repository alone (`sslcacert`),
        /// for an https:// console with its own CA.
        #[arg(long, value_name = "PATH")]
        sslcacert: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let cmd = match cli.command {
        Command::Keygen(args) => return keygen(&args),
        Command::Build(args) => return build(&args),
        Command::Rollback(args) => return rollback(&args),
        Command::Index(args) => return index(&args),
        Command::Completions(args) => {
            return Ok(tasknode_clidocs::run_completions(Cli::command(), &args)?);
        }
        Command::Man(args) => return Ok(tasknode_clidocs::run_man(Cli::command(), &args)?),
        Command::Render(cmd) => cmd,
    };
    let (common, text, mode) = match &cmd {
        RenderCmd::InstallSh(args) => {
            let text = install_sh(args)?;
            return write_atomically(&args.out, &text, 0o600);
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
            render::config(&templates(c)?, &layout(c), console, install_method)?,
            0o600,
        ),
        RenderCmd::Repo {
            console,
            dist,
            sslcacert,
            common: c,
        } => (
            c,
            render::repo(&templates(c)?, console, dist, sslcacert.as_deref())?,
            0o644,
        ),
    };
    match &common.out {
        Some(path) => write_atomically(path, &text, mode),
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!(
        "generating an RSA-{} key (takes a few seconds)",
        crate::keys::RSA_BITS
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let made = crate::keys::generate(&args.out, &args.user_id);
    spinner.finish_and_clear();
    let made = made?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&made)?);
    } else {
        println!("release keys written to {}", made.dir.display());
        println!(
            "  package key (RPMs, repodata): {} (public: {})",
            crate::keys::PACKAGE_SECRET,
            crate::keys::PACKAGE_PUBLIC
        );
        println!("    fingerprint {}", made.package_fingerprint);
        println!(
            "  manifest key (updates): {} (public: {})",
            crate::keys::MANIFEST_SECRET,
            crate::keys::MANIFEST_PUBLIC
        );
        println!("    {}", made.manifest_public_key);
        println!(
            "  standby manifest key, for the next rotation (agents trust it too; keep it offline): {}",
            crate::keys::MANIFEST_NEXT_SECRET
        );
        println!("    {}", made.next_manifest_public_key);
        println!("keep the *.secret.* files private and backed up: they sign every release");
    }
    Ok(())
}

/// Progress bar on standard error (hidden when it is not a terminal).
struct Bar(indicatif::ProgressBar);

impl crate::release::Progress for Bar {
    fn start(&self, steps: u64) {
        self.0.set_length(steps);
    }
    fn step(&self, what: &str) {
        if self.0.message().is_empty() {
            self.0.set_message(what.to_owned());
        } else {
            self.0.inc(1);
            self.0.set_message(what.to_owned());
        }
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn build(args: &BuildArgs) -> anyhow::Result<()> {
    use crate::release;
    let version = crate::target::Version::parse(&args.version)?;
    let targets = crate::target::parse_targets(&args.targets)?;
    let source_date = release::source_date(args.source_date_epoch, &args.workspace)?;
    tasknode_protocol::validate::name("channel", &args.channel)
        .map_err(|e| anyhow::anyhow!("--channel: {}", e.message))?;
    let mut trusted = Vec::new();
    for hex in &args.trust_keys {
        if tasknode_protocol::manifest::decode_key(hex).is_none() {
            anyhow::bail!(
                "--trust-key {hex:?} is not an ed25519 public key in hex (64 digits, as `tasknode-dist keygen` prints it)"
            );
        }
        trusted.push(hex.trim().to_ascii_lowercase());
    }
    let agents = if args.agent.is_empty() {
        if let Some(dir) = &args.keys {
            let mut keys = crate::keys::ReleaseKeys::load(dir)?.trusted_hex(dir)?;
            keys.retain(|k| !trusted.contains(k));
            trusted.splice(0..0, keys);
        }
        let mut built = Vec::new();
        for arch in crate::arch::Arch::ALL {
            eprintln!(
                "building the static agent {version} ({}), trusting {} update key(s)",
                arch.rust_target(),
                trusted.len()
            );
            built.push(release::compile_agent(
                &args.workspace,
                &version,
                &trusted,
                arch,
            )?);
        }
        built
    } else {
        args.agent.clone()
    };
    let packages = targets.iter().any(|t| {
        *t == "deb"
            || crate::target::rpm_targets().is_ok_and(|f| f.get(*t).is_some_and(|f| f.console))
    });
    let console = match (&args.console, args.no_console || !args.agent.is_empty()) {
        (Some(path), _) => Some(path.clone()),
        (None, false) if packages => {
            eprintln!(
                "building the static console ({})",
                crate::arch::Arch::X86_64.rust_target()
            );
            Some(crate::console_package::compile(&args.workspace)?)
        }
        (None, _) => None,
    };
    let opts = release::BuildOptions {
        out: args.out.clone(),
        version,
        targets,
        keys: args.keys.clone(),
        agents,
        console,
        source_date,
        templates_dir: args.templates.clone(),
        workspace: args.workspace.clone(),
        channel: args.channel.clone(),
        jobs: args.jobs.unwrap_or_else(crate::parallel::default_jobs),
    };
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = Bar(bar);
    let report = release::build(&opts, &progress);
    progress.0.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", release::summary(&report, &args.out));
        println!(
            "release {} built in {} (source date {})",
            report.version,
            args.out.display(),
            report.source_date
        );
    }
    Ok(())
}

fn rollback(args: &RollbackArgs) -> anyhow::Result<()> {
    let version = crate::target::Version::parse(&args.version)?;
    tasknode_protocol::validate::name("channel", &args.channel)
        .map_err(|e| anyhow::anyhow!("--channel: {}", e.message))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let life_ms = i64::try_from(args.expires_in.as_millis()).unwrap_or(i64::MAX);
    if life_ms <= 0 {
        anyhow::bail!("--expires-in must be longer than 0");
    }
    let report = crate::release::sign_rollback(
        &args.out,
        &args.keys,
        &version,
        &args.channel,
        now_ms,
        life_ms,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "signed a rollback to {} on channel {} in {}",
            report.version,
            report.channel,
            report.path.display()
        );
        println!(
            "next: tasknode-console release publish {} && tasknode-console release pin --group GROUP --version {}",
            report.path.display(),
            report.version
        );
    }
    Ok(())
}

fn index(args: &IndexArgs) -> anyhow::Result<()> {
    if !args.repo.is_dir() {
        anyhow::bail!("--repo {}: not a directory", args.repo.display());
    }
    let keys = crate::keys::ReleaseKeys::load(&args.keys)?;
    let source_date = crate::release::source_date(args.source_date_epoch, Path::new("."))?;
    let signer = keys
        .package_signer()
        .context("--keys: loading the package key")?;
    let indexed = crate::repo::index_with_jobs(
        &args.repo,
        source_date,
        keys.signature_time(source_date),
        &signer,
        args.jobs.unwrap_or_else(crate::parallel::default_jobs),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&indexed)?);
    } else {
        println!(
            "indexed {}: {} package(s), {} read for the first time; repomd.xml signed",
            args.repo.display(),
            indexed.packages,
            indexed.hashed
        );
    }
    Ok(())
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

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
