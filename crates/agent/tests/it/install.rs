//! Installing the agent as the spec says: the install command kas gives,
//! run with real helm against kas's own chart repository and the real API
//! server, then agentk started exactly as the rendered Deployment says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use reqwest::StatusCode;
use serde_json::json;

use crate::{AGENTK, Setup, call};

fn helm(version: u8) -> PathBuf {
    let var = format!("GLAGENT_HELM{version}");
    let path = PathBuf::from(std::env::var(&var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test.sh")));
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

/// Runs a shell script with `helm` (the given version) and the admin
/// kubeconfig, in `dir`.
pub(crate) fn sh(dir: &Path, helm_version: u8, script: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("helm");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(helm(helm_version), &link).unwrap();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .env("KUBECONFIG", KubeEnv::shared().kubeconfig_path())
        .env("HELM_CACHE_HOME", dir.join("helm/cache"))
        .env("HELM_CONFIG_HOME", dir.join("helm/config"))
        .env("HELM_DATA_HOME", dir.join("helm/data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "script failed:\n{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Starts agentk with the rendered Deployment's args and env, the Secret's
/// token and the CA ConfigMap where the mounts say, and a token of the
/// chart's ServiceAccount from the TokenRequest API.
async fn run_as_the_chart_says(namespace: &str, release: &str, dir: &Path) -> Agentk {
    let env = KubeEnv::shared();
    let client = env.client().await;
    let name = format!("{release}-gitlab-agent");
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(&name)
        .await
        .unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&format!("{name}-token"))
        .await
        .unwrap();
    let token_file = dir.join(format!("{release}-token"));
    std::fs::write(&token_file, &secret.data.unwrap()["token"].0).unwrap();
    let ca_file = dir.join(format!("{release}-ca.crt"));
    if let Ok(ca) = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(&format!("{name}-ca"))
        .await
    {
        std::fs::write(&ca_file, &ca.data.unwrap()["ca.crt"]).unwrap();
    }
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| match a.as_str() {
            "/etc/agentk/secrets/token" => token_file.display().to_string(),
            "/etc/agentk/config/ca.crt" => ca_file.display().to_string(),
            _ => a,
        })
        .collect();
    let service_account = pod.service_account_name.unwrap();
    let sa_token = Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["-n", namespace, "create", "token", &service_account])
        .output()
        .unwrap();
    assert!(
        sa_token.status.success(),
        "{}",
        String::from_utf8_lossy(&sa_token.stderr)
    );
    let kubeconfig = dir.join(format!("{release}-in-cluster.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\n\
             users: [{{name: sa, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: sa}}}}]\ncurrent-context: c\n",
            env.server_url(),
            env.ca_file().display(),
            String::from_utf8_lossy(&sa_token.stdout).trim()
        ),
    )
    .unwrap();
    let mut envs = Vec::new();
    for var in container.env.clone().unwrap_or_default() {
        let value = match var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str())
        {
            Some("metadata.namespace") => namespace.to_string(),
            Some("metadata.name") => format!("{name}-7d9f8-x2x4z"),
            Some("spec.serviceAccountName") => service_account.clone(),
            Some(other) => panic!("unexpected downward API field {other}"),
            None => var.value.unwrap_or_default(),
        };
        envs.push((var.name, value));
    }
    let mut args_with_kubeconfig = args;
    args_with_kubeconfig.push("--kubeconfig".into());
    args_with_kubeconfig.push(kubeconfig.display().to_string());
    let mut agent = Agentk::start(
        AGENTK.as_ref(),
        AgentkOptions {
            kas_address: String::new(),
            token: String::new(),
            args: args_with_kubeconfig,
            env: envs,
            ..Default::default()
        },
    );
    agent.wait_ready(Duration::from_secs(30)).await;
    agent
}

async fn proxy_status(setup: &Setup, agent_id: i64, path: &str) -> StatusCode {
    setup
        .kas
        .http()
        .get(format!("{}/-/kubernetes-agent/k8s-proxy{path}", setup.kas.url))
        .bearer_auth(format!("pat:{agent_id}:{}", setup.kas.root_token))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_command_installs_an_agent_that_connects_and_uninstalls_cleanly() {
    let setup = Setup::new().await;
    // A second agent, restricted to the view role.
    let (_, viewer) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        Some(json!({"name": "viewer"})),
    )
    .await;
    let viewer_id = viewer["id"].as_i64().unwrap();
    let user_access = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&user_access).await.is_success());
    let path = format!(
        "/projects/{}/repository/files/.gitlab%2Fagents%2Fviewer%2Fconfig.yaml",
        setup.project_id
    );
    call(
        &setup.kas,
        "POST",
        &path,
        Some(json!({"branch": "main", "content": user_access, "commit_message": "viewer"})),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();

    // The command, as kas gives it, run with helm v3.
    let glagent = PathBuf::from(AGENTK).with_file_name("glagent");
    let output = Command::new(&glagent)
        .args([
            "cluster",
            "agent",
            "install-command",
            "-R",
            &setup.project_path,
            "--agent",
            &setup.agent_id.to_string(),
            "--create-token",
            "helm",
        ])
        .current_dir(dir.path())
        .env("GITLAB_HOST", &setup.kas.url)
        .env("GITLAB_TOKEN", &setup.kas.root_token)
        .env("GLAGENT_CA_CERT", setup.kas.ca_file())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let script = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        script.contains("helm upgrade --install edge glagent/gitlab-agent")
            && script.contains("--set-file config.kasCaCert=kas-ca.crt"),
        "{script}"
    );
    assert!(dir.path().join("kas-ca.crt").exists());
    let notes = sh(dir.path(), 3, &script);
    assert!(
        notes.contains("cluster-admin"),
        "NOTES must warn about cluster-admin:\n{notes}"
    );

    let mut agent = run_as_the_chart_says("gitlab-agent-edge", "edge", dir.path()).await;
    assert_eq!(
        proxy_status(&setup, setup.agent_id, "/api/v1/secrets").await,
        StatusCode::OK,
        "cluster-admin reads secrets"
    );

    // The restricted agent, installed with helm v4 into another namespace.
    let (_, token) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{viewer_id}/tokens", setup.project_id),
        Some(json!({"name": "helm"})),
    )
    .await;
    let restricted = token["install_command"].as_str().unwrap().replace(
        "--create-namespace",
        "--create-namespace --set rbac.useExistingRole=view",
    );
    sh(dir.path(), 4, &restricted);
    let viewer_agent = run_as_the_chart_says("gitlab-agent-viewer", "viewer", dir.path()).await;
    assert_eq!(
        proxy_status(&setup, viewer_id, "/api/v1/namespaces/default/configmaps").await,
        StatusCode::OK
    );
    assert_eq!(
        proxy_status(&setup, viewer_id, "/api/v1/namespaces/default/secrets").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(setup.connections().await.len(), 1, "each agent has its own connection");

    // A third agent, as a second release in the first agent's namespace.
    let (_, third) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        Some(json!({"name": "third"})),
    )
    .await;
    let third_id = third["id"].as_i64().unwrap();
    let (_, token) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{third_id}/tokens", setup.project_id),
        Some(json!({"name": "helm"})),
    )
    .await;
    let same_namespace = token["install_command"]
        .as_str()
        .unwrap()
        .replace("--namespace gitlab-agent-third", "--namespace gitlab-agent-edge");
    sh(dir.path(), 3, &same_namespace);
    let _third_agent = run_as_the_chart_says("gitlab-agent-edge", "third", dir.path()).await;
    for id in [setup.agent_id, viewer_id, third_id] {
        let (_, connections) = call(
            &setup.kas,
            "GET",
            &format!("/projects/{}/cluster_agents/{id}/connections", setup.project_id),
            None,
        )
        .await;
        assert_eq!(connections.as_array().unwrap().len(), 1, "agent {id} is connected");
    }
    // The chart's leader-election Role lets even a view-only agent lead.
    crate::until(
        Duration::from_secs(10),
        "the restricted agent to take its Lease",
        async || viewer_agent.metric("agentk_leader ").await.as_deref() == Some("1"),
    )
    .await;

    // Upgrade: the spec's advice, values kept, only the image changes.
    sh(
        dir.path(),
        3,
        "helm get values edge --namespace gitlab-agent-edge > agent.yaml\n\
         helm upgrade edge glagent/gitlab-agent --namespace gitlab-agent-edge -f agent.yaml --set image.tag=9.9.9",
    );
    let client = KubeEnv::shared().client().await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), "gitlab-agent-edge")
        .get("edge-gitlab-agent")
        .await
        .unwrap();
    let container = &deployment.spec.template.spec.unwrap().containers[0];
    assert!(container.image.as_deref().unwrap().ends_with(":9.9.9"));
    assert!(
        container
            .args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a.contains("/-/kubernetes-agent/")),
        "kasAddress kept"
    );
    agent.restart();
    agent.wait_ready(Duration::from_secs(20)).await;

    // Uninstall leaves nothing of the release.
    sh(dir.path(), 3, "helm uninstall edge --namespace gitlab-agent-edge");
    let remaining = Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
        .arg("--kubeconfig")
        .arg(KubeEnv::shared().kubeconfig_path())
        .args([
            "get",
            "deployments,serviceaccounts,secrets,configmaps,clusterrolebindings",
            "-A",
            "-l",
            "app.kubernetes.io/instance=edge",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&remaining.stdout).trim(),
        "",
        "objects left behind"
    );
}

