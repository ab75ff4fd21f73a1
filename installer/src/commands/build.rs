//! `tasknode-dist build`: one version in, every artifact of a release out (with a progress bar).

use std::path::PathBuf;

use clap::Args;
use tasknode_dist::target::Target;

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

/// Progress bar on standard error (hidden when it is not a terminal).
struct Bar(indicatif::ProgressBar);

impl tasknode_dist::release::Progress for Bar {
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

pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    use tasknode_dist::release;
    let version = tasknode_dist::target::Version::parse(&args.version)?;
    let targets = tasknode_dist::target::parse_targets(&args.targets)?;
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
            let mut keys = tasknode_dist::keys::ReleaseKeys::load(dir)?.trusted_hex(dir)?;
            keys.retain(|k| !trusted.contains(k));
            trusted.splice(0..0, keys);
        }
        let mut built = Vec::new();
        for arch in tasknode_render::arch::Arch::ALL {
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
    // Console packages are made for the .deb and for the dists rpm/targets.toml marks.
    let packages = targets.iter().any(|t| match t {
        Target::Deb => true,
        Target::Rpm(dist) => tasknode_dist::target::rpm_targets()
            .is_ok_and(|f| f.get(dist).is_some_and(|f| f.console)),
    });
    let console = match (&args.console, args.no_console || !args.agent.is_empty()) {
        (Some(path), _) => Some(path.clone()),
        (None, false) if packages => {
            eprintln!(
                "building the static console ({})",
                tasknode_render::arch::Arch::X86_64.rust_target()
            );
            Some(tasknode_dist::console_package::compile(&args.workspace)?)
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
        jobs: args
            .jobs
            .unwrap_or_else(tasknode_dist::parallel::default_jobs),
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
