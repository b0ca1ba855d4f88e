//! `agentk`, the in-cluster agent. Everything lives in the library; this
//! file parses arguments, sets up logging and runs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = glagent_agent::args::Args::parse();
    let logging = glagent_agent::logging::init();
    glagent_agent::run(args, logging).await
}