/// `helm template` with `sets`, validated against Kubernetes 1.33 schemas;
/// returns the objects as JSON.
fn render(helm_version: u8, sets: &[&str], dir: &Path) -> Vec<serde_json::Value> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/gitlab-agent");
    let mut command = Command::new(helm(helm_version));
    command.args(["template", "rel", chart, "--namespace", "agents"]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, &output.stdout).unwrap();
    let python = PathBuf::from(std::env::var("GLAGENT_PYTHON").expect("GLAGENT_PYTHON: run scripts/test.sh"));
    let validate = python.with_file_name("kubernetes-validate");
    let check = Command::new(validate)
        .args(["-k", "1.33.0", "--strict", "--quiet"])
        .arg(&rendered)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{sets:?} does not validate:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let json = Command::new(&python)
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(&rendered)
        .output()
        .unwrap();
    serde_json::from_slice(&json.stdout).unwrap()
}

fn kinds(objects: &[serde_json::Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_chart_lints_and_renders_every_documented_combination() {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/gitlab-agent");
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "config.token=glagent-xyz",
        "config.kasAddress=wss://kas.example.com/-/kubernetes-agent/",
    ];
    for version in [3, 4] {
        let lint = Command::new(helm(version))
            .args(["lint", "--strict", chart])
            .args(base.iter().flat_map(|s| ["--set", s]))
            .output()
            .unwrap();
        assert!(
            lint.status.success(),
            "helm{version} lint: {}",
            String::from_utf8_lossy(&lint.stdout)
        );

        let with = |extra: &[&str]| {
            let sets: Vec<&str> = base.iter().chain(extra).copied().collect();
            render(version, &sets, dir.path())
        };
        // Defaults.
        let objects = with(&[]);
        assert_eq!(
            kinds(&objects),
            [
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "Secret",
                "ServiceAccount"
            ]
        );
        let deployment = find(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.windows(2)
                .any(|w| w == ["--kas-address", "wss://kas.example.com/-/kubernetes-agent/"]),
            "{args:?}"
        );
        assert!(
            args.windows(2)
                .any(|w| w == ["--token-file", "/etc/agentk/secrets/token"])
        );
        assert_eq!(
            container["image"], "registry.example.com/glagent/agentk:0.1.0",
            "tag defaults to appVersion"
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/liveness");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readiness");
        let env: Vec<&str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["POD_NAMESPACE", "POD_NAME", "SERVICE_ACCOUNT_NAME"]);
        assert_eq!(find(&objects, "ClusterRoleBinding")["roleRef"]["name"], "cluster-admin");
        let checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/token"].clone();
        let rotated = render(version, &["config.token=glagent-other", base[1]], dir.path());
        assert_ne!(
            find(&rotated, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/token"],
            checksum,
            "a new token rolls the pods"
        );

        let objects = with(&["config.secretName=my-token"]);
        assert_eq!(
            kinds(&objects),
            [
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "ServiceAccount"
            ]
        );
        assert_eq!(
            find(&objects, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
            "my-token"
        );

        let objects = with(&["rbac.useExistingRole=view"]);
        assert_eq!(find(&objects, "ClusterRoleBinding")["roleRef"]["name"], "view");

        let objects = with(&["rbac.create=false"]);
        assert_eq!(kinds(&objects), ["Deployment", "Secret", "ServiceAccount"]);

        let objects = with(&["serviceAccount.create=false", "serviceAccount.name=existing"]);
        assert_eq!(
            kinds(&objects),
            ["ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Secret"]
        );
        assert_eq!(
            find(&objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
            "existing"
        );
        assert_eq!(find(&objects, "ClusterRoleBinding")["subjects"][0]["name"], "existing");

        let objects = with(&["config.kasCaCert=-----BEGIN CERTIFICATE-----"]);
        assert_eq!(
            kinds(&objects),
            [
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Role",
                "RoleBinding",
                "Secret",
                "ServiceAccount"
            ]
        );
        let args = find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("/etc/agentk/config/ca.crt"), "{args}");

        let objects = with(&[
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=http://proxy:3128",
            "extraEnv[1].name=NO_PROXY",
            "extraEnv[1].value=.svc",
        ]);
        let env = find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains("HTTPS_PROXY") && env.contains("http://proxy:3128") && env.contains("NO_PROXY"),
            "{env}"
        );

        let receptive = render(
            version,
            &[
                "config.token=glagent-xyz",
                "config.receptive.enabled=true",
                "config.api.jwtPublicKey=abc",
            ],
            dir.path(),
        );
        assert_eq!(
            kinds(&receptive),
            [
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "Secret",
                "Service",
                "ServiceAccount"
            ]
        );
        assert!(!find(&receptive, "Deployment").to_string().contains("--kas-address"));

        // Two releases never collide.
        let other = Command::new(helm(version))
            .args(["template", "other", chart])
            .args(base.iter().flat_map(|s| ["--set", s]))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&other.stdout).contains("name: other-gitlab-agent"));

        // A missing token is a clear error.
        let missing = Command::new(helm(version))
            .args(["template", "x", chart, "--set", base[1]])
            .output()
            .unwrap();
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("config.token is required"));
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let glagent_dir = PathBuf::from(AGENTK).parent().unwrap().to_path_buf();
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                glagent_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KUBECONFIG", KubeEnv::shared().kubeconfig_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{program} {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kpt_package_creates_the_charts_objects_and_the_agent_connects() {
    let setup = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let package = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kpt/gitlab-agent");
    run(dir.path(), "cp", &["-r", package, source.to_str().unwrap()]);
    run(&source, "git", &["init", "-q", "-b", "main"]);
    run(&source, "git", &["add", "-A"]);
    run(
        &source,
        "git",
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "package",
        ],
    );
    run(
        dir.path(),
        "kpt",
        &["pkg", "get", &format!("file://{}/.git@main", source.display()), "agent"],
    );

    let agent_dir = dir.path().join("agent");
    let namespace = glagent_test_support::unique("kpt-agent");
    std::fs::write(agent_dir.join("token"), format!("{}\n", setup.token)).unwrap();
    let setters = std::fs::read_to_string(agent_dir.join("setters.yaml")).unwrap();
    let setters = setters
        .replace("namespace: gitlab-agent", &format!("namespace: {namespace}"))
        .replace("name: gitlab-agent", "name: edge")
        .replace(
            "kas-address: wss://kas.example.com/-/kubernetes-agent/",
            &format!("kas-address: {}", setup.wss()),
        )
        .replace(
            "token-file: token",
            &format!("token-file: {}", agent_dir.join("token").display()),
        )
        .replace(
            "kas-ca-file: \"\"",
            &format!("kas-ca-file: {}", setup.kas.ca_file().display()),
        );
    std::fs::write(agent_dir.join("setters.yaml"), setters).unwrap();
    // As the package's README says: from inside the package.
    run(&agent_dir, "kpt", &["fn", "render", "--allow-exec"]);
    run(&agent_dir, "kpt", &["live", "init"]);
    // kpt's own ResourceGroup CRD declares strings that kpt then sends as
    // null for core, cluster-scoped objects; newer API servers let that
    // pass, the 1.20 test server does not. Install the CRD first, with an
    // open schema, so that kpt uses it.
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: resourcegroups.kpt.dev
spec:
  group: kpt.dev
  names: {kind: ResourceGroup, listKind: ResourceGroupList, plural: resourcegroups, singular: resourcegroup}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
    let crd_file = dir.path().join("resourcegroup-crd.yaml");
    std::fs::write(&crd_file, crd).unwrap();
    run(
        dir.path(),
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        &["apply", "-f", crd_file.to_str().unwrap()],
    );
    run(
        dir.path(),
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        &[
            "wait",
            "--for=condition=Established",
            "crd/resourcegroups.kpt.dev",
            "--timeout=30s",
        ],
    );
    // The test cluster has no kubelet, so the Deployment never becomes
    // available and kpt's wait for it times out; everything must apply.
    let apply = Command::new("kpt")
        .args(["live", "apply", "--reconcile-timeout=2s"])
        .current_dir(&agent_dir)
        .env("KUBECONFIG", KubeEnv::shared().kubeconfig_path())
        .output()
        .unwrap();
    let applied = String::from_utf8_lossy(&apply.stdout).to_string();
    assert!(
        applied.contains("deployment.apps/edge-gitlab-agent apply successful"),
        "{applied}"
    );
    assert!(
        applied.contains("secret/edge-gitlab-agent-token apply successful"),
        "{applied}"
    );
    assert!(!applied.contains("apply failed"), "{applied}");

    // The same objects as `helm template` renders for the same values.
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/gitlab-agent");
    let helm_out = Command::new(helm(3))
        .args([
            "template",
            "edge",
            chart,
            "--namespace",
            &namespace,
            "--set",
            "config.token=x",
            "--set",
        ])
        .arg(format!("config.kasAddress={}", setup.wss()))
        .args([
            "--set-file",
            &format!("config.kasCaCert={}", setup.kas.ca_file().display()),
        ])
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&helm_out.stdout).to_string();
    let mut chart_objects: Vec<String> = Vec::new();
    let mut kind = String::new();
    for line in rendered.lines() {
        if let Some(k) = line.strip_prefix("kind: ") {
            kind = k.to_string();
        } else if let Some(name) = line.strip_prefix("  name: ").filter(|_| !kind.is_empty()) {
            chart_objects.push(format!("{kind}/{name}"));
            kind.clear();
        }
    }
    chart_objects.sort();
    let listed = run(
        dir.path(),
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        &[
            "get",
            "deployments,serviceaccounts,secrets,configmaps,roles,rolebindings",
            "-n",
            &namespace,
            "-l",
            "app.kubernetes.io/instance=edge",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}{\"\\n\"}{end}",
        ],
    );
    let crb = run(
        dir.path(),
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        &[
            "get",
            "clusterrolebinding",
            &format!("edge-gitlab-agent-{namespace}"),
            "-o",
            "jsonpath={.kind}/{.metadata.name}",
        ],
    );
    let mut kpt_objects: Vec<String> = listed.lines().map(str::to_string).chain([crb]).collect();
    kpt_objects.sort();
    assert_eq!(kpt_objects, chart_objects);

    let _agent = run_as_the_chart_says(&namespace, "edge", dir.path()).await;
    assert_eq!(setup.connections().await.len(), 1);
}

