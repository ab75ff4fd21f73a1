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
