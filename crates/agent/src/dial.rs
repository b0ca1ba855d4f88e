//! Dialling kas: DNS, TCP, an optional HTTP CONNECT proxy, TLS, and the
//! upgrade: to a WebSocket for `wss://`/`ws://`, to the raw tunnel for
//! `grpcs://`/`grpc://`. Each step fails with its own error, worded for the
//! person reading the log.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use glagent_proto::{AGENT_PATH, CONNECTION_ID_HEADER, REPLACES_HEADER, WS_SUBPROTOCOL};
use glagent_tunnel::WsIo;
use glagent_tunnel::proxy::{Proxy, proxy_from_env};
use glagent_tunnel::raw::UpgradeError;
use http::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A byte stream to kas, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How the tunnel's bytes travel once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `wss://`, `ws://`: binary WebSocket messages, through anything that
    /// passes HTTP (Ingresses, path-routing proxies).
    WebSocket,
    /// `grpcs://`, `grpc://`: the connection itself after an HTTP/1.1
    /// upgrade, to kas's port directly (8150 by convention).
    Raw,
}

/// The parsed `--kas-address`.
#[derive(Clone, Debug)]
pub struct KasAddress {
    pub url: url::Url,
    pub tls: bool,
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl KasAddress {
    pub fn parse(text: &str) -> Result<KasAddress, String> {
        let url = url::Url::parse(text).map_err(|e| format!("--kas-address {text:?} is not a URL: {e}"))?;
        let (tls, transport) = match url.scheme() {
            "wss" => (true, Transport::WebSocket),
            "ws" => (false, Transport::WebSocket),
            "grpcs" => (true, Transport::Raw),
            "grpc" => (false, Transport::Raw),
            other => {
                return Err(format!(
                    "--kas-address {text}: unsupported scheme {other}://; use wss:// (or ws:// without TLS), or grpcs:// (grpc:// without TLS) for kas's agent port"
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("--kas-address {text} has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        // As upstream: without a port, 443 with TLS and 80 without, also for grpc(s).
        let port = url.port().unwrap_or(if tls { 443 } else { 80 });
        Ok(KasAddress {
            url,
            tls,
            transport,
            host,
            port,
        })
    }
}

/// Everything needed to dial, fixed at start.
pub struct Dialer {
    pub address: KasAddress,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub connection_id: u64,
    /// The local address to connect from (agentk: any). The fleet generator
    /// spreads its connections over several loopback addresses, each with
    /// its own ~28,000 ephemeral ports.
    pub source: Option<std::net::IpAddr>,
}

#[derive(Debug, Error)]
pub enum DialError {
    #[error("proxy settings are invalid: {0}")]
    ProxyConfig(String),
    #[error("DNS lookup of {host} failed: {source}")]
    Dns { host: String, source: io::Error },
    #[error("TCP connection to {addr} failed: {}", tcp_words(.source))]
    Tcp { addr: String, source: io::Error },
    #[error("proxy {proxy} refused to open a tunnel to {target}: {status}")]
    ProxyRefused {
        proxy: String,
        target: String,
        status: String,
    },
    #[error("proxy {proxy} closed or broke the connection: {source}")]
    ProxyIo { proxy: String, source: io::Error },
    #[error("TLS handshake with {host} failed: {}", tls_words(.source))]
    Tls { host: String, source: io::Error },
    #[error(
        "kas rejected the agent token (401 Unauthorized: {message}): the token is unknown or revoked; create a new token and update the agent's Secret"
    )]
    Unauthorized { message: String },
    #[error("kas answered {status} instead of accepting the agent: {body}")]
    Http { status: u16, body: String },
    #[error("WebSocket handshake with kas failed: {0}")]
    WebSocket(String),
    #[error("upgrading the connection to kas's tunnel failed: {0}")]
    Upgrade(String),
    #[error("{step} timed out after {STEP_TIMEOUT:?}")]
    Timeout { step: &'static str },
}

fn tcp_words(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens there: is kas running, and is the port right?)".into()
        }
        io::ErrorKind::TimedOut => "timed out (a firewall may drop the traffic)".into(),
        _ => error.to_string(),
    }
}

fn tls_words(error: &io::Error) -> String {
    let inner = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(cert)) => format!(
            "certificate verification failed ({cert:?}): kas's certificate is not trusted; if kas uses a self-signed CA, pass it with --kas-ca-cert-file"
        ),
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}

async fn step<T>(name: &'static str, future: impl std::future::Future<Output = T>) -> Result<T, DialError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| DialError::Timeout { step: name })
}

/// A TCP connection to `addr`, from `source` when given.
async fn connect_from(source: Option<std::net::IpAddr>, addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

impl Dialer {
    /// Connects and upgrades; the result carries the tunnel's bytes.
    pub async fn dial(&self, token: &str, user_agent: &str) -> Result<Box<dyn Io>, DialError> {
        self.connect(token, user_agent, false).await
    }

    /// As [`Dialer::dial`], for a new token: the connection replaces this
    /// process's connections made with the old one (kas gives them no new
    /// work).
    pub async fn dial_replacing(&self, token: &str, user_agent: &str) -> Result<Box<dyn Io>, DialError> {
        self.connect(token, user_agent, true).await
    }

    async fn connect(&self, token: &str, user_agent: &str, replaces: bool) -> Result<Box<dyn Io>, DialError> {
        let address = &self.address;
        let proxy = proxy_from_env(address.tls, &address.host, address.port).map_err(DialError::ProxyConfig)?;
        let (host, port) = match &proxy {
            Some(p) => (p.host.clone(), p.port),
            None => (address.host.clone(), address.port),
        };
        let addrs: Vec<_> = step("DNS lookup", tokio::net::lookup_host((host.as_str(), port)))
            .await?
            .map_err(|source| DialError::Dns {
                host: host.clone(),
                source,
            })?
            .collect();
        let mut last_error = None;
        let mut stream = None;
        for addr in &addrs {
            match step("TCP connect", connect_from(self.source, *addr)).await? {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some((addr.to_string(), e)),
            }
        }
        let mut stream = match (stream, last_error) {
            (Some(s), _) => s,
            (None, Some((addr, source))) => return Err(DialError::Tcp { addr, source }),
            (None, None) => {
                return Err(DialError::Dns {
                    host,
                    source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(proxy) = &proxy {
            step(
                "proxy CONNECT",
                connect_through(&mut stream, proxy, &address.host, address.port),
            )
            .await??;
        }
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => {
                let tls = step("TLS handshake", connector.connect(name.clone(), stream))
                    .await?
                    .map_err(|source| DialError::Tls {
                        host: address.host.clone(),
                        source,
                    })?;
                Box::new(tls)
            }
            None => Box::new(stream),
        };
        match address.transport {
            Transport::WebSocket => self.websocket(io, token, user_agent, replaces).await,
            Transport::Raw => self.raw(io, token, user_agent, replaces).await,
        }
    }

    fn authorization(token: &str) -> Result<HeaderValue, String> {
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the agent token contains characters not allowed in a header".to_string())
    }

    fn refusal(status: u16, body: String) -> DialError {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        if status == 401 {
            DialError::Unauthorized { message }
        } else {
            DialError::Http { status, body: message }
        }
    }

    async fn raw(
        &self,
        io: Box<dyn Io>,
        token: &str,
        user_agent: &str,
        replaces: bool,
    ) -> Result<Box<dyn Io>, DialError> {
        let address = &self.address;
        let host = if address.host.contains(':') {
            format!("[{}]:{}", address.host, address.port)
        } else {
            format!("{}:{}", address.host, address.port)
        };
        let mut request = http::Request::get(AGENT_PATH)
            .header(http::header::HOST, host)
            .header(
                http::header::AUTHORIZATION,
                Self::authorization(token).map_err(DialError::Upgrade)?,
            )
            .header(CONNECTION_ID_HEADER, self.connection_id.to_string());
        if replaces {
            request = request.header(REPLACES_HEADER, "true");
        }
        if let Ok(value) = HeaderValue::from_str(user_agent) {
            request = request.header(http::header::USER_AGENT, value);
        }
        let mut request = request.body(()).map_err(|e| DialError::Upgrade(e.to_string()))?;
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let (_, raw) = step("tunnel upgrade", glagent_tunnel::raw::upgrade(io, request))
            .await?
            .map_err(|error| match error {
                UpgradeError::Refused { status, body, .. } => Self::refusal(status.as_u16(), body),
                other => DialError::Upgrade(other.to_string()),
            })?;
        Ok(Box::new(raw))
    }

    async fn websocket(
        &self,
        io: Box<dyn Io>,
        token: &str,
        user_agent: &str,
        replaces: bool,
    ) -> Result<Box<dyn Io>, DialError> {
        let address = &self.address;
        let mut request = address
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| DialError::WebSocket(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(WS_SUBPROTOCOL),
        );
        headers.insert(
            http::header::AUTHORIZATION,
            Self::authorization(token).map_err(DialError::WebSocket)?,
        );
        if let Ok(value) = HeaderValue::from_str(user_agent) {
            headers.insert(http::header::USER_AGENT, value);
        }
        headers.insert(
            HeaderName::from_static(CONNECTION_ID_HEADER),
            HeaderValue::from_str(&self.connection_id.to_string()).expect("digits"),
        );
        if replaces {
            headers.insert(
                HeaderName::from_static(REPLACES_HEADER),
                HeaderValue::from_static("true"),
            );
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let config = glagent_tunnel::tunnel_config();
        let (ws, _) = step(
            "WebSocket upgrade",
            tokio_tungstenite::client_async_with_config(request, io, Some(config)),
        )
        .await?
        .map_err(|error| match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Self::refusal(response.status().as_u16(), body)
            }
            other => DialError::WebSocket(other.to_string()),
        })?;
        Ok(Box::new(WsIo::new(ws)))
    }
}

/// Asks an HTTP proxy to open a tunnel with CONNECT.
async fn connect_through(stream: &mut TcpStream, proxy: &Proxy, host: &str, port: u16) -> Result<(), DialError> {
    let proxy_name = format!("{}:{}", proxy.host, proxy.port);
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    let io_error = |source| DialError::ProxyIo {
        proxy: proxy_name.clone(),
        source,
    };
    stream.write_all(request.as_bytes()).await.map_err(io_error)?;
    // Read the response head byte by byte: nothing after it may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(DialError::ProxyRefused {
                proxy: proxy_name,
                target,
                status: "response head too large".into(),
            });
        }
        let byte = stream.read_u8().await.map_err(|source| DialError::ProxyIo {
            proxy: proxy_name.clone(),
            source,
        })?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default().to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(DialError::ProxyRefused {
            proxy: proxy_name,
            target,
            status: status_line,
        });
    }
    Ok(())
}

