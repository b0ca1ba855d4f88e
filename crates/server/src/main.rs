//! `kas`, the glagent agent server. Everything lives in the library; this
//! file only parses arguments, sets up logging and runs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = glagent_server::args::Cli::parse();
    glagent_server::init_tracing();
    glagent_server::run(cli).await
}
