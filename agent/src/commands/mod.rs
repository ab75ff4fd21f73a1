//! The agent's subcommands, one module each.

pub mod doctor;
pub mod enroll;
pub mod leave;
pub mod run;
pub mod serverctl;
pub mod status;
pub mod update;
