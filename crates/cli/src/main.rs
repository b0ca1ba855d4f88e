//! glagent, the command-line client.
//!
//! The cluster-agent commands arrive with issues 3 to 5; until then the
//! binary only identifies itself.

use clap::Parser;

/// The glagent command-line client (not functional yet: see ARCHITECTURE.md).
#[derive(Parser)]
#[command(name = "glagent", version = glagent_core::VERSION)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("no commands are implemented in this version yet")
}
