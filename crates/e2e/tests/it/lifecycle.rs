//! Revocation, deletion and restarts of either side.

use std::time::{Duration, Instant};

use crate::{Setup, call, until};

#[tokio::test]
async fn revoking_the_token_disconnects_within_a_second() {
    let setup = Setup::new().await;
    let mut agent = setup.start_agent();
    agent.wait_ready(Duration::from_secs(20)).await;
    let revoked_at = Instant::now();
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
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    until(Duration::from_secs(1), "the agent to be disconnected", async || {
        !agent.is_connected().await
    })
    .await;
    let took = revoked_at.elapsed();
    println!("revoked token: agent disconnected after {took:?}");
    assert!(setup.connections().await.is_empty());
    until(Duration::from_secs(10), "a refused reconnect in the log", async || {
        agent.log().contains("401 Unauthorized")
    })
    .await;
    let log = agent.log();
    assert!(log.contains("unknown or revoked"), "{log}");
    assert!(setup.kas.log().contains("unknown or revoked token"));
}

#[tokio::test]
async fn deleting_the_agent_disconnects_it() {
    let setup = Setup::new().await;
    let mut agent = setup.start_agent();
    agent.wait_ready(Duration::from_secs(20)).await;
    let (status, _) = call(
        &setup.kas,
        "DELETE",
        &format!("/projects/{}/cluster_agents/{}", setup.project_id, setup.agent_id),
        None,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    until(Duration::from_secs(1), "the agent to be disconnected", async || {
        !agent.is_connected().await
    })
    .await;
}

#[tokio::test]
async fn restarts_of_kas_and_agentk_need_no_manual_step() {
    let mut setup = Setup::new().await;
    let mut agent = setup.start_agent();
    agent.wait_ready(Duration::from_secs(20)).await;

    let stopped = Instant::now();
    setup.kas.restart().await;
    let kas_back = stopped.elapsed();
    until(Duration::from_secs(15), "agent to reconnect", async || {
        !setup.connections().await.is_empty()
    })
    .await;
    agent.wait_ready(Duration::from_secs(15)).await;
    println!(
        "kas restart: kas serving again after {kas_back:?}, agent reconnected after {:?}",
        stopped.elapsed()
    );

    let restarted = Instant::now();
    agent.restart();
    agent.wait_ready(Duration::from_secs(15)).await;
    println!("agentk restart: ready again after {:?}", restarted.elapsed());
    until(Duration::from_secs(5), "exactly one connection", async || {
        setup.connections().await.len() == 1
    })
    .await;
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over() {
    use glagent_test_support::kube::KubeEnv;
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let namespace = env.namespace("leader").await;
    let mut replicas = Vec::new();
    for i in 0..2 {
        let mut options = setup.agent_options();
        options.kubeconfig = Some(env.kubeconfig_path());
        options.pod_name = Some(format!("agentk-{i}"));
        options.env = vec![("POD_NAMESPACE".into(), namespace.clone())];
        let mut agent = glagent_test_support::agentk::Agentk::start(&crate::agentk(), options);
        agent.wait_ready(Duration::from_secs(20)).await;
        replicas.push(agent);
    }
    let leaders = async |replicas: &[glagent_test_support::agentk::Agentk]| {
        let mut leading = Vec::new();
        for (i, agent) in replicas.iter().enumerate() {
            if agent.metric("agentk_leader ").await.as_deref() == Some("1") {
                leading.push(i);
            }
        }
        leading
    };
    for _ in 0..100 {
        if leaders(&replicas).await.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        leaders(&replicas).await.len(),
        1,
        "one leader; logs:\n{}\n{}",
        replicas[0].log(),
        replicas[1].log()
    );
    let leader = leaders(&replicas).await[0];
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client().await, &namespace);
    let lease = leases.get(&format!("agent-{}-lock", setup.agent_id)).await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(format!("agentk-{leader}").as_str())
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(leaders(&replicas).await, [leader], "leadership is stable");

    // SIGTERM: the leader gives the Lease up, so the other takes over
    // within a retry period instead of after the 15 s lease.
    replicas[leader].stop();
    let other = 1 - leader;
    let took = until(Duration::from_secs(6), "the other replica to take over", async || {
        replicas[other].metric("agentk_leader ").await.as_deref() == Some("1")
    })
    .await;
    println!("leader stopped: the other replica led after {took:?}");
}
