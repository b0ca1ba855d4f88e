//! `glagent cluster agent bootstrap <agent-name>`: installs the agent with
//! Flux, in glab's steps and with its flags and progress lines, but through
//! the APIs only (kas's REST API and the Kubernetes API: no `flux` or
//! `kubectl` binary). Everything that can go wrong in the cluster's Flux
//! setup is checked before anything is written; every step does only what
//! is not done yet, so a second run changes nothing it need not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use glagent_api_types as api;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::client::Client;
use crate::flux;

/// The annotation that names the agent token a Secret holds, as glab's.
const TOKEN_ID_ANNOTATION: &str = "gitlab.com/agent-token-id";
/// GitLab's limit of active tokens per agent.
const ACTIVE_TOKENS: usize = 2;

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The agent's name (an RFC 1123 DNS label).
    pub agent_name: String,
    /// The project: full path (group/project) or numeric id.
    #[arg(short = 'R', long = "repo")]
    pub repo: String,
    /// Where the Flux manifests go in the project: the path of the Flux
    /// Kustomization that applies the project (flux bootstrap's --path).
    #[arg(short = 'p', long, default_value = "")]
    pub manifest_path: String,
    /// Branch to commit to (default: the project's default branch).
    #[arg(short = 'b', long)]
    pub manifest_branch: Option<String>,
    /// Do not ask Flux to reconcile, and do not wait for it.
    #[arg(long)]
    pub no_reconcile: bool,
    /// How long to wait for each reconciliation.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The Helm repository of the chart (default: kas's own, <kas>/-/charts).
    #[arg(long)]
    pub helm_repository_address: Option<String>,
    #[arg(long, default_value = "gitlab")]
    pub helm_repository_name: String,
    #[arg(long, default_value = "flux-system")]
    pub helm_repository_namespace: String,
    #[arg(long, default_value = "gitlab-helm-repository.yaml")]
    pub helm_repository_filepath: String,
    #[arg(long, default_value = "gitlab-agent")]
    pub helm_release_name: String,
    #[arg(long, default_value = "flux-system")]
    pub helm_release_namespace: String,
    #[arg(long, default_value = "gitlab-agent-helm-release.yaml")]
    pub helm_release_filepath: String,
    #[arg(long, default_value = "gitlab-agent")]
    pub helm_release_target_namespace: String,
    /// Values files (YAML) for the release, merged in order; repeatable.
    #[arg(long, value_delimiter = ',')]
    pub helm_release_values: Vec<PathBuf>,
    /// `Secret/<name>` or `ConfigMap/<name>` (key values.yaml) for the
    /// release's valuesFrom; repeatable.
    #[arg(long, value_delimiter = ',')]
    pub helm_release_values_from: Vec<String>,
    /// The Secret (in the target namespace) holding the agent token.
    #[arg(long, default_value = "gitlab-agent-token")]
    pub gitlab_agent_token_secret_name: String,
    /// The kind of the Flux source that syncs the project: git.
    #[arg(long, default_value = "git")]
    pub flux_source_type: String,
    #[arg(long, default_value = "flux-system")]
    pub flux_source_namespace: String,
    #[arg(long, default_value = "flux-system")]
    pub flux_source_name: String,
    /// Create or update an environment with a dashboard for the agent.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub create_environment: bool,
    /// Default: <helm-release-namespace>/<helm-release-name>.
    #[arg(long)]
    pub environment_name: Option<String>,
    /// Default: the release's target namespace.
    #[arg(long)]
    pub environment_namespace: Option<String>,
    /// Default: helm.toolkit.fluxcd.io/v2/namespaces/<helm-release-namespace>/helmreleases/<helm-release-name>.
    #[arg(long)]
    pub environment_flux_resource_path: Option<String>,
    /// Create or update an environment with a dashboard for Flux.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub create_flux_environment: bool,
    /// Default: <flux-source-namespace>/<flux-source-name>.
    #[arg(long)]
    pub flux_environment_name: Option<String>,
    /// Default: the Flux source's namespace.
    #[arg(long)]
    pub flux_environment_namespace: Option<String>,
    /// Default: kustomize.toolkit.fluxcd.io/v1/namespaces/<flux-source-namespace>/kustomizations/<flux-source-name>.
    #[arg(long)]
    pub flux_environment_flux_resource_path: Option<String>,
    /// Commit as the token's user rather than as --commit-author-*.
    #[arg(long, conflicts_with_all = ["commit_author_name", "commit_author_email"])]
    pub use_api_commit_author: bool,
    #[arg(long, default_value = "glagent")]
    pub commit_author_name: String,
    #[arg(long, default_value = "noreply@glagent.invalid")]
    pub commit_author_email: String,
    /// kubeconfig of the cluster (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 1h"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration like 90s, 5m or 1h")),
    }
}

