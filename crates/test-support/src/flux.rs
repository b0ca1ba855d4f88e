//! **A stand-in for Flux's controllers**, which cannot run on these
//! machines (no images, no binaries). It plays source-controller,
//! kustomize-controller and helm-controller with real parts only, against
//! the real API server and Flux's CRDs (`deploy/test/flux/crds.yaml`,
//! generated from Flux's published schemas):
//!
//! - GitRepository: a real `git clone` of `spec.url` (credentials and CA
//!   from `spec.secretRef`: `username`/`password`, `ca.crt`), the revision
//!   as `<branch>@sha1:<hex>` in `status.artifact`;
//! - Kustomization: the manifests at `spec.path` of its source, built as
//!   kustomize-controller builds them (`kubectl kustomize` when the
//!   directory has a `kustomization.yaml`, else every `.yaml`/`.yml` file
//!   below it, each of which must be a Kubernetes object), applied with
//!   real `kubectl apply --server-side`;
//! - HelmRepository: the real `index.yaml` fetched from `spec.url` (CA
//!   from `spec.certSecretRef`);
//! - HelmRelease: a real `helm upgrade --install` of the chart from its
//!   HelmRepository with `spec.values` over `spec.valuesFrom`, into
//!   `spec.targetNamespace`.
//!
//! Each answers `reconcile.fluxcd.io/requestedAt`, a new generation or a
//! new source revision by reconciling and writing `status` as the
//! controllers do: `observedGeneration`, `lastHandledReconcileAt`,
//! `Ready`/`Reconciling`/`Stalled` conditions with Flux's reasons and
//! messages. Failures are retried every 2 s (Flux waits the interval).
//! Differences: no HelmChart objects, helm does not `--wait` (the test
//! cluster has no kubelet, so nothing becomes ready), no pruning, no
//! intervals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::kube::KubeEnv;

const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
const RETRY: Duration = Duration::from_secs(2);

/// Flux's CRDs, as generated from its published schemas.
pub const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/test/flux/crds.yaml");

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn git_repositories() -> ApiResource {
    resource("source.toolkit.fluxcd.io", "v1", "GitRepository", "gitrepositories")
}
pub fn helm_repositories() -> ApiResource {
    resource("source.toolkit.fluxcd.io", "v1", "HelmRepository", "helmrepositories")
}
pub fn kustomizations() -> ApiResource {
    resource("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations")
}
pub fn helm_releases() -> ApiResource {
    resource("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases")
}

/// Installs Flux's CRDs into the shared API server (once per process) and
/// waits until they are served.
pub fn install_crds() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let env = KubeEnv::shared();
        let kubectl = |args: &[&str]| {
            let output = Command::new(crate::kube::kubectl())
                .arg("--kubeconfig")
                .arg(env.kubeconfig_path())
                .args(args)
                .output()
                .expect("running kubectl");
            assert!(
                output.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        kubectl(&["apply", "--server-side", "-f", CRDS]);
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
            "crd/helmrepositories.source.toolkit.fluxcd.io",
            "crd/helmcharts.source.toolkit.fluxcd.io",
            "crd/kustomizations.kustomize.toolkit.fluxcd.io",
            "crd/helmreleases.helm.toolkit.fluxcd.io",
        ]);
    });
}

