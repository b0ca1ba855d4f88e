//! Installing the agent as the spec says: the install command kas gives,
//! run with real helm against kas's own chart repository and the real API
//! server, then agentk started exactly as the rendered Deployment says;
//! upgrades that keep the values, a clean uninstall, and docs/install.md
//! run as written.

use std::process::Command;
use std::time::Duration;

use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::helm::{run_as_the_chart_says, sh};
use crate::support::{KUBECTLS, kubectl_path};
use crate::{Setup, call, glagent};

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
    let output = setup
        .glagent_as(&setup.kas.root_token)
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
    let remaining = Command::new(kubectl_path(KUBECTLS[1]))
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
    let glagent = glagent();
    let glagent_dir = glagent.parent().unwrap();
    let kubectl_dir = dir.path().join("kubectl-bin");
    std::fs::create_dir_all(&kubectl_dir).unwrap();
    std::os::unix::fs::symlink(kubectl_path(KUBECTLS[1]), kubectl_dir.join("kubectl")).unwrap();
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
    // The receptive section: its Service, on the chart's port.
    assert!(
        out.contains("my-receptive-agent-gitlab-agent") && out.contains("8182/TCP"),
        "{out}"
    );
    // The guide ends with the uninstall: nothing of the release is left.
    let client = KubeEnv::shared().client().await;
    let left = Api::<Deployment>::namespaced(client, "gitlab-agent-my-agent")
        .get_opt("my-agent-gitlab-agent")
        .await
        .unwrap();
    assert!(left.is_none());
}
