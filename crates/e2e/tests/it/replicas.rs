//! Several kas replicas on one PostgreSQL database and one data directory:
//! a proxied request reaching a replica that holds no connection of its
//! agent is forwarded, with the identity decided, to one that does.

use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::kas::{Kas, KasOptions};
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::upgrade_echo::{echo_kubeconfig, upgrade_echo_server, upgrade_round_trip};
use crate::support::{KUBECTLS, as_admin, kubeconfig_at, kubectl, member, ok, watch_sees};
use crate::{Setup, agentk, call, kas, until};

/// Options for one replica, and the URL of its private API.
pub(crate) fn replica_options(
    database_url: &str,
    secret: &std::path::Path,
    data_dir: Option<std::path::PathBuf>,
) -> (KasOptions, String) {
    let private = format!("127.0.0.1:{}", glagent_test_support::free_port());
    let options = KasOptions {
        data_dir,
        database_url: Some(database_url.to_string()),
        env: vec![
            ("KAS_PRIVATE_LISTEN".into(), private.clone()),
            ("KAS_PRIVATE_API_SECRET_FILE".into(), secret.display().to_string()),
        ],
        ..Default::default()
    };
    (options, format!("https://{private}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_agent_forwards_to_the_replica_holding_it() {
    let database_url = glagent_test_support::postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("private-api-secret");
    std::fs::write(&secret, "s3cret-shared-by-all-kas-replicas-0123456789\n").unwrap();
    // Replica A holds the agents; replica B shares its database and files.
    let setup = Setup::with_options(replica_options(&database_url, &secret, None).0).await;
    let (b_options, b_private) = replica_options(&database_url, &secret, Some(setup.kas.data_dir.clone()));
    let b = Kas::start(&kas(), b_options).await;
    let config = format!(
        "user_access:\n  access_as:\n    user: {{}}\n  projects:\n    - id: {}\n",
        setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let mut options = setup.agent_options();
    options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;

    // B lists the connection A holds.
    let (status, connections) = call(
        &b,
        "GET",
        &format!(
            "/projects/{}/cluster_agents/{}/connections",
            setup.project_id, setup.agent_id
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{connections}");
    assert_eq!(connections.as_array().map(Vec::len), Some(1), "{connections}");
    assert_eq!(connections[0]["agent_id"], setup.agent_id, "{connections}");
    assert!(connections[0]["metadata"]["version"].is_string(), "{connections}");

    let env = KubeEnv::shared();
    let ns = env.namespace("replicas").await;
    let pat = member(&setup, "rhea", 30, &["k8s_proxy"]).await;
    let kc = kubeconfig_at(&b.url, &b.ca_file(), setup.agent_id, &pat, dir.path());
    let bin = KUBECTLS[1];

    // The identity decided on B reaches the API server through A.
    let (allowed, _, stderr) = kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None);
    assert!(!allowed);
    assert!(stderr.contains("User \"gitlab:user:rhea\""), "{stderr}");
    as_admin(
        &ns,
        &[
            "create",
            "rolebinding",
            "users",
            "--clusterrole=edit",
            "--group=gitlab:user",
        ],
    );
    until(Duration::from_secs(5), "RBAC for gitlab:user", async || {
        kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None).0
    })
    .await;
    ok(
        kubectl(bin, &kc, &["-n", &ns, "create", "configmap", "via-b"], None),
        "create through B",
    );

    // What the extra replica costs (debug builds; a figure, not a check).
    let median_get = async |kas: &Kas| {
        let mut samples = Vec::new();
        for _ in 0..50 {
            let start = std::time::Instant::now();
            let response = kas
                .http()
                .get(format!(
                    "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{ns}",
                    kas.url
                ))
                .bearer_auth(format!("pat:{}:{pat}", setup.agent_id))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            samples.push(start.elapsed());
        }
        samples.sort();
        samples[samples.len() / 2]
    };
    println!(
        "GET p50 through the replica holding the agent: {:?}; through the other one: {:?}",
        median_get(&setup.kas).await,
        median_get(&b).await
    );

    // A watch through B receives events as they happen.
    let seen = watch_sees(&kc, &ns, "later", &env.kubeconfig_path()).await;
    assert!(seen.contains("configmap/later"), "the watch through B saw: {seen}");

    // An upgraded connection through B and A round-trips bytes, for a second
    // agent whose API server is an upgrade-capable stand-in.
    let (_, echo_agent) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        Some(json!({"name": "echo"})),
    )
    .await;
    let echo_id = echo_agent["id"].as_i64().unwrap();
    let (_, echo_token) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{echo_id}/tokens", setup.project_id),
        Some(json!({"name": "t"})),
    )
    .await;
    let (status, _) = call(
        &setup.kas,
        "POST",
        &format!(
            "/projects/{}/repository/files/.gitlab%2Fagents%2Fecho%2Fconfig.yaml",
            setup.project_id
        ),
        Some(json!({"branch": "main", "content": config, "commit_message": "echo agent"})),
    )
    .await;
    assert!(status.is_success());
    let (port, _head) = upgrade_echo_server().await;
    let mut options = setup.agent_options();
    options.token = echo_token["token"].as_str().unwrap().to_string();
    options.kubeconfig = Some(echo_kubeconfig(port, dir.path()));
    let mut echo = Agentk::start(&agentk(), options);
    echo.wait_ready(Duration::from_secs(20)).await;
    upgrade_round_trip(&b, echo_id, &pat).await;
    echo.stop();

    // B's private API speaks TLS with a certificate from the shared CA, and
    // refuses what is not signed with the shared secret.
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/-/private/agents/{}",
            b_private.replace("https:", "http:"),
            setup.agent_id
        ))
        .send()
        .await;
    assert!(
        !plain.is_ok_and(|r| r.status().is_success()),
        "the private API must not answer plain HTTP"
    );
    let forged = b
        .http()
        .get(format!(
            "{b_private}/-/private/k8s-proxy/api/v1/namespaces/{ns}/secrets"
        ))
        .header("x-glagent-route-agent", setup.agent_id.to_string())
        .header("x-glagent-route-signature", "1.00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Once the agent is gone from A, B says so instead of forwarding.
    agent.stop();
    until(Duration::from_secs(5), "B to stop routing to the agent", async || {
        let (_, _, stderr) = kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None);
        stderr.contains("is not connected to kas")
    })
    .await;
}

