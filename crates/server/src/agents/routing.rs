//! Agents connected to other kas replicas.
//!
//! Replicas sharing a database each hold some agent connections. Every
//! replica records which agents it holds in `agent_routes` (refreshed every
//! [`ROUTE_REFRESH`], expiring after [`ROUTE_TTL`] if the replica dies), and
//! serves a private API. A proxied request that reaches a replica without a
//! connection of its agent is authorised there as usual, then forwarded, with
//! the identity decided, to a replica that holds one. Private requests are
//! signed with the secret all replicas share (HMAC-SHA256 over a timestamp,
//! the agent, the identity, the method and the path), so nobody else can
//! impose an identity through them; they are forwarded at most once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hmac::{Hmac, KeyInit, Mac};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::ConnectionSummary;
use crate::k8s_proxy::{self, Authorized, ProxyError};
use crate::state::AppState;

/// How long a route lives without a refresh.
const ROUTE_TTL: Duration = Duration::from_secs(30);
/// How often a replica refreshes its routes.
const ROUTE_REFRESH: Duration = Duration::from_secs(10);
/// How far a signature's timestamp may be from the receiver's clock.
const SIGNATURE_WINDOW: u64 = 60;

/// Where the private API serves proxied requests.
pub const PRIVATE_PREFIX: &str = "/-/private/k8s-proxy";
const AGENT_HEADER: &str = "x-glagent-route-agent";
const IDENTITY_HEADER: &str = "x-glagent-route-identity";
const SIGNATURE_HEADER: &str = "x-glagent-route-signature";

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("reading the private API secret {path}: {source}")]
    Secret { path: String, source: std::io::Error },
    #[error(
        "the private API secret in {0} is shorter than 32 bytes: generate one with `head -c 32 /dev/urandom | base64`"
    )]
    ShortSecret(String),
    #[error(
        "--private-listen {0} is not an address other replicas can reach: give --private-url, e.g. https://kas-0.kas:8155"
    )]
    NoUrl(std::net::SocketAddr),
    #[error("--private-url {0} must be an https:// or http:// URL with a host")]
    BadUrl(String),
    #[error("TLS for the private API: {0:#}")]
    Tls(anyhow::Error),
}

pub struct Routing {
    /// Random per process.
    pub replica_id: String,
    pub private_url: String,
    /// For an https:// private URL: a certificate from the CA the replicas
    /// share in their data directory.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    secret: Vec<u8>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// Routes found recently, so a burst of requests costs one query (an
    /// agent found nowhere is looked up again at once).
    found: std::sync::Mutex<std::collections::HashMap<i64, (std::time::Instant, Vec<String>)>>,
}

/// How long a route found in the database is reused.
const FOUND_TTL: Duration = Duration::from_secs(2);

impl Routing {
    /// `tls_dir` holds the CA the replicas share (`<data-dir>/tls`).
    pub fn new(
        secret_file: &std::path::Path,
        listen: std::net::SocketAddr,
        private_url: Option<&url::Url>,
        tls_dir: &std::path::Path,
    ) -> Result<Routing, RoutingError> {
        let secret = std::fs::read(secret_file).map_err(|source| RoutingError::Secret {
            path: secret_file.display().to_string(),
            source,
        })?;
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 32 {
            return Err(RoutingError::ShortSecret(secret_file.display().to_string()));
        }
        let private_url = match private_url {
            Some(url) => url.clone(),
            None if listen.ip().is_unspecified() => return Err(RoutingError::NoUrl(listen)),
            None => url::Url::parse(&format!("https://{listen}")).map_err(|e| RoutingError::BadUrl(e.to_string()))?,
        };
        let host = private_url
            .host_str()
            .filter(|_| matches!(private_url.scheme(), "https" | "http"))
            .ok_or_else(|| RoutingError::BadUrl(private_url.to_string()))?
            .trim_matches(['[', ']'])
            .to_string();
        let acceptor = if private_url.scheme() == "https" {
            let (cert, key) = crate::tls::private_certificate(tls_dir, &host).map_err(RoutingError::Tls)?;
            let config = crate::tls::server_config(cert.as_bytes(), key.as_bytes()).map_err(RoutingError::Tls)?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        } else {
            None
        };
        let ca = crate::tls::ca_certificate(tls_dir).map_err(RoutingError::Tls)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
            let cert = cert.map_err(|e| RoutingError::Tls(e.into()))?;
            roots.add(cert).map_err(|e| RoutingError::Tls(e.into()))?;
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| RoutingError::Tls(e.into()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Routing {
            replica_id: hex::encode(rand::random::<[u8; 8]>()),
            private_url: private_url.as_str().trim_end_matches('/').to_string(),
            acceptor,
            secret,
            client,
            found: Default::default(),
        })
    }

