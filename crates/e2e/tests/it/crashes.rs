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
        let ids = tokens
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_i64().unwrap())
            .collect();
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
            env: vec![("KAS_UNDELIVERED_TOKEN_GRACE".into(), GRACE.as_secs().to_string())],
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
                // The limit of two, or (PostgreSQL) no connection free in
                // time: told to try again.
                let limit = status == 400 && message.contains("only 2 active tokens");
                let again = status == 503 && message.contains("try again shortly");
                assert!(
                    limit || again,
                    "a creation was refused for another reason: {status} {message}"
                );
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
    until(
        GRACE + Duration::from_secs(30),
        "only received tokens to be left",
        async || {
            let left: BTreeSet<i64> = active_tokens(&kas, project, &agents)
                .await
                .into_values()
                .flatten()
                .collect();
            left == received.keys().copied().collect::<BTreeSet<_>>()
        },
    )
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

/// How one request of the load ended, and when it was sent.
struct Sent {
    at: Duration,
    took: Duration,
    outcome: Result<(u16, String, bool), String>,
}

/// `workers` clients GETting `url` as root every `every` until `stop`.
fn api_load(
    kas: &Kas,
    url: String,
    workers: usize,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sent>>> {
    let started = Instant::now();
    (0..workers)
        .map(|_| {
            let (http, url, root, stop) = (client(kas), url.clone(), kas.root_token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut tick = tokio::time::interval(every);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let at = started.elapsed();
                    let answer = http
                        .get(&url)
                        .header("PRIVATE-TOKEN", &root)
                        .timeout(Duration::from_secs(15))
                        .send()
                        .await;
                    let outcome = match answer {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry_after = response.headers().contains_key("retry-after");
                            let body = response.text().await.unwrap_or_default();
                            Ok((status, body, retry_after))
                        }
                        Err(error) => Err(error.to_string()),
                    };
                    sent.push(Sent {
                        at,
                        took: started.elapsed() - at,
                        outcome,
                    });
                }
                sent
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_load_gives_503_while_gone_and_kas_recovers_by_itself() {
    let postgres = glagent_test_support::postgres::PrivateServer::start();
    let database_url = postgres.fresh_database().await;
    let kas = Kas::start(
        &crate::kas(),
        KasOptions {
            database_url: Some(database_url),
            ..Default::default()
        },
    )
    .await;
    let pid = kas.pid();
    let project = kas.project_with_agent("restarted", "steady").await;
    let kube = FakeKubernetes::start().await.unwrap();
    let ca = std::fs::read(kas.ca_file()).unwrap();
    let fleet = Fleet::start(
        &format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
        Some(&ca),
        vec![project.token.clone()],
        &kube,
    )
    .await
    .unwrap();
    fleet.wait_connected(1, Duration::from_secs(30)).await.unwrap();

    // 4 clients at 25 requests/s each; PostgreSQL is stopped for 5 s.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let load = api_load(
        &kas,
        kas.api(&format!("/projects/{}", project.project_id)),
        4,
        Duration::from_millis(40),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_at = started.elapsed();
    postgres.stop("fast");
    let http = client(&kas);
    let readiness = format!("{}/-/readiness", kas.url);
    let not_ready = http.get(&readiness).send().await.unwrap().status();
    tokio::time::sleep(Duration::from_secs(5)).await;
    postgres.start_again();
    let up_at = started.elapsed();
    let recovered = until(Duration::from_secs(30), "kas to answer again", async || {
        http.get(&readiness).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent: Vec<Sent> = Vec::new();
    for worker in futures_util::future::join_all(load).await {
        sent.extend(worker.unwrap());
    }
    sent.sort_by_key(|s| s.at);

    assert_eq!(
        not_ready,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "not ready while the database is gone"
    );
    let (mut ok, mut unavailable) = (0, 0);
    let mut slowest = Duration::ZERO;
    for s in &sent {
        slowest = slowest.max(s.took);
        match &s.outcome {
            Ok((200, _, _)) => ok += 1,
            Ok((503, body, retry_after)) => {
                assert!(
                    body.contains("kas cannot reach its database; try again shortly"),
                    "{body}"
                );
                assert!(retry_after, "a 503 says when to try again");
                assert!(
                    s.at + s.took >= down_at && s.at <= up_at + recovered + Duration::from_secs(1),
                    "a 503 outside the outage at {:?}",
                    s.at
                );
                unavailable += 1;
            }
            Ok((status, body, _)) => panic!("{status} at {:?}: {body}", s.at),
            Err(error) => panic!("no answer at {:?} (after {:?}): {error}", s.at, s.took),
        }
    }
    let after = sent
        .iter()
        .filter(|s| s.at > up_at + recovered + Duration::from_secs(1));
    assert!(
        after.clone().count() > 20 && after.clone().all(|s| matches!(s.outcome, Ok((200, _, _)))),
        "every request after the recovery is answered"
    );
    println!(
        "PostgreSQL down {down_at:?}..{up_at:?}: {ok} answered 200, {unavailable} 503; ready again {recovered:?} after it was back; slowest answer {slowest:?}"
    );
    assert!(unavailable > 0, "the outage was seen");
    assert_eq!(kas.pid(), pid, "kas recovered without a restart");
    fleet.wait_connected(1, Duration::from_secs(30)).await.unwrap();
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
struct SmallDisk {
    _parent: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let parent = tempfile::Builder::new().prefix("glagent-disk-").tempdir().unwrap();
        let path = parent.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(mounted.success(), "mounting a tmpfs (the tests run as root)");
        SmallDisk { _parent: parent, path }
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Whatever fits in smaller pieces too.
        while file.write_all(&chunk[..512]).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_refuses_writes_clearly_keeps_nothing_half_written_and_recovers() {
    let disk = SmallDisk::mount("48m");
    let mut kas = Kas::start(
        &crate::kas(),
        KasOptions {
            data_dir: Some(disk.path.clone()),
            ..Default::default()
        },
    )
    .await;
    let kept = kas.project_with_agent("kept", "kept").await;
    let filler = disk.fill();

    // Writes go on until one fails; the first failure says why, and what
    // was refused left nothing behind.
    let mut made = vec![kept.project_id];
    let refusal = loop {
        let (status, body) = kas
            .root_call(
                "POST",
                "/projects",
                Some(json!({"name": format!("full-{}", made.len())})),
            )
            .await;
        if status != reqwest::StatusCode::CREATED {
            break (status, body);
        }
        made.push(body["id"].as_i64().unwrap());
        assert!(made.len() < 500, "the disk never filled");
    };
    println!("disk full after {} more projects: {refusal:?}", made.len() - 1);
    assert_eq!(refusal.0, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{refusal:?}");
    assert_eq!(
        refusal.1["message"],
        "503 Service Unavailable - kas's disk is full and nothing was saved; tell your kas administrator"
    );
    let (_, projects) = kas.root_call("GET", "/projects?per_page=100", None).await;
    let listed: BTreeSet<i64> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, made.iter().copied().collect(), "no half-made project is listed");
    let repositories: BTreeSet<String> = std::fs::read_dir(disk.path.join("repositories"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = made.iter().map(|id| format!("{id}.git")).collect();
    assert_eq!(repositories, expected, "no repository of a refused project stays");

    // A token and a commit are refused too, and reads still work.
    let tokens = format!("/projects/{}/cluster_agents/{}/tokens", kept.project_id, kept.agent_id);
    let (status, body) = kas.root_call("POST", &tokens, Some(json!({"name": "second"}))).await;
    let (_, listed_tokens) = kas.root_call("GET", &tokens, None).await;
    if status == reqwest::StatusCode::CREATED {
        // SQLite found room in its write-ahead log for this one.
        assert_eq!(listed_tokens.as_array().unwrap().len(), 2);
    } else {
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            listed_tokens.as_array().unwrap().len(),
            1,
            "the refused token is not there"
        );
    }
    let (status, body) = kas
        .root_call(
            "POST",
            &format!("/projects/{}/repository/files/big.txt", kept.project_id),
            Some(json!({"branch": "main", "content": "x".repeat(2 << 20), "commit_message": "too big"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = kas
        .root_call(
            "GET",
            &format!("/projects/{}/repository/files/big.txt?ref=main", kept.project_id),
            None,
        )
        .await;
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "the refused commit is not on the branch"
    );
    let (status, _) = kas
        .root_call("GET", &format!("/projects/{}", kept.project_id), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "reads work on a full disk");

    // Space back: writes work again without a restart, and the database
    // is whole, before and after a restart.
    std::fs::remove_file(filler).unwrap();
    let (status, body) = kas.root_call("POST", "/projects", Some(json!({"name": "after"}))).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    kas.restart().await;
    let check = std::process::Command::new("sqlite3")
        .arg(disk.path.join("kas.sqlite3"))
        .arg("PRAGMA integrity_check;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
    let (_, projects) = kas.root_call("GET", "/projects?per_page=100", None).await;
    assert_eq!(projects.as_array().unwrap().len(), made.len() + 1);
    drop(kas);
}
