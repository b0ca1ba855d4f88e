//! Three kas replicas on PostgreSQL behind a TCP balancer, as a Service
//! spreads agentk's connections; one is killed with SIGKILL under load.
//! Requests keep flowing through the others, and the dead replica's routes
//! stop being used once their TTL has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use glagent_fleet::{FakeKubernetes, Fleet};
use glagent_test_support::kas::Kas;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::replicas::replica_options;
use crate::until;

const AGENTS: usize = 9;

/// A TCP balancer on a free port: each connection goes to the next backend
/// that accepts it (a dead one is skipped), as a Service in front of
/// the replicas would. Returns its port.
async fn balancer(backends: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            let start = next;
            next += 1;
            let backends = backends.clone();
            tokio::spawn(async move {
                for i in 0..backends.len() {
                    let port = backends[(start + i) % backends.len()];
                    if let Ok(mut backend) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The replica id a kas logged when its private API started.
fn replica_id(kas: &Kas) -> String {
    let log = kas.log();
    let (_, rest) = log.split_once("replica_id=").expect("the replica logs its id");
    rest.split_whitespace().next().unwrap().trim_matches('"').to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_leaves_the_others_serving_and_its_routes_expire() {
    let database_url = glagent_test_support::postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("private-api-secret");
    std::fs::write(&secret, "a-secret-the-three-replicas-share-0123456789\n").unwrap();
    let mut a = Kas::start(&crate::kas(), replica_options(&database_url, &secret, None).0).await;
    let b = Kas::start(
        &crate::kas(),
        replica_options(&database_url, &secret, Some(a.data_dir.clone())).0,
    )
    .await;
    let c = Kas::start(
        &crate::kas(),
        replica_options(&database_url, &secret, Some(a.data_dir.clone())).0,
    )
    .await;
    let a_id = replica_id(&a);

    // Nine agents with one configuration each, granting the project's
    // members access; root is its owner.
    let (_, project) = a.root_call("POST", "/projects", Some(json!({"name": "spread"}))).await;
    let (pid, path) = (
        project["id"].as_i64().unwrap(),
        project["path_with_namespace"].as_str().unwrap().to_string(),
    );
    let mut agents = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        let name = format!("agent-{i}");
        let (status, body) = a
            .root_call(
                "POST",
                &format!("/projects/{pid}/repository/files/.gitlab%2Fagents%2F{name}%2Fconfig.yaml"),
                Some(json!({"branch": "main", "commit_message": "config",
                            "content": format!("user_access:\n  projects:\n    - id: {path}\n")})),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
        let (_, agent) = a
            .root_call(
                "POST",
                &format!("/projects/{pid}/cluster_agents"),
                Some(json!({"name": name})),
            )
            .await;
        let aid = agent["id"].as_i64().unwrap();
        let (_, token) = a
            .root_call(
                "POST",
                &format!("/projects/{pid}/cluster_agents/{aid}/tokens"),
                Some(json!({"name": "spread"})),
            )
            .await;
        agents.push(aid);
        tokens.push(token["token"].as_str().unwrap().to_string());
    }
    let front = balancer(vec![a.port, b.port, c.port]).await;
    let kube = FakeKubernetes::start().await.unwrap();
    let ca = std::fs::read(a.ca_file()).unwrap();
    let fleet = Fleet::start(
        &format!("wss://127.0.0.1:{front}/-/kubernetes-agent/"),
        Some(&ca),
        tokens,
        &kube,
    )
    .await
    .unwrap();
    fleet.wait_connected(AGENTS, Duration::from_secs(60)).await.unwrap();

    // Six clients, three on B and three on C, each cycling over the nine
    // agents (a third of them held by A, so forwarded there).
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load: Vec<_> = [&b, &c, &b, &c, &b, &c]
        .into_iter()
        .enumerate()
        .map(|(worker, kas)| {
            let (http, url, root, stop, agents) = (
                kas.http(),
                kas.url.clone(),
                kas.root_token.clone(),
                stop.clone(),
                agents.clone(),
            );
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(30));
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let agent = agents[i % agents.len()];
                    i += 1;
                    let at = started.elapsed();
                    let answer = http
                        .get(format!(
                            "{url}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/default/configmaps/spread"
                        ))
                        .bearer_auth(format!("pat:{agent}:{root}"))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let status = match answer {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            Some(status)
                        }
                        Err(_) => None,
                    };
                    sent.push((at, started.elapsed() - at, status));
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = started.elapsed();
    a.kill();
    until(Duration::from_secs(10), "A's agents to notice", async || {
        fleet.connected() < AGENTS
    })
    .await;
    let back = until(
        Duration::from_secs(30),
        "A's agents to reconnect to B and C",
        async || fleet.connected() == AGENTS,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for worker in futures_util::future::join_all(load).await {
        sent.extend(worker.unwrap());
    }
    sent.sort_by_key(|s| s.0);

    let failed: Vec<_> = sent.iter().filter(|s| s.2 != Some(200)).collect();
    for (at, took, status) in &failed {
        assert_eq!(
            *status,
            Some(503),
            "a request at {at:?} ended without a clean answer after {took:?}"
        );
        assert!(*at + *took >= killed_at, "a failure before the kill at {at:?}");
    }
    let gap = match (failed.first(), failed.last()) {
        (Some(first), Some(last)) => last.0 + last.1 - first.0,
        _ => Duration::ZERO,
    };
    let slowest = sent.iter().map(|s| s.1).max().unwrap_or_default();
    println!(
        "{} requests, {} failed ({:.1} %, all 503) over {gap:?} after the kill; agents back on B and C {back:?} after it; slowest answer {slowest:?}",
        sent.len(),
        failed.len(),
        100.0 * failed.len() as f64 / sent.len() as f64
    );
    let settled = killed_at + back + Duration::from_secs(1);
    assert!(
        sent.iter().filter(|s| s.0 > settled).all(|s| s.2 == Some(200)),
        "once the agents are back every request is answered"
    );

    // A's routes stop counting within their TTL (30 s from its last refresh).
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url)
        .await
        .unwrap();
    until(Duration::from_secs(40), "A's routes to expire", async || {
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agent_routes WHERE replica_id = $1 \
             AND expires_at > to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
        )
        .bind(&a_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
        live == 0
    })
    .await;
    let expired = started.elapsed() - killed_at;
    println!("A's routes were no longer used {expired:?} after the kill (TTL 30 s from its last refresh)");
    assert!(expired <= Duration::from_secs(41), "within the TTL");
}
