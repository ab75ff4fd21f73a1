//! tasknode-dist: renders the files that put an agent on a host (install.sh, service units, init
//! script, agent config, yum .repo) from the templates in templates/, through one environment
//! that the CLI and the console share; and makes releases (keys, the static agent, signed RPMs
//! and repodata, the .deb, signed update manifests).

pub mod arch;
pub mod artifacts;
pub mod cli;
pub mod console_package;
pub mod context;
pub mod deb;
pub mod docs;
pub mod escape;
pub mod keys;
pub mod layout;
pub mod parallel;
pub mod release;
pub mod render;
pub mod repo;
pub mod rpm_package;
pub mod target;
pub mod templates;

pub use layout::Layout;
pub use templates::{TemplateError, Templates};
