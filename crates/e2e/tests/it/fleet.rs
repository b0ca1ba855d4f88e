//! The fleet generator against a real kas with a few hundred agents (the
//! path `cargo xtask bench fleet` measures, kept working): simulated
//! agents with agentk's own dialer and tunnel server, one token each. At
//! that number, a push wakes only its project's agents and a revocation
//! closes exactly its agent's connection.

use std::time::{Duration, Instant};

use glagent_fleet::{FakeKubernetes, Fleet};
use glagent_test_support::kas::{Kas, KasOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_200_agents_connects_and_follows_pushes_and_revocations_one_by_one() {
    let kas = Kas::start(&crate::kas(), KasOptions::default()).await;
    let mut agents = Vec::new();
    for (project, count) in [("fleet-a", 150), ("fleet-b", 50)] {
        let (_, created) = kas.root_call("POST", "/projects", Some(json!({"name": project}))).await;
        let pid = created["id"].as_i64().unwrap();
        for i in 0..count {
            let (_, agent) = kas
                .root_call(
                    "POST",
                    &format!("/projects/{pid}/cluster_agents"),
                    Some(json!({"name": format!("agent-{i}")})),
                )
                .await;
            let aid = agent["id"].as_i64().unwrap();
            let (_, token) = kas
                .root_call(
                    "POST",
                    &format!("/projects/{pid}/cluster_agents/{aid}/tokens"),
                    Some(json!({"name": "fleet"})),
                )
                .await;
            agents.push((
                pid,
                aid,
                token["id"].as_i64().unwrap(),
                token["token"].as_str().unwrap().to_string(),
            ));
        }
    }
    let kube = FakeKubernetes::start().await.unwrap();
    let ca = std::fs::read(kas.ca_file()).unwrap();
    let fleet = Fleet::start(
        &format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
        Some(&ca),
        agents.iter().map(|a| a.3.clone()).collect(),
        &kube,
    )
    .await
    .unwrap();
    let storm = fleet.wait_connected(200, Duration::from_secs(120)).await.unwrap();
    println!("200 simulated agents connected in {storm:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..200).any(|i| fleet.applied_commit(i).is_none()) {
        assert!(Instant::now() < deadline, "every agent gets its configuration");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kas sees them as agentk: registered with their pod and version.
    let (pid, aid, _, _) = agents[0];
    let (_, connections) = kas
        .root_call(
            "GET",
            &format!("/projects/{pid}/cluster_agents/{aid}/connections"),
            None,
        )
        .await;
    assert_eq!(connections.as_array().map(Vec::len), Some(1), "{connections}");

    // A push to fleet-b reaches its 50 agents and none of fleet-a's.
    let before: Vec<Option<String>> = (0..200).map(|i| fleet.applied_commit(i)).collect();
    let b = agents[150].0;
    let (status, _) = kas
        .root_call(
            "POST",
            &format!("/projects/{b}/repository/files/deploy.txt"),
            Some(json!({"branch": "main", "content": "x", "commit_message": "deploy"})),
        )
        .await;
    assert!(status.is_success());
    let pushed = Instant::now();
    while (150..200).any(|i| fleet.applied_commit(i) == before[i]) {
        assert!(
            pushed.elapsed() < Duration::from_secs(20),
            "the push reaches fleet-b's agents"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("a push reached fleet-b's 50 agents in {:?}", pushed.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        (0..150).all(|i| fleet.applied_commit(i) == before[i]),
        "fleet-a's agents were not sent anything"
    );

    // Revoking one token closes that agent's connection only, for good.
    let (pid, aid, token_id, _) = agents[7];
    let (status, _) = kas
        .root_call(
            "DELETE",
            &format!("/projects/{pid}/cluster_agents/{aid}/tokens/{token_id}"),
            None,
        )
        .await;
    assert!(status.is_success());
    let revoked = Instant::now();
    while fleet.connected() != 199 {
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "{} connected",
            fleet.connected()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.connected(), 199, "the revoked token cannot connect again");
    let (_, connections) = kas
        .root_call(
            "GET",
            &format!("/projects/{pid}/cluster_agents/{aid}/connections"),
            None,
        )
        .await;
    assert_eq!(connections, json!([]));
}
