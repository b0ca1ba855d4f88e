//! Flags of `agentk`, each also an environment variable.

use std::path::PathBuf;

use clap::Parser;

/// The glagent in-cluster agent: connects to kas and serves it, or, as a
/// receptive agent, lets kas connect to it.
#[derive(Debug, Parser)]
#[command(name = "agentk", version = glagent_core::VERSION)]
pub struct Args {
    /// kas address: wss://host[:port]/-/kubernetes-agent/ (ws:// without
    /// TLS), or grpcs://host[:port] (grpc:// without TLS) for kas's agent
    /// port. Optional for a receptive agent (--api-listen-address).
    #[arg(long, env = "AGENTK_KAS_ADDRESS")]
    pub kas_address: Option<String>,
    /// Receptive agent: the address kas dials, e.g. :8082 (the chart's).
    #[arg(long, env = "AGENTK_API_LISTEN_ADDRESS")]
    pub api_listen_address: Option<String>,
    /// Network of --api-listen-address: tcp, tcp4 or tcp6.
    #[arg(long, env = "AGENTK_API_LISTEN_NETWORK", default_value = "tcp")]
    pub api_listen_network: String,
    /// File holding the URL configuration's public_key (base64 of the
    /// Ed25519 key): kas's JWTs are verified with it.
    #[arg(long, env = "AGENTK_API_JWT_FILE")]
    pub api_jwt_file: Option<std::path::PathBuf>,
    /// PEM certificate chain for the listener: kas dials grpcs:// then.
    #[arg(long, env = "AGENTK_API_CERT_FILE", requires = "api_key_file")]
    pub api_cert_file: Option<std::path::PathBuf>,
    /// PEM private key for --api-cert-file.
    #[arg(long, env = "AGENTK_API_KEY_FILE", requires = "api_cert_file")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Require kas to present a client certificate signed by
    /// --api-client-ca-cert-file (the URL configuration's client_cert),
    /// instead of a JWT.
    #[arg(long, env = "AGENTK_API_MTLS", requires = "api_client_ca_cert_file")]
    pub api_mtls: bool,
    /// CA certificates (PEM) that kas's client certificate must chain to.
    #[arg(long, env = "AGENTK_API_CLIENT_CA_CERT_FILE")]
    pub api_client_ca_cert_file: Option<std::path::PathBuf>,
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
    /// Log lines as text (colours only on a terminal) or json (one object
    /// per line: time, level, message, module and the fields; the chart's
    /// default).
    #[arg(long, env = "AGENTK_LOG_FORMAT", default_value = "text")]
    pub log_format: crate::logging::LogFormat,
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
