//! The host layout the templates, install.sh and the packages are rendered from: it lives in
//! tasknode-protocol ([`tasknode_protocol::layout`]), which the agent shares.

pub use tasknode_protocol::layout::*;
