//! Faults where kas writes: killed with SIGKILL in the middle of 1,000
//! concurrent agent-token creations (on SQLite and on PostgreSQL), its
//! PostgreSQL restarted under load, its SQLite on a full disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glagent_fleet::{FakeKubernetes, Fleet};
use glagent_test_support::kas::{Kas, KasOptions};
use serde_json::json;

use crate::until;

const AGENTS: usize = 400;
const CREATIONS: usize = 1_000;
/// kas is killed once this many creations were answered.
const KILL_AFTER: usize = 300;
/// `--undelivered-token-grace` of the kas under test: long enough for the
/// test to use every token it received after the restart, short enough to
/// wait for.
const GRACE: Duration = Duration::from_secs(20);

/// How one creation ended for its client.
enum Creation {
    /// 201 and the whole body: the client holds this token.
    Received { agent: i64, id: i64, token: String },
    /// An answer that is not a token (the limit of two).
    Refused { status: u16, message: String },
    /// No complete answer: kas died first.
    Lost,
}

fn client(kas: &Kas) -> reqwest::Client {
    let ca = std::fs::read(kas.ca_file()).unwrap();
    // One connection per request, as many separate clients would.
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .http1_only()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Creates a token as root through `api` (kas's `/api/v4`).
async fn create(http: reqwest::Client, api: &str, root: &str, project: i64, agent: i64, name: String) -> Creation {
    let sent = http
        .post(format!("{api}/projects/{project}/cluster_agents/{agent}/tokens"))
        .header("PRIVATE-TOKEN", root)
        .json(&json!({ "name": name }))
        .send()
        .await;
    let Ok(response) = sent else { return Creation::Lost };
    let status = response.status().as_u16();
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return Creation::Lost;
    };
    match (status, body["id"].as_i64(), body["token"].as_str()) {
        (201, Some(id), Some(token)) => Creation::Received {
            agent,
            id,
            token: token.to_string(),
        },
        _ => Creation::Refused {
            status,
            message: body["message"].to_string(),
        },
    }
}

/// Every agent's active tokens, by agent, as the API lists them.
async fn active_tokens(kas: &Kas, project: i64, agents: &[i64]) -> BTreeMap<i64, BTreeSet<i64>> {
    let mut listed = BTreeMap::new();
    for &agent in agents {
        let (status, tokens) = kas
            .root_call(
                "GET",
                &format!("/projects/{project}/cluster_agents/{agent}/tokens?per_page=100"),
                None,
            )
            .await;
        assert!(status.is_success(), "{status} {tokens}");
        let ids = tokens.as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
        listed.insert(agent, ids);
    }
    listed
}

async fn tokens_survive_a_kill_during_1000_concurrent_creations(database_url: Option<String>) {
    let backend = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    let mut kas = Kas::start(
        &crate::kas(),
        KasOptions {
            database_url,
            env: vec![(
                "KAS_UNDELIVERED_TOKEN_GRACE".into(),
                GRACE.as_secs().to_string(),
            )],
            ..Default::default()
        },
    )
    .await;
    let (_, project) = kas.root_call("POST", "/projects", Some(json!({"name": "crash"}))).await;
    let project = project["id"].as_i64().unwrap();
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let (status, agent) = kas
            .root_call(
                "POST",
                &format!("/projects/{project}/cluster_agents"),
                Some(json!({"name": format!("agent-{i}")})),
            )
            .await;
        assert!(status.is_success(), "{status} {agent}");
        agents.push(agent["id"].as_i64().unwrap());
    }

    // 1,000 creations at once, two or three per agent (two may succeed),
    // each on its own connection; kas is killed in the middle.
    let http = client(&kas);
    let (api, root) = (Arc::new(kas.api("")), Arc::new(kas.root_token.clone()));
    let answered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let creations: Vec<_> = (0..CREATIONS)
        .map(|i| {
            let (http, api, root, answered) = (http.clone(), api.clone(), root.clone(), answered.clone());
            let agent = agents[i % AGENTS];
            tokio::spawn(async move {
                let creation = create(http, &api, &root, project, agent, format!("t{i}")).await;
                if !matches!(creation, Creation::Lost) {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                creation
            })
        })
        .collect();
    until(Duration::from_secs(60), "300 creations to be answered", async || {
        answered.load(Ordering::SeqCst) >= KILL_AFTER
    })
    .await;
    kas.kill();
    let killed_at = started.elapsed();
    let mut received = BTreeMap::new();
    let (mut refused, mut lost) = (0, 0);
    for creation in futures_util::future::join_all(creations).await {
        match creation.unwrap() {
            Creation::Received { agent, id, token } => {
                received.insert(id, (agent, token));
            }
            Creation::Refused { status, message } => {
                assert_eq!(status, 400, "a creation was refused for another reason: {message}");
                assert!(message.contains("only 2 active tokens"), "{message}");
                refused += 1;
            }
            Creation::Lost => lost += 1,
        }
    }
    println!(
        "{backend}: killed after {killed_at:?}: {} tokens received, {refused} refused at the limit, {lost} without an answer",
        received.len()
    );
    assert!(lost > 0, "the kill landed in the middle of the creations");

    kas.start_again().await;
    // No agent has more than two, and every token a client received exists.
    let listed = active_tokens(&kas, project, &agents).await;
    for (agent, ids) in &listed {
        assert!(ids.len() <= 2, "agent {agent} has {} active tokens", ids.len());
    }
    let all: BTreeSet<i64> = listed.values().flatten().copied().collect();
    for (id, (agent, _)) in &received {
        assert!(listed[agent].contains(id), "token {id} a client received is gone");
    }
    let in_doubt = all.len() - received.len();

    // Every token a client received works: an agent connects with it.
    let kube = FakeKubernetes::start().await.unwrap();
    let ca = std::fs::read(kas.ca_file()).unwrap();
    let fleet = Fleet::start(
        &format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
        Some(&ca),
        received.values().map(|(_, token)| token.clone()).collect(),
        &kube,
    )
    .await
    .unwrap();
    fleet
        .wait_connected(received.len(), Duration::from_secs(120))
        .await
        .expect("an agent connects with every token a client received");
    drop(fleet);

    // The tokens nobody received go once the grace has passed.
    until(GRACE + Duration::from_secs(30), "only received tokens to be left", async || {
        let left: BTreeSet<i64> = active_tokens(&kas, project, &agents).await.into_values().flatten().collect();
        left == received.keys().copied().collect::<BTreeSet<_>>()
    })
    .await;
    let deleted = kas
        .log()
        .matches("agent token deleted: kas stopped before it finished sending it")
        .count();
    println!("{backend}: {in_doubt} tokens no client received after the restart, {deleted} deleted after the grace");
    assert_eq!(deleted, in_doubt, "kas deleted exactly the tokens nobody received");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_kill_during_1000_concurrent_creations_on_sqlite() {
    tokens_survive_a_kill_during_1000_concurrent_creations(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_kill_during_1000_concurrent_creations_on_postgresql() {
    let database_url = glagent_test_support::postgres::fresh_database().await;
    tokens_survive_a_kill_during_1000_concurrent_creations(Some(database_url)).await;
}
