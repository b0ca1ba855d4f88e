//! Domain types and rules shared by every part of glagent.
//!
//! This crate does no I/O and knows no transport: it holds the rules (what a
//! valid agent name is, which role may do what, how secrets are minted and
//! hashed, what an agent configuration file may contain) so that the server,
//! the agent and the CLI apply exactly the same ones.

pub mod access;
pub mod agent_config;
pub mod ci_access;
pub mod environment;
pub mod flux;
pub mod identity;
pub mod names;
pub mod receptive;
pub mod secret;
pub mod sharing;
pub mod version;

/// The version of every glagent binary, taken from the workspace manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