/// One progress line: `<step> ... [OK]`, as glab prints them (stderr).
struct Step;

impl Step {
    fn start(name: &'static str) -> Step {
        eprint!("{name} ... ");
        Step
    }
    fn ok(self) {
        eprintln!("[OK]");
    }
    fn skipped(self) {
        eprintln!("[SKIPPED]");
    }
    fn failed(self) {
        eprintln!("[FAILED]");
    }
}

/// Runs `work` as a step, printing its outcome.
async fn step<T>(name: &'static str, work: impl Future<Output = Result<T>>) -> Result<T> {
    let step = Step::start(name);
    match work.await {
        Ok(value) => {
            step.ok();
            Ok(value)
        }
        Err(error) => {
            step.failed();
            Err(error)
        }
    }
}

/// What every step needs.
struct Bootstrap<'a> {
    client: &'a Client,
    kube: kube::Client,
    args: &'a BootstrapArgs,
    project: api::Project,
    project_ref: String,
    branch: String,
    kas_address: String,
    /// kas's own CA, when kas uses one and the chart comes from kas.
    ca_pem: Option<String>,
    helm_repository_address: String,
}

pub async fn run(client: &Client, args: BootstrapArgs) -> Result<()> {
    let kube = flux::kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let project_ref = client.project_ref(&args.repo);
    let project: api::Project = client
        .get(&format!("/projects/{project_ref}"))
        .await
        .with_context(|| format!("finding the project {}", args.repo))?;
    let metadata: api::Metadata = client.get("/metadata").await?;
    if !metadata.kas.enabled {
        bail!("KAS is not configured in this GitLab instance");
    }
    let branch = args
        .manifest_branch
        .clone()
        .unwrap_or_else(|| project.default_branch.clone());
    let own_charts = format!("{}/-/charts", client.host());
    let helm_repository_address = args
        .helm_repository_address
        .clone()
        .unwrap_or_else(|| own_charts.clone());
    let mut ctx = Bootstrap {
        client,
        kube,
        args: &args,
        project,
        project_ref,
        branch,
        kas_address: metadata.kas.external_url,
        ca_pem: None,
        helm_repository_address,
    };
    step("Checking Flux and the manifest path", preflight(&ctx)).await?;
    let agent = step("Registering Agent", register(&ctx)).await?;
    if ctx.helm_repository_address == own_charts {
        let info: api::InstallCommand = client
            .get(&format!(
                "/projects/{}/cluster_agents/{}/install_command",
                ctx.project_ref, agent.id
            ))
            .await?;
        ctx.ca_pem = info.ca_cert;
    }
    step("Configuring Agent", configure(&ctx)).await?;
    if args.create_environment {
        let name = args
            .environment_name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", args.helm_release_namespace, args.helm_release_name));
        let namespace = args
            .environment_namespace
            .clone()
            .unwrap_or_else(|| args.helm_release_target_namespace.clone());
        let path = args.environment_flux_resource_path.clone().unwrap_or_else(|| {
            format!(
                "helm.toolkit.fluxcd.io/v2/namespaces/{}/helmreleases/{}",
                args.helm_release_namespace, args.helm_release_name
            )
        });
        step(
            "Configuring Environment with Dashboard for Agent",
            environment(&ctx, &agent, &name, &namespace, &path),
        )
        .await?;
    } else {
        Step::start("Configuring Environment with Dashboard for Agent").skipped();
    }
    if args.create_flux_environment {
        let name = args
            .flux_environment_name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", args.flux_source_namespace, args.flux_source_name));
        let namespace = args
            .flux_environment_namespace
            .clone()
            .unwrap_or_else(|| args.flux_source_namespace.clone());
        let path = args.flux_environment_flux_resource_path.clone().unwrap_or_else(|| {
            format!(
                "kustomize.toolkit.fluxcd.io/v1/namespaces/{}/kustomizations/{}",
                args.flux_source_namespace, args.flux_source_name
            )
        });
        step(
            "Configuring Environment with Dashboard for FluxCD",
            environment(&ctx, &agent, &name, &namespace, &path),
        )
        .await?;
    } else {
        Step::start("Configuring Environment with Dashboard for FluxCD").skipped();
    }
    let token = step("Creating Agent Token", token(&ctx, &agent)).await?;
    step("Creating Kubernetes Secret with Agent Token", secret(&ctx, &token)).await?;
    let files = step("Creating Flux Helm Resources", helm_resources(&ctx)).await?;
    step("Syncing Flux Helm Resources", sync(&ctx, &files)).await?;
    if args.no_reconcile {
        Step::start("Reconciling Flux Helm Resources").skipped();
    } else {
        eprintln!("Reconciling Flux Helm Resources ... ");
        reconcile(&ctx)
            .await
            .map_err(|error| anyhow::anyhow!("failed to reconcile the GitLab Agent: {error:#}"))?;
    }
    eprintln!("Successfully bootstrapped the GitLab Agent");
    Ok(())
}

