//! Shell completions and man pages of the three binaries, used the way an operator's shell and
//! `man` use them: bash and fish complete subcommands and flags from the scripts the binaries
//! print, zsh parses its script, and `man -l` renders every page `man --out` writes, one per
//! subcommand. The packages carry the same files (tests/packaging.rs).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use tasknode_tests::releases::{ok, run};
use tasknode_tests::{bin, stderr, which};

const BINARIES: [&str; 3] = ["tasknode", "tasknode-console", "tasknode-dist"];

fn completions(binary: &str, shell: &str, dir: &Path) -> std::path::PathBuf {
    let text = ok(Command::new(bin(binary)).args(["completions", shell]));
    let path = dir.join(format!("{binary}.{shell}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// What bash offers for the words of `line`, completing the last (empty: a new word).
fn bash_offers(script: &Path, binary: &str, line: &str) -> Vec<String> {
    let function = format!("_{}", binary.replace('-', "__"));
    let program = format!(
        r#"source "$1"
read -r -a COMP_WORDS <<<"$2"
case "$2" in *" ") COMP_WORDS+=("") ;; esac
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="$2"
COMP_POINT=${{#COMP_LINE}}
{function} "{binary}" "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    ok(Command::new(which("bash"))
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .arg(line))
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn bash_completes_subcommands_and_flags_of_every_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 5] = [
        ("tasknode", "tasknode en", &["enroll"]),
        (
            "tasknode",
            "tasknode enroll --cons",
            &["--console", "--console-ca"],
        ),
        (
            "tasknode",
            "tasknode serverctl ",
            &["start", "stop", "restart", "status"],
        ),
        (
            "tasknode-console",
            "tasknode-console se",
            &["serve", "server"],
        ),
        ("tasknode-dist", "tasknode-dist bu", &["build"]),
    ];
    for (binary, line, want) in cases {
        let script = completions(binary, "bash", dir.path());
        let offers = bash_offers(&script, binary, line);
        for w in want {
            assert!(
                offers.iter().any(|o| o == w),
                "{line:?}: {w} not in {offers:?}"
            );
        }
        // What is offered fits what was typed.
        let typed = line.rsplit(' ').next().unwrap();
        assert!(
            offers.iter().all(|o| o.starts_with(typed)),
            "{line:?}: {offers:?}"
        );
    }
}

#[test]
fn fish_completes_and_zsh_parses_the_scripts() {
    let dir = tempfile::tempdir().unwrap();
    for binary in BINARIES {
        let fish = completions(binary, "fish", dir.path());
        let offers = ok(Command::new(which("fish"))
            .args(["--no-config", "-c"])
            .arg(format!(
                "source {}; complete --do-complete '{binary} ma'",
                fish.display()
            )));
        assert!(
            offers.lines().any(|l| l.starts_with("man\t") || l == "man"),
            "{binary}: fish offers {offers:?}"
        );
        let zsh = completions(binary, "zsh", dir.path());
        let parsed = run(Command::new(which("zsh")).arg("-n").arg(&zsh));
        assert!(
            parsed.status.success(),
            "{binary}: zsh -n: {}",
            stderr(&parsed)
        );
        assert!(
            std::fs::read_to_string(&zsh)
                .unwrap()
                .starts_with(&format!("#compdef {binary}"))
        );
    }
}

#[test]
fn every_page_renders_with_man_and_says_what_help_says() {
    let dir = tempfile::tempdir().unwrap();
    for binary in BINARIES {
        let out = dir.path().join(binary);
        let listed = ok(Command::new(bin(binary)).args(["man", "--out"]).arg(&out));
        let pages: Vec<&str> = listed.lines().collect();
        assert!(pages.len() > 3, "{binary}: {pages:?}");
        for page in &pages {
            let text = ok(Command::new(which("man"))
                .env("MANWIDTH", "100")
                .env_remove("MAN_KEEP_FORMATTING")
                .args(["-l", page]));
            assert!(text.contains("NAME"), "{page}: {text}");
        }
        // The command's page: its name, its subcommands and its version.
        let main = out.join(format!("{binary}.1"));
        let text = ok(Command::new(which("man"))
            .env_remove("MAN_KEEP_FORMATTING")
            .arg("-l")
            .arg(&main));
        let help = ok(Command::new(bin(binary)).arg("--help"));
        let first = help.lines().next().unwrap();
        assert!(
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(first),
            "{binary}: the page says what --help says first ({first:?}): {text}"
        );
        assert!(text.contains("completions"), "{text}");
        // Printed without --out, it is the command's page.
        let printed = ok(Command::new(bin(binary)).arg("man"));
        assert_eq!(printed, std::fs::read_to_string(&main).unwrap());
    }
    // The agent has a page for each subcommand.
    let enroll = dir.path().join("tasknode/tasknode-enroll.1");
    let text = ok(Command::new(which("man"))
        .env_remove("MAN_KEEP_FORMATTING")
        .arg("-l")
        .arg(&enroll));
    assert!(text.contains("--password-stdin"), "{text}");
}

#[test]
fn a_shell_it_does_not_know_or_an_out_that_is_a_file_is_refused() {
    let out = run(Command::new(bin("tasknode")).args(["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let out = run(Command::new(bin("tasknode-console"))
        .args(["man", "--out"])
        .arg(file.path()));
    assert!(!out.status.success());
    assert!(!stderr(&out).is_empty());
}
