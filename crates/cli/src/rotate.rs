//! `glagent cluster agent token rotate`: a new agent token in place of an
//! old one without downtime. Creates the new token, writes it into the
//! cluster's Secret (when given one), waits until every agent pod that was
//! connected with the old token is connected with the new one (agentk
//! notices the changed token file, connects again and lets the old
//! connection finish what it carries), then revokes the old token.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use glagent_api_types as api;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

use crate::client::Client;

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The project: full path (group/project) or numeric id.
    #[arg(short = 'R', long = "repo")]
    pub repo: String,
    /// The agent's id.
    #[arg(long)]
    pub agent: i64,
    /// The id of the token to replace.
    #[arg(long)]
    pub token_id: i64,
    /// The new token's name (default: the old one's).
    #[arg(long)]
    pub name: Option<String>,
    /// Write the new token into this Secret (key `token`), as the chart
    /// mounts it (`<release>-gitlab-agent-token` unless config.secretName).
    #[arg(long, requires = "namespace")]
    pub secret: Option<String>,
    /// The Secret's namespace.
    #[arg(long, requires = "secret")]
    pub namespace: Option<String>,
    /// kubeconfig of the cluster (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// How long to wait for the agent's pods to connect with the new
    /// token before giving up (the old token is then kept).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub async fn rotate(client: &Client, args: RotateArgs) -> Result<()> {
    let project = client.project_ref(&args.repo);
    let tokens = format!("/projects/{project}/cluster_agents/{}/tokens", args.agent);
    let connections = format!("/projects/{project}/cluster_agents/{}/connections", args.agent);
    let Some(old) = client
        .get_opt::<api::AgentToken>(&format!("{tokens}/{}", args.token_id))
        .await?
    else {
        bail!(
            "agent {} has no active token {}: list them with GET {tokens}",
            args.agent,
            args.token_id
        );
    };
    // The pods to wait for: those connected with the old token now.
    let before: Vec<api::Connection> = client.get_list(&connections).await?;
    let pods: BTreeSet<u64> = before
        .iter()
        .filter(|c| c.token_id == old.id)
        .map(|c| c.connection_id)
        .collect();
    let name = args.name.clone().unwrap_or_else(|| old.name.clone());
    let created: api::CreatedAgentToken = client
        .post(
            &tokens,
            serde_json::json!({"name": name, "description": format!("rotated from token {}", old.id)}),
        )
        .await?;
    eprintln!("created token {} ({})", created.id, created.name);
    match (&args.secret, &args.namespace) {
        (Some(secret), Some(namespace)) => {
            let kube = crate::flux::kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
            let secrets: Api<Secret> = Api::namespaced(kube, namespace);
            let value = base64::engine::general_purpose::STANDARD.encode(&created.token);
            secrets
                .patch(
                    secret,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"data": {"token": value}})),
                )
                .await
                .with_context(|| {
                    format!(
                        "writing the new token into Secret {namespace}/{secret}; the old token {} still works, \
                         revoke the new one ({}) or retry",
                        old.id, created.id
                    )
                })?;
            eprintln!("Secret {namespace}/{secret} holds the new token");
        }
        _ => {
            // No Secret to write: the operator puts the token in place.
            println!("{}", created.token);
            eprintln!("put the token above into the agent's Secret (key token); waiting for the agent to use it");
        }
    }
    if pods.is_empty() {
        eprintln!(
            "no pod of agent {} is connected with token {}: nothing to wait for",
            args.agent, old.id
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let now: Vec<api::Connection> = client.get_list(&connections).await?;
        let moved: BTreeSet<u64> = now
            .iter()
            .filter(|c| c.token_id == created.id)
            .map(|c| c.connection_id)
            .collect();
        let waiting: Vec<u64> = pods.difference(&moved).copied().collect();
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {} agent pods did not connect with the new token {} within {} s (connection ids {waiting:?}); \
                 the old token {} was NOT revoked: check the pods' logs (glagent doctor), then revoke it with \
                 DELETE {tokens}/{}",
                waiting.len(),
                pods.len(),
                created.id,
                args.timeout,
                old.id,
                old.id
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client.delete(&format!("{tokens}/{}", old.id)).await?;
    eprintln!(
        "token {} revoked; {} pod(s) use token {} (connections made with the old token finish what they carry)",
        old.id,
        pods.len(),
        created.id
    );
    Ok(())
}
