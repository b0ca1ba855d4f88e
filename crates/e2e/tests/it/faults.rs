//! Faults against real components: kas restarted (SIGTERM, then SIGKILL)
//! under a steady load of proxied requests and open watches, and the
//! agent's API server going away and coming back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use glagent_test_support::agentk::Agentk;
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;

use crate::support::{agent_with_cluster_access, member};
use crate::{Setup, agentk, until};

/// How a proxied request ended.
#[derive(Debug)]
enum Outcome {
    Answered(StatusCode),
    /// A transport error before the client's timeout: the connection was
    /// refused or closed.
    Refused,
    /// The client's timeout: a hang.
    TimedOut,
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `workers` clients, each sending a GET every `every`, until `stop`.
fn load(
    http: reqwest::Client,
    url: String,
    credential: String,
    workers: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..workers)
        .map(|_| {
            let (http, url, credential, stop) = (http.clone(), url.clone(), credential.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut tick = tokio::time::interval(every);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let sent = http
                        .get(&url)
                        .bearer_auth(&credential)
                        .timeout(CLIENT_TIMEOUT)
                        .send()
                        .await;
                    outcomes.push(match sent {
                        Ok(response) => {
                            let status = response.status();
                            match response.bytes().await {
                                Ok(_) => Outcome::Answered(status),
                                Err(error) if error.is_timeout() => Outcome::TimedOut,
                                Err(_) => Outcome::Refused,
                            }
                        }
                        Err(error) if error.is_timeout() => Outcome::TimedOut,
                        Err(_) => Outcome::Refused,
                    });
                }
                outcomes
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kas_restarted_under_load_ends_every_request_and_watch_and_the_agent_is_back_within_3_s() {
    let mut setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let agent = agent_with_cluster_access(&setup).await;
    let ns = KubeEnv::shared().namespace("faults").await;
    let pat = member(&setup, "faulty", 30, &["k8s_proxy"]).await;
    let credential = format!("pat:{}:{pat}", setup.agent_id);
    let proxy = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let http = setup.kas.http();
    for signal in ["SIGTERM", "SIGKILL"] {
        // 100 GETs a second from 10 clients, and 20 open watches.
        let stop = Arc::new(AtomicBool::new(false));
        let workers = load(
            http.clone(),
            format!("{proxy}/api/v1/namespaces/{ns}/configmaps"),
            credential.clone(),
            10,
            Duration::from_millis(100),
            stop.clone(),
        );
        let mut watches = Vec::new();
        for _ in 0..20 {
            let response = http
                .get(format!("{proxy}/api/v1/namespaces/{ns}/configmaps?watch=true"))
                .bearer_auth(&credential)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            watches.push(tokio::spawn(async move {
                let mut body = response.bytes_stream();
                let mut clean = true;
                while let Some(chunk) = body.next().await {
                    clean = chunk.is_ok();
                    if !clean {
                        break;
                    }
                }
                (Instant::now(), clean)
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stopped_at = Instant::now();
        match signal {
            "SIGTERM" => assert!(setup.kas.stop(), "kas stops on SIGTERM"),
            _ => setup.kas.kill(),
        }
        let stop_took = stopped_at.elapsed();
        // Every watch has ended by the time kas is gone.
        let mut ended = Vec::new();
        for watch in watches {
            let (at, clean) = tokio::time::timeout(Duration::from_secs(5), watch)
                .await
                .expect("a watch hung after kas stopped")
                .unwrap();
            ended.push((at.saturating_duration_since(stopped_at), clean));
        }
        if signal == "SIGTERM" {
            assert!(
                ended.iter().all(|(_, clean)| *clean),
                "on SIGTERM watches end cleanly: {ended:?}"
            );
        }
        setup.kas.start_again().await;
        let back = Instant::now();
        let reconnected = until(Duration::from_secs(10), "the agent back on kas", async || {
            setup.connections().await.len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for worker in workers {
            outcomes.extend(worker.await.unwrap());
        }
        let hung = outcomes.iter().filter(|o| matches!(o, Outcome::TimedOut)).count();
        let refused = outcomes.iter().filter(|o| matches!(o, Outcome::Refused)).count();
        let answered: Vec<StatusCode> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Answered(status) => Some(*status),
                _ => None,
            })
            .collect();
        let ok = answered.iter().filter(|s| **s == StatusCode::OK).count();
        println!(
            "{signal}: kas stopped in {stop_took:?}; {} requests: {ok} answered 200, {} answered otherwise ({:?}), {refused} refused by a closed port, {hung} hung; watches ended after {:?}; the agent was back {:?} after kas",
            outcomes.len(),
            answered.len() - ok,
            answered.iter().filter(|s| **s != StatusCode::OK).collect::<Vec<_>>(),
            ended.iter().map(|(at, _)| *at).max(),
            back.elapsed().min(reconnected)
        );
        assert_eq!(hung, 0, "{signal}: no request may hang");
        assert!(
            answered
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
            "{signal}: every answer is the cluster's or kas's clean 503: {answered:?}"
        );
        assert!(ok > 50, "{signal}: the load ran");
        assert!(
            reconnected <= Duration::from_secs(3),
            "{signal}: the agent was back after {reconnected:?}"
        );
    }
    drop(agent);
}

/// A TCP relay to the API server, so that a test can take the API server
/// away from one agent and give it back.
struct Relay {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(port: u16) -> Relay {
        let upstream: u16 = KubeEnv::shared()
            .server_url()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { task: Some(task) }
    }

    /// Closes the port and every connection through it.
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_goes_away_gives_a_clear_502_and_requests_work_again_when_it_is_back() {
    let setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let port = glagent_test_support::free_port();
    let mut relay = Relay::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let admin = std::fs::read_to_string(KubeEnv::shared().kubeconfig_path()).unwrap();
    std::fs::write(
        &kubeconfig,
        admin.replace(&KubeEnv::shared().server_url(), &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let mut options = setup.agent_options();
    options.kubeconfig = Some(kubeconfig);
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    let pat = member(&setup, "away", 30, &["k8s_proxy"]).await;
    let get = || {
        setup
            .kas
            .http()
            .get(format!(
                "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces",
                setup.kas.url
            ))
            .bearer_auth(format!("pat:{}:{pat}", setup.agent_id))
            .timeout(CLIENT_TIMEOUT)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);

    relay.stop();
    let response = get().await.expect("kas answers while the API server is away");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 502);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("the agent could not reach the Kubernetes API:"),
        "{message}"
    );

    let _relay = Relay::start(port).await;
    until(Duration::from_secs(10), "requests to work again", async || {
        get().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}
