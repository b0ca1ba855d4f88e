//! Commands and flags. Like glab, the server comes from `GITLAB_HOST` and
//! the personal access token from `GITLAB_TOKEN`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use glagent_api_types as api;

use crate::client::Client;
use crate::{kubeconfig, render};

/// The glagent command-line client.
#[derive(Debug, Parser)]
#[command(name = "glagent", version = glagent_core::VERSION)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach kas.
#[derive(Debug, Args)]
pub struct Connection {
    /// kas URL, e.g. https://kas.example.com:8443 (or host[:port]). In CI,
    /// set GITLAB_HOST from CI_SERVER_URL.
    #[arg(long, env = "GITLAB_HOST", global = true, default_value = "https://127.0.0.1:8443")]
    pub host: String,
    /// Personal access token.
    #[arg(long, env = "GITLAB_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. <kas data dir>/tls/ca.crt.
    #[arg(long, env = "GLAGENT_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Kubernetes clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Inside a CI job.
    #[command(subcommand)]
    Ci(CiCommand),
    /// Check one agent, from kas and from the cluster: each check prints
    /// OK or the cause and the fix; non-zero exit if any fails.
    Doctor(Box<crate::doctor::DoctorArgs>),
    /// kpt exec functions of the kpt package (run by kpt, not by hand).
    #[command(subcommand, hide = true)]
    KptFn(KptFnCommand),
}

