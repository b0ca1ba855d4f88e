//! `agentk`, the in-cluster agent. Everything lives in the library; this
//! file parses arguments, sets up logging and the runtime, and runs. A
//! start-up error is one line on stderr and exit code 1.

use clap::Parser;

fn main() {
    let args = glagent_agent::args::Args::parse();
    let logging = glagent_agent::logging::init(args.log_format);
    // One thread by default: lowest latency and memory for an agent, whose
    // work is mostly moving bytes; more for heavy proxy traffic.
    let runtime = match args.worker_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(glagent_agent::run(args, logging)));
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
