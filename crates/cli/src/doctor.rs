//! `glagent doctor <agent> -R <project>`: checks one agent from kas's side
//! and the cluster's, and prints each check as `✔ <check>` or
//! `✗ <check>: <cause>` with the fix on the next line. Exits non-zero when
//! any check fails. The agent's own view comes from its pods' logs (the
//! lines agentk writes when it cannot connect) and readiness.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::Args;
use glagent_api_types as api;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, LogParams};

use crate::client::Client;
use crate::flux;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The agent's name.
    pub agent_name: String,
    /// The agent's project: full path (group/project) or numeric id.
    #[arg(short = 'R', long = "repo")]
    pub repo: String,
    /// The namespace of the agent's Deployment (default: where its pods
    /// say they run, else its environment's, else gitlab-agent-<agent>).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// kubeconfig of the cluster (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Context of the kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

/// The checks' outcomes, printed as they come.
#[derive(Default)]
struct Report {
    failures: usize,
}

impl Report {
    fn ok(&mut self, check: &str, detail: impl AsRef<str>) {
        let detail = detail.as_ref();
        if detail.is_empty() {
            println!("✔ {check}");
        } else {
            println!("✔ {check}: {detail}");
        }
    }
    fn fail(&mut self, check: &str, cause: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failures += 1;
        println!("✗ {check}: {}", cause.as_ref());
        println!("  fix: {}", fix.as_ref());
    }
    fn skip(&mut self, check: &str, why: impl AsRef<str>) {
        println!("- {check}: {}", why.as_ref());
    }
}

/// What agentk logs when a connection attempt fails, and what to do.
fn diagnose(line: &str) -> Option<(&'static str, &'static str)> {
    const KNOWN: [(&str, &str, &str); 6] = [
        (
            "DNS lookup of",
            "DNS",
            "the agent cannot resolve kas's host: check config.kasAddress, and that the cluster's DNS resolves it",
        ),
        (
            "TCP connection to",
            "TCP",
            "nothing answers at kas's address from the cluster: check config.kasAddress's port, network policies and firewalls between the cluster and kas",
        ),
        (
            "certificate verification failed",
            "TLS",
            "the agent does not trust kas's certificate: pass kas's CA (--set-file config.kasCaCert=ca.pem, or bootstrap, which does it)",
        ),
        (
            "TLS handshake with",
            "TLS",
            "the TLS handshake with kas fails: check config.kasAddress (wss://, the right port) and kas's certificate",
        ),
        (
            "proxy",
            "proxy",
            "the HTTP proxy in HTTPS_PROXY refuses or breaks the tunnel to kas: allow CONNECT to kas's host and port, or list kas in NO_PROXY",
        ),
        (
            "kas rejected the agent token",
            "token",
            "the agent token in the Secret is unknown or revoked: create a new token and update the Secret (glagent cluster agent bootstrap does both)",
        ),
    ];
    if !line.contains("cannot connect to kas") && !line.contains("connection to kas") {
        return None;
    }
    KNOWN
        .iter()
        .find(|(words, _, _)| line.contains(words))
        .map(|(_, kind, fix)| (*kind, *fix))
}