fn file_path(dir: &str, file: &str) -> String {
    let dir = flux::normalize_path(dir);
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

async fn read_file(ctx: &Bootstrap<'_>, path: &str) -> Result<Option<String>> {
    let encoded = ctx.client.project_ref(path);
    let file: Option<api::RepositoryFile> = ctx
        .client
        .get_opt(&format!(
            "/projects/{}/repository/files/{encoded}?ref={}",
            ctx.project_ref,
            ctx.client.project_ref(&ctx.branch)
        ))
        .await?;
    match file {
        Some(file) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(file.content.trim())
                .with_context(|| format!("{path}: kas sent content that is not base64"))?;
            Ok(Some(String::from_utf8_lossy(&bytes).to_string()))
        }
        None => Ok(None),
    }
}

/// Commits `content` to `path` unless it is there already.
async fn write_file(ctx: &Bootstrap<'_>, path: &str, content: &str) -> Result<bool> {
    let current = read_file(ctx, path).await?;
    if current.as_deref() == Some(content) {
        return Ok(false);
    }
    let verb = if current.is_some() { "Update" } else { "Add" };
    let mut body = json!({
        "branch": ctx.branch,
        "content": content,
        "commit_message": format!("{verb} {path} via glagent cluster agent bootstrap"),
    });
    if !ctx.args.use_api_commit_author {
        body["author_name"] = json!(ctx.args.commit_author_name);
        body["author_email"] = json!(ctx.args.commit_author_email);
    }
    let url = format!(
        "/projects/{}/repository/files/{}",
        ctx.project_ref,
        ctx.client.project_ref(path)
    );
    let _: api::CommittedFile = if current.is_some() {
        ctx.client.put(&url, body).await?
    } else {
        ctx.client.post(&url, body).await?
    };
    Ok(true)
}

