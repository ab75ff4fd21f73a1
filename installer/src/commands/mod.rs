//! The command line of tasknode-dist: the parser and its dispatch here, one module per
//! subcommand (or group) beside it, as the console and the agent have theirs.

mod build;
mod index;
mod keygen;
mod render;
mod rollback;

use clap::{CommandFactory, Parser, Subcommand};

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
    Keygen(keygen::KeygenArgs),
    /// Build a release: the static agent (tarball and SHA256SUMS), a .deb, signed RPMs and signed yum
    /// repositories. Adding a version to an existing --out re-indexes its repositories.
    Build(build::BuildArgs),
    /// Sign a rollback manifest for a version already built in --out: agents that run a newer
    /// version accept it and move back to this one (until it expires). Publish the file it
    /// writes with `tasknode-console release publish`, then `release pin` the version.
    Rollback(rollback::RollbackArgs),
    /// Re-index one yum repository directory: write its repodata for the RPMs in it, sign
    /// repomd.xml, and swap the new metadata in atomically. Packages already indexed are not
    /// read again. `build` does this for the repositories it adds to.
    Index(index::IndexArgs),
    /// Render one file offline, from the embedded templates (or --templates DIR).
    #[command(subcommand)]
    Render(render::RenderCmd),
    /// Print a completion script for bash, zsh or fish (packages install them).
    Completions(tasknode_clidocs::CompletionsArgs),
    /// Print the man page, or write every page (one per subcommand too) with --out DIR.
    Man(tasknode_clidocs::ManArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Build(args) => build::run(&args),
        Command::Rollback(args) => rollback::run(&args),
        Command::Index(args) => index::run(&args),
        Command::Completions(args) => Ok(tasknode_clidocs::run_completions(Cli::command(), &args)?),
        Command::Man(args) => Ok(tasknode_clidocs::run_man(Cli::command(), &args)?),
        Command::Render(cmd) => render::run(&cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
