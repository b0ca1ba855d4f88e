//! The whole system, end to end: real `kas`, `agentk` and `glagent`
//! processes, real `kubectl` (1.27 and 1.33), `helm` (v3 and v4), `kpt` and
//! the Python `kubernetes` client, against a real kube-apiserver.
//!
//! One module per behaviour; what several share is here (a kas with a
//! registered agent) and in [`support`] (the proxy fixture, kubectl, helm,
//! stand-ins for a kubelet and an upgrading API server).

mod chart;
mod ci_access;
mod clients;
mod config;
mod connect;
mod crashes;
mod doctor;
mod environments;
mod examples;
mod failover;
mod faults;
mod fleet;
mod flux;
mod install;
mod kpt;
mod lifecycle;
mod limits;
mod network;
mod proxy;
mod receptive;
mod replicas;
mod rotation;
mod streaming;
mod support;
mod telemetry;
mod upgrades;
mod user_access;
mod web;

use std::path::PathBuf;
use std::time::Duration;

use glagent_api_types as api;
use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kas::{Kas, KasOptions};
use serde_json::{Value, json};

/// The `agentk` binary of this workspace (see [`glagent_test_support::binary`]).
pub fn agentk() -> PathBuf {
    glagent_test_support::binary("agentk")
}

/// The `kas` binary of this workspace.
pub fn kas() -> PathBuf {
    glagent_test_support::binary("kas")
}

/// The `glagent` binary of this workspace.
pub fn glagent() -> PathBuf {
    glagent_test_support::binary("glagent")
}

/// A kas with one project and one registered agent with a token.
pub struct Setup {
    pub kas: Kas,
    pub project_id: i64,
    pub project_path: String,
    pub agent_id: i64,
    pub token_id: i64,
    pub token: String,
}

impl Setup {
    pub async fn new() -> Setup {
        Setup::with_options(KasOptions::default()).await
    }

    pub async fn with_options(options: KasOptions) -> Setup {
        let kas = Kas::start(&kas(), options).await;
        let (_, project) = call(&kas, "POST", "/projects", Some(json!({"name": "cluster-config"}))).await;
        let project: api::Project = serde_json::from_value(project).unwrap();
        let (_, agent) = call(
            &kas,
            "POST",
            &format!("/projects/{}/cluster_agents", project.id),
            Some(json!({"name": "edge"})),
        )
        .await;
        let agent: api::Agent = serde_json::from_value(agent).unwrap();
        let (_, token) = call(
            &kas,
            "POST",
            &format!("/projects/{}/cluster_agents/{}/tokens", project.id, agent.id),
            Some(json!({"name": "test"})),
        )
        .await;
        let token: api::CreatedAgentToken = serde_json::from_value(token).unwrap();
        Setup {
            kas,
            project_id: project.id,
            project_path: project.path_with_namespace,
            agent_id: agent.id,
            token_id: token.id,
            token: token.token,
        }
    }

    /// The `glagent` CLI pointed at this kas as `token`'s user, as glab
    /// reads it: `GITLAB_HOST`, `GITLAB_TOKEN`, and kas's CA.
    pub fn glagent_as(&self, token: &str) -> std::process::Command {
        let mut command = std::process::Command::new(glagent());
        command
            .env("GITLAB_HOST", &self.kas.url)
            .env("GITLAB_TOKEN", token)
            .env("GLAGENT_CA_CERT", self.kas.ca_file());
        command
    }

    /// `wss://127.0.0.1:<port>/-/kubernetes-agent/`.
    pub fn wss(&self) -> String {
        format!("wss://127.0.0.1:{}/-/kubernetes-agent/", self.kas.port)
    }

    pub fn agent_options(&self) -> AgentkOptions {
        AgentkOptions {
            kas_address: self.wss(),
            token: self.token.clone(),
            ca_file: Some(self.kas.ca_file()),
            kubeconfig: Some(unreachable_kubeconfig()),
            ..Default::default()
        }
    }

    pub fn start_agent(&self) -> Agentk {
        Agentk::start(&agentk(), self.agent_options())
    }

    pub async fn connections(&self) -> Vec<glagent_api_types::Connection> {
        let (_, body) = call(
            &self.kas,
            "GET",
            &format!(
                "/projects/{}/cluster_agents/{}/connections",
                self.project_id, self.agent_id
            ),
            None,
        )
        .await;
        serde_json::from_value(body).expect("kas lists connections")
    }

    /// Writes the agent's configuration file through the Files API.
    pub async fn write_config(&self, content: &str) -> reqwest::StatusCode {
        let path = format!(
            "/projects/{}/repository/files/.gitlab%2Fagents%2Fedge%2Fconfig.yaml",
            self.project_id
        );
        let body = json!({"branch": "main", "content": content, "commit_message": "agent config"});
        match call(&self.kas, "POST", &path, Some(body.clone())).await {
            (reqwest::StatusCode::BAD_REQUEST, _) => call(&self.kas, "PUT", &path, Some(body)).await.0,
            (status, _) => status,
        }
    }

    pub async fn head(&self) -> String {
        let (_, file) = call(
            &self.kas,
            "GET",
            &format!(
                "/projects/{}/repository/files/.gitlab%2Fagents%2Fedge%2Fconfig.yaml?ref=main",
                self.project_id
            ),
            None,
        )
        .await;
        file["commit_id"].as_str().unwrap_or_default().to_string()
    }
}

/// A REST call as root.
pub async fn call(kas: &Kas, method: &str, path: &str, body: Option<Value>) -> (reqwest::StatusCode, Value) {
    kas.root_call(method, path, body).await
}

/// A kubeconfig whose server does not answer: for tests that do not need
/// the Kubernetes side (agentk then reports no Kubernetes version).
pub fn unreachable_kubeconfig() -> PathBuf {
    let path = std::env::temp_dir().join("glagent-unreachable-kubeconfig.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: \"https://127.0.0.1:9\"}}]\n\
         users: [{name: x, user: {token: x}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\ncurrent-context: x\n",
    )
    .unwrap();
    path
}

/// Waits until `check` holds; returns how long it took.
pub async fn until(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