    fn mac(&self, timestamp: u64, agent_id: i64, identity: &str, method: &str, path: &str) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{timestamp}\n{agent_id}\n{identity}\n{method}\n{path}").as_bytes());
        mac
    }

    fn sign(&self, agent_id: i64, identity: &str, method: &str, path: &str) -> String {
        let timestamp = unix_now();
        let tag = self
            .mac(timestamp, agent_id, identity, method, path)
            .finalize()
            .into_bytes();
        format!("{timestamp}.{}", hex::encode(tag))
    }

    fn verify(&self, signature: &str, agent_id: i64, identity: &str, method: &str, path: &str) -> bool {
        let Some((timestamp, tag)) = signature.split_once('.') else {
            return false;
        };
        let (Ok(timestamp), Ok(tag)) = (timestamp.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        unix_now().abs_diff(timestamp) <= SIGNATURE_WINDOW
            && self
                .mac(timestamp, agent_id, identity, method, path)
                .verify_slice(&tag)
                .is_ok()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Records that this replica holds a connection of the agent.
pub async fn announce(state: &AppState, agent_id: i64) {
    let Some(routing) = &state.routing else { return };
    let expires_at = glagent_store::from_now(ROUTE_TTL);
    if let Err(error) = state
        .store
        .put_agent_route(agent_id, &routing.replica_id, &routing.private_url, &expires_at)
        .await
    {
        tracing::warn!(agent_id, %error, "could not record the agent's route");
    }
}

/// Withdraws the route once this replica holds no connection of the agent.
pub async fn withdraw(state: &AppState, agent_id: i64) {
    let Some(routing) = &state.routing else { return };
    if !state.agents.of_agent(agent_id).is_empty() {
        return;
    }
    if let Err(error) = state
        .store
        .delete_agent_routes(&routing.replica_id, Some(agent_id))
        .await
    {
        tracing::warn!(agent_id, %error, "could not withdraw the agent's route");
    }
}

/// Refreshes this replica's routes until the process ends: one statement
/// for all of them, and a fresh record for each agent only when the rows do
/// not match the agents held here (a write that failed earlier). Routes of
/// replicas that died more than an hour ago are deleted on the way.
pub async fn refresh_forever(state: AppState) {
    let Some(routing) = &state.routing else { return };
    let mut tick = tokio::time::interval(ROUTE_REFRESH);
    loop {
        tick.tick().await;
        let mut agents = state.agents.agent_ids();
        agents.dedup();
        let expires_at = glagent_store::from_now(ROUTE_TTL);
        let forget_before = glagent_store::before_now(Duration::from_secs(3600));
        match state
            .store
            .refresh_agent_routes(&routing.replica_id, &expires_at, &forget_before)
            .await
        {
            Ok(refreshed) if refreshed as usize == agents.len() => {}
            Ok(_) => {
                // A write failed earlier: rows are missing, or left for
                // agents gone from here. Start this replica's rows afresh.
                withdraw_all(&state).await;
                for agent_id in agents {
                    announce(&state, agent_id).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not refresh this replica's agent routes"),
        }
    }
}

/// Withdraws every route of this replica (at shutdown).
pub async fn withdraw_all(state: &AppState) {
    let Some(routing) = &state.routing else { return };
    if let Err(error) = state.store.delete_agent_routes(&routing.replica_id, None).await {
        tracing::warn!(%error, "could not withdraw this replica's routes");
    }
}

/// A replica holding a connection of the agent, if any.
pub async fn find(state: &AppState, agent_id: i64) -> Result<Option<String>, ProxyError> {
    let Some(routing) = &state.routing else {
        return Ok(None);
    };
    let cached = {
        let found = routing.found.lock().unwrap_or_else(|e| e.into_inner());
        found
            .get(&agent_id)
            .filter(|(at, _)| at.elapsed() < FOUND_TTL)
            .map(|(_, urls)| urls.clone())
    };
    let urls = match cached {
        Some(urls) => urls,
        None => {
            let urls = state
                .store
                .agent_routes(agent_id, &routing.replica_id)
                .await
                .map_err(|e| ProxyError::Unavailable(e.to_string()))?;
            let mut found = routing.found.lock().unwrap_or_else(|e| e.into_inner());
            found.retain(|_, (at, _)| at.elapsed() < FOUND_TTL);
            if !urls.is_empty() {
                found.insert(agent_id, (std::time::Instant::now(), urls.clone()));
            }
            urls
        }
    };
    if urls.is_empty() {
        return Ok(None);
    }
    Ok(Some(urls[rand::random_range(0..urls.len())].clone()))
}

/// Forgets what was found for the agent (its replica did not answer).
fn forget(routing: &Routing, agent_id: i64) {
    routing
        .found
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&agent_id);
}

/// Forwards an authorised request to the replica at `base`; streams the
/// answer back, and splices an upgraded connection end to end.
pub async fn forward(
    state: &AppState,
    base: &str,
    authorized: &Authorized,
    mut request: Request,
) -> Result<Response, ProxyError> {
    let routing = state.routing.as_ref().expect("found through routing");
    let upgrade = k8s_proxy::upgrade_protocol(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let rest = parts.uri.path().strip_prefix(k8s_proxy::PREFIX).unwrap_or("/");
    let path = match parts.uri.query() {
        Some(query) => format!("{PRIVATE_PREFIX}{rest}?{query}"),
        None => format!("{PRIVATE_PREFIX}{rest}"),
    };
    let identity = authorized
        .impersonation
        .as_ref()
        .map(k8s_proxy::encode_identity)
        .unwrap_or_default();
    let signature = routing.sign(authorized.agent_id, &identity, parts.method.as_str(), &path);
    let mut forwarded = http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{base}{path}"));
    let headers = forwarded.headers_mut().expect("fresh builder");
    k8s_proxy::copy_end_to_end(&parts.headers, headers);
    let header = |value: &str| HeaderValue::from_str(value).map_err(|_| ProxyError::BadRequest("bad header".into()));
    headers.insert(AGENT_HEADER, header(&authorized.agent_id.to_string())?);
    headers.insert(SIGNATURE_HEADER, header(&signature)?);
    if !identity.is_empty() {
        headers.insert(IDENTITY_HEADER, header(&identity)?);
    }
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, header(protocol)?);
    }
    let forwarded = forwarded
        .body(body)
        .map_err(|e| ProxyError::BadRequest(format!("cannot forward this request: {e}")))?;
    let mut response = routing.client.request(forwarded).await.map_err(|e| {
        forget(routing, authorized.agent_id);
        ProxyError::Unavailable(format!(
            "the kas replica holding agent {}'s connection did not answer: {e}",
            authorized.agent_id
        ))
    })?;
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) = (response.status(), client_upgrade) {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream) else {
                tracing::debug!("an upgrade through another replica failed");
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
        });
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        k8s_proxy::copy_end_to_end(response.headers(), out.headers_mut());
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Some(protocol) = response.headers().get(header::UPGRADE) {
            out.headers_mut().insert(header::UPGRADE, protocol.clone());
        }
        return Ok(out);
    }
    let (parts, body) = response.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    k8s_proxy::copy_end_to_end(&parts.headers, out.headers_mut());
    Ok(out)
}

