//! GitOps with Flux. Flux's controllers cannot run here, so Flux's CRDs
//! (generated from its published schemas) are installed in the real API
//! server and **a stand-in** (`glagent_test_support::flux`) plays the
//! controllers with real git, kubectl and helm. Against it:
//! `glagent cluster agent bootstrap` installs the agent from nothing with
//! kas's own chart repository, a second run changes nothing, pre-flight
//! refuses a wrong manifest path and a root without kustomization.yaml
//! before writing anything, a failing HelmRelease shows Flux's message; and
//! agentk's Flux module requests a reconciliation when a project a
//! GitRepository points at is pushed.

use std::process::Command;
use std::time::Duration;

use glagent_test_support::flux::{FluxStandIn, git_repositories, kustomizations};
use glagent_test_support::kube::KubeEnv;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::doctor::doctor;
use crate::support::as_admin;
use crate::support::helm::{helm, run_as_the_chart_says};
use crate::support::kubelet::pods_on_a_stand_in_kubelet;
use crate::{Setup, call, until};

/// The Flux objects `flux bootstrap gitlab` would leave in `ns`: a Secret
/// with kas's credentials and CA, the GitRepository of the setup's project
/// and a Kustomization applying `path` from it.
async fn flux_bootstrapped(setup: &Setup, ns: &str, path: &str) {
    let client = KubeEnv::shared().client().await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "flux-system"},
        "stringData": {
            "username": "root",
            "password": setup.kas.root_token,
            "ca.crt": std::fs::read_to_string(setup.kas.ca_file()).unwrap(),
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let create = |resource: kube::api::ApiResource, object: Value| {
        let client = client.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            Api::<DynamicObject>::namespaced_with(client, ns, &resource)
                .create(&PostParams::default(), &object)
                .await
                .unwrap();
        }
    };
    create(
        git_repositories(),
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-system"},
            "spec": {"interval": "1m0s", "url": format!("{}/{}.git", setup.kas.url, setup.project_path),
                     "ref": {"branch": "main"}, "secretRef": {"name": "flux-system"}},
        }),
    )
    .await;
    create(
        kustomizations(),
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "flux-system"},
            "spec": {"interval": "10m0s", "path": path, "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
        }),
    )
    .await;
}

/// `glagent cluster agent bootstrap` with every namespace in `ns`.
fn bootstrap(setup: &Setup, ns: &str, target: &str, extra: &[&str]) -> (bool, String) {
    let output = setup
        .glagent_as(&setup.kas.root_token)
        .args(["cluster", "agent", "bootstrap", "flux-agent", "-R", &setup.project_path])
        .args([
            "--flux-source-namespace",
            ns,
            "--helm-repository-namespace",
            ns,
            "--helm-release-namespace",
            ns,
        ])
        .args([
            "--helm-release-name",
            "flux-agent",
            "--helm-release-target-namespace",
            target,
        ])
        .args(["--timeout", "90s", "--kubeconfig"])
        .arg(KubeEnv::shared().kubeconfig_path())
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.success(), stderr)
}

/// The commit `main` points at (read through `path`, a file the test
/// committed first).
async fn head(setup: &Setup, path: &str) -> String {
    let (_, file) = call(
        &setup.kas,
        "GET",
        &format!(
            "/projects/{}/repository/files/{}?ref=main",
            setup.project_id,
            path.replace('/', "%2F")
        ),
        None,
    )
    .await;
    file["commit_id"].as_str().unwrap_or_default().to_string()
}

async fn agents(setup: &Setup) -> Vec<String> {
    let (_, agents) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        None,
    )
    .await;
    agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

async fn commit(setup: &Setup, path: &str, content: &str) {
    let encoded = path.replace('/', "%2F");
    let (status, body) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/repository/files/{encoded}", setup.project_id),
        Some(json!({"branch": "main", "content": content, "commit_message": "add"})),
    )
    .await;
    assert!(status.is_success(), "{body}");
}

