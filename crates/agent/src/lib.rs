//! agentk, the in-cluster agent.
//!
//! The agent dials kas (see [`dial`]), upgrades to a WebSocket (or, on
//! `grpc(s)://`, to the raw tunnel) and serves HTTP/2 over it: kas is the
//! client and opens streams to the agent ([`tunnel_server`]). When the
//! connection drops, the agent dials again with exponential backoff. A
//! receptive agent ([`receptive`]) also or instead listens, and kas dials
//! it; the connection then carries the same tunnel. A small HTTP server
//! ([`observability`]) tells Kubernetes whether the agent is alive and
//! ready.

pub mod api_client;
pub mod args;
pub mod dial;
pub mod flux;
pub mod k8s_proxy;
pub mod leader;
pub mod logging;
pub mod observability;
pub mod receptive;
pub mod state;
pub mod tunnel_server;
pub mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use glagent_tunnel::Backoff;
use http::{HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rand::RngExt;
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::dial::{Dialer, KasAddress};
use crate::logging::LogLevel;
use crate::state::AgentState;

/// agentk pings kas when its connection has been silent this long (as
/// upstream agentk's gRPC keepalive): under the 60 s idle timeout of most
/// load balancers, so an idle tunnel through one stays open.
const KEEPALIVE: Duration = Duration::from_secs(55);
/// An unanswered ping ends the connection after this long: a silent
/// network cut is noticed within 75 s, and agentk dials again.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the agent token comes from.
pub(crate) enum TokenSource {
    File(PathBuf),
    Env(String),
}

impl TokenSource {
    /// The token file is read at every attempt, so a rotated Secret is
    /// picked up without a restart.
    pub(crate) fn read(&self) -> Result<String> {
        match self {
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?;
                let token = text.trim_end_matches(['\n', '\r']).to_string();
                anyhow::ensure!(!token.is_empty(), "the token file {} is empty", path.display());
                Ok(token)
            }
            TokenSource::Env(token) => Ok(token.clone()),
        }
    }

    /// Resolves once the token differs from `from`: the file is looked at
    /// every second (a Secret volume is updated in place); a token from
    /// the environment never changes.
    pub(crate) async fn changed_from(&self, from: &str) {
        match self {
            TokenSource::File(_) => loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if self.read().is_ok_and(|token| token != from) {
                    return;
                }
            },
            TokenSource::Env(_) => std::future::pending().await,
        }
    }
}

fn token_source(args: &Args) -> Result<TokenSource> {
    let env = std::env::var("AGENTK_TOKEN").ok().filter(|t| !t.is_empty());
    match (&args.token_file, env) {
        (Some(_), Some(_)) => anyhow::bail!("both --token-file and AGENTK_TOKEN are set: use exactly one"),
        (None, None) => anyhow::bail!("no agent token: pass --token-file <path> or set AGENTK_TOKEN"),
        (Some(path), None) => Ok(TokenSource::File(path.clone())),
        (None, Some(token)) => Ok(TokenSource::Env(token.trim().to_string())),
    }
}

fn required_env(name: &str) -> Result<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).with_context(|| {
        format!("{name} is not set: the Helm chart sets it from the downward API; outside a cluster, set it by hand")
    })
}

fn parse_headers(raw: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("--kas-header {h:?} must look like \"Name: value\""))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--kas-header {h:?}: bad header name"))?;
            let value =
                HeaderValue::from_str(value.trim()).with_context(|| format!("--kas-header {h:?}: bad header value"))?;
            Ok((name, value))
        })
        .collect()
}

fn listen_address(text: &str) -> Result<SocketAddr> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .with_context(|| format!("--observability-listen-address {text:?} must look like :8080 or 127.0.0.1:8080"))
}

async fn kube_client(args: &Args) -> Result<(kube::Client, kube::Config)> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::incluster()
            .context("no in-cluster Kubernetes configuration: outside a cluster pass --kubeconfig")?,
    };
    Ok((kube::Client::try_from(config.clone())?, config))
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: Args, log_level: LogLevel) -> Result<()> {
    let address = match &args.kas_address {
        Some(text) => Some(KasAddress::parse(text).map_err(anyhow::Error::msg)?),
        None => None,
    };
    anyhow::ensure!(
        address.is_some() || args.api_listen_address.is_some(),
        "nothing to do: pass --kas-address (the agent dials kas) or --api-listen-address (a receptive agent kas dials), or both"
    );
    let token = token_source(&args)?;
    let pod_name = required_env("POD_NAME")?;
    let pod_namespace = required_env("POD_NAMESPACE")?;
    let headers = parse_headers(&args.kas_headers)?;
    let observability = listen_address(&args.observability_listen_address)?;
    let tls = if address.as_ref().is_some_and(|a| a.tls) {
        let pem = match &args.kas_ca_cert_file {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("reading --kas-ca-cert-file {}", path.display()))?)
            }
            None => None,
        };
        let host = address.as_ref().map(|a| a.host.clone()).unwrap_or_default();
        let name = args.kas_tls_server_name.clone().unwrap_or(host);
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
        Some((dial::tls_connector(pem.as_deref())?, name))
    } else {
        None
    };
    token.read()?;
    let receptive = receptive::Listener::from_args(&args).await?;
    let (kube, kube_config) = kube_client(&args).await?;
    let connection_id = rand::rng().random_range(1..i64::MAX as u64);
    let state = Arc::new(AgentState::new(
        connection_id,
        pod_name,
        pod_namespace,
        kube,
        api_client::ApiClient::new(&kube_config).context("building the Kubernetes API client")?,
        log_level,
    ));

    let listener = tokio::net::TcpListener::bind(observability)
        .await
        .with_context(|| format!("listening on {observability} for /metrics, /liveness, /readiness"))?;
    tracing::info!(address = %listener.local_addr()?, "observability server listening");
    let obs_router = observability::router(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, obs_router).await {
            tracing::error!(%error, "observability server stopped");
        }
    });

    tokio::spawn(leader::run(state.clone()));
    tokio::spawn(flux::run(state.clone()));
    let token = Arc::new(token);
    if let Some(receptive) = receptive {
        tokio::spawn(receptive.serve(token.clone(), state.clone()));
    }
    let dialing = async {
        match address {
            Some(address) => {
                let dialer = Dialer {
                    address,
                    tls,
                    headers,
                    connection_id,
                    source: None,
                };
                tracing::info!(kas = %dialer.address.url, version = glagent_core::VERSION, "agentk starting");
                connect_forever(&dialer, &token, state.clone()).await
            }
            None => {
                tracing::info!(
                    version = glagent_core::VERSION,
                    "agentk starting (receptive only: kas dials it)"
                );
                std::future::pending().await
            }
        }
    };
    tokio::select! {
        _ = dialing => Ok(()),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(3), leader::release(&state)).await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The connection to kas in use, and the token it was made with.