/// Everything that must hold before anything is written.
async fn preflight(ctx: &Bootstrap<'_>) -> Result<()> {
    let args = ctx.args;
    flux::require_crds(&ctx.kube).await?;
    if args.flux_source_type != "git" {
        bail!(
            "--flux-source-type {}: only git is supported (a GitRepository syncing this project)",
            args.flux_source_type
        );
    }
    let (namespace, name) = (&args.flux_source_namespace, &args.flux_source_name);
    let sources: Api<DynamicObject> = Api::namespaced_with(ctx.kube.clone(), namespace, &flux::git_repository());
    let Some(source) = sources.get_opt(name).await.context("reading the Flux source")? else {
        bail!(
            "the Flux source GitRepository {namespace}/{name} does not exist: pass the --flux-source-namespace and --flux-source-name of the GitRepository that syncs {} (flux get sources git -A)",
            ctx.project.path_with_namespace
        );
    };
    let url = source.data["spec"]["url"].as_str().unwrap_or_default();
    let forge = url::Url::parse(ctx.client.host())?;
    let points_at = glagent_core::flux::project_path(url, &forge);
    if points_at.as_deref() != Some(ctx.project.path_with_namespace.to_ascii_lowercase().as_str()) {
        bail!(
            "the Flux source GitRepository {namespace}/{name} syncs {url}, not the project {} on {}: bootstrap the agent into the project Flux syncs (-R), or point --flux-source-* at the GitRepository of this project",
            ctx.project.path_with_namespace,
            ctx.client.host()
        );
    }
    let applied = flux::kustomizations_of(&ctx.kube, namespace, name).await?;
    if applied.is_empty() {
        bail!(
            "no Flux Kustomization applies the GitRepository {namespace}/{name}: Flux would never apply the manifests; create one (flux create kustomization --source=GitRepository/{name} --path=<dir>)"
        );
    }
    let wanted = flux::normalize_path(&args.manifest_path);
    let Some((kustomization, _)) = applied.iter().find(|(_, path)| *path == wanted) else {
        let paths: Vec<String> = applied.iter().map(|(k, p)| format!("{k} applies ./{p}")).collect();
        bail!(
            "--manifest-path {:?} is not a path Flux applies from {}: {}; pass --manifest-path {}",
            args.manifest_path,
            ctx.project.path_with_namespace,
            paths.join(", "),
            applied[0].1
        );
    };
    if wanted.is_empty() && read_file(ctx, "kustomization.yaml").await?.is_none() {
        bail!(
            "the Kustomization {kustomization} applies the repository's root, which has no kustomization.yaml: Flux would read every YAML file, .gitlab/agents/{}/config.yaml included, as a manifest and fail; commit a kustomization.yaml listing the manifests at the root, or bootstrap Flux with --path <dir> and pass --manifest-path <dir>",
            args.agent_name
        );
    }
    Ok(())
}

async fn register(ctx: &Bootstrap<'_>) -> Result<api::Agent> {
    let agents: Vec<api::Agent> = ctx
        .client
        .get_list(&format!("/projects/{}/cluster_agents", ctx.project_ref))
        .await?;
    if let Some(agent) = agents.into_iter().find(|a| a.name == ctx.args.agent_name) {
        return Ok(agent);
    }
    ctx.client
        .post(
            &format!("/projects/{}/cluster_agents", ctx.project_ref),
            json!({"name": ctx.args.agent_name}),
        )
        .await
}

