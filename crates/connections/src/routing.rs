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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use glagent_proto::signing::RequestSigner;
use glagent_services::cache::TtlCache;
use glagent_store::{Store, Timestamp};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::registry::{AgentRegistry, ConnectionSummary};

/// How long a route lives without a refresh.
const ROUTE_TTL: Duration = Duration::from_secs(30);
/// How often a replica refreshes its routes.
const ROUTE_REFRESH: Duration = Duration::from_secs(10);

/// Header of a private request: the agent it is for.
pub const AGENT_HEADER: &str = "x-glagent-route-agent";
/// Header of a private request: the identity decided, encoded as between
/// kas and agentk (`glagent_proto::forwarding::encode_identity`).
pub const IDENTITY_HEADER: &str = "x-glagent-route-identity";
/// Header of a private request: `<unix time>.<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-glagent-route-signature";

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
    #[error("TLS for the private API: {0}")]
    Tls(String),
}

/// The private URL other replicas reach this one at: `--private-url`, or
/// `https://<listen address>` when that is a specific address.
pub fn private_url(listen: std::net::SocketAddr, given: Option<&url::Url>) -> Result<url::Url, RoutingError> {
    let url = match given {
        Some(url) => url.clone(),
        None if listen.ip().is_unspecified() => return Err(RoutingError::NoUrl(listen)),
        None => url::Url::parse(&format!("https://{listen}")).map_err(|e| RoutingError::BadUrl(e.to_string()))?,
    };
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(RoutingError::BadUrl(url.to_string()));
    }
    Ok(url)
}

/// This replica's place among the replicas: its id and private URL, the
/// shared secret that signs private requests, the client that sends them,
/// and the routes found recently.
pub struct Routing {
    /// Random per process.
    pub replica_id: String,
    pub private_url: String,
    signer: RequestSigner,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// Routes found recently, so a burst of requests costs one query (an
    /// agent found nowhere is looked up again at once).
    found: TtlCache<i64, Vec<String>>,
    /// Private URLs of replicas that refused a connection lately (died,
    /// or restarting): others holding the agent are tried first.
    unreachable: TtlCache<String, ()>,
}

/// How long a route found in the database is reused.
const FOUND_TTL: Duration = Duration::from_secs(2);
/// How long a replica that refused a connection is tried last: until its
/// routes have expired if it died.
const UNREACHABLE_TTL: Duration = ROUTE_TTL;