/// The TLS client configuration: the system's roots plus `--kas-ca-cert-file`.
pub fn tls_connector(extra_ca_pem: Option<&[u8]>) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(cert?)?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "--kas-ca-cert-file holds no PEM certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let wss = KasAddress::parse("wss://kas.example.com/-/kubernetes-agent/").unwrap();
        assert!(wss.tls);
        assert_eq!((wss.host.as_str(), wss.port), ("kas.example.com", 443));
        let ws = KasAddress::parse("ws://127.0.0.1:8080/-/kubernetes-agent/").unwrap();
        assert_eq!((ws.tls, ws.port, ws.transport), (false, 8080, Transport::WebSocket));
        let grpcs = KasAddress::parse("grpcs://kas:8150").unwrap();
        assert_eq!((grpcs.tls, grpcs.port, grpcs.transport), (true, 8150, Transport::Raw));
        // Upstream's defaults when the port is absent; the path is ignored.
        assert_eq!(KasAddress::parse("grpcs://kas/-/kubernetes-agent/").unwrap().port, 443);
        let grpc = KasAddress::parse("grpc://kas").unwrap();
        assert_eq!((grpc.tls, grpc.port, grpc.transport), (false, 80, Transport::Raw));
        assert!(
            KasAddress::parse("https://kas")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(KasAddress::parse("kas.example.com").is_err());
    }
}