/// Lets the agent's project use the agent (user access as the agent), as
/// glab does, keeping whatever the file says already.
async fn configure(ctx: &Bootstrap<'_>) -> Result<()> {
    let path = format!(".gitlab/agents/{}/config.yaml", ctx.args.agent_name);
    let project = ctx.project.path_with_namespace.clone();
    let mut config: Value = match read_file(ctx, &path).await? {
        Some(text) if !text.trim().is_empty() => serde_saphyr::from_str::<Option<Value>>(&text)
            .with_context(|| format!("{path} is not valid YAML: fix it, then run bootstrap again"))?
            .unwrap_or_else(|| json!({})),
        _ => json!({}),
    };
    if !config.is_object() {
        bail!("{path} is not a mapping: fix it, then run bootstrap again");
    }
    let user_access = config
        .as_object_mut()
        .expect("an object")
        .entry("user_access")
        .or_insert_with(|| json!({"access_as": {"agent": {}}}));
    let projects = user_access
        .as_object_mut()
        .context("user_access is not a mapping")?
        .entry("projects")
        .or_insert_with(|| json!([]));
    let listed = projects
        .as_array()
        .context("user_access.projects is not a list")?
        .iter()
        .any(|p| p["id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(&project)));
    if listed {
        return Ok(());
    }
    projects.as_array_mut().expect("a list").push(json!({"id": project}));
    let text = serde_saphyr::to_string(&config).context("writing the configuration")?;
    write_file(ctx, &path, &text).await?;
    Ok(())
}

async fn environment(
    ctx: &Bootstrap<'_>,
    agent: &api::Agent,
    name: &str,
    namespace: &str,
    flux_path: &str,
) -> Result<()> {
    let wanted = json!({
        "name": name,
        "cluster_agent_id": agent.id,
        "kubernetes_namespace": namespace,
        "flux_resource_path": flux_path,
    });
    let existing: Vec<api::Environment> = ctx
        .client
        .get_list(&format!(
            "/projects/{}/environments?name={}",
            ctx.project_ref,
            ctx.client.project_ref(name)
        ))
        .await?;
    match existing.into_iter().find(|e| e.name == name) {
        Some(environment) => {
            let same = environment.cluster_agent.as_ref().map(|a| a.id) == Some(agent.id)
                && environment.kubernetes_namespace.clone().flatten().as_deref() == Some(namespace)
                && environment.flux_resource_path.clone().flatten().as_deref() == Some(flux_path);
            if !same {
                let mut changes = wanted;
                changes.as_object_mut().expect("an object").remove("name");
                let _: api::Environment = ctx
                    .client
                    .put(
                        &format!("/projects/{}/environments/{}", ctx.project_ref, environment.id),
                        changes,
                    )
                    .await?;
            }
        }
        None => {
            let _: api::Environment = ctx
                .client
                .post(&format!("/projects/{}/environments", ctx.project_ref), wanted)
                .await?;
        }
    }
    Ok(())
}

/// The agent token to install: the one the cluster's Secret already holds
/// while it is active, else a new one (revoking the least recently used
/// first when the agent has two).
struct Token {
    id: i64,
    token: String,
    /// Whether the Secret holds it already.
    installed: bool,
}

async fn token(ctx: &Bootstrap<'_>, agent: &api::Agent) -> Result<Token> {
    let tokens_path = format!("/projects/{}/cluster_agents/{}/tokens", ctx.project_ref, agent.id);
    let active: Vec<api::AgentToken> = ctx.client.get_list(&tokens_path).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &ctx.args.helm_release_target_namespace);
    if let Some(secret) = secrets.get_opt(&ctx.args.gitlab_agent_token_secret_name).await? {
        let id = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOKEN_ID_ANNOTATION))
            .and_then(|id| id.parse::<i64>().ok());
        let value = secret.data.as_ref().and_then(|d| d.get("token")).map(|t| t.0.clone());
        if let (Some(id), Some(value)) = (id, value)
            && active.iter().any(|t| t.id == id)
        {
            return Ok(Token {
                id,
                token: String::from_utf8_lossy(&value).to_string(),
                installed: true,
            });
        }
    }
    if active.len() >= ACTIVE_TOKENS {
        // The least recently used goes; one never used counts as recent.
        let mut used = Vec::new();
        for t in &active {
            let full: api::AgentToken = ctx.client.get(&format!("{tokens_path}/{}", t.id)).await?;
            used.push((full.last_used_at.flatten(), t.id));
        }
        used.sort_by(|a, b| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        ctx.client.delete(&format!("{tokens_path}/{}", used[0].1)).await?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let created: api::CreatedAgentToken = ctx
        .client
        .post(
            &tokens_path,
            json!({"name": format!("glagent-bootstrap-{now}"), "description": "Created by glagent cluster agent bootstrap"}),
        )
        .await?;
    Ok(Token {
        id: created.id,
        token: created.token,
        installed: false,
    })
}

async fn ensure_namespace(ctx: &Bootstrap<'_>, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(ctx.kube.clone());
    if namespaces.get_opt(name).await?.is_none() {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating the namespace {name}"))?;
    }
    Ok(())
}

/// Creates or replaces a Secret, unless it holds `data` already.
async fn put_secret(
    ctx: &Bootstrap<'_>,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, String>,
    annotations: Value,
) -> Result<()> {
    ensure_namespace(ctx, namespace).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), namespace);
    let wanted: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "type": "Opaque",
        "stringData": data,
    }))?;
    match secrets.get_opt(name).await? {
        Some(current) => {
            let holds = data.iter().all(|(k, v)| {
                current.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.as_slice()) == Some(v.as_bytes())
            });
            if !holds {
                let mut replacement = wanted;
                replacement.metadata.resource_version = current.metadata.resource_version;
                secrets.replace(name, &PostParams::default(), &replacement).await?;
            }
        }
        None => {
            secrets.create(&PostParams::default(), &wanted).await?;
        }
    }
    Ok(())
}

