//! Shell completions and man pages for the tasknode binaries, made from each binary's clap
//! definition (clap_complete, clap_mangen), so the pages and completions say what `--help`
//! says. Every binary has the two subcommands, `completions SHELL` and `man [--out DIR]`;
//! `tasknode-dist` runs them on the agent it packages, so the packages carry what that very
//! build would print.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Command, ValueEnum};

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    pub fn as_str(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }

    /// Where a package installs the completions of `bin` for this shell, with bash's directory
    /// given (it differs between old and new systems).
    pub fn package_path(self, bin: &str, bash_dir: &str) -> String {
        match self {
            Shell::Bash => format!("{bash_dir}/{bin}"),
            Shell::Zsh => format!("/usr/share/zsh/site-functions/_{bin}"),
            Shell::Fish => format!("/usr/share/fish/vendor_completions.d/{bin}.fish"),
        }
    }
}

/// Where bash-completion 2 (CentOS 7 and later, Debian) loads completions from on demand.
pub const BASH_COMPLETIONS: &str = "/usr/share/bash-completion/completions";
/// Where bash-completion 1 (CentOS 6) reads them from, each file at every shell start.
pub const BASH_COMPLETIONS_OLD: &str = "/etc/bash_completion.d";
/// Where packages put man pages of section 1.
pub const MAN1: &str = "/usr/share/man/man1";

/// `completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in. Load it in the running shell with, for bash,
    /// `source <(BINARY completions bash)`; packages install it where each shell looks.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `man [--out DIR]`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page into DIR (the command's, and one per subcommand, named like
    /// `tasknode-enroll.1`) instead of printing the command's page. Read one with `man -l FILE`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completions(mut cmd: Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes the man page of `cmd` itself to `out`.
pub fn man_page(cmd: Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    clap_mangen::Man::new(cmd).render(out)
}

/// Writes the pages of `cmd` and of each of its subcommands into `dir` (made if missing);
/// returns their paths, sorted.
pub fn write_man_pages(cmd: Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let before: Vec<PathBuf> = pages_in(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    let mut written: Vec<PathBuf> = pages_in(dir)?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    written.sort();
    Ok(written)
}

fn pages_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            pages.push(path);
        }
    }
    Ok(pages)
}

/// A reader that stopped reading (`| head`) is no failure.
fn closed_is_fine(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs `completions` for the binary whose definition is `cmd`.
pub fn run_completions(cmd: Command, args: &CompletionsArgs) -> std::io::Result<()> {
    let mut text = Vec::new();
    completions(cmd, args.shell, &mut text);
    let mut out = std::io::stdout().lock();
    closed_is_fine(out.write_all(&text).and_then(|()| out.flush()))
}

/// Runs `man` for the binary whose definition is `cmd`; with `--out`, names each page written
/// on standard output.
pub fn run_man(cmd: Command, args: &ManArgs) -> std::io::Result<()> {
    let mut text = Vec::new();
    match &args.out {
        None => man_page(cmd, &mut text)?,
        Some(dir) => {
            for page in write_man_pages(cmd, dir)? {
                writeln!(text, "{}", page.display())?;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    closed_is_fine(out.write_all(&text).and_then(|()| out.flush()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Debug, Parser)]
    #[command(name = "demo", version = "1.2.3", about = "A demo tool")]
    struct Demo {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        /// Enroll something.
        Enroll {
            /// Where to.
            #[arg(long)]
            console: String,
        },
        /// Show the state.
        Status,
    }

    fn cmd() -> Command {
        <Demo as clap::CommandFactory>::command()
    }

    #[test]
    fn completions_name_the_subcommands_and_their_flags_in_every_shell() {
        for shell in Shell::ALL {
            let mut out = Vec::new();
            completions(cmd(), shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["enroll", "status", "console"] {
                assert!(
                    text.contains(word),
                    "{} lacks {word}:\n{text}",
                    shell.as_str()
                );
            }
        }
    }

    #[test]
    fn the_pages_are_the_command_and_each_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(cmd(), dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["demo-enroll.1", "demo-status.1", "demo.1"]);
        let main = std::fs::read_to_string(dir.path().join("demo.1")).unwrap();
        assert!(main.contains(".TH demo 1"), "{main}");
        assert!(main.contains("1.2.3"), "{main}");
        let enroll = std::fs::read_to_string(dir.path().join("demo-enroll.1")).unwrap();
        assert!(enroll.contains("Where to"), "{enroll}");
        let mut page = Vec::new();
        man_page(cmd(), &mut page).unwrap();
        assert_eq!(String::from_utf8(page).unwrap(), main);
    }
}
