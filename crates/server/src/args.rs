//! Command-line flags of `kas`. Every flag can also be set from the
//! environment, as the chart and container platforms prefer.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The glagent agent server: the GitLab-compatible API, Git repositories and
/// the endpoint that agents connect to.
#[derive(Debug, Parser)]
#[command(name = "kas", version = glagent_core::VERSION)]
pub struct Cli {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log lines as text (colours only on a terminal) or json (one object
    /// per line: time, level, message, module and the fields).
    #[arg(long, env = "KAS_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: glagent_telemetry::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    /// Administration without a running server: users and tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Where kas keeps its state.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the SQLite database, Git repositories, generated TLS
    /// material and the initial root token.
    #[arg(long, env = "KAS_DATA_DIR", default_value = "kas-data", global = true)]
    pub data_dir: PathBuf,
    /// Database URL: postgres://user:pass@host/db for a database shared by
    /// several replicas. Default: SQLite in the data directory.
    #[arg(long, env = "KAS_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for the API, Git over HTTP and agents.
    #[arg(long, env = "KAS_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// The URL users and agents reach kas at. Default: https://<listen>.
    /// An http:// URL serves plain HTTP (for a TLS-terminating proxy in front).
    #[arg(long, env = "KAS_EXTERNAL_URL")]
    pub external_url: Option<url::Url>,
    /// PEM certificate chain to serve. Default: a certificate signed by a CA
    /// generated in <data-dir>/tls (trust <data-dir>/tls/ca.crt).
    #[arg(long, env = "KAS_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-cert-file.
    #[arg(long, env = "KAS_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Address of the private API through which other kas replicas reach
    /// the agents connected here (HTTPS with a certificate from the CA in
    /// the shared data directory; every request is also signed with the
    /// secret all replicas share). Needed when several replicas serve the
    /// same database.
    #[arg(long, env = "KAS_PRIVATE_LISTEN", requires = "private_api_secret_file")]
    pub private_listen: Option<SocketAddr>,
    /// The URL other replicas use for this replica's private API.
    /// Default: https://<private-listen>. An http:// URL serves plain HTTP.
    #[arg(long, env = "KAS_PRIVATE_URL", requires = "private_listen")]
    pub private_url: Option<url::Url>,
    /// File holding the secret shared by all replicas (at least 32 bytes),
    /// which signs private API requests.
    #[arg(long, env = "KAS_PRIVATE_API_SECRET_FILE", requires = "private_listen")]
    pub private_api_secret_file: Option<PathBuf>,
    /// Address of the agent port for agents whose kasAddress is grpcs://
    /// (or grpc://): the tunnel without WebSocket framing. Upstream's port
    /// is 8150. Served with kas's TLS certificate, unless
    /// --agent-listen-cleartext. (wss:// agents use --listen.)
    #[arg(long, env = "KAS_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// Serve --agent-listen without TLS (grpc://), e.g. behind a
    /// TLS-terminating load balancer.
    #[arg(long, env = "KAS_AGENT_LISTEN_CLEARTEXT", requires = "agent_listen")]
    pub agent_listen_cleartext: bool,
    /// Address of the Prometheus /metrics listener (upstream kas uses
    /// port 8151). Off by default: metrics are not on the public port.
    #[arg(long, env = "KAS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Whether requests through the Kubernetes proxy are recorded in the
    /// audit log (database, API, `audit` log target). On by default.
    #[arg(long, env = "KAS_AUDIT_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit_log: bool,
    /// Days the audit log keeps requests through the Kubernetes proxy.
    #[arg(long, env = "KAS_AUDIT_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_days: u32,
    /// Seconds a new agent token that kas stored but did not finish sending
    /// (kas stopped while answering) waits for its first use before kas
    /// deletes it, so that it does not hold one of the agent's two places.
    #[arg(long, env = "KAS_UNDELIVERED_TOKEN_GRACE", default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(5..))]
    pub undelivered_token_grace: u64,
    /// Seconds between the checks of every connected agent's configuration
    /// project for commits no push announced (a push reaches agents at
    /// once; this catches what bypassed kas). One batched read of the
    /// projects and of their branch tips, however many agents are
    /// connected; upstream's `agent.configuration.poll_period`.
    #[arg(long, env = "KAS_CONFIG_POLL_PERIOD", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub config_poll_period: u64,
    /// Whether agents may be receptive (kas dials them): GitLab's
    /// `receptive_cluster_agents_enabled`. When off, the URL
    /// configurations API answers 404.
    #[arg(long, env = "KAS_RECEPTIVE_AGENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub receptive_agents: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user; prints it as JSON.
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// The password for signing in to the web UI (at least 8
        /// characters). Or set KAS_ADMIN_PASSWORD, which keeps it out of
        /// the process list.
        #[arg(long, env = "KAS_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Create a personal access token for a user; prints the token.
    CreateToken {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Comma-separated scopes: api, read_api, k8s_proxy, read_repository, write_repository.
        #[arg(long, default_value = "api", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Expiry date, YYYY-MM-DD.
        #[arg(long)]
        expires_at: Option<String>,
    },
}