/// The connections of the agent that other replicas hold, for the
/// connections API. A replica that does not answer is left out (and logged).
pub async fn remote_connections(state: &AppState, agent_id: i64) -> Vec<ConnectionSummary> {
    let Some(routing) = &state.routing else {
        return Vec::new();
    };
    let urls = match state.store.agent_routes(agent_id, &routing.replica_id).await {
        Ok(urls) => urls,
        Err(error) => {
            tracing::warn!(agent_id, %error, "could not look up the agent's routes");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for base in urls {
        let path = format!("{PRIVATE_CONNECTIONS}/{agent_id}");
        let request = http::Request::get(format!("{base}{path}"))
            .header(AGENT_HEADER, agent_id)
            .header(SIGNATURE_HEADER, routing.sign(agent_id, "", "GET", &path))
            .body(Body::empty())
            .expect("valid request");
        let answer = async {
            let response = routing.client.request(request).await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice::<Vec<ConnectionSummary>>(&body).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Ok(connections)) => found.extend(connections),
            Ok(Err(error)) => {
                tracing::warn!(agent_id, replica = %base, %error, "a replica did not list its connections")
            }
            Err(_) => tracing::warn!(agent_id, replica = %base, "a replica did not list its connections in 2 s"),
        }
    }
    found
}

const PRIVATE_CONNECTIONS: &str = "/-/private/agents";

/// The private API: proxied requests forwarded by other replicas, and this
/// replica's connections of an agent.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(PRIVATE_PREFIX, any(private))
        .route(&format!("{PRIVATE_PREFIX}/{{*rest}}"), any(private))
        .route(&format!("{PRIVATE_CONNECTIONS}/{{agent_id}}"), get(private_connections))
        .with_state(state)
}