struct Live {
    task: tokio::task::JoinHandle<String>,
    retire: CancellationToken,
    token: String,
}

/// Keeps one connection to kas: reconnects with backoff when it is lost,
/// and when the token file changes (a rotated Secret) connects again with
/// the new token first, then lets the old connection finish what it
/// carries (kas gives it no new work), so no request or watch is dropped.
async fn connect_forever(dialer: &Dialer, token: &TokenSource, state: Arc<AgentState>) {
    let user_agent = format!("glagent-agentk/{}", glagent_core::VERSION);
    let mut backoff = Backoff::reconnect();
    let mut live: Option<Live> = None;
    loop {
        if let Some(current) = &mut live {
            tokio::select! {
                outcome = &mut current.task => {
                    let outcome = outcome.unwrap_or_else(|e| format!("connection task failed: {e}"));
                    live = None;
                    let delay = backoff.next_delay();
                    tracing::warn!(cause = %outcome, retry_in = ?delay, "connection to kas lost; reconnecting");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                () = token.changed_from(&current.token) => {
                    tracing::info!("the agent token file changed: connecting with the new token");
                }
            }
        }
        state.metrics.connection_attempts.inc();
        let replacing = live.is_some();
        let attempt = async {
            let token = token.read().map_err(|e| e.to_string())?;
            let dialed = if replacing {
                dialer.dial_replacing(&token, &user_agent).await
            } else {
                dialer.dial(&token, &user_agent).await
            };
            dialed.map(|io| (io, token)).map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok((io, used)) => {
                state.metrics.connections.inc();
                backoff.reset();
                tracing::info!(kas = %dialer.address.url, "connected to kas");
                let retire = CancellationToken::new();
                let (first_request, used_by_kas) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(serve_connection(io, state.clone(), retire.clone(), Some(first_request)));
                if let Some(old) = live.take() {
                    // kas stops giving the old connection work once it has
                    // registered the new one, before its first request.
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(30), used_by_kas).await;
                        old.retire.cancel();
                        let outcome = old.task.await.unwrap_or_else(|e| e.to_string());
                        tracing::info!(cause = %outcome, "the connection made with the previous token finished its requests and closed");
                    });
                }
                live = Some(Live {
                    task,
                    retire,
                    token: used,
                });
            }
            Err(error) => {
                state.metrics.connection_failures.inc();
                let delay = backoff.next_delay();
                if replacing {
                    tracing::warn!(%error, retry_in = ?delay, "cannot connect with the new token; the connection made with the old one stays");
                } else {
                    tracing::warn!(%error, retry_in = ?delay, "cannot connect to kas");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Serves kas's HTTP/2 requests until the connection ends; returns why.
/// Counts as a connection to kas while it runs.
pub async fn serve_tunnel(io: Box<dyn dial::Io>, state: Arc<AgentState>) -> String {
    serve_connection(io, state, CancellationToken::new(), None).await
}

/// [`serve_tunnel`], telling `first_request` when kas first uses the
/// connection; once `retire` is cancelled it takes no new requests and
/// ends when those it carries have.
async fn serve_connection(
    io: Box<dyn dial::Io>,
    state: Arc<AgentState>,
    retire: CancellationToken,
    first_request: Option<tokio::sync::oneshot::Sender<()>>,
) -> String {
    let io = TokioIo::new(io);
    state.connections.fetch_add(1, Ordering::Relaxed);
    let first_request = Arc::new(parking_lot::Mutex::new(first_request));
    let router = tunnel_server::router(state.clone()).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            if let Some(first) = first_request.lock().take() {
                let _ = first.send(());
            }
            next.run(request)
        },
    ));
    let service = TowerToHyperService::new(router);
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        // kas's proxy opens at most 500 (upstream's limit per agent); the
        // rest is room for kas's own requests.
        .max_concurrent_streams(520)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = retire.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    let outcome = match result {
        Ok(()) => "kas closed the connection".to_string(),
        Err(error) => format!("connection error: {error}"),
    };
    state.connections.fetch_sub(1, Ordering::Relaxed);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_addresses() {
        let parsed = parse_headers(&["X-Team: platform".into()]).unwrap();
        assert_eq!(parsed[0].0.as_str(), "x-team");
        assert_eq!(parsed[0].1, "platform");
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert_eq!(listen_address(":8080").unwrap().port(), 8080);
        assert!(listen_address("8080").is_err());
    }
}