#[derive(Debug, Subcommand)]
pub enum KptFnCommand {
    /// Generate the agent's objects from the package's setters.
    RenderAgent,
}

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Print the job's KUBECONFIG: one context per agent the job may use.
    Kubeconfig {
        /// The job token (GitLab CI sets CI_JOB_TOKEN).
        #[arg(long, env = "CI_JOB_TOKEN", hide_env_values = true)]
        job_token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster agents.
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Install the agent with Flux: register it, configure it, create its
    /// environments, token and Secret, commit its HelmRepository and
    /// HelmRelease, and reconcile (the Kubernetes API and kas only).
    #[command(alias = "bs")]
    Bootstrap(Box<crate::bootstrap::BootstrapArgs>),
    /// List a project's agents with their connection status and version warnings.
    List {
        /// The project: full path (group/project) or numeric id.
        #[arg(short = 'R', long = "repo")]
        repo: String,
    },
    /// Register an agent in a project; prints its id.
    Register {
        /// The agent's name (an RFC 1123 DNS label).
        name: String,
        /// The project: full path (group/project) or numeric id.
        #[arg(short = 'R', long = "repo")]
        repo: String,
    },
    /// Add a kubeconfig context that reaches the cluster through the agent
    /// (user access), authenticated by `glagent cluster agent get-token`.
    UpdateKubeconfig {
        /// The agent's id.
        #[arg(long)]
        agent: i64,
        /// The kubeconfig to update (default: $KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Make the new context the current one.
        #[arg(long)]
        use_context: bool,
    },
    /// Print the recommended Helm commands that install the agent.
    InstallCommand {
        /// The project: full path (group/project) or numeric id.
        #[arg(short = 'R', long = "repo")]
        repo: String,
        /// The agent's id.
        #[arg(long)]
        agent: i64,
        /// Create a new agent token with this name and put it in the command
        /// (otherwise the command has a placeholder).
        #[arg(long)]
        create_token: Option<String>,
    },
    /// Agent tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit log of requests through the Kubernetes API proxy to
    /// an agent, newest first (maintainers).
    Audit {
        /// The project: full path (group/project) or numeric id.
        #[arg(short = 'R', long = "repo")]
        repo: String,
        /// The agent's id.
        #[arg(long)]
        agent: i64,
        /// How many requests to show (at most 100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Print the events as JSON, as the API returns them.
        #[arg(long)]
        json: bool,
    },
    /// Print an ExecCredential for kubectl (used by update-kubeconfig).
    GetToken {
        /// The agent's id.
        #[arg(long)]
        agent: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Replace an agent token without downtime: create the new one, write
    /// it into the cluster's Secret, wait until the agent's pods use it,
    /// then revoke the old one.
    Rotate(Box<crate::rotate::RotateArgs>),
}

pub async fn run(cli: Cli) -> Result<()> {
    if let Command::KptFn(KptFnCommand::RenderAgent) = &cli.command {
        return crate::kpt_fn::render_agent();
    }
    let connection = &cli.connection;
    if let Command::Ci(CiCommand::Kubeconfig { job_token }) = &cli.command {
        let client = Client::anonymous(&connection.host, connection.ca_cert.as_deref())?;
        print!("{}", client.job_kubeconfig(job_token).await?);
        return Ok(());
    }
    let client = Client::new(
        &connection.host,
        connection.token.as_deref(),
        connection.ca_cert.as_deref(),
    )?;
    match cli.command {
        Command::Ci(_) | Command::KptFn(_) => unreachable!("handled above"),
        Command::Cluster(ClusterCommand::Agent(AgentCommand::List { repo })) => {
            let project = client.project_ref(&repo);
            let agents: Vec<api::Agent> = client.get_list(&format!("/projects/{project}/cluster_agents")).await?;
            let mut rows = Vec::new();
            for agent in agents {
                let connections: Vec<api::Connection> = client
                    .get_list(&format!("/projects/{project}/cluster_agents/{}/connections", agent.id))
                    .await?;
                rows.push((agent, connections));
            }
            print!("{}", render::agent_table(&rows));
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::Token(TokenCommand::Rotate(args)))) => {
            crate::rotate::rotate(&client, *args).await?;
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::Audit {
            repo,
            agent,
            limit,
            json,
        })) => {
            let project = client.project_ref(&repo);
            let events: Vec<api::AuditEvent> = client
                .get(&format!(
                    "/projects/{project}/cluster_agents/{agent}/audit_events?per_page={limit}"
                ))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                print!("{}", render::audit_table(&events));
            }
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::Register { name, repo })) => {
            let project = client.project_ref(&repo);
            let agent: api::Agent = client
                .post(
                    &format!("/projects/{project}/cluster_agents"),
                    serde_json::json!({"name": name}),
                )
                .await?;
            println!("{}", agent.id);
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::UpdateKubeconfig {
            agent,
            kubeconfig,
            use_context,
        })) => {
            let metadata: api::Metadata = client.get("/metadata").await?;
            let server = metadata.kas.external_k8s_proxy_url;
            let ca_pem = match &cli.connection.ca_cert {
                Some(path) => Some(std::fs::read(path)?),
                None => None,
            };
            let path = kubeconfig.unwrap_or_else(kubeconfig::default_path);
            let name = kubeconfig::entry_name(client.host(), agent);
            kubeconfig::update(&kubeconfig::Update {
                path: &path,
                name: &name,
                server: &server,
                ca_pem: ca_pem.as_deref(),
                agent_id: agent,
                host: client.host(),
                ca_file: cli.connection.ca_cert.as_deref(),
                use_context,
            })?;
            println!("context {name} written to {}", path.display());
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::InstallCommand {
            repo,
            agent,
            create_token,
        })) => {
            let project = client.project_ref(&repo);
            let info: api::InstallCommand = client
                .get(&format!("/projects/{project}/cluster_agents/{agent}/install_command"))
                .await?;
            if let Some(pem) = &info.ca_cert {
                std::fs::write("kas-ca.crt", pem).context("writing kas-ca.crt")?;
                eprintln!("wrote kas's CA to kas-ca.crt");
            }
            let command = match create_token {
                Some(name) => {
                    let created: api::CreatedAgentToken = client
                        .post(
                            &format!("/projects/{project}/cluster_agents/{agent}/tokens"),
                            serde_json::json!({"name": name}),
                        )
                        .await?;
                    created.install_command
                }
                None => info.command,
            };
            print!("{command}");
        }
        Command::Doctor(args) => {
            crate::doctor::run(&client, *args).await?;
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::Bootstrap(args))) => {
            crate::bootstrap::run(&client, *args).await?;
        }
        Command::Cluster(ClusterCommand::Agent(AgentCommand::GetToken { agent })) => {
            println!("{}", kubeconfig::get_token(&client, client.host(), agent).await?);
        }
    }
    Ok(())
}