async fn secret(ctx: &Bootstrap<'_>, token: &Token) -> Result<()> {
    if token.installed {
        return Ok(());
    }
    put_secret(
        ctx,
        &ctx.args.helm_release_target_namespace,
        &ctx.args.gitlab_agent_token_secret_name,
        BTreeMap::from([("token".to_string(), token.token.clone())]),
        json!({TOKEN_ID_ANNOTATION: token.id.to_string()}),
    )
    .await
}

/// Deep-merges `over` into `base`: mappings key by key, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}

/// The HelmRepository and HelmRelease files, written by glagent itself.
async fn helm_resources(ctx: &Bootstrap<'_>) -> Result<Vec<(String, String)>> {
    let args = ctx.args;
    let mut repository = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": args.helm_repository_name, "namespace": args.helm_repository_namespace},
        "spec": {"interval": "1m0s", "url": ctx.helm_repository_address},
    });
    let mut values = json!({"config": {
        "kasAddress": ctx.kas_address,
        "secretName": args.gitlab_agent_token_secret_name,
    }});
    if let Some(ca) = &ctx.ca_pem {
        // kas's own CA: Flux must trust it to fetch the chart, and the agent
        // to reach kas.
        let name = format!("{}-ca", args.helm_repository_name);
        put_secret(
            ctx,
            &args.helm_repository_namespace,
            &name,
            BTreeMap::from([("ca.crt".to_string(), ca.clone())]),
            json!({}),
        )
        .await?;
        repository["spec"]["certSecretRef"] = json!({"name": name});
        values["config"]["kasCaCert"] = json!(ca);
    }
    for file in &args.helm_release_values {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading --helm-release-values {}", file.display()))?;
        let extra: Value = serde_saphyr::from_str::<Option<Value>>(&text)
            .with_context(|| format!("--helm-release-values {} is not YAML", file.display()))?
            .unwrap_or(Value::Null);
        if !extra.is_null() {
            merge(&mut values, extra);
        }
    }
    let mut values_from = Vec::new();
    for reference in &args.helm_release_values_from {
        let Some((kind, name)) = reference
            .split_once('/')
            .filter(|(k, _)| matches!(*k, "Secret" | "ConfigMap"))
        else {
            bail!("--helm-release-values-from {reference:?} must be Secret/<name> or ConfigMap/<name>");
        };
        values_from.push(json!({"kind": kind, "name": name, "valuesKey": "values.yaml"}));
    }
    let mut release = json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": args.helm_release_name, "namespace": args.helm_release_namespace},
        "spec": {
            "interval": "1m0s",
            "chart": {"spec": {
                "chart": "gitlab-agent",
                "reconcileStrategy": "ChartVersion",
                "sourceRef": {"kind": "HelmRepository", "name": args.helm_repository_name, "namespace": args.helm_repository_namespace},
            }},
            "install": {"createNamespace": true},
            "releaseName": args.helm_release_name,
            "targetNamespace": args.helm_release_target_namespace,
            "values": values,
        },
    });
    if !values_from.is_empty() {
        release["spec"]["valuesFrom"] = json!(values_from);
    }
    let yaml =
        |value: &Value| serde_saphyr::to_string(value).map(|text| format!("---\n{}", text.trim_start_matches("---\n")));
    Ok(vec![
        (
            file_path(&args.manifest_path, &args.helm_repository_filepath),
            yaml(&repository)?,
        ),
        (
            file_path(&args.manifest_path, &args.helm_release_filepath),
            yaml(&release)?,
        ),
    ])
}

