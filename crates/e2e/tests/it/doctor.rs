//! `glagent doctor`: each failure it reports, seen for real. From kas's
//! side: an unregistered agent, no active token, no connection, a broken
//! configuration file. From the cluster's: no Deployment, a missing token
//! Secret, and, from the agent pods' own logs (read through the API server
//! from a stand-in kubelet that serves the log files of real agentk
//! processes), DNS, TCP, TLS, proxy and token failures. The Flux checks
//! are in `flux.rs`, where Flux's objects are.

use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::connect_proxy::ConnectProxy;
use glagent_test_support::kube::KubeEnv;
use serde_json::json;

use crate::support::helm::{CHART, sh};
use crate::support::kubelet::pods_on_a_stand_in_kubelet;
use crate::{Setup, agentk, call, until};

/// `glagent doctor <agent> -R <project>`; (exit success, stdout).
pub fn doctor(setup: &Setup, agent: &str, extra: &[&str]) -> (bool, String) {
    let output = setup
        .glagent_as(&setup.kas.root_token)
        .args(["doctor", agent, "-R", &setup.project_path, "--kubeconfig"])
        .arg(KubeEnv::shared().kubeconfig_path())
        .args(extra)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_what_kas_knows_is_wrong() {
    let setup = Setup::new().await;
    let ns = KubeEnv::shared().namespace("doctor-kas").await;

    let (ok, out) = doctor(&setup, "ghost", &[]);
    assert!(!ok);
    assert!(
        out.contains("✗ agent registered: ") && out.contains("glagent cluster agent register ghost"),
        "{out}"
    );

    assert!(setup.write_config("user_access:\n  projectz: []\n").await.is_success());
    let (ok, out) = doctor(&setup, "edge", &["--namespace", &ns]);
    assert!(!ok);
    for expected in [
        "✔ agent registered: id",
        "✔ agent tokens: 1 active: test last used never",
        "✗ agent connected: no agent process is connected to kas",
        "✗ configuration file: .gitlab/agents/edge/config.yaml at line 2, column 3",
        &format!("✗ agent Deployment: no agent Deployment in the namespace {ns}"),
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }

    let (status, _) = call(
        &setup.kas,
        "DELETE",
        &format!(
            "/projects/{}/cluster_agents/{}/tokens/{}",
            setup.project_id, setup.agent_id, setup.token_id
        ),
        None,
    )
    .await;
    assert!(status.is_success());
    let (ok, out) = doctor(&setup, "edge", &["--namespace", &ns]);
    assert!(!ok);
    assert!(out.contains("✗ agent tokens: the agent has no active token"), "{out}");
}

/// Starts agentk as `options` say and waits for its first failure line.
async fn failing_agent(options: glagent_test_support::agentk::AgentkOptions, words: &str) -> Agentk {
    let agent = Agentk::start(&agentk(), options);
    until(Duration::from_secs(20), words, async || agent.log().contains(words)).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reads_dns_tcp_tls_proxy_and_token_failures_from_the_agent_pods_logs() {
    let setup = Setup::new().await;
    let ns = KubeEnv::shared().namespace("doctor-pods").await;
    let dir = tempfile::tempdir().unwrap();
    // The agent's Deployment as the chart makes it; its pods are played by
    // agentk processes that fail in five ways.
    sh(
        dir.path(),
        3,
        &format!(
            "helm install doc {CHART} --namespace {ns} --set config.token={} --set config.kasAddress=wss://kas.invalid/-/kubernetes-agent/",
            setup.token
        ),
    );
    let proxy = ConnectProxy::start().await;
    proxy.set_refuse(true);
    let closed = glagent_test_support::free_port();
    let cases = [
        (
            "dns",
            "wss://kas.invalid/-/kubernetes-agent/".to_string(),
            None,
            "DNS lookup of",
        ),
        (
            "tcp",
            format!("wss://127.0.0.1:{closed}/-/kubernetes-agent/"),
            None,
            "TCP connection to",
        ),
        ("tls", setup.wss(), Some("no-ca"), "certificate verification failed"),
        ("proxy", setup.wss(), Some("proxy"), "refused to open a tunnel"),
        ("token", setup.wss(), Some("bad-token"), "kas rejected the agent token"),
    ];
    let mut agents = Vec::new();
    let mut pods = Vec::new();
    for (name, address, twist, words) in cases {
        let mut options = setup.agent_options();
        options.kas_address = address;
        match twist {
            Some("no-ca") => options.ca_file = None,
            Some("proxy") => options.env = vec![("HTTPS_PROXY".into(), proxy.url())],
            Some("bad-token") => options.token = "glagent-not-a-token".into(),
            _ => {}
        }
        let agent = failing_agent(options, words).await;
        pods.push((
            format!("doc-gitlab-agent-{name}"),
            json!({"app.kubernetes.io/name": "gitlab-agent", "app.kubernetes.io/instance": "doc"}),
            Some(agent.log_path()),
        ));
        agents.push(agent);
    }
    let pods: Vec<(&str, serde_json::Value, Option<std::path::PathBuf>)> = pods
        .iter()
        .map(|(n, l, f)| (n.as_str(), l.clone(), f.clone()))
        .collect();
    let _kubelet = pods_on_a_stand_in_kubelet(&ns, &pods).await;
    // And the Secret the Deployment mounts is gone.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(KubeEnv::shared().client().await, &ns);
    secrets
        .delete("doc-gitlab-agent-token", &Default::default())
        .await
        .unwrap();

    let (ok, out) = doctor(&setup, "edge", &["--namespace", &ns]);
    assert!(!ok, "{out}");
    for expected in [
        &format!("✔ agent Deployment: {ns}/doc-gitlab-agent"),
        &format!("✗ agent token Secret: the Secret {ns}/doc-gitlab-agent-token the Deployment mounts does not exist"),
        "✗ agent pod doc-gitlab-agent-dns (DNS): DNS lookup of kas.invalid failed",
        "✗ agent pod doc-gitlab-agent-tcp (TCP): TCP connection to",
        "✗ agent pod doc-gitlab-agent-tls (TLS): TLS handshake with 127.0.0.1 failed: certificate verification failed",
        "✗ agent pod doc-gitlab-agent-proxy (proxy):",
        "✗ agent pod doc-gitlab-agent-token (token): kas rejected the agent token",
        "fix: the agent does not trust kas's certificate: pass kas's CA (--set-file config.kasCaCert=ca.pem",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
}
