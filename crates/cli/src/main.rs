//! `glagent`, the command-line client of kas. Parsing lives in [`cli`],
//! talking to kas in [`client`], and output in [`render`].

mod bootstrap;
mod cli;
mod client;
mod doctor;
mod flux;
mod kpt_fn;
mod kubeconfig;
mod render;
mod rotate;

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = cli::Cli::parse();
    if let Err(error) = cli::run(args).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