async fn file(setup: &Setup, path: &str) -> String {
    let encoded = path.replace('/', "%2F");
    let response = setup
        .kas
        .http()
        .get(setup.kas.api(&format!(
            "/projects/{}/repository/files/{encoded}/raw?ref=main",
            setup.project_id
        )))
        .header("PRIVATE-TOKEN", &setup.kas.root_token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_installs_the_agent_with_flux_and_a_second_run_changes_nothing() {
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let ns = env.namespace("flux-system").await;
    let target = format!("{ns}-agent");
    let _flux = FluxStandIn::start(helm(3), &[&ns]).await;
    commit(
        &setup,
        "clusters/test/app.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: {ns}\ndata:\n  from: flux\n"),
    )
    .await;
    flux_bootstrapped(&setup, &ns, "./clusters/test").await;

    let (ok, stderr) = bootstrap(&setup, &ns, &target, &["--manifest-path", "clusters/test"]);
    assert!(ok, "{stderr}");
    for line in [
        "Registering Agent ... [OK]",
        "Configuring Agent ... [OK]",
        "Configuring Environment with Dashboard for Agent ... [OK]",
        "Configuring Environment with Dashboard for FluxCD ... [OK]",
        "Creating Agent Token ... [OK]",
        "Creating Kubernetes Secret with Agent Token ... [OK]",
        "Creating Flux Helm Resources ... [OK]",
        "Syncing Flux Helm Resources ... [OK]",
        "✔ fetched revision main@sha1:",
        "✔ applied revision 0.1.0",
        "Successfully bootstrapped the GitLab Agent",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    // The stand-in applied the manifests at the path, and helm installed
    // the chart from kas's own repository.
    as_admin(&ns, &["get", "configmap", "app"]);
    let listed = Command::new(helm(3))
        .args(["list", "--namespace", &target, "-o", "json"])
        .env("KUBECONFIG", env.kubeconfig_path())
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "flux-agent", "{listed}");
    assert_eq!(listed[0]["status"], "deployed", "{listed}");
    assert_eq!(
        listed[0]["chart"],
        format!("gitlab-agent-{}", glagent_core::VERSION),
        "{listed}"
    );

    // The committed objects validate against Flux's published schemas.
    let dir = tempfile::tempdir().unwrap();
    for name in ["gitlab-helm-repository.yaml", "gitlab-agent-helm-release.yaml"] {
        std::fs::write(
            dir.path().join(name),
            file(&setup, &format!("clusters/test/{name}")).await,
        )
        .unwrap();
    }
    let validated = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/flux-validate.mjs"))
        .arg(dir.path().join("gitlab-helm-repository.yaml"))
        .arg(dir.path().join("gitlab-agent-helm-release.yaml"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&validated.stdout).to_string() + &String::from_utf8_lossy(&validated.stderr);
    assert!(validated.status.success(), "{report}");
    assert!(report.contains("HelmRelease flux-agent valid"), "{report}");

    // agentk as the rendered Deployment says: it connects.
    let mut agent = run_as_the_chart_says(&target, "flux-agent", dir.path()).await;
    let agent_log = agent.log_path();
    agent.wait_ready(Duration::from_secs(30)).await;
    let (_, listed) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        None,
    )
    .await;
    let agent_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "flux-agent")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let (_, connections) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents/{agent_id}/connections", setup.project_id),
        None,
    )
    .await;
    assert_eq!(connections.as_array().map(Vec::len), Some(1), "{connections}");

    // Both environments, with the Flux objects' paths.
    let (_, environments) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/environments", setup.project_id),
        None,
    )
    .await;
    let path_of = |name: String| {
        environments
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name.as_str())
            .map(|e| e["flux_resource_path"].clone())
    };
    assert_eq!(
        path_of(format!("{ns}/flux-agent")),
        Some(json!(format!(
            "helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases/flux-agent"
        )))
    );
    assert_eq!(
        path_of(format!("{ns}/flux-system")),
        Some(json!(format!(
            "kustomize.toolkit.fluxcd.io/v1/namespaces/{ns}/kustomizations/flux-system"
        )))
    );

    // A second run: no commit, no token, no Secret change.
    let before = (
        head(&setup, "clusters/test/app.yaml").await,
        tokens(&setup, agent_id).await,
        secret_version(&target).await,
    );
    let (ok, stderr) = bootstrap(&setup, &ns, &target, &["--manifest-path", "clusters/test"]);
    assert!(ok, "{stderr}");
    let after = (
        head(&setup, "clusters/test/app.yaml").await,
        tokens(&setup, agent_id).await,
        secret_version(&target).await,
    );
    assert_eq!(before, after, "the second run changed something:\n{stderr}");

    // The doctor finds nothing wrong, the agent pod's log included.
    let _kubelet = pods_on_a_stand_in_kubelet(
        &target,
        &[(
            "flux-agent-gitlab-agent-0",
            json!({"app.kubernetes.io/name": "gitlab-agent", "app.kubernetes.io/instance": "flux-agent"}),
            Some(agent_log),
        )],
    )
    .await;
    let (ok, out) = doctor(&setup, "flux-agent", &[]);
    assert!(ok, "{out}");
    for expected in [
        "✔ agent connected: 1 connection(s)",
        "✔ Flux installed",
        &format!("✔ Flux manifest path: {ns}/flux-system applies ./clusters/test"),
        &format!("✔ Flux HelmRelease: {ns}/flux-agent is in the cluster"),
        &format!("✔ agent Deployment: {target}/flux-agent-gitlab-agent"),
        "✔ agent pod flux-agent-gitlab-agent-0: no connection failure in its log",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }

    // Without the Secret and with two active tokens, a run creates no
    // third: the least recently used one (the installed agent's) goes first.
    let installed = tokens(&setup, agent_id).await;
    let (_, extra) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{agent_id}/tokens", setup.project_id),
        Some(json!({"name": "spare"})),
    )
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client().await, &target);
    secrets.delete("gitlab-agent-token", &Default::default()).await.unwrap();
    let (ok, stderr) = bootstrap(
        &setup,
        &ns,
        &target,
        &["--manifest-path", "clusters/test", "--no-reconcile"],
    );
    assert!(ok, "{stderr}");
    let active = tokens(&setup, agent_id).await;
    assert_eq!(active.len(), 2, "{active:?}");
    assert!(!active.contains(&installed[0]), "the used token should go: {active:?}");
    assert!(
        active.contains(&extra["id"].as_i64().unwrap()),
        "the unused one stays: {active:?}"
    );
}

