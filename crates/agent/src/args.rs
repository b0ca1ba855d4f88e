//! Flags of `agentk`, each also an environment variable.

use std::path::PathBuf;

use clap::Parser;

/// The glagent in-cluster agent: connects to kas and serves it.
#[derive(Debug, Parser)]
#[command(name = "agentk", version = glagent_core::VERSION)]
pub struct Args {
    /// kas address: wss://host[:port]/-/kubernetes-agent/ (or ws:// without TLS).
    #[arg(long, env = "AGENTK_KAS_ADDRESS")]
    pub kas_address: String,
    /// File holding the agent token (trailing newline trimmed). Or set AGENTK_TOKEN.
    #[arg(long, env = "AGENTK_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for kas, e.g. a self-signed kas's CA.
    #[arg(long, env = "AGENTK_KAS_CA_CERT_FILE")]
    pub kas_ca_cert_file: Option<PathBuf>,
    /// The name to verify kas's certificate against, when it differs from the host.
    #[arg(long, env = "AGENTK_KAS_TLS_SERVER_NAME")]
    pub kas_tls_server_name: Option<String>,
    /// Extra header for the connection to kas, "Name: value"; repeatable.
    #[arg(long = "kas-header")]
    pub kas_headers: Vec<String>,
    /// Address of the /metrics, /liveness and /readiness server.
    #[arg(long, env = "AGENTK_OBSERVABILITY_LISTEN_ADDRESS", default_value = ":8080")]
    pub observability_listen_address: String,
    /// Runtime threads: 1 (the default) runs everything on one thread, which
    /// gives the lowest latency and memory; raise it for heavy proxy traffic.
    #[arg(long, env = "AGENTK_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// kubeconfig to use outside a cluster; inside one the in-cluster config is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}
