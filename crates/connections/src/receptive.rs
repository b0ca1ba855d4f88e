//! Receptive agents: kas dials them. Every URL configuration is held by one
//! task that dials the agent's `grpc://` or `grpcs://` URL (TLS verified
//! with the configuration's `ca_cert` and `tls_host`, or the system's
//! roots), proves it is kas with a fresh JWT signed by the configuration's
//! key (or with its mTLS client certificate), upgrades to the raw tunnel,
//! checks that the agent token the agent answers with belongs to the
//! configured agent, and then runs the same session as for an agent that
//! dialed kas. A failure is logged once in words, then retried with
//! jittered backoff (1 s to 60 s; every second while the configuration is
//! less than two minutes old, as its agent is being installed) and logged
//! again only when its cause changes.
//!
//! The supervisor wakes when a URL configuration is created or deleted on
//! this replica, and every second for other replicas' changes. With
//! several replicas, each agent is held by exactly one replica through a
//! lease in the database that the holder renews every second; when a
//! replica goes, its leases expire and another takes them over.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glagent_core::secret;
use glagent_proto::{AGENT_PATH, AGENT_TOKEN_HEADER, CONNECTION_ID_HEADER};
use glagent_services::Services;
use glagent_store::{StoreError, Timestamp, UrlConfiguration};
use glagent_telemetry::metrics::kas;
use glagent_tunnel::Backoff;
use glagent_tunnel::raw::{RawIo, UpgradeError};
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Connections;
use crate::session::{self, AgentSession};

/// How often the supervisor looks for other replicas' changes and renews
/// its leases.
const TICK: Duration = Duration::from_secs(1);
/// How long a lease lasts without renewal: a replica that dies loses its
/// agents this long after its last renewal.
const LEASE: Duration = Duration::from_secs(3);
/// How long each step of a dial may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// A configuration this young is retried every second rather than with a
/// growing backoff: its agent is probably being installed right now (it
/// needs the configuration's public key first), and should be connected
/// within a second of listening.
const NEW_CONFIGURATION: Duration = Duration::from_secs(120);

/// Why kas could not connect to a receptive agent, in words.
#[derive(Debug, Error)]
pub enum DialError {
    #[error("the URL configuration's url {0:?} is not grpc://host[:port] or grpcs://host[:port]")]
    Url(String),
    #[error("DNS lookup of {host} failed: {source}")]
    Dns { host: String, source: io::Error },
    #[error("TCP connection to {addr} failed: {}", tcp_words(.source))]
    Tcp { addr: String, source: io::Error },
    #[error("TLS handshake with {name} failed: {}", tls_words(.source, .name))]
    Tls { name: String, source: io::Error },
    #[error("the URL configuration's {0} cannot be used: {1}")]
    Config(&'static str, String),
    #[error(
        "the agent refused kas's JWT ({0}): is the agent installed with this URL configuration's public_key (config.api.jwtPublicKey)?"
    )]
    JwtRefused(String),
    #[error("the agent answered {status} instead of switching protocols: {body}")]
    Refused { status: u16, body: String },
    #[error("upgrading the connection failed: {0}")]
    Upgrade(String),
    #[error("the agent did not send its agent token")]
    NoToken,
    #[error("the agent's token is unknown or revoked: create a new token and update the agent's Secret")]
    UnknownToken,
    #[error("the agent presented a token of another agent (id {0}): refused")]
    OtherAgent(i64),
    #[error("reading the database failed: {0}")]
    Store(String),
    #[error("{0} timed out after {STEP_TIMEOUT:?}")]
    Timeout(&'static str),
}

fn tcp_words(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is the agent running with --api-listen-address, and is the port right?)".into()
        }
        io::ErrorKind::TimedOut => "timed out (a firewall may drop the traffic)".into(),
        _ => error.to_string(),
    }
}

fn tls_words(error: &io::Error, name: &str) -> String {
    use rustls::CertificateError;
    let inner = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the agent's certificate is not valid for {name}: set the URL configuration's tls_host to a name in the certificate"
        ),
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the agent's certificate is not signed by the URL configuration's ca_cert (or, without one, by a system CA)"
                .into()
        }
        Some(rustls::Error::InvalidCertificate(other)) => format!("the agent's certificate is not accepted: {other:?}"),
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}

async fn step<T>(name: &'static str, future: impl Future<Output = T>) -> Result<T, DialError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| DialError::Timeout(name))
}

/// A byte stream to the agent, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

struct Target {
    tls: bool,
    host: String,
    port: u16,
}

