//! The agent's man pages and shell completions, for its packages. They are made by the very
//! bytes being packaged, run from a private copy (`tasknode man --out DIR`, `tasknode
//! completions SHELL`), so they describe that build; `build` runs the agent of the build host's
//! architecture (the pages are the same for every architecture), a static binary that runs on
//! the build host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tasknode_clidocs::{MAN1, Shell};

use tasknode_render::layout::PACKAGE_NAME;

#[derive(Debug, thiserror::Error)]
#[error(
    "--agent {path}: running it to make its man pages and completions ({what}) failed: {why}; the agent must run on this host (give the static build of this workspace for this host's architecture too, or register qemu-user with binfmt_misc)"
)]
pub struct DocsError {
    path: PathBuf,
    what: String,
    why: String,
}

/// The pages (file name, gzipped) and the completion scripts of one agent build.
#[derive(Debug, Clone, Default)]
pub struct AgentDocs {
    pages: Vec<(String, Vec<u8>)>,
    completions: Vec<(Shell, Vec<u8>)>,
}

impl AgentDocs {
    /// Runs the agent `bytes` (read from `path`) to make them; the pages are gzipped with
    /// `mtime` as their time, so a build at the same source date gives the same bytes.
    pub fn from_agent(path: &Path, bytes: &[u8], mtime: u32) -> Result<AgentDocs, DocsError> {
        let fail = |what: &str, why: String| DocsError {
            path: path.to_owned(),
            what: what.to_owned(),
            why,
        };
        let dir =
            tempfile::tempdir().map_err(|e| fail("a directory to run it in", e.to_string()))?;
        let agent = dir.path().join(PACKAGE_NAME);
        write_executable(&agent, bytes).map_err(|e| fail("a copy to run", e.to_string()))?;
        let run = |args: &[&str]| -> Result<Vec<u8>, DocsError> {
            let what = format!("tasknode {}", args.join(" "));
            let out = Command::new(&agent)
                .args(args)
                .env_clear()
                .output()
                .map_err(|e| fail(&what, e.to_string()))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(fail(&what, format!("{}: {}", out.status, err.trim())));
            }
            Ok(out.stdout)
        };
        let dir =
            tempfile::tempdir().map_err(|e| fail("a directory for the pages", e.to_string()))?;
        let out_dir = dir.path().join("man1");
        let out_arg = out_dir.to_string_lossy().into_owned();
        run(&["man", "--out", &out_arg])?;
        let mut pages = Vec::new();
        let entries =
            std::fs::read_dir(&out_dir).map_err(|e| fail("tasknode man", e.to_string()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| fail("tasknode man", e.to_string()))?
                .path();
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let roff = std::fs::read(&path).map_err(|e| fail("tasknode man", e.to_string()))?;
            let gz = gzip(&name, &roff, mtime).map_err(|e| fail("gzip", e.to_string()))?;
            pages.push((format!("{name}.gz"), gz));
        }
        pages.sort();
        if !pages
            .iter()
            .any(|(n, _)| n == &format!("{PACKAGE_NAME}.1.gz"))
        {
            return Err(fail(
                "tasknode man",
                format!("it wrote no {PACKAGE_NAME}.1"),
            ));
        }
        let mut completions = Vec::new();
        for shell in Shell::ALL {
            completions.push((shell, run(&["completions", shell.as_str()])?));
        }
        Ok(AgentDocs { pages, completions })
    }

    /// Whether there is nothing (a build of no package).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.completions.is_empty()
    }

    /// Every file, by the path a package installs it at (bash's completions in `bash_dir`),
    /// all 0644.
    pub fn files(&self, bash_dir: &str) -> Vec<(String, &[u8])> {
        let pages = self
            .pages
            .iter()
            .map(|(name, gz)| (format!("{MAN1}/{name}"), gz.as_slice()));
        let completions = self
            .completions
            .iter()
            .map(|(shell, text)| (shell.package_path(PACKAGE_NAME, bash_dir), text.as_slice()));
        pages.chain(completions).collect()
    }
}

/// The directories above the completion scripts a package brings, up to `/usr/share` or
/// `/etc`: a host without the shell lacks them, and a package that made them owns them, so
/// removing it removes them when empty.
pub fn completion_dirs(bash_dir: &str) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for shell in Shell::ALL {
        let path = shell.package_path(PACKAGE_NAME, bash_dir);
        let mut dir = Path::new(&path).parent();
        while let Some(d) = dir {
            if d == Path::new("/usr/share") || d == Path::new("/etc") || d == Path::new("/") {
                break;
            }
            dirs.insert(d.to_string_lossy().into_owned());
            dir = d.parent();
        }
    }
    dirs.into_iter().collect()
}

fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn gzip(name: &str, bytes: &[u8], mtime: u32) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .filename(name)
        .mtime(mtime)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_owns_the_completion_directories_but_no_shared_parent() {
        assert_eq!(
            completion_dirs(tasknode_clidocs::BASH_COMPLETIONS),
            [
                "/usr/share/bash-completion",
                "/usr/share/bash-completion/completions",
                "/usr/share/fish",
                "/usr/share/fish/vendor_completions.d",
                "/usr/share/zsh",
                "/usr/share/zsh/site-functions",
            ]
        );
        assert!(
            completion_dirs(tasknode_clidocs::BASH_COMPLETIONS_OLD)
                .contains(&"/etc/bash_completion.d".to_owned())
        );
    }
}
