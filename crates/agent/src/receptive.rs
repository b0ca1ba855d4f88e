//! The receptive agent's listener (`--api-listen-address`): kas dials it
//! when the cluster cannot reach kas. kas sends one HTTP/1.1 request,
//! `GET /-/kubernetes-agent/` with `Upgrade: glagent-tunnel` and its JWT as
//! `Authorization: Bearer` (or, with `--api-mtls`, a client certificate
//! checked in the TLS handshake). A JWT that does not verify, a certificate
//! that does not chain, or any other request is refused before any work is
//! done, with a log line that says why. An accepted connection answers
//! `101` with the agent token (kas checks it belongs to the agent it meant
//! to dial), then carries the same tunnel as a connection the agent dials.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use glagent_proto::jwt::Verifier;
use glagent_proto::{AGENT_PATH, AGENT_TOKEN_HEADER, CONNECTION_ID_HEADER, RAW_TUNNEL_PROTOCOL};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::TokenSource;
use crate::args::Args;
use crate::state::AgentState;

/// How kas proves who it is.
struct Auth {
    /// The URL configuration's public key (`--api-jwt-file`).
    jwt: Option<Verifier>,
    /// kas's client certificate was verified by the TLS handshake.
    mtls: bool,
}

/// The listener, bound and checked at start.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    auth: Arc<Auth>,
}

