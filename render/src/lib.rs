//! tasknode-render: renders the files that put an agent on a host (install.sh, service units,
//! init script, agent config, yum .repo) and the text of the packages (scriptlets, changelogs,
//! the console's unit) from the templates in templates/, through one environment that the
//! console and `tasknode-dist` share. It holds no packaging code (rpm, OpenPGP, RSA, tar): the
//! console links this crate alone.

pub mod arch;
pub mod artifacts;
pub mod context;
pub mod dist;
pub mod escape;
pub mod layout;
pub mod published;
pub mod render;
pub mod templates;

pub use layout::Layout;
pub use templates::{TemplateError, Templates};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Why this crate exists: the console links it and none of the packaging crates.
    #[test]
    fn the_console_links_no_packaging_crate() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = std::process::Command::new(cargo)
            .args(["tree", "--offline", "-p", "tasknode-console"])
            .args(["-e", "normal", "--prefix", "none"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cargo tree: {stderr}");
        let tree = String::from_utf8(out.stdout).unwrap();
        let crates: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(crates.contains(&"tasknode-render"), "{tree}");
        for packaging in [
            "tasknode-dist",
            "rpm",
            "rpmrepo_metadata",
            "pgp",
            "rsa",
            "tar",
            "flate2",
            "indicatif",
        ] {
            assert!(
                !crates.contains(&packaging),
                "the console links {packaging}"
            );
        }
    }
}
