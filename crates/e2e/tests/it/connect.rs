//! Transport and TLS: wss with the kas CA, a clear error without it, plain
//! ws, start-up validation, and the Kubernetes side through the real API.

use std::time::Duration;

use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kas::KasOptions;
use glagent_test_support::kube::KubeEnv;

use crate::{Setup, agentk, until};

#[tokio::test]
async fn connects_over_wss_and_registers_with_the_real_cluster_version() {
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let mut options = setup.agent_options();
    options.kubeconfig = Some(env.kubeconfig_path());
    options.pod_name = Some("agentk-wss".into());
    let mut agent = Agentk::start(&agentk(), options);
    let took = agent.wait_ready(Duration::from_secs(20)).await;
    println!("agentk ready {took:?} after start");
    until(Duration::from_secs(5), "registration", async || {
        setup.connections().await.first().is_some_and(|c| c.metadata.is_some())
    })
    .await;
    let connections = setup.connections().await;
    assert_eq!(connections.len(), 1);
    let meta = connections[0].metadata.as_ref().unwrap();
    assert_eq!(meta.pod_name, "agentk-wss");
    assert_eq!(meta.pod_namespace, "gitlab-agent");
    assert_eq!(meta.version, glagent_core::VERSION);
    assert_eq!(
        meta.kubernetes_version.as_ref().map(|v| v.git_version.as_str()),
        Some("v1.20.2")
    );
    assert!(connections[0].warnings.is_empty());
    // The token's last use is recorded.
    let (_, token) = crate::call(
        &setup.kas,
        "GET",
        &format!(
            "/projects/{}/cluster_agents/{}/tokens/{}",
            setup.project_id, setup.agent_id, setup.token_id
        ),
        None,
    )
    .await;
    assert!(token["last_used_at"].is_string(), "{token}");
}

#[tokio::test]
async fn an_untrusted_kas_certificate_fails_with_a_clear_message() {
    let setup = Setup::new().await;
    let mut options = setup.agent_options();
    options.ca_file = None;
    let agent = Agentk::start(&agentk(), options);
    until(Duration::from_secs(10), "a TLS error in the log", async || {
        agent.log().contains("TLS handshake")
    })
    .await;
    let log = agent.log();
    assert!(log.contains("certificate verification failed"), "{log}");
    assert!(log.contains("--kas-ca-cert-file"), "{log}");
    assert!(!agent.is_connected().await);
    assert!(setup.connections().await.is_empty());
}

#[tokio::test]
async fn connects_over_plain_ws() {
    let port = glagent_test_support::free_port();
    let setup = Setup::with_options(KasOptions {
        port: Some(port),
        env: vec![("KAS_EXTERNAL_URL".into(), format!("http://127.0.0.1:{port}"))],
        ..Default::default()
    })
    .await;
    let mut options = setup.agent_options();
    options.kas_address = format!("ws://127.0.0.1:{port}/-/kubernetes-agent/");
    options.ca_file = None;
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(setup.connections().await.len(), 1);
}

#[tokio::test]
async fn start_up_errors_are_one_clear_line() {
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        (vec![], vec![], "nothing to do: pass --kas-address"),
        (
            vec!["--api-listen-address", "127.0.0.1:0"],
            vec![],
            "the receptive listener needs --api-jwt-file",
        ),
        (
            vec![
                "--api-listen-address",
                "127.0.0.1:0",
                "--api-mtls",
                "--api-client-ca-cert-file",
                "/nonexistent/ca.crt",
            ],
            vec![],
            "--api-mtls needs --api-cert-file and --api-key-file",
        ),
        (vec!["--kas-address", "https://kas"], vec![], "unsupported scheme"),
        (
            vec!["--kas-address", "wss://kas/-/kubernetes-agent/"],
            vec![("AGENTK_TOKEN", "glagent-x")],
            "both --token-file and AGENTK_TOKEN",
        ),
        (
            vec![
                "--kas-address",
                "wss://kas/-/kubernetes-agent/",
                "--token-file",
                "/nonexistent/token",
            ],
            vec![],
            "reading the token file",
        ),
        (
            vec!["--kas-address", "wss://kas/-/kubernetes-agent/"],
            vec![],
            "no agent token",
        ),
        (
            vec![
                "--kas-address",
                "wss://kas/-/kubernetes-agent/",
                "--kas-header",
                "broken",
            ],
            vec![],
            "Name: value",
        ),
    ];
    for (args, env, expected) in cases {
        let uses_own_token_flags = args.contains(&"--token-file") || expected == "no agent token";
        let mut options = AgentkOptions {
            kas_address: String::new(),
            token: if uses_own_token_flags {
                String::new()
            } else {
                "glagent-test".into()
            },
            ..Default::default()
        };
        options.args = args.iter().map(|s| s.to_string()).collect();
        options.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut agent = Agentk::start(&agentk(), options);
        let status = agent.wait_exit(Duration::from_secs(10));
        assert!(!status.success(), "{args:?} should fail");
        let log = agent.log();
        assert!(log.contains(expected), "{args:?}: expected {expected:?} in:\n{log}");
        assert_eq!(log.trim().lines().count(), 1, "one line, got:\n{log}");
        assert!(log.starts_with("error: "), "{log}");
    }
}