/// Commits the files that differ, and lists them in the directory's
/// kustomization.yaml when it has one (Flux applies only what it lists).
async fn sync(ctx: &Bootstrap<'_>, files: &[(String, String)]) -> Result<()> {
    for (path, content) in files {
        write_file(ctx, path, content).await?;
    }
    let kustomization_path = file_path(&ctx.args.manifest_path, "kustomization.yaml");
    let Some(text) = read_file(ctx, &kustomization_path).await? else {
        return Ok(());
    };
    let mut kustomization: Value = serde_saphyr::from_str::<Option<Value>>(&text)
        .with_context(|| format!("{kustomization_path} is not valid YAML"))?
        .unwrap_or_else(|| json!({}));
    let resources = kustomization
        .as_object_mut()
        .with_context(|| format!("{kustomization_path} is not a mapping"))?
        .entry("resources")
        .or_insert_with(|| json!([]));
    let list = resources
        .as_array_mut()
        .with_context(|| format!("resources of {kustomization_path} is not a list"))?;
    let mut changed = false;
    for file in [&ctx.args.helm_repository_filepath, &ctx.args.helm_release_filepath] {
        let listed = list
            .iter()
            .any(|r| r.as_str().map(flux::normalize_path).as_deref() == Some(file.as_str()));
        if !listed {
            list.push(json!(file));
            changed = true;
        }
    }
    if changed {
        write_file(ctx, &kustomization_path, &serde_saphyr::to_string(&kustomization)?).await?;
    }
    Ok(())
}

/// `flux reconcile source git`, then the HelmRepository, then the
/// HelmRelease once the Kustomization has applied it.
async fn reconcile(ctx: &Bootstrap<'_>) -> Result<()> {
    let args = ctx.args;
    let deadline = || Instant::now() + args.timeout;
    flux::reconcile(
        &ctx.kube,
        &flux::git_repository(),
        &args.flux_source_namespace,
        &args.flux_source_name,
        deadline(),
    )
    .await?;
    flux::wait_for(
        &ctx.kube,
        &flux::helm_repository(),
        &args.helm_repository_namespace,
        &args.helm_repository_name,
        deadline(),
    )
    .await?;
    flux::reconcile(
        &ctx.kube,
        &flux::helm_repository(),
        &args.helm_repository_namespace,
        &args.helm_repository_name,
        deadline(),
    )
    .await?;
    flux::wait_for(
        &ctx.kube,
        &flux::helm_release(),
        &args.helm_release_namespace,
        &args.helm_release_name,
        deadline(),
    )
    .await?;
    flux::reconcile(
        &ctx.kube,
        &flux::helm_release(),
        &args.helm_release_namespace,
        &args.helm_release_name,
        deadline(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_merges() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("five").is_err());
        let mut base = json!({"config": {"kasAddress": "wss://k", "secretName": "s"}});
        merge(&mut base, json!({"config": {"secretName": "mine"}, "replicas": 2}));
        assert_eq!(
            base,
            json!({"config": {"kasAddress": "wss://k", "secretName": "mine"}, "replicas": 2})
        );
        assert_eq!(file_path("./clusters/prod/", "a.yaml"), "clusters/prod/a.yaml");
        assert_eq!(file_path("", "a.yaml"), "a.yaml");
    }
}