fn target(url: &str) -> Result<Target, DialError> {
    let bad = || DialError::Url(url.to_string());
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    let tls = match parsed.scheme() {
        "grpcs" => true,
        "grpc" => false,
        _ => return Err(bad()),
    };
    let host = parsed.host_str().ok_or_else(bad)?.trim_matches(['[', ']']).to_string();
    // As upstream: 443 with TLS and 80 without when the port is absent.
    let port = parsed.port().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target { tls, host, port })
}

fn tls_config(services: &Services, config: &UrlConfiguration) -> Result<rustls::ClientConfig, DialError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_cert {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| DialError::Config("ca_cert", e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| DialError::Config("ca_cert", e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| DialError::Config("TLS settings", e.to_string()))?
        .with_root_certificates(roots);
    let mut tls = match (&config.client_cert, &config.client_key_sealed) {
        (Some(cert), Some(sealed)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DialError::Config("client_cert", e.to_string()))?;
            let key = services
                .sealer
                .open(
                    sealed,
                    &glagent_services::sealed::url_configuration_context(config.agent_id),
                )
                .map_err(|e| DialError::Config("client_key", e.to_string()))?;
            let key = rustls_pemfile::private_key(&mut &key[..])
                .ok()
                .flatten()
                .ok_or_else(|| DialError::Config("client_key", "not a PEM private key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| DialError::Config("client_cert", e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// kas's JWT for this configuration, when it has a key (not with mTLS).
fn jwt(services: &Services, config: &UrlConfiguration) -> Result<Option<String>, DialError> {
    let Some(sealed) = &config.private_key_sealed else {
        return Ok(None);
    };
    let pkcs8 = services
        .sealer
        .open(
            sealed,
            &glagent_services::sealed::url_configuration_context(config.agent_id),
        )
        .map_err(|e| DialError::Config("private key", e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    glagent_proto::jwt::sign(&pkcs8, now)
        .map(Some)
        .map_err(|e| DialError::Config("private key", e.to_string()))
}

/// What a successful dial hands to the session.
struct Dialed {
    io: RawIo,
    session: AgentSession,
}

async fn dial(services: &Services, config: &UrlConfiguration) -> Result<Dialed, DialError> {
    let target = target(&config.url)?;
    let tls = if target.tls {
        Some(tls_config(services, config)?)
    } else {
        None
    };
    let addrs: Vec<_> = step(
        "DNS lookup",
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await?
    .map_err(|source| DialError::Dns {
        host: target.host.clone(),
        source,
    })?
    .collect();
    let mut stream = None;
    let mut last_error = None;
    for addr in &addrs {
        match step("TCP connect", TcpStream::connect(addr)).await? {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(source) => {
                last_error = Some(DialError::Tcp {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    let stream = match (stream, last_error) {
        (Some(s), _) => s,
        (None, Some(error)) => return Err(error),
        (None, None) => {
            return Err(DialError::Dns {
                host: target.host,
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            });
        }
    };
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        Some(tls) => {
            let name = config.tls_host.clone().unwrap_or_else(|| target.host.clone());
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| DialError::Config("tls_host", format!("{name:?}: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
            let stream = step("TLS handshake", connector.connect(server_name, stream))
                .await?
                .map_err(|source| DialError::Tls { name, source })?;
            Box::new(stream)
        }
        None => Box::new(stream),
    };
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut request = http::Request::get(AGENT_PATH).header(http::header::HOST, host).header(
        http::header::USER_AGENT,
        format!("glagent-kas/{}", glagent_core::VERSION),
    );
    if let Some(jwt) = jwt(services, config)? {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {jwt}"));
    }
    let request = request.body(()).map_err(|e| DialError::Upgrade(e.to_string()))?;
    let (headers, io) = step("tunnel upgrade", glagent_tunnel::raw::upgrade(io, request))
        .await?
        .map_err(|error| match error {
            UpgradeError::Refused { status, body, .. } => {
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or(body);
                if status == http::StatusCode::UNAUTHORIZED {
                    DialError::JwtRefused(message)
                } else {
                    DialError::Refused {
                        status: status.as_u16(),
                        body: message,
                    }
                }
            }
            other => DialError::Upgrade(other.to_string()),
        })?;
    let token = headers
        .get(AGENT_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(DialError::NoToken)?;
    let (token, agent) = match services.store.agent_by_token_digest(&secret::digest(token)).await {
        Ok(found) => found,
        Err(StoreError::NotFound) => return Err(DialError::UnknownToken),
        Err(error) => return Err(DialError::Store(error.to_string())),
    };
    if agent.id != config.agent_id {
        return Err(DialError::OtherAgent(agent.id));
    }
    let project = services
        .store
        .project(agent.project_id)
        .await
        .map_err(|e| DialError::Store(e.to_string()))?;
    let connection_id = headers
        .get(CONNECTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Dialed {
        io,
        session: AgentSession {
            agent,
            project,
            token,
            connection_id,
            transport: "receptive",
            replaces: false,
            close: CancellationToken::new(),
        },
    })
}

/// Dials one configuration until `stop`, reconnecting with backoff.
async fn hold(services: Services, connections: Connections, config: UrlConfiguration, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 2.0, 0.2);
    let mut last_failure: Option<String> = None;
    let agent_id = config.agent_id;
    loop {
        let attempt = tokio::select! {
            attempt = dial(&services, &config) => attempt,
            _ = stop.cancelled() => return,
        };
        match attempt {
            Ok(Dialed { io, mut session }) => {
                kas().receptive_dial("connected");
                tracing::info!(agent_id, url = %config.url, "connected to the receptive agent");
                backoff.reset();
                last_failure = None;
                session.close = stop.child_token();
                session::run(services.clone(), connections.clone(), session, io).await;
                if stop.is_cancelled() {
                    return;
                }
            }
            Err(error) => {
                kas().receptive_dial("failed");
                let words = error.to_string();
                if last_failure.as_deref() != Some(words.as_str()) {
                    tracing::warn!(agent_id, url = %config.url, error = %words, "cannot connect to the receptive agent; retrying with backoff");
                } else {
                    tracing::debug!(agent_id, error = %words, "still cannot connect to the receptive agent");
                }
                last_failure = Some(words);
            }
        }
        let delay = if !config.created_at.is_older_than(NEW_CONFIGURATION) {
            Duration::from_secs(1).mul_f64(rand::random_range(0.8..1.0))
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
    }
}

struct Held {
    config: UrlConfiguration,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Keeps one task per receptive agent this replica holds, until `shutdown`.
pub async fn run(services: Services, connections: Connections, shutdown: CancellationToken) {
    let mut changes = services.events.url_configuration_changes();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: HashMap<i64, Held> = HashMap::new();
    let mut store_failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = changes.changed() => {}
            _ = shutdown.cancelled() => break,
        }
        let wanted = match wanted(&services, &connections).await {
            Ok(wanted) => {
                store_failing = false;
                wanted
            }
            Err(error) => {
                if !store_failing {
                    tracing::warn!(%error, "reading the receptive agents failed; keeping the connections as they are");
                }
                store_failing = true;
                continue;
            }
        };
        held.retain(|agent_id, h| {
            let keep = !h.task.is_finished()
                && wanted
                    .get(agent_id)
                    .is_some_and(|c| c.id == h.config.id && c.url == h.config.url);
            if !keep {
                h.stop.cancel();
            }
            keep
        });
        for (agent_id, config) in wanted {
            held.entry(agent_id).or_insert_with(|| {
                let stop = shutdown.child_token();
                let task = tokio::spawn(hold(
                    services.clone(),
                    connections.clone(),
                    config.clone(),
                    stop.clone(),
                ));
                Held { config, stop, task }
            });
        }
    }
    for h in held.values() {
        h.stop.cancel();
    }
    for (_, h) in held {
        let _ = h.task.await;
    }
    if let Some(routing) = &connections.routing {
        let _ = services.store.release_receptive_agents(&routing.replica_id).await;
    }
}

/// The configurations this replica should hold: all of them alone, those
/// it holds the lease of with other replicas.
async fn wanted(services: &Services, connections: &Connections) -> Result<HashMap<i64, UrlConfiguration>, StoreError> {
    let configs = services.store.url_configurations().await?;
    let mine: Option<Vec<i64>> = match &connections.routing {
        Some(routing) => Some(
            services
                .store
                .hold_receptive_agents(&routing.replica_id, Timestamp::from_now(LEASE))
                .await?,
        ),
        None => None,
    };
    Ok(configs
        .into_iter()
        .filter(|c| mine.as_ref().is_none_or(|m| m.contains(&c.agent_id)))
        .map(|c| (c.agent_id, c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_their_ports_as_upstream() {
        let t = target("grpcs://agent.example.com").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "agent.example.com", 443));
        let t = target("grpc://10.0.0.5:8082").unwrap();
        assert_eq!((t.tls, t.port), (false, 8082));
        assert!(matches!(target("https://agent"), Err(DialError::Url(_))));
    }
}
