//! tasknode-dist: makes releases (keys, the static agent, signed RPMs and repodata, the .debs,
//! signed update manifests, the console's packages). What it renders (install.sh, units,
//! scriptlets) comes from tasknode-render.

pub mod console_package;
pub mod deb;
pub mod docs;
pub mod error;
pub mod fsutil;
pub mod keys;
pub mod parallel;
pub mod release;
pub mod repo;
pub mod rpm_build;
pub mod rpm_package;
pub mod rpm_payload;
pub mod signer;
pub mod target;