fn bind_address(network: &str, text: &str) -> Result<SocketAddr> {
    let full = match (text.strip_prefix(':'), network) {
        (Some(port), "tcp" | "tcp4") => format!("0.0.0.0:{port}"),
        (Some(port), "tcp6") => format!("[::]:{port}"),
        (None, "tcp" | "tcp4" | "tcp6") => text.to_string(),
        (_, other) => anyhow::bail!("--api-listen-network {other:?} is not supported: use tcp, tcp4 or tcp6"),
    };
    let address: SocketAddr = full
        .parse()
        .with_context(|| format!("--api-listen-address {text:?} must look like :8082 or 10.0.0.5:8082"))?;
    match (network, address) {
        ("tcp4", SocketAddr::V6(_)) => anyhow::bail!("--api-listen-address {text} is IPv6 but the network is tcp4"),
        ("tcp6", SocketAddr::V4(_)) => anyhow::bail!("--api-listen-address {text} is IPv4 but the network is tcp6"),
        _ => Ok(address),
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
}

fn tls_acceptor(args: &Args) -> Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&args.api_cert_file, &args.api_key_file) else {
        anyhow::ensure!(
            !args.api_mtls,
            "--api-mtls needs --api-cert-file and --api-key-file: mutual TLS is TLS (kas dials grpcs://)"
        );
        return Ok(None);
    };
    let chain = rustls_pemfile::certs(&mut &read(cert, "--api-cert-file")?[..])
        .collect::<Result<Vec<_>, _>>()
        .context("--api-cert-file is not PEM")?;
    anyhow::ensure!(!chain.is_empty(), "--api-cert-file holds no PEM certificate");
    let key = rustls_pemfile::private_key(&mut &read(key, "--api-key-file")?[..])
        .context("--api-key-file is not PEM")?
        .context("--api-key-file holds no PEM private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match (&args.api_mtls, &args.api_client_ca_cert_file) {
        (true, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &read(ca, "--api-client-ca-cert-file")?[..]) {
                roots
                    .add(cert.context("--api-client-ca-cert-file is not PEM")?)
                    .context("--api-client-ca-cert-file")?;
            }
            anyhow::ensure!(!roots.is_empty(), "--api-client-ca-cert-file holds no PEM certificate");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("the client CA of --api-client-ca-cert-file")?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("--api-cert-file and --api-key-file do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

impl Listener {
    /// The listener the flags ask for, or `None` for an agent that only dials.
    pub async fn from_args(args: &Args) -> Result<Option<Listener>> {
        let Some(text) = &args.api_listen_address else {
            anyhow::ensure!(
                args.api_jwt_file.is_none() && !args.api_mtls && args.api_cert_file.is_none(),
                "--api-jwt-file, --api-mtls and --api-cert-file configure the receptive listener: set --api-listen-address too"
            );
            return Ok(None);
        };
        let address = bind_address(&args.api_listen_network, text)?;
        let jwt = match &args.api_jwt_file {
            Some(path) => {
                let text = String::from_utf8(read(path, "--api-jwt-file")?)
                    .with_context(|| format!("--api-jwt-file {} is not text", path.display()))?;
                Some(Verifier::from_base64(&text).with_context(|| {
                    format!(
                        "--api-jwt-file {}: put the URL configuration's public_key there",
                        path.display()
                    )
                })?)
            }
            None => None,
        };
        anyhow::ensure!(
            jwt.is_some() || args.api_mtls,
            "the receptive listener needs --api-jwt-file (the URL configuration's public_key) or --api-mtls, so that only kas can connect"
        );
        let tls = tls_acceptor(args)?;
        let tcp = TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} for kas (--api-listen-address)"))?;
        Ok(Some(Listener {
            tcp,
            tls,
            auth: Arc::new(Auth {
                jwt,
                mtls: args.api_mtls,
            }),
        }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts kas's connections until the process ends.
    pub(crate) async fn serve(self, token: Arc<TokenSource>, state: Arc<AgentState>) {
        state.listening.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            address = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tls = self.tls.is_some(),
            mtls = self.auth.mtls,
            jwt = self.auth.jwt.is_some(),
            "listening for kas (receptive agent)"
        );
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection from kas failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tls, auth, token, state) = (self.tls.clone(), self.auth.clone(), token.clone(), state.clone());
            tokio::spawn(async move {
                let io: Box<dyn crate::dial::Io> = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Box::new(tls),
                            Ok(Err(error)) => {
                                tracing::warn!(%peer, %error, "refused a connection from kas: the TLS handshake failed (with --api-mtls: is kas's client certificate the URL configuration's, signed by --api-client-ca-cert-file?)");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(%peer, "refused a connection from kas: no TLS handshake within 10 s");
                                return;
                            }
                        }
                    }
                    None => Box::new(stream),
                };
                let service = hyper::service::service_fn(move |request| {
                    let (auth, token, state) = (auth.clone(), token.clone(), state.clone());
                    async move { Ok::<_, std::convert::Infallible>(accept(request, peer, &auth, &token, state)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "connection from kas ended");
                }
            });
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks kas's request; on success answers `101` and serves the tunnel on
/// the upgraded connection.
fn accept(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    auth: &Auth,
    token: &TokenSource,
    state: Arc<AgentState>,
) -> Response<Full<Bytes>> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if request.uri().path() != AGENT_PATH || !upgrade.eq_ignore_ascii_case(RAW_TUNNEL_PROTOCOL) {
        tracing::warn!(%peer, path = %request.uri().path(), "refused a request: this port is for kas's tunnel only");
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "this is a receptive agent's port: kas connects with GET {AGENT_PATH} and Upgrade: {RAW_TUNNEL_PROTOCOL}"
            ),
        );
    }
    if let Some(verifier) = &auth.jwt {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, jwt)| jwt.trim());
        let Some(jwt) = bearer else {
            tracing::warn!(%peer, "refused a connection from kas: no JWT (Authorization: Bearer)");
            return refuse(StatusCode::UNAUTHORIZED, "JWT validation failed: no JWT".into());
        };
        if let Err(error) = verifier.verify(jwt, now()) {
            tracing::warn!(%peer, reason = %error, "refused a connection from kas: JWT validation failed");
            return refuse(StatusCode::UNAUTHORIZED, format!("JWT validation failed: {error}"));
        }
    }
    let agent_token = match token.read() {
        Ok(agent_token) => agent_token,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot answer kas: the agent token cannot be read");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "the agent token cannot be read".into());
        }
    };
    let Ok(token_value) = HeaderValue::from_str(&agent_token) else {
        tracing::error!("cannot answer kas: the agent token contains characters not allowed in a header");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the agent token is malformed".into());
    };
    let connection_id = HeaderValue::from_str(&state.connection_id.to_string()).expect("digits");
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                tracing::info!(%peer, "kas connected (receptive agent)");
                let outcome = crate::serve_tunnel(Box::new(TokioIo::new(upgraded)), state).await;
                tracing::warn!(%peer, cause = %outcome, "kas's connection ended; kas will dial again");
            }
            Err(error) => tracing::warn!(%peer, %error, "the upgrade of kas's connection failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static(RAW_TUNNEL_PROTOCOL));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(AGENT_TOKEN_HEADER, token_value);
    headers.insert(CONNECTION_ID_HEADER, connection_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(bind_address("tcp", ":8082").unwrap().to_string(), "0.0.0.0:8082");
        assert_eq!(bind_address("tcp6", ":8082").unwrap().to_string(), "[::]:8082");
        assert_eq!(
            bind_address("tcp", "10.0.0.5:8082").unwrap().to_string(),
            "10.0.0.5:8082"
        );
        assert!(
            bind_address("tcp4", "[::1]:8082")
                .unwrap_err()
                .to_string()
                .contains("tcp4")
        );
        assert!(
            bind_address("unix", ":8082")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(bind_address("tcp", "8082").is_err());
    }
}
