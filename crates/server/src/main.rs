//! `kas`, the glagent agent server. Everything lives in the library; this
//! file only parses arguments, sets up logging and runs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = glagent_server::args::Cli::parse();
    glagent_server::init_logging(cli.log_format);
    glagent_server::run(cli).await
}