async fn private_connections(State(state): State<AppState>, Path(agent_id): Path<i64>, headers: HeaderMap) -> Response {
    let Some(routing) = &state.routing else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = format!("{PRIVATE_CONNECTIONS}/{agent_id}");
    if header_str(&headers, AGENT_HEADER) != agent_id.to_string()
        || !routing.verify(header_str(&headers, SIGNATURE_HEADER), agent_id, "", "GET", &path)
    {
        return ProxyError::Unauthorized("private API requests must be signed with the replicas' shared secret".into())
            .into_response();
    }
    let connections: Vec<ConnectionSummary> = state.agents.of_agent(agent_id).iter().map(|c| c.summary()).collect();
    axum::Json(connections).into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

async fn private(State(state): State<AppState>, request: Request) -> Response {
    let Some(routing) = &state.routing else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let headers = request.headers();
    let identity = header_str(headers, IDENTITY_HEADER);
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let agent_id = header_str(headers, AGENT_HEADER).parse::<i64>().ok();
    let signed = agent_id.is_some_and(|agent_id| {
        routing.verify(
            header_str(headers, SIGNATURE_HEADER),
            agent_id,
            identity,
            request.method().as_str(),
            path,
        )
    });
    let Some(agent_id) = agent_id.filter(|_| signed) else {
        tracing::warn!(path, "private API request with a missing or bad signature refused");
        return ProxyError::Unauthorized(
            "private API requests must be signed with the replicas' shared secret (--private-api-secret-file)".into(),
        )
        .into_response();
    };
    let impersonation = if identity.is_empty() {
        None
    } else {
        match k8s_proxy::decode_identity(identity) {
            Ok(identity) => Some(identity),
            Err(message) => return ProxyError::BadRequest(message).into_response(),
        }
    };
    let authorized = Authorized {
        agent_id,
        impersonation,
    };
    match k8s_proxy::forward_local(&state, &authorized, request, PRIVATE_PREFIX).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(secret: &str) -> Routing {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, secret).unwrap();
        Routing::new(&file, "127.0.0.1:1".parse().unwrap(), None, &dir.path().join("tls")).unwrap()
    }

    #[tokio::test]
    async fn signatures_bind_agent_identity_method_and_path() {
        let a = routing(&"a".repeat(32));
        let signature = a.sign(7, "id", "GET", "/p?q=1");
        assert!(a.verify(&signature, 7, "id", "GET", "/p?q=1"));
        assert!(!a.verify(&signature, 8, "id", "GET", "/p?q=1"));
        assert!(!a.verify(&signature, 7, "other", "GET", "/p?q=1"));
        assert!(!a.verify(&signature, 7, "id", "DELETE", "/p?q=1"));
        assert!(!a.verify(&signature, 7, "id", "GET", "/p?q=2"));
        assert!(!a.verify("garbage", 7, "id", "GET", "/p?q=1"));
        let b = routing(&"b".repeat(32));
        assert!(!b.verify(&signature, 7, "id", "GET", "/p?q=1"), "another secret");
        let old = unix_now() - SIGNATURE_WINDOW - 5;
        let stale = format!(
            "{old}.{}",
            hex::encode(a.mac(old, 7, "id", "GET", "/p?q=1").finalize().into_bytes())
        );
        assert!(!a.verify(&stale, 7, "id", "GET", "/p?q=1"), "too old");
    }

    #[test]
    fn bad_secrets_and_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "short\n").unwrap();
        let tls = dir.path().join("tls");
        let listen = "127.0.0.1:1".parse().unwrap();
        let error = Routing::new(&file, listen, None, &tls).err().unwrap();
        assert!(error.to_string().contains("shorter than 32 bytes"), "{error}");
        std::fs::write(&file, "x".repeat(40)).unwrap();
        let error = Routing::new(&file, "0.0.0.0:8155".parse().unwrap(), None, &tls)
            .err()
            .unwrap();
        assert!(error.to_string().contains("--private-url"), "{error}");
        let ftp = url::Url::parse("ftp://kas-0:21").unwrap();
        let error = Routing::new(&file, listen, Some(&ftp), &tls).err().unwrap();
        assert!(error.to_string().contains("https:// or http://"), "{error}");
        let missing = Routing::new(&dir.path().join("nope"), listen, None, &tls)
            .err()
            .unwrap();
        assert!(missing.to_string().contains("nope"), "{missing}");
        // The default private URL is https, with a certificate from the CA.
        let routing = Routing::new(&file, listen, None, &tls).unwrap();
        assert_eq!(routing.private_url, "https://127.0.0.1:1");
        assert!(routing.acceptor.is_some());
        assert!(tls.join("private-127.0.0.1.crt").exists());
    }
}