/// The running stand-in; stops when dropped.
pub struct FluxStandIn {
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FluxStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FluxStandIn {
    /// Installs the CRDs and starts reconciling the Flux objects of
    /// `namespaces` (a test's own: stand-ins of tests running at once must
    /// not act on each other's objects), with `helm` for releases.
    pub async fn start(helm: PathBuf, namespaces: &[&str]) -> FluxStandIn {
        install_crds();
        let dir = tempfile::Builder::new()
            .prefix("glagent-flux-stand-in-")
            .tempdir()
            .expect("temp dir");
        let mut controller = Controller {
            client: KubeEnv::shared().client().await,
            helm,
            dir: dir.path().to_path_buf(),
            failed: HashMap::new(),
            checkouts: HashMap::new(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        };
        let task = tokio::spawn(async move {
            loop {
                controller.round().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        FluxStandIn { task, _dir: dir }
    }
}

struct Controller {
    client: kube::Client,
    helm: PathBuf,
    dir: PathBuf,
    /// Objects whose last attempt failed, and when, to retry them.
    failed: HashMap<String, Instant>,
    /// GitRepository `namespace/name` → its checkout.
    checkouts: HashMap<String, PathBuf>,
    /// Where this stand-in reconciles.
    namespaces: Vec<String>,
}

fn key(kind: &str, object: &DynamicObject) -> String {
    format!(
        "{kind}/{}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    )
}

fn requested_at(object: &DynamicObject) -> Option<String> {
    object.metadata.annotations.as_ref()?.get(REQUESTED_AT).cloned()
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    })
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// What a reconciliation produced: the status fields to merge and whether it succeeded.
struct Outcome {
    ok: bool,
    status: Value,
}

impl Controller {
    async fn round(&mut self) {
        for (kind, resource) in [
            ("GitRepository", git_repositories()),
            ("HelmRepository", helm_repositories()),
            ("Kustomization", kustomizations()),
            ("HelmRelease", helm_releases()),
        ] {
            for namespace in self.namespaces.clone() {
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &namespace, &resource);
                let Ok(list) = api.list(&ListParams::default()).await else {
                    continue;
                };
                for object in list.items {
                    if self.due(kind, &object).await {
                        self.reconcile(kind, &resource, object).await;
                    }
                }
            }
        }
    }

    /// Whether the object asks for work: a new generation, an unhandled
    /// reconcile request, a new source revision, or a failure to retry.
    async fn due(&self, kind: &str, object: &DynamicObject) -> bool {
        let status = &object.data["status"];
        if status["observedGeneration"].as_i64() != object.metadata.generation {
            return true;
        }
        if let Some(requested) = requested_at(object)
            && status["lastHandledReconcileAt"].as_str() != Some(requested.as_str())
        {
            return true;
        }
        if let Some(at) = self.failed.get(&key(kind, object)) {
            return at.elapsed() >= RETRY;
        }
        match kind {
            "Kustomization" => {
                let source = self.source_revision(object, "GitRepository").await;
                source.is_some() && source.as_deref() != status["lastAttemptedRevision"].as_str()
            }
            "HelmRelease" => {
                let source = self.source_revision(object, "HelmRepository").await;
                source.is_some() && source.as_deref() != status["lastAttemptedRevision"].as_str()
            }
            _ => false,
        }
    }

    /// The artifact revision of the object's source, once it is ready.
    async fn source_revision(&self, object: &DynamicObject, source_kind: &str) -> Option<String> {
        let source = self.source(object, source_kind).await?;
        let ready = source.data["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then(|| {
            source.data["status"]["artifact"]["revision"]
                .as_str()
                .map(str::to_string)
        })?
    }

    async fn source(&self, object: &DynamicObject, source_kind: &str) -> Option<DynamicObject> {
        let spec = &object.data["spec"];
        let reference = match source_kind {
            "HelmRepository" => &spec["chart"]["spec"]["sourceRef"],
            _ => &spec["sourceRef"],
        };
        let namespace = reference["namespace"]
            .as_str()
            .or(object.metadata.namespace.as_deref())?;
        let resource = match source_kind {
            "HelmRepository" => helm_repositories(),
            _ => git_repositories(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
        api.get_opt(reference["name"].as_str()?).await.ok().flatten()
    }

    async fn reconcile(&mut self, kind: &str, resource: &ApiResource, object: DynamicObject) {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let outcome = match kind {
            "GitRepository" => self.git_repository(&object).await,
            "HelmRepository" => self.helm_repository(&object).await,
            "Kustomization" => match self.kustomization(&object).await {
                Some(outcome) => outcome,
                None => return,
            },
            _ => match self.helm_release(&object).await {
                Some(outcome) => outcome,
                None => return,
            },
        };
        let mut status = outcome.status;
        status["observedGeneration"] = json!(object.metadata.generation);
        if let Some(requested) = requested_at(&object) {
            status["lastHandledReconcileAt"] = json!(requested);
        }
        let object_key = key(kind, &object);
        if outcome.ok {
            self.failed.remove(&object_key);
        } else {
            self.failed.insert(object_key, Instant::now());
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &namespace, resource);
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
        {
            eprintln!("[flux stand-in] writing the status of {kind} {namespace}/{name}: {error}");
            self.failed.insert(key(kind, &object), Instant::now());
        }
    }

    async fn secret(&self, namespace: &str, name: Option<&str>) -> HashMap<String, Vec<u8>> {
        let Some(name) = name else {
            return HashMap::new();
        };
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            _ => HashMap::new(),
        }
    }

    async fn git_repository(&mut self, object: &DynamicObject) -> Outcome {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let spec = &object.data["spec"];
        let url = spec["url"].as_str().unwrap_or_default().to_string();
        let branch = spec["ref"]["branch"].as_str().unwrap_or("master").to_string();
        let secret = self.secret(&namespace, spec["secretRef"]["name"].as_str()).await;
        let checkout = self.dir.join(format!("git-{namespace}-{name}"));
        let _ = std::fs::remove_dir_all(&checkout);
        let mut command = Command::new("git");
        if let (Some(user), Some(password)) = (secret.get("username"), secret.get("password")) {
            let basic = base64::engine::general_purpose::STANDARD.encode([&user[..], b":", &password[..]].concat());
            command.args(["-c", &format!("http.extraHeader=Authorization: Basic {basic}")]);
        }
        if let Some(ca) = secret.get("ca.crt") {
            let ca_file = self.dir.join(format!("git-{namespace}-{name}-ca.crt"));
            std::fs::write(&ca_file, ca).expect("writing the CA");
            command.env("GIT_SSL_CAINFO", &ca_file);
        }
        let output = command
            .args(["clone", "--quiet", "--depth", "1", "--branch", &branch, &url])
            .arg(&checkout)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("running git");
        if !output.status.success() {
            let message = format!(
                "failed to checkout and determine revision: unable to clone '{url}': {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return Outcome {
                ok: false,
                status: json!({"conditions": [
                    condition("Ready", false, "GitOperationFailed", &message),
                    condition("FetchFailed", true, "GitOperationFailed", &message),
                ]}),
            };
        }
        let head = Command::new("git")
            .arg("-C")
            .arg(&checkout)
            .args(["rev-parse", "HEAD"])
            .output()
            .expect("running git");
        let sha = String::from_utf8_lossy(&head.stdout).trim().to_string();
        let revision = format!("{branch}@sha1:{sha}");
        self.checkouts.insert(format!("{namespace}/{name}"), checkout);
        let message = format!("stored artifact for revision '{revision}'");
        Outcome {
            ok: true,
            status: json!({
                "conditions": [
                    condition("Ready", true, "Succeeded", &message),
                    condition("ArtifactInStorage", true, "Succeeded", &message),
                ],
                "artifact": {
                    "path": format!("gitrepository/{namespace}/{name}/{sha}.tar.gz"),
                    "url": format!("http://source-controller.flux-system.svc.cluster.local./gitrepository/{namespace}/{name}/{sha}.tar.gz"),
                    "revision": revision,
                    "digest": format!("sha256:{sha}"),
                    "lastUpdateTime": now(),
                },
            }),
        }
    }

    async fn helm_repository(&mut self, object: &DynamicObject) -> Outcome {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let spec = &object.data["spec"];
        let url = spec["url"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let secret = self.secret(&namespace, spec["certSecretRef"]["name"].as_str()).await;
        let mut http = reqwest::Client::builder();
        if let Some(ca) = secret.get("ca.crt")
            && let Ok(cert) = reqwest::Certificate::from_pem(ca)
        {
            http = http.add_root_certificate(cert);
        }
        let fetched = async {
            let response = http.build()?.get(format!("{url}/index.yaml")).send().await?;
            let response = response.error_for_status()?;
            response.text().await
        };
        match fetched.await {
            Ok(index) if index.contains("entries:") => {
                let digest = sha_hex(index.as_bytes());
                let message = format!("stored artifact: revision 'sha256:{digest}'");
                Outcome {
                    ok: true,
                    status: json!({
                        "conditions": [
                            condition("Ready", true, "Succeeded", &message),
                            condition("ArtifactInStorage", true, "Succeeded", &message),
                        ],
                        "url": format!("{url}/index.yaml"),
                        "artifact": {
                            "path": format!("helmrepository/{namespace}/index.yaml"),
                            "url": format!("{url}/index.yaml"),
                            "revision": format!("sha256:{digest}"),
                            "digest": format!("sha256:{digest}"),
                            "lastUpdateTime": now(),
                        },
                    }),
                }
            }
            Ok(_) => failed_fetch(&url, "the index has no entries"),
            Err(error) => failed_fetch(&url, &format!("{error:?}")),
        }
    }

    async fn kustomization(&mut self, object: &DynamicObject) -> Option<Outcome> {
        let source = self.source(object, "GitRepository").await?;
        let revision = self.source_revision(object, "GitRepository").await?;
        let source_key = format!(
            "{}/{}",
            source.metadata.namespace.as_deref().unwrap_or_default(),
            source.metadata.name.as_deref().unwrap_or_default()
        );
        let checkout = self.checkouts.get(&source_key)?.clone();
        let path = object.data["spec"]["path"].as_str().unwrap_or("./");
        let dir = checkout.join(path.trim_start_matches("./").trim_start_matches('/'));
        let failure = |reason: &str, message: String| Outcome {
            ok: false,
            status: json!({
                "conditions": [condition("Ready", false, reason, &message)],
                "lastAttemptedRevision": revision,
            }),
        };
        if !dir.is_dir() {
            return Some(failure(
                "ArtifactFailed",
                format!("kustomization path not found: stat {}: no such file or directory", path),
            ));
        }
        let manifests = match build(&dir) {
            Ok(manifests) => manifests,
            Err(message) => return Some(failure("BuildFailed", message)),
        };
        let file = self
            .dir
            .join(format!("kustomization-{}.yaml", sha_hex(source_key.as_bytes())));
        std::fs::write(&file, &manifests).expect("writing the build");
        if !manifests.trim().is_empty() {
            let mut apply = Command::new(crate::kube::kubectl());
            apply
                .arg("--kubeconfig")
                .arg(KubeEnv::shared().kubeconfig_path())
                .args([
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager",
                    "kustomize-controller",
                ]);
            // spec.targetNamespace puts every object there, as kustomize-controller does.
            if let Some(target) = object.data["spec"]["targetNamespace"].as_str() {
                apply.args(["--namespace", target]);
            }
            let output = apply.arg("-f").arg(&file).output().expect("running kubectl");
            if !output.status.success() {
                return Some(failure(
                    "ReconciliationFailed",
                    String::from_utf8_lossy(&output.stderr).trim().to_string(),
                ));
            }
        }
        let message = format!("Applied revision: {revision}");
        Some(Outcome {
            ok: true,
            status: json!({
                "conditions": [condition("Ready", true, "ReconciliationSucceeded", &message)],
                "lastAppliedRevision": revision,
                "lastAttemptedRevision": revision,
            }),
        })
    }

    async fn helm_release(&mut self, object: &DynamicObject) -> Option<Outcome> {
        let repository = self.source(object, "HelmRepository").await?;
        let revision = self.source_revision(object, "HelmRepository").await?;
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let spec = &object.data["spec"];
        let chart = spec["chart"]["spec"]["chart"].as_str().unwrap_or_default();
        let target = spec["targetNamespace"].as_str().unwrap_or(&namespace).to_string();
        let release = spec["releaseName"].as_str().map(str::to_string).unwrap_or_else(|| {
            if target != namespace {
                format!("{target}-{name}")
            } else {
                name.clone()
            }
        });
        let repository_namespace = repository.metadata.namespace.clone().unwrap_or_default();
        let url = repository.data["spec"]["url"].as_str().unwrap_or_default().to_string();
        let ca = self
            .secret(
                &repository_namespace,
                repository.data["spec"]["certSecretRef"]["name"].as_str(),
            )
            .await
            .remove("ca.crt");
        // valuesFrom in order, then spec.values on top, as helm-controller merges.
        let mut values_files = Vec::new();
        for (i, reference) in spec["valuesFrom"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let key = reference["valuesKey"].as_str().unwrap_or("values.yaml");
            let from = reference["name"].as_str().unwrap_or_default();
            let content = match reference["kind"].as_str() {
                Some("Secret") => self.secret(&namespace, Some(from)).await.remove(key),
                _ => {
                    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
                        Api::namespaced(self.client.clone(), &namespace);
                    api.get_opt(from)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|c| c.data?.remove(key))
                        .map(String::into_bytes)
                }
            };
            let Some(content) = content else {
                let message = format!(
                    "could not resolve {} chart values reference '{namespace}/{from}' with key '{key}'",
                    reference["kind"].as_str().unwrap_or_default()
                );
                return Some(helm_failure(&revision, "InstallFailed", &message, false));
            };
            let file = self.dir.join(format!("values-{namespace}-{name}-{i}.yaml"));
            std::fs::write(&file, content).expect("writing values");
            values_files.push(file);
        }
        let file = self.dir.join(format!("values-{namespace}-{name}.yaml"));
        std::fs::write(&file, serde_json::to_vec(&spec["values"]).expect("values")).expect("writing values");
        if spec["values"].is_object() {
            values_files.push(file);
        }
        let mut command = Command::new(&self.helm);
        command
            .args([
                "upgrade",
                "--install",
                &release,
                chart,
                "--repo",
                &url,
                "--namespace",
                &target,
            ])
            .env("KUBECONFIG", KubeEnv::shared().kubeconfig_path())
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        if let Some(version) = spec["chart"]["spec"]["version"].as_str() {
            command.args(["--version", version]);
        }
        if spec["install"]["createNamespace"].as_bool() == Some(true) {
            command.arg("--create-namespace");
        }
        if let Some(ca) = ca {
            let ca_file = self.dir.join(format!("helm-{namespace}-{name}-ca.crt"));
            std::fs::write(&ca_file, ca).expect("writing the CA");
            command.arg("--ca-file").arg(ca_file);
        }
        for file in &values_files {
            command.arg("--values").arg(file);
        }
        let output = command.output().expect("running helm");
        let first = object.data["status"]["history"].as_array().is_none_or(Vec::is_empty);
        let (verb, reason) = if first {
            ("install", "InstallSucceeded")
        } else {
            ("upgrade", "UpgradeSucceeded")
        };
        if !output.status.success() {
            let reason = if first { "InstallFailed" } else { "UpgradeFailed" };
            let message = format!(
                "Helm {verb} failed for release {target}/{release} with chart {chart}: {}",
                String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .trim_start_matches("Error: ")
            );
            return Some(helm_failure(&revision, reason, &message, true));
        }
        // helm's own record of the release: chart version and revision.
        let listed = Command::new(&self.helm)
            .args([
                "list",
                "--namespace",
                &target,
                "--filter",
                &format!("^{release}$"),
                "-o",
                "json",
            ])
            .env("KUBECONFIG", KubeEnv::shared().kubeconfig_path())
            .output()
            .expect("running helm");
        let listed: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        let record = &listed[0];
        let chart_version = record["chart"]
            .as_str()
            .and_then(|c| c.strip_prefix(&format!("{chart}-")))
            .unwrap_or_default()
            .to_string();
        let version = record["revision"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .or(record["revision"].as_i64())
            .unwrap_or(1);
        let message = format!(
            "Helm {verb} succeeded for release {target}/{release}.v{version} with chart {chart}@{chart_version}"
        );
        let deployed = now();
        let first_deployed = object.data["status"]["history"][0]["firstDeployed"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| deployed.clone());
        Some(Outcome {
            ok: true,
            status: json!({
                "conditions": [
                    condition("Ready", true, reason, &message),
                    condition("Released", true, reason, &message),
                ],
                "history": [{
                    "chartName": chart,
                    "chartVersion": chart_version,
                    "configDigest": format!("sha256:{}", sha_hex(&std::fs::read(self.dir.join(format!("values-{namespace}-{name}.yaml"))).unwrap_or_default())),
                    "digest": format!("sha256:{}", sha_hex(message.as_bytes())),
                    "firstDeployed": first_deployed,
                    "lastDeployed": deployed,
                    "name": release,
                    "namespace": target,
                    "status": "deployed",
                    "version": version,
                }],
                "helmChart": format!("{repository_namespace}/{namespace}-{name}"),
                "lastAttemptedRevision": revision,
                "lastAttemptedReleaseAction": verb,
                "storageNamespace": target,
            }),
        })
    }
}

fn failed_fetch(url: &str, error: &str) -> Outcome {
    let message = format!(
        "failed to fetch Helm repository index: failed to cache index to temporary file: failed to fetch {url}/index.yaml : {error}"
    );
    Outcome {
        ok: false,
        status: json!({"conditions": [
            condition("Ready", false, "FailedIndexFetch", &message),
            condition("FetchFailed", true, "FailedIndexFetch", &message),
        ]}),
    }
}

fn helm_failure(revision: &str, reason: &str, message: &str, stalled: bool) -> Outcome {
    let mut conditions = vec![
        condition("Ready", false, reason, message),
        condition("Released", false, reason, message),
    ];
    if stalled {
        // No remediation retries by default: helm-controller stalls.
        conditions.push(condition("Stalled", true, "RetriesExceeded", message));
    }
    Outcome {
        ok: false,
        status: json!({"conditions": conditions, "lastAttemptedRevision": revision}),
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The manifests kustomize-controller would apply from `dir`.
fn build(dir: &Path) -> Result<String, String> {
    if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        let output = Command::new(crate::kube::kubectl())
            .arg("kustomize")
            .arg(dir)
            .output()
            .expect("running kubectl kustomize");
        return if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).to_string())
        } else {
            Err(format!(
                "kustomize build failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        };
    }
    // No kustomization.yaml: every YAML file below the path, as the
    // controller generates one; each must be a Kubernetes object.
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        for document in text.split("\n---") {
            if document.trim().is_empty()
                || document
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                continue;
            }
            let has = |key: &str| document.lines().any(|l| l.starts_with(&format!("{key}:")));
            if !has("apiVersion") || !has("kind") {
                let relative = file.strip_prefix(dir).unwrap_or(&file);
                return Err(format!(
                    "kustomize build failed: failed to decode Kubernetes YAML from {}: missing Resource metadata",
                    relative.display()
                ));
            }
            out.push_str("---\n");
            out.push_str(document.trim_start_matches('\n'));
            out.push('\n');
        }
    }
    Ok(out)
}
