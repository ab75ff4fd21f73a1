//! What crosses the wire between the tasknode agent and console, and the rules both sides apply
//! to it: identity (hostname or DMI UUID), field validation, server states and the formula that
//! turns a host's size into its default max concurrency.

pub mod concurrency;
pub mod identity;
pub mod validate;
pub mod wire;

pub use identity::{Identity, NetworkType};
pub use validate::FieldError;

/// Every API path lives under this prefix.
pub const API_PREFIX: &str = "/api/v1";

/// Response header carrying the console's wall clock, in milliseconds since the Unix epoch.
/// Every console response has it, so an agent can measure its clock offset from any answer.
pub const TIME_HEADER: &str = "x-tasknode-time";

/// An agent whose clock differs from the console's by more than this takes no work.
pub const MAX_CLOCK_OFFSET_MS: i64 = 120_000;

/// Largest JSON body the console accepts on any endpoint.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