/// Runs every check; the error is "some checks failed".
pub async fn run(client: &Client, args: DoctorArgs) -> Result<()> {
    let mut report = Report::default();
    let project_ref = client.project_ref(&args.repo);
    // kas and the token.
    let metadata: api::Metadata = match client.get("/metadata").await {
        Ok(metadata) => metadata,
        Err(error) => {
            report.fail(
                "kas",
                format!("{error:#}"),
                "check GITLAB_HOST (and GLAGENT_CA_CERT for a kas with its own CA), and that GITLAB_TOKEN is an active personal access token",
            );
            anyhow::bail!("1 check failed");
        }
    };
    report.ok("kas", format!("{} (version {})", client.host(), metadata.version));
    let project: Option<api::Project> = client.get_opt(&format!("/projects/{project_ref}")).await?;
    let Some(project) = project else {
        report.fail(
            "project",
            format!("{} is not a project you can see", args.repo),
            "check -R (group/project), and that your token's user is a member",
        );
        anyhow::bail!("1 check failed");
    };
    let agents: Vec<api::Agent> = client
        .get_list(&format!("/projects/{project_ref}/cluster_agents"))
        .await?;
    let Some(agent) = agents.into_iter().find(|a| a.name == args.agent_name) else {
        report.fail(
            "agent registered",
            format!("{} has no agent named {}", project.path_with_namespace, args.agent_name),
            format!(
                "glagent cluster agent register {} -R {} (or glagent cluster agent bootstrap)",
                args.agent_name, project.path_with_namespace
            ),
        );
        anyhow::bail!("1 check failed");
    };
    report.ok("agent registered", format!("id {}", agent.id));

    // Tokens.
    let tokens_path = format!("/projects/{project_ref}/cluster_agents/{}/tokens", agent.id);
    let tokens: Vec<api::AgentToken> = client.get_list(&tokens_path).await?;
    if tokens.is_empty() {
        report.fail(
            "agent tokens",
            "the agent has no active token, so it cannot connect",
            format!(
                "glagent cluster agent install-command -R {} --agent {} --create-token <name>, then update the agent's Secret",
                project.path_with_namespace, agent.id
            ),
        );
    } else {
        let mut used = Vec::new();
        for token in &tokens {
            let full: api::AgentToken = client.get(&format!("{tokens_path}/{}", token.id)).await?;
            used.push(format!(
                "{} last used {}",
                full.name,
                full.last_used_at.flatten().unwrap_or_else(|| "never".into())
            ));
        }
        report.ok("agent tokens", format!("{} active: {}", tokens.len(), used.join(", ")));
    }

    // Connections and versions.
    let connections: Vec<api::Connection> = client
        .get_list(&format!(
            "/projects/{project_ref}/cluster_agents/{}/connections",
            agent.id
        ))
        .await?;
    let pod_namespace = connections
        .iter()
        .find_map(|c| c.metadata.as_ref().map(|m| m.pod_namespace.clone()));
    if connections.is_empty() {
        report.fail(
            "agent connected",
            "no agent process is connected to kas",
            "see the cluster checks below for why",
        );
    } else {
        let warnings: Vec<String> = connections
            .iter()
            .flat_map(|c| serde_json::to_value(&c.warnings).ok())
            .flat_map(|w| w.as_array().cloned().unwrap_or_default())
            .filter_map(|w| w.as_object()?.values().next()?["message"].as_str().map(str::to_string))
            .collect();
        let versions: Vec<String> = connections
            .iter()
            .filter_map(|c| c.metadata.as_ref().map(|m| m.version.clone()))
            .collect();
        if warnings.is_empty() {
            report.ok(
                "agent connected",
                format!(
                    "{} connection(s), agentk {} with kas {}",
                    connections.len(),
                    versions.join(", "),
                    metadata.kas.version
                ),
            );
        } else {
            report.fail(
                "agent version",
                warnings.join("; "),
                format!(
                    "run agentk {} (kas's major.minor; the minors next to it work): helm upgrade with --set image.tag",
                    metadata.kas.version
                ),
            );
        }
    }

    // The configuration file.
    let config: api::AgentConfiguration = client
        .get(&format!(
            "/projects/{project_ref}/cluster_agents/{}/configuration",
            agent.id
        ))
        .await?;
    match (&config.error, config.file_exists) {
        (Some(error), _) => {
            let at = match (error.line, error.column) {
                (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
                (Some(line), None) => format!(" at line {line}"),
                _ => String::new(),
            };
            report.fail(
                "configuration file",
                format!("{}{at}: {}", config.path, error.message),
                "fix the file on the default branch; the agent keeps its last good configuration meanwhile",
            );
        }
        (None, true) => report.ok("configuration file", format!("{} parses", config.path)),
        (None, false) => report.ok(
            "configuration file",
            format!("{} absent: the defaults apply", config.path),
        ),
    }

    // The cluster.
    let kube = match flux::kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await {
        Ok(kube) => kube,
        Err(error) => {
            report.fail(
                "cluster",
                format!("{error:#}"),
                "pass --kubeconfig and --context of the agent's cluster",
            );
            anyhow::bail!("{} check(s) failed", report.failures);
        }
    };
    let environments: Vec<api::Environment> = client
        .get_list(&format!("/projects/{project_ref}/environments"))
        .await?;
    let ours: Vec<&api::Environment> = environments
        .iter()
        .filter(|e| e.cluster_agent.as_ref().is_some_and(|a| a.id == agent.id))
        .collect();
    flux_checks(&mut report, &kube, client, &project, &args, &ours).await?;

    let namespace = args
        .namespace
        .clone()
        .or(pod_namespace)
        .or_else(|| {
            ours.iter()
                .find(|e| {
                    e.flux_resource_path
                        .clone()
                        .flatten()
                        .is_some_and(|p| p.contains("helmreleases"))
                })
                .and_then(|e| e.kubernetes_namespace.clone().flatten())
        })
        .unwrap_or_else(|| format!("gitlab-agent-{}", args.agent_name));
    deployment_checks(&mut report, &kube, &namespace).await?;
    if report.failures > 0 {
        anyhow::bail!("{} check(s) failed", report.failures);
    }
    Ok(())
}

async fn flux_checks(
    report: &mut Report,
    kube: &kube::Client,
    client: &Client,
    project: &api::Project,
    args: &DoctorArgs,
    environments: &[&api::Environment],
) -> Result<()> {
    let flux_paths: Vec<String> = environments
        .iter()
        .filter_map(|e| e.flux_resource_path.clone().flatten())
        .collect();
    if let Err(error) = flux::require_crds(kube).await {
        if flux_paths.is_empty() {
            report.skip("Flux", "not installed in the cluster (no Flux checks)");
        } else {
            report.fail(
                "Flux installed",
                format!("{error:#}"),
                format!(
                    "the agent's environments name Flux objects ({}): install Flux, or unlink them",
                    flux_paths.join(", ")
                ),
            );
        }
        return Ok(());
    }
    report.ok("Flux installed", "");
    // The sources of this project, and what applies them.
    let forge = url::Url::parse(client.host())?;
    let sources: Api<DynamicObject> = Api::all_with(kube.clone(), &flux::git_repository());
    let sources = sources
        .list(&ListParams::default())
        .await
        .context("listing GitRepository objects")?;
    let mut applied = Vec::new();
    for source in &sources.items {
        let url = source.data["spec"]["url"].as_str().unwrap_or_default();
        if glagent_core::flux::project_path(url, &forge).as_deref()
            != Some(project.path_with_namespace.to_ascii_lowercase().as_str())
        {
            continue;
        }
        let namespace = source.metadata.namespace.clone().unwrap_or_default();
        let name = source.metadata.name.clone().unwrap_or_default();
        for (kustomization, path) in flux::kustomizations_of(kube, &namespace, &name).await? {
            applied.push((kustomization, path));
        }
    }
    if applied.is_empty() {
        report.skip(
            "Flux source",
            format!(
                "no Kustomization applies {} (no path checks)",
                project.path_with_namespace
            ),
        );
        return Ok(());
    }
    for (kustomization, path) in &applied {
        if path.is_empty() {
            let encoded = client.project_ref("kustomization.yaml");
            let root: Option<api::RepositoryFile> = client
                .get_opt(&format!(
                    "/projects/{}/repository/files/{encoded}?ref={}",
                    project.id,
                    client.project_ref(&project.default_branch)
                ))
                .await?;
            if root.is_none() {
                report.fail(
                    "Flux manifest path",
                    format!("the Kustomization {kustomization} applies the repository's root, which has no kustomization.yaml: Flux reads .gitlab/agents/{}/config.yaml as a manifest and fails", args.agent_name),
                    "commit a kustomization.yaml at the root listing the manifests, or make the Kustomization apply a directory",
                );
                continue;
            }
        }
        report.ok("Flux manifest path", format!("{kustomization} applies ./{path}"));
    }
    // The HelmRelease the agent's environment names must be where Flux applies.
    let paths: Vec<String> = applied.iter().map(|(k, p)| format!("{k} applies ./{p}")).collect();
    for environment in environments {
        let Some(path) = environment.flux_resource_path.clone().flatten() else {
            continue;
        };
        let parts: Vec<&str> = path.split('/').collect();
        let [group, version, "namespaces", namespace, plural, name] = parts.as_slice() else {
            continue;
        };
        if *plural != "helmreleases" {
            continue;
        }
        let resource = kube::api::ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: "HelmRelease".into(),
            plural: plural.to_string(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), namespace, &resource);
        if api.get_opt(name).await.ok().flatten().is_some() {
            report.ok("Flux HelmRelease", format!("{namespace}/{name} is in the cluster"));
        } else {
            report.fail(
                "Flux HelmRelease",
                format!("the HelmRelease {namespace}/{name} of the environment {} is not in the cluster, although Flux applies {}", environment.name, paths.join(", ")),
                "bootstrap committed it where no Kustomization looks: run bootstrap again with --manifest-path set to one of those paths",
            );
        }
    }
    Ok(())
}