async fn tokens(setup: &Setup, agent_id: i64) -> Vec<i64> {
    let (_, tokens) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents/{agent_id}/tokens", setup.project_id),
        None,
    )
    .await;
    tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

async fn secret_version(namespace: &str) -> Option<String> {
    let client = KubeEnv::shared().client().await;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, namespace)
        .get_opt("gitlab-agent-token")
        .await
        .unwrap()
        .and_then(|s| s.metadata.resource_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_refuses_a_wrong_setup_before_writing_and_shows_flux_s_message_when_the_release_fails() {
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let ns = env.namespace("flux-preflight").await;
    let root = env.namespace("flux-root").await;
    let target = format!("{ns}-agent");
    let _flux = FluxStandIn::start(helm(3), &[&ns, &root]).await;
    commit(&setup, "clusters/prod/.keep", "").await;
    flux_bootstrapped(&setup, &ns, "./clusters/prod").await;
    let untouched = (head(&setup, "clusters/prod/.keep").await, agents(&setup).await);

    let (ok, stderr) = bootstrap(&setup, &ns, &target, &["--manifest-path", "clusters/staging"]);
    assert!(!ok);
    assert!(
        stderr.contains("--manifest-path \"clusters/staging\" is not a path Flux applies")
            && stderr.contains("applies ./clusters/prod")
            && stderr.contains("pass --manifest-path clusters/prod"),
        "{stderr}"
    );
    assert_eq!(
        (head(&setup, "clusters/prod/.keep").await, agents(&setup).await),
        untouched,
        "pre-flight changed something"
    );

    // Flux applying the repository root, which has no kustomization.yaml.
    flux_bootstrapped(&setup, &root, "./").await;
    let (ok, stderr) = bootstrap(&setup, &root, &target, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("applies the repository's root, which has no kustomization.yaml")
            && stderr.contains(".gitlab/agents/flux-agent/config.yaml"),
        "{stderr}"
    );
    assert_eq!(
        (head(&setup, "clusters/prod/.keep").await, agents(&setup).await),
        untouched,
        "pre-flight changed something"
    );

    // The doctor finds both: the root without kustomization.yaml, and an
    // environment's HelmRelease that Flux never applied.
    let (status, body) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/environments", setup.project_id),
        Some(
            json!({"name": "prod", "cluster_agent_id": setup.agent_id, "kubernetes_namespace": ns,
                    "flux_resource_path": format!("helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases/missing")}),
        ),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let (ok, out) = doctor(&setup, "edge", &["--namespace", &ns]);
    assert!(!ok);
    for expected in [
        &format!(
            "✗ Flux manifest path: the Kustomization {root}/flux-system applies the repository's root, which has no kustomization.yaml"
        ),
        &format!("✔ Flux manifest path: {ns}/flux-system applies ./clusters/prod"),
        &format!("✗ Flux HelmRelease: the HelmRelease {ns}/missing of the environment prod is not in the cluster"),
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }

    // A release the chart refuses: Flux's message, not a bare line.
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(values.path(), "config:\n  receptive:\n    enabled: true\n").unwrap();
    let (ok, stderr) = bootstrap(
        &setup,
        &ns,
        &target,
        &[
            "--manifest-path",
            "clusters/prod",
            "--helm-release-values",
            values.path().to_str().unwrap(),
        ],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("failed to reconcile the GitLab Agent: HelmRelease")
            && stderr.contains("Helm install failed")
            && stderr.contains("config.api.jwtPublicKey is required for a receptive agent"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_project_a_git_repository_points_at_requests_its_reconciliation() {
    glagent_test_support::flux::install_crds();
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let ns = env.namespace("flux-push").await;
    let client = env.client().await;
    let repositories: Api<DynamicObject> = Api::namespaced_with(client, &ns, &git_repositories());
    for (name, url) in [
        ("ours", format!("{}/{}.git", setup.kas.url, setup.project_path)),
        ("elsewhere", "https://github.com/example/app.git".to_string()),
    ] {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": name},
            "spec": {"interval": "1h", "url": url, "ref": {"branch": "main"}},
        }))
        .unwrap();
        repositories.create(&PostParams::default(), &object).await.unwrap();
    }
    // The agent's pod runs in `ns`, where it leads (the Flux module is the leader's).
    let mut options = setup.agent_options();
    options.kubeconfig = Some(env.kubeconfig_path());
    options.env = vec![("POD_NAMESPACE".into(), ns.clone())];
    let mut agent = glagent_test_support::agentk::Agentk::start(&crate::agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    let learned = async || {
        setup
            .kas
            .log()
            .contains("the agent's Flux GitRepository objects point at these projects")
            && setup.kas.log().contains(&setup.project_path.to_ascii_lowercase())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !learned().await {
        assert!(
            std::time::Instant::now() < deadline,
            "kas did not learn the agent's Flux projects; agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requested = async |name: &str| {
        repositories
            .get(name)
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .get("reconcile.fluxcd.io/requestedAt")
            .cloned()
    };
    assert_eq!(requested("ours").await, None);
    assert!(
        setup
            .write_config("observability:\n  logging:\n    level: info\n")
            .await
            .is_success()
    );
    until(
        Duration::from_secs(5),
        "the push to request a reconciliation",
        async || requested("ours").await.is_some(),
    )
    .await;
    assert_eq!(requested("elsewhere").await, None, "a GitRepository of another forge");

    // Turned off: the next push requests nothing.
    let first = requested("ours").await;
    assert!(
        setup
            .write_config("flux:\n  reconcile_on_push: false\n")
            .await
            .is_success()
    );
    until(
        Duration::from_secs(10),
        "the agent to turn the module off",
        async || agent.log().contains("\"projects\":[]") || agent.log().contains("projects=[]"),
    )
    .await;
    let second = requested("ours").await;
    assert!(
        setup
            .write_config("flux:\n  reconcile_on_push: false\n# again\n")
            .await
            .is_success()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        requested("ours").await,
        second,
        "requested while turned off (first: {first:?})"
    );
}
