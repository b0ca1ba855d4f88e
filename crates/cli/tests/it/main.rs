//! `glagent` against a real kas with a real agentk connected.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kas::{Kas, KasOptions};
use serde_json::{Value, json};

const GLAGENT: &str = env!("CARGO_BIN_EXE_glagent");

/// Another workspace binary (kas, agentk), found as the system tests do.
fn sibling(name: &str) -> PathBuf {
    glagent_test_support::binary(name)
}

async fn post(kas: &Kas, path: &str, body: Value) -> Value {
    let response = kas
        .http()
        .post(kas.api(path))
        .header("PRIVATE-TOKEN", &kas.root_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

fn glagent(kas: &Kas, args: &[&str], token: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(GLAGENT);
    command
        .args(args)
        .env("GITLAB_HOST", &kas.url)
        .env("GLAGENT_CA_CERT", kas.ca_file())
        .env_remove("GITLAB_TOKEN");
    if let Some(token) = token {
        command.env("GITLAB_TOKEN", token);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn cluster_agent_list_shows_connected_agents() {
    let kas = Kas::start(&sibling("kas"), KasOptions::default()).await;
    let project = post(&kas, "/projects", json!({"name": "fleet"})).await;
    let id = project["id"].as_i64().unwrap();
    let edge = post(&kas, &format!("/projects/{id}/cluster_agents"), json!({"name": "edge"})).await;
    post(&kas, &format!("/projects/{id}/cluster_agents"), json!({"name": "idle"})).await;
    let token = post(
        &kas,
        &format!("/projects/{id}/cluster_agents/{}/tokens", edge["id"]),
        json!({"name": "t"}),
    )
    .await;
    let kubeconfig = std::env::temp_dir().join("glagent-cli-test-kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: \"https://127.0.0.1:9\"}}]\nusers: [{name: x, user: {token: x}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let mut agent = Agentk::start(
        &sibling("agentk"),
        AgentkOptions {
            kas_address: format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
            token: token["token"].as_str().unwrap().to_string(),
            ca_file: Some(kas.ca_file()),
            kubeconfig: Some(kubeconfig),
            ..Default::default()
        },
    );
    agent.wait_ready(Duration::from_secs(20)).await;

    let (ok, stdout, stderr) = glagent(
        &kas,
        &["cluster", "agent", "list", "-R", "root/fleet"],
        Some(&kas.root_token),
    );
    assert!(ok, "{stderr}");
    let edge_line = stdout.lines().find(|l| l.starts_with("edge")).expect(&stdout);
    assert!(
        edge_line.contains("connected") && edge_line.contains(glagent_core_version()),
        "{stdout}"
    );
    assert!(edge_line.trim_end().ends_with('-'), "no warnings expected: {stdout}");
    let idle_line = stdout.lines().find(|l| l.starts_with("idle")).expect(&stdout);
    assert!(idle_line.contains("not connected"), "{stdout}");

    let (ok, _, stderr) = glagent(&kas, &["cluster", "agent", "list", "-R", "root/fleet"], None);
    assert!(!ok);
    assert!(stderr.contains("GITLAB_TOKEN"), "{stderr}");
    let (ok, _, stderr) = glagent(
        &kas,
        &["cluster", "agent", "list", "-R", "root/nope"],
        Some(&kas.root_token),
    );
    assert!(!ok);
    assert!(stderr.contains("404"), "{stderr}");
}

fn glagent_core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