/// With two replicas, exactly one dials a receptive agent; when it dies
/// without a word (SIGKILL), the other takes the agent over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_replica_holding_a_receptive_agent_moves_it_to_the_other_within_5_s() {
    let database_url = glagent_test_support::postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("private-api-secret");
    std::fs::write(&secret, "s3cret-shared-by-all-kas-replicas-0123456789\n").unwrap();
    let mut setup = Setup::with_options(replica_options(&database_url, &secret, None).0).await;
    let (b_options, _) = replica_options(&database_url, &secret, Some(setup.kas.data_dir.clone()));
    let mut b = Kas::start(&kas(), b_options).await;
    let port = glagent_test_support::free_port();
    let (status, config) = call(
        &setup.kas,
        "POST",
        &format!(
            "/projects/{}/cluster_agents/{}/url_configurations",
            setup.project_id, setup.agent_id
        ),
        Some(json!({"url": format!("grpc://127.0.0.1:{port}")})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    let jwt = dir.path().join("api-jwt");
    std::fs::write(&jwt, config["public_key"].as_str().unwrap()).unwrap();
    let agent = Agentk::start(
        &agentk(),
        glagent_test_support::agentk::AgentkOptions {
            token: setup.token.clone(),
            kubeconfig: Some(KubeEnv::shared().kubeconfig_path()),
            args: vec![
                "--api-listen-address".into(),
                format!("127.0.0.1:{port}"),
                "--api-jwt-file".into(),
                jwt.display().to_string(),
            ],
            ..Default::default()
        },
    );
    let dialed = |log: String| log.matches("connected to the receptive agent").count();
    until(Duration::from_secs(10), "a replica to dial the agent", async || {
        dialed(setup.kas.log()) + dialed(b.log()) == 1
    })
    .await;
    // Several lease renewals later, still exactly one replica holds it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dialed(setup.kas.log()) + dialed(b.log()), 1);
    assert_eq!(agent.log().matches("kas connected (receptive agent)").count(), 1);

    let a_holds = dialed(setup.kas.log()) == 1;
    let killed = std::time::Instant::now();
    let survivor_log = if a_holds {
        setup.kas.kill();
        Box::new(|| b.log()) as Box<dyn Fn() -> String>
    } else {
        b.kill();
        Box::new(|| setup.kas.log()) as Box<dyn Fn() -> String>
    };
    until(
        Duration::from_secs(10),
        "the other replica to take the agent over",
        async || dialed(survivor_log()) == 1,
    )
    .await;
    let took = killed.elapsed();
    println!("receptive agent moved to the other replica {took:?} after the holder was killed");
    assert!(took < Duration::from_secs(5), "{took:?}");
    until(
        Duration::from_secs(5),
        "the agent to serve the new replica",
        async || agent.is_connected().await && agent.log().matches("kas connected (receptive agent)").count() == 2,
    )
    .await;
}

/// A push through one replica reaches agents held by another at once (the
/// replicas relay each other's pushes through the store), not at the next
/// minute's safety-net poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_replica_reaches_an_agent_held_by_another_at_once() {
    let database_url = glagent_test_support::postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("private-api-secret");
    std::fs::write(&secret, "s3cret-shared-by-all-kas-replicas-0123456789\n").unwrap();
    let setup = Setup::with_options(replica_options(&database_url, &secret, None).0).await;
    let (b_options, _) = replica_options(&database_url, &secret, Some(setup.kas.data_dir.clone()));
    let b = Kas::start(&kas(), b_options).await;
    let mut agent = setup.start_agent();
    agent.wait_ready(Duration::from_secs(20)).await;
    let path = format!(
        "/projects/{}/repository/files/.gitlab%2Fagents%2Fedge%2Fconfig.yaml",
        setup.project_id
    );
    let (status, body) = call(
        &b,
        "POST",
        &path,
        Some(json!({"branch": "main", "content": "observability:\n  logging:\n    level: debug\n", "commit_message": "via b"})),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let pushed = std::time::Instant::now();
    let (_, file) = call(&b, "GET", &format!("{path}?ref=main"), None).await;
    let head = file["commit_id"].as_str().unwrap().to_string();
    until(
        Duration::from_secs(5),
        "the agent on replica A to get the push made on B",
        async || agent.config_commit().await.as_deref() == Some(head.as_str()),
    )
    .await;
    println!(
        "a push through replica B reached the agent on A in {:?}",
        pushed.elapsed()
    );
}
