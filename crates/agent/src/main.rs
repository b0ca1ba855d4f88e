//! agentk, the in-cluster agent.
//!
//! The connection to kas, live configuration and the Kubernetes API proxy
//! arrive with issues 3 and 4; until then the binary only identifies itself.

use clap::Parser;

/// The glagent in-cluster agent (not functional yet: see ARCHITECTURE.md).
#[derive(Parser)]
#[command(name = "agentk", version = glagent_core::VERSION)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("agentk cannot connect to kas yet: the agent connection is not implemented in this version")
}
