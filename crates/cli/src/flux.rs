//! Flux in the cluster, as `glagent cluster agent bootstrap` needs it,
//! through the Kubernetes API only (no `flux` or `kubectl` binary): the
//! served kinds, the source and the Kustomizations that apply it, and
//! `flux reconcile`'s protocol (annotate `reconcile.fluxcd.io/requestedAt`,
//! poll every 2 s until `status.lastHandledReconcileAt` says it was handled
//! and the object is ready, stalled or out of time).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
const POLL: Duration = Duration::from_secs(2);

fn resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').expect("group/version");
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn git_repository() -> ApiResource {
    resource("source.toolkit.fluxcd.io/v1", "GitRepository", "gitrepositories")
}
pub fn helm_repository() -> ApiResource {
    resource("source.toolkit.fluxcd.io/v1", "HelmRepository", "helmrepositories")
}
pub fn kustomization() -> ApiResource {
    resource("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "kustomizations")
}
pub fn helm_release() -> ApiResource {
    resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases")
}

/// A client for the cluster of `kubeconfig` (default: `$KUBECONFIG` or
/// `~/.kube/config`) and `context` (default: its current one).
pub async fn kube_client(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .context("no usable kubeconfig for the cluster: pass --kubeconfig (and --context)")?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Fails unless the API server serves every Flux kind bootstrap uses.
pub async fn require_crds(client: &kube::Client) -> Result<()> {
    let mut missing = Vec::new();
    for r in [git_repository(), helm_repository(), kustomization(), helm_release()] {
        let served = match client.list_api_group_resources(&r.api_version).await {
            Ok(list) => list.resources.iter().any(|x| x.name == r.plural),
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => return Err(e).context("asking the cluster which Flux kinds it serves"),
        };
        if !served {
            missing.push(format!("{} {}", r.api_version, r.kind));
        }
    }
    if !missing.is_empty() {
        bail!(
            "Flux is not installed in the cluster (not served: {}): bootstrap Flux first (flux bootstrap gitlab --path <dir>, or Flux's install manifests), then run this again",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Strips `./`, leading and trailing `/`: Flux's paths and bootstrap's
/// `--manifest-path` compare as the same directory.
pub fn normalize_path(path: &str) -> String {
    let trimmed = path.trim().trim_start_matches("./").trim_matches('/');
    if trimmed == "." {
        String::new()
    } else {
        trimmed.to_string()
    }
}

/// The Kustomizations that apply the GitRepository `namespace/name`, with
/// their `namespace/name` and normalized `spec.path`.
pub async fn kustomizations_of(client: &kube::Client, namespace: &str, name: &str) -> Result<Vec<(String, String)>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kustomization());
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing Flux Kustomizations")?;
    Ok(list
        .items
        .iter()
        .filter(|k| {
            let source = &k.data["spec"]["sourceRef"];
            let source_namespace = source["namespace"]
                .as_str()
                .or(k.metadata.namespace.as_deref())
                .unwrap_or_default();
            source["kind"] == "GitRepository" && source["name"] == name && source_namespace == namespace
        })
        .map(|k| {
            (
                format!(
                    "{}/{}",
                    k.metadata.namespace.as_deref().unwrap_or_default(),
                    k.metadata.name.as_deref().unwrap_or_default()
                ),
                normalize_path(k.data["spec"]["path"].as_str().unwrap_or_default()),
            )
        })
        .collect())
}

fn condition<'a>(object: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn words(condition: Option<&Value>) -> String {
    match condition {
        Some(c) => format!(
            "{}={} {}: {}",
            c["type"].as_str().unwrap_or_default(),
            c["status"].as_str().unwrap_or_default(),
            c["reason"].as_str().unwrap_or_default(),
            c["message"].as_str().unwrap_or_default()
        ),
        None => "no Ready condition yet".into(),
    }
}

/// `flux reconcile`: annotates the object, then waits for the controller
/// to handle the request. Prints flux's lines; returns the artifact
/// revision (sources) or the applied chart version (HelmRelease).
pub async fn reconcile(
    client: &kube::Client,
    r: &ApiResource,
    namespace: &str,
    name: &str,
    deadline: Instant,
) -> Result<String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, r);
    let kind = &r.kind;
    let before = api
        .get(name)
        .await
        .with_context(|| format!("reading {kind} {namespace}/{name}"))?;
    if before.data["spec"]["suspend"] == true {
        bail!("{kind} {namespace}/{name} is suspended: resume it (spec.suspend: false) first");
    }
    eprintln!("► annotating {kind} {name} in {namespace} namespace");
    let requested = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_AT: requested}}})),
    )
    .await
    .with_context(|| format!("annotating {kind} {namespace}/{name}"))?;
    eprintln!("✔ {kind} annotated");
    eprintln!("◎ waiting for {kind} reconciliation");
    loop {
        let object = api
            .get(name)
            .await
            .with_context(|| format!("reading {kind} {namespace}/{name}"))?;
        let status = &object.data["status"];
        let handled = status["lastHandledReconcileAt"].as_str() == Some(requested.as_str())
            && status["observedGeneration"].as_i64() == object.metadata.generation;
        let ready = condition(&object, "Ready");
        let stalled = condition(&object, "Stalled").filter(|c| c["status"] == "True");
        let reconciling = condition(&object, "Reconciling").is_some_and(|c| c["status"] == "True");
        if handled && !reconciling {
            if let Some(stalled) = stalled {
                bail!(
                    "{kind} {namespace}/{name} reconciliation failed: {}",
                    words(Some(stalled))
                );
            }
            if ready.is_some_and(|c| c["status"] == "True") {
                let revision = if kind == "HelmRelease" {
                    status["history"][0]["chartVersion"]
                        .as_str()
                        .or(status["lastAttemptedRevision"].as_str())
                        .unwrap_or_default()
                        .to_string()
                } else {
                    status["artifact"]["revision"].as_str().unwrap_or_default().to_string()
                };
                let verb = if kind == "HelmRelease" { "applied" } else { "fetched" };
                eprintln!("✔ {verb} revision {revision}");
                return Ok(revision);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out waiting for {kind} {namespace}/{name} to be reconciled: {}",
                words(ready)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the HelmRelease exists (the Kustomization applies it after
/// the source's new revision), whatever Flux's version says when it does not.
pub async fn wait_for(
    client: &kube::Client,
    r: &ApiResource,
    namespace: &str,
    name: &str,
    deadline: Instant,
) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, r);
    let mut said = false;
    loop {
        if api.get_opt(name).await?.is_some() {
            return Ok(());
        }
        if !said {
            eprintln!("◎ waiting for {} {name} in {namespace} namespace to be applied", r.kind);
            said = true;
        }
        if Instant::now() >= deadline {
            bail!(
                "the {} {namespace}/{name} did not appear: is the Kustomization applying the manifest path Ready? (kubectl get kustomizations -A)",
                r.kind
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compare_as_flux_compares_them() {
        for (path, normal) in [
            ("./clusters/prod", "clusters/prod"),
            ("clusters/prod/", "clusters/prod"),
            ("/clusters/prod", "clusters/prod"),
            ("./", ""),
            ("", ""),
            (".", ""),
        ] {
            assert_eq!(normalize_path(path), normal, "{path}");
        }
    }
}
