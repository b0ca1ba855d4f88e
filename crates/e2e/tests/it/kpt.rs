//! The kpt package in deploy/kpt/gitlab-agent, as its README says: `kpt pkg
//! get`, the setters, `kpt fn render` and `kpt live apply` against the real
//! API server create the same objects as the chart renders, and agentk run
//! as that Deployment says connects.

use std::path::Path;
use std::process::Command;

use glagent_test_support::kube::KubeEnv;

use crate::support::helm::{CHART, helm, run_as_the_chart_says};
use crate::support::{KUBECTLS, kubectl_path};
use crate::{Setup, glagent};

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let glagent = glagent();
    let glagent_dir = glagent.parent().unwrap();
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
    // A release name of its own: the install tests, running at the same
    // time, look for what release `edge` leaves behind cluster-wide.
    let namespace = glagent_test_support::unique("kpt-agent");
    std::fs::write(agent_dir.join("token"), format!("{}\n", setup.token)).unwrap();
    let setters = std::fs::read_to_string(agent_dir.join("setters.yaml")).unwrap();
    let setters = setters
        .replace("namespace: gitlab-agent", &format!("namespace: {namespace}"))
        .replace("name: gitlab-agent", "name: kpt-edge")
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
    let kubectl = kubectl_path(KUBECTLS[1]);
    let kubectl = kubectl.to_str().unwrap();
    let crd_file = dir.path().join("resourcegroup-crd.yaml");
    std::fs::write(&crd_file, crd).unwrap();
    run(dir.path(), kubectl, &["apply", "-f", crd_file.to_str().unwrap()]);
    run(
        dir.path(),
        kubectl,
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
        applied.contains("deployment.apps/kpt-edge-gitlab-agent apply successful"),
        "{applied}"
    );
    assert!(
        applied.contains("secret/kpt-edge-gitlab-agent-token apply successful"),
        "{applied}"
    );
    assert!(!applied.contains("apply failed"), "{applied}");

    // The same objects as `helm template` renders for the same values.
    let helm_out = Command::new(helm(3))
        .args([
            "template",
            "kpt-edge",
            CHART,
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
        kubectl,
        &[
            "get",
            "deployments,serviceaccounts,secrets,configmaps,roles,rolebindings",
            "-n",
            &namespace,
            "-l",
            "app.kubernetes.io/instance=kpt-edge",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}{\"\\n\"}{end}",
        ],
    );
    let crb = run(
        dir.path(),
        kubectl,
        &[
            "get",
            "clusterrolebinding",
            &format!("kpt-edge-gitlab-agent-{namespace}"),
            "-o",
            "jsonpath={.kind}/{.metadata.name}",
        ],
    );
    let mut kpt_objects: Vec<String> = listed.lines().map(str::to_string).chain([crb]).collect();
    kpt_objects.sort();
    assert_eq!(kpt_objects, chart_objects);

    let _agent = run_as_the_chart_says(&namespace, "kpt-edge", dir.path()).await;
    assert_eq!(setup.connections().await.len(), 1);
}
