//! `agentk`, the in-cluster agent. Everything lives in the library; this
//! file parses arguments, sets up logging and runs. A start-up error is one
//! line on stderr and exit code 1.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = glagent_agent::args::Args::parse();
    let logging = glagent_agent::logging::init();
    if let Err(error) = glagent_agent::run(args, logging).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
