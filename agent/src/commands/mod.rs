//! The agent's subcommands, one module each.

pub mod enroll;
pub mod run;
pub mod status;