/// The `sh` blocks of docs/install.md, run in order as one script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_guide_runs_as_written() {
    let setup = Setup::new().await;
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/install.md")).unwrap();
    let mut script = String::new();
    let mut inside = false;
    for line in guide.lines() {
        match (inside, line.trim_end()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, code) => {
                script.push_str(code);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        script.contains("bash install.sh") && script.contains("helm uninstall"),
        "the guide lost its commands:\n{script}"
    );
    let dir = tempfile::tempdir().unwrap();
    let prelude = format!(
        "export KAS={} TOKEN={} PROJECT={}\nexport GLAGENT_CA_CERT={}\n",
        setup.kas.url,
        setup.kas.root_token,
        setup.project_path,
        setup.kas.ca_file().display()
    );
    let glagent_dir = PathBuf::from(AGENTK).parent().unwrap().to_path_buf();
    let kubectl_dir = dir.path().join("kubectl-bin");
    std::fs::create_dir_all(&kubectl_dir).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        kubectl_dir.join("kubectl"),
    )
    .unwrap();
    let full = format!(
        "export PATH={}:{}:$PATH\n{prelude}{script}",
        glagent_dir.display(),
        kubectl_dir.display()
    );
    let out = sh(dir.path(), 3, &full);
    assert!(
        out.contains("helm upgrade --install my-agent glagent/gitlab-agent"),
        "{out}"
    );
    assert!(out.contains("my-agent"), "{out}");
    // The guide ends with the uninstall: nothing of the release is left.
    let client = KubeEnv::shared().client().await;
    let left = Api::<Deployment>::namespaced(client, "gitlab-agent-my-agent")
        .get_opt("my-agent-gitlab-agent")
        .await
        .unwrap();
    assert!(left.is_none());
}
