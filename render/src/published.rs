//! The names of the files and directories of a published release directory (what
//! `tasknode-dist build --out` writes and `tasknode-console serve --dist` serves): one place for
//! each, shared by the code that writes them and the console that serves them.

/// The package key's public half (ASCII-armored OpenPGP): yum's `gpgkey` and `rpm --import`.
pub const PACKAGE_PUBLIC: &str = "RPM-GPG-KEY-tasknode";
/// The update-manifest key's public half (PEM, SubjectPublicKeyInfo).
pub const MANIFEST_PUBLIC: &str = "manifest-signing.public.pem";
/// The yum repositories, `repo/DIST/ARCH/`.
pub const REPO_DIR: &str = "repo";
/// One directory per version, `releases/VERSION/`: tarballs, .debs, manifests, SHA256SUMS.
pub const RELEASES_DIR: &str = "releases";
/// The agent binaries the console hands install.sh, `agents/tasknode-ARCH` (and `releases/VERSION/agents/`).
pub const AGENTS_DIR: &str = "agents";
