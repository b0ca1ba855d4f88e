//! A fleet of simulated agents for load tests: many agents in one process,
//! each dialing kas with its own token through agentk's own dialer and
//! serving agentk's own tunnel (configuration, registration, the Kubernetes
//! API proxy), in front of one in-process fake Kubernetes API
//! ([`FakeKubernetes`]). Used by `cargo xtask bench fleet` and by the e2e
//! test that keeps this path working.
//!
//! What is simulated is the cluster, not the agent: every byte between
//! kas and a simulated agent is what agentk would send.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use glagent_agent::dial::{Dialer, KasAddress};
use glagent_agent::logging::LogLevel;
use glagent_agent::state::AgentState;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A Kubernetes API that answers what a proxied GET asks for: `/version`,
/// and any object under `/api/v1/...` as a ConfigMap of that name.
pub struct FakeKubernetes {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubernetes {
    pub async fn start() -> Result<FakeKubernetes> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                            Ok::<_, Infallible>(answer(request.uri().path()))
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(FakeKubernetes { url, task })
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(path: &str) -> hyper::Response<Full<Bytes>> {
    let json = |status: u16, body: serde_json::Value| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a static response")
    };
    if path == "/version" {
        return json(
            200,
            serde_json::json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fleet"}),
        );
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", namespace, _, name] => json(
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name, "namespace": namespace}, "data": {"fleet": "yes"}}),
        ),
        _ => json(
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ),
    }
}

/// Connections from one loopback source address (of its ~28,000 ports).
const PER_SOURCE: usize = 20_000;

/// Simulated agents, each its own connection to kas (and its own
/// reconnecting loop with agentk's jittered backoff).
pub struct Fleet {
    agents: Vec<Arc<AgentState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts one simulated agent per token against `kas_address`
    /// (`wss://…` or `grpcs://…`), trusting `ca_pem`.
    pub async fn start(
        kas_address: &str,
        ca_pem: Option<&[u8]>,
        tokens: Vec<String>,
        kube: &FakeKubernetes,
    ) -> Result<Fleet> {
        let address = KasAddress::parse(kas_address).map_err(anyhow::Error::msg)?;
        let tls = if address.tls {
            let name = rustls::pki_types::ServerName::try_from(address.host.clone())?;
            Some((glagent_agent::dial::tls_connector(ca_pem)?, name))
        } else {
            None
        };
        // Loopback has ~28,000 ephemeral ports per source address: past
        // that, agents connect from 127.0.0.2, 127.0.0.3, ...
        let loopback = matches!(address.host.as_str(), "127.0.0.1" | "localhost");
        let sources = if loopback {
            tokens.len().div_ceil(PER_SOURCE).max(1)
        } else {
            1
        };
        let dialers: Vec<Arc<Dialer>> = (0..sources)
            .map(|s| {
                Arc::new(Dialer {
                    address: address.clone(),
                    tls: tls.clone(),
                    headers: Vec::new(),
                    connection_id: 1,
                    source: loopback.then(|| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1 + s as u8))),
                })
            })
            .collect();
        let config = kube::Config::new(kube.url.parse().context("the fake API's URL")?);
        let client = kube::Client::try_from(config.clone())?;
        let api = glagent_agent::api_client::ApiClient::new(&config)?;
        let mut agents = Vec::with_capacity(tokens.len());
        let mut tasks = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.into_iter().enumerate() {
            let state = Arc::new(AgentState::new(
                i as u64 + 1,
                format!("fleet-{i}"),
                "fleet".into(),
                client.clone(),
                api.clone(),
                LogLevel::detached(),
            ));
            agents.push(state.clone());
            tasks.push(tokio::spawn(run_agent(dialers[i / PER_SOURCE].clone(), token, state)));
        }
        Ok(Fleet { agents, tasks })
    }

    /// How many agents are connected now.
    pub fn connected(&self) -> usize {
        self.agents
            .iter()
            .filter(|a| a.connections.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// The commit of the configuration agent `i` applied last.
    pub fn applied_commit(&self, i: usize) -> Option<String> {
        self.agents[i].applied.read().as_ref().map(|a| a.commit_id.clone())
    }

    /// Waits until `count` agents are connected; how long it took.
    pub async fn wait_connected(&self, count: usize, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        while self.connected() < count {
            anyhow::ensure!(
                started.elapsed() < timeout,
                "only {} of {count} agents connected within {timeout:?}",
                self.connected()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run_agent(dialer: Arc<Dialer>, token: String, state: Arc<AgentState>) {
    let user_agent = format!("glagent-fleet/{}", glagent_core::VERSION);
    let mut backoff = glagent_tunnel::Backoff::reconnect();
    loop {
        match dialer.dial(&token, &user_agent).await {
            Ok(io) => {
                backoff.reset();
                let outcome = glagent_agent::serve_tunnel(io, state.clone()).await;
                tracing::debug!(agent = %state.pod_name, %outcome, "a fleet agent lost its connection");
            }
            Err(error) => tracing::debug!(agent = %state.pod_name, %error, "a fleet agent could not connect"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