impl Routing {
    /// `ca_pem` is the CA the replicas share (their private certificates
    /// are issued from it).
    pub fn new(secret_file: &std::path::Path, private_url: &url::Url, ca_pem: &str) -> Result<Routing, RoutingError> {
        let secret = std::fs::read(secret_file).map_err(|source| RoutingError::Secret {
            path: secret_file.display().to_string(),
            source,
        })?;
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 32 {
            return Err(RoutingError::ShortSecret(secret_file.display().to_string()));
        }
        let tls_error = |e: &dyn std::fmt::Display| RoutingError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| tls_error(&e))?;
            roots.add(cert).map_err(|e| tls_error(&e))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&e))?
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
            signer: RequestSigner::new(secret),
            client,
            found: TtlCache::new(FOUND_TTL),
            unreachable: TtlCache::new(UNREACHABLE_TTL),
        })
    }

    /// The client for private requests to other replicas.
    pub fn client(&self) -> &Client<hyper_rustls::HttpsConnector<HttpConnector>, Body> {
        &self.client
    }

    /// The signature of a private request.
    pub fn sign(&self, agent_id: i64, identity: &str, method: &str, path: &str) -> String {
        self.signer.sign(agent_id, identity, method, path)
    }

    /// Whether a private request was signed with the shared secret, for
    /// exactly this agent, identity, method and path, in the last minute.
    pub fn verify(&self, signature: &str, agent_id: i64, identity: &str, method: &str, path: &str) -> bool {
        self.signer.verify(signature, agent_id, identity, method, path)
    }

    /// Records that this replica holds a connection of the agent.
    pub async fn announce(&self, store: &Store, agent_id: i64) {
        let expires_at = Timestamp::from_now(ROUTE_TTL);
        if let Err(error) = store
            .put_agent_route(agent_id, &self.replica_id, &self.private_url, expires_at)
            .await
        {
            tracing::warn!(agent_id, %error, "could not record the agent's route");
        }
    }

    /// Withdraws the route once this replica holds no connection of the agent.
    pub async fn withdraw(&self, store: &Store, registry: &AgentRegistry, agent_id: i64) {
        if !registry.of_agent(agent_id).is_empty() {
            return;
        }
        if let Err(error) = store.delete_agent_routes(&self.replica_id, Some(agent_id)).await {
            tracing::warn!(agent_id, %error, "could not withdraw the agent's route");
        }
    }

    /// Refreshes this replica's routes until the process ends: one statement
    /// for all of them, and a fresh record for each agent only when the rows
    /// do not match the agents held here (a write that failed earlier).
    /// Routes of replicas that died more than an hour ago are deleted on the
    /// way.
    pub async fn refresh_forever(&self, store: &Store, registry: &AgentRegistry) {
        let mut tick = tokio::time::interval(ROUTE_REFRESH);
        loop {
            tick.tick().await;
            let mut agents = registry.agent_ids();
            agents.dedup();
            let expires_at = Timestamp::from_now(ROUTE_TTL);
            let forget_before = Timestamp::before_now(Duration::from_secs(3600));
            match store
                .refresh_agent_routes(&self.replica_id, expires_at, forget_before)
                .await
            {
                Ok(refreshed) if refreshed as usize == agents.len() => {}
                Ok(_) => {
                    // A write failed earlier: rows are missing, or left for
                    // agents gone from here. Start this replica's rows afresh.
                    self.withdraw_all(store).await;
                    for agent_id in agents {
                        self.announce(store, agent_id).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "could not refresh this replica's agent routes"),
            }
        }
    }

    /// Withdraws every route of this replica (at shutdown).
    pub async fn withdraw_all(&self, store: &Store) {
        if let Err(error) = store.delete_agent_routes(&self.replica_id, None).await {
            tracing::warn!(%error, "could not withdraw this replica's routes");
        }
    }

    /// The private URL of a replica holding a connection of the agent, if any.
    pub async fn find(&self, store: &Store, agent_id: i64) -> glagent_store::Result<Option<String>> {
        let urls = match self.found.get(&agent_id) {
            Some(urls) => urls,
            None => {
                let urls = store.agent_routes(agent_id, &self.replica_id).await?;
                if !urls.is_empty() {
                    self.found.insert(agent_id, urls.clone());
                }
                urls
            }
        };
        // A replica that refused a connection lately only if no other
        // holds the agent (it may be back, with the agent).
        let reachable: Vec<&String> = urls.iter().filter(|u| self.unreachable.get(*u).is_none()).collect();
        let choice = match reachable.as_slice() {
            [] => urls.get(rand::random_range(0..urls.len().max(1))),
            some => Some(some[rand::random_range(0..some.len())]),
        };
        Ok(choice.cloned())
    }

    /// Forgets what was found for the agent (its replica did not answer).
    pub fn forget(&self, agent_id: i64) {
        self.found.remove(&agent_id);
    }

    /// The replica at `url` refused a connection: others holding an
    /// agent are tried before it until its routes would have expired.
    pub fn unreachable(&self, agent_id: i64, url: &str) {
        self.forget(agent_id);
        self.unreachable.insert(url.to_string(), ());
    }

    /// The connections of the agent that other replicas hold, for the
    /// connections API. A replica that does not answer is left out (and
    /// logged).
    pub async fn remote_connections(&self, store: &Store, agent_id: i64) -> Vec<ConnectionSummary> {
        let urls = match store.agent_routes(agent_id, &self.replica_id).await {
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
                .header(SIGNATURE_HEADER, self.sign(agent_id, "", "GET", &path))
                .body(Body::empty())
                .expect("valid request");
            let answer = async {
                let response = self.client.request(request).await.map_err(|e| e.to_string())?;
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
}

/// The header's value, or "" when it is missing or not text.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

const PRIVATE_CONNECTIONS: &str = "/-/private/agents";

/// The private API's connections listing: this replica's connections of an
/// agent, for the replica that answers the connections API.
pub fn private_router(registry: Arc<AgentRegistry>, routing: Arc<Routing>) -> Router {
    Router::new()
        .route(&format!("{PRIVATE_CONNECTIONS}/{{agent_id}}"), get(private_connections))
        .with_state((registry, routing))
}

async fn private_connections(
    State((registry, routing)): State<(Arc<AgentRegistry>, Arc<Routing>)>,
    Path(agent_id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{PRIVATE_CONNECTIONS}/{agent_id}");
    if header_str(&headers, AGENT_HEADER) != agent_id.to_string()
        || !routing.verify(header_str(&headers, SIGNATURE_HEADER), agent_id, "", "GET", &path)
    {
        return (
            StatusCode::UNAUTHORIZED,
            "private API requests must be signed with the replicas' shared secret\n",
        )
            .into_response();
    }
    let connections: Vec<ConnectionSummary> = registry.of_agent(agent_id).iter().map(|c| c.summary()).collect();
    axum::Json(connections).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(secret: &str) -> Routing {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, secret).unwrap();
        let url = private_url("127.0.0.1:1".parse().unwrap(), None).unwrap();
        Routing::new(&file, &url, "").unwrap()
    }

    #[tokio::test]
    async fn replicas_sign_with_the_secret_of_their_file() {
        let a = routing(&"a".repeat(32));
        let signature = a.sign(7, "id", "GET", "/p?q=1");
        assert!(a.verify(&signature, 7, "id", "GET", "/p?q=1"));
        assert!(!routing(&"b".repeat(32)).verify(&signature, 7, "id", "GET", "/p?q=1"));
    }

    #[test]
    fn bad_secrets_and_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "short\n").unwrap();
        let listen = "127.0.0.1:1".parse().unwrap();
        let url = private_url(listen, None).unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:1/", "https by default");
        let error = Routing::new(&file, &url, "").err().unwrap();
        assert!(error.to_string().contains("shorter than 32 bytes"), "{error}");
        std::fs::write(&file, "x".repeat(40)).unwrap();
        let error = private_url("0.0.0.0:8155".parse().unwrap(), None).unwrap_err();
        assert!(error.to_string().contains("--private-url"), "{error}");
        let ftp = url::Url::parse("ftp://kas-0:21").unwrap();
        let error = private_url(listen, Some(&ftp)).unwrap_err();
        assert!(error.to_string().contains("https:// or http://"), "{error}");
        let missing = Routing::new(&dir.path().join("nope"), &url, "").err().unwrap();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let routing = Routing::new(&file, &url, "").unwrap();
        assert_eq!(routing.private_url, "https://127.0.0.1:1");
    }
}