async fn deployment_checks(report: &mut Report, kube: &kube::Client, namespace: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), namespace);
    let found = deployments
        .list(&ListParams::default().labels("app.kubernetes.io/name=gitlab-agent"))
        .await
        .with_context(|| format!("listing Deployments in {namespace}"))?;
    let Some(deployment) = found.items.first() else {
        report.fail(
            "agent Deployment",
            format!("no agent Deployment in the namespace {namespace}"),
            "install the agent (glagent cluster agent install-command, or bootstrap), or pass --namespace",
        );
        return Ok(());
    };
    let name = deployment.metadata.name.clone().unwrap_or_default();
    report.ok("agent Deployment", format!("{namespace}/{name}"));
    let spec = deployment.spec.clone();
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    let token_secret = pod_spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "token")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    if let Some(secret) = token_secret {
        let secrets: Api<Secret> = Api::namespaced(kube.clone(), namespace);
        match secrets.get_opt(&secret).await? {
            Some(s) if s.data.as_ref().is_some_and(|d| d.contains_key("token")) => {
                report.ok("agent token Secret", format!("{namespace}/{secret}"))
            }
            Some(_) => report.fail(
                "agent token Secret",
                format!("the Secret {namespace}/{secret} has no key token"),
                "put the agent token under the key token",
            ),
            None => report.fail(
                "agent token Secret",
                format!("the Secret {namespace}/{secret} the Deployment mounts does not exist: its pods cannot start"),
                "create it with the agent token (key token), or run bootstrap",
            ),
        }
    }
    // The pods' own view: readiness and the last connection failure logged.
    let selector: BTreeMap<String, String> = spec.selector.match_labels.unwrap_or_default();
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(kube.clone(), namespace);
    let pods = pods.list(&ListParams::default().labels(&selector)).await?;
    if pods.items.is_empty() {
        report.fail(
            "agent pods",
            format!("the Deployment {namespace}/{name} has no pods"),
            format!("kubectl -n {namespace} describe deployment {name}"),
        );
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(kube.clone(), namespace);
    for pod in &pods.items {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let log = api
            .logs(
                &pod_name,
                &LogParams {
                    tail_lines: Some(200),
                    ..Default::default()
                },
            )
            .await;
        let log = match log {
            Ok(log) => log,
            Err(error) => {
                report.skip(
                    &format!("agent pod {pod_name}"),
                    format!("cannot read its log: {error}"),
                );
                continue;
            }
        };
        let last = log.lines().rev().find_map(|line| diagnose(line).map(|d| (line, d)));
        let connected_after = last.is_some_and(|(line, _)| {
            log.lines()
                .skip_while(|l| *l != line)
                .any(|l| l.contains("connected to kas") && !l.contains("cannot"))
        });
        match last {
            Some((line, (kind, fix))) if !connected_after => {
                let cause = line.split("error=").nth(1).unwrap_or(line);
                let cause = cause.split(" retry_in=").next().unwrap_or(cause).trim();
                report.fail(&format!("agent pod {pod_name} ({kind})"), cause, fix);
            }
            _ => report.ok(&format!("agent pod {pod_name}"), "no connection failure in its log"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agentk_s_failure_lines_are_recognised() {
        let line = |error: &str| {
            format!("2026-12-01T00:00:00Z  WARN glagent_agent: cannot connect to kas error={error} retry_in=1s")
        };
        for (error, kind) in [
            (
                "DNS lookup of kas.invalid failed: failed to lookup address information",
                "DNS",
            ),
            ("TCP connection to 127.0.0.1:9 failed: connection refused", "TCP"),
            (
                "TLS handshake with kas failed: certificate verification failed (UnknownIssuer)",
                "TLS",
            ),
            (
                "proxy 127.0.0.1:3128 refused to open a tunnel to kas:443: HTTP/1.1 403 Forbidden",
                "proxy",
            ),
            (
                "kas rejected the agent token (401 Unauthorized: unknown): the token is unknown or revoked",
                "token",
            ),
        ] {
            assert_eq!(diagnose(&line(error)).map(|d| d.0), Some(kind), "{error}");
        }
        assert_eq!(diagnose("INFO glagent_agent: connected to kas kas=wss://k"), None);
        // The chart's JSON lines read the same.
        let json = r#"{"time":"2026-12-01T00:00:00Z","level":"warn","message":"cannot connect to kas","module":"glagent_agent","error":"TCP connection to 127.0.0.1:9 failed: connection refused"}"#;
        assert_eq!(diagnose(json).map(|d| d.0), Some("TCP"));
    }
}
