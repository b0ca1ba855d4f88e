//! HTTP upgrades through the proxy (exec, attach, port-forward): agentk
//! opens its own HTTP/1.1 connection to the API server, sends the upgrade
//! request with its credentials (and the imposed identity), and once the
//! server switches protocols, carries bytes both ways between that
//! connection and the HTTP/2 stream from kas.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use glagent_proto::{Impersonation, UPGRADE_STATUS_HEADER};
use kube::client::ConfigExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::AgentState;

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The bearer token of the agent's own identity, if it uses one.
fn bearer_token(config: &kube::Config) -> Result<Option<String>, String> {
    use secrecy::ExposeSecret;
    if let Some(token) = &config.auth_info.token {
        return Ok(Some(token.expose_secret().to_string()));
    }
    if let Some(file) = &config.auth_info.token_file {
        let token = std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?;
        return Ok(Some(token.trim().to_string()));
    }
    Ok(None)
}

async fn connect(config: &kube::Config) -> Result<Box<dyn Io>, String> {
    let uri = &config.cluster_url;
    let host = uri
        .host()
        .ok_or("the cluster URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to the API server {host}:{port}: {e}"))?;
    if !https {
        return Ok(Box::new(tcp));
    }
    let mut tls = config
        .rustls_client_config()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(config.tls_server_name.clone().unwrap_or(host.clone()))
        .map_err(|e| format!("server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with the API server: {e}"))?;
    Ok(Box::new(stream))
}

fn failure(message: String) -> Response {
    crate::k8s_proxy::status(StatusCode::BAD_GATEWAY, "ServiceUnavailable", message)
}

/// Performs an upgrade request; the answer's body is the server's side.
pub async fn perform(
    state: Arc<AgentState>,
    method: &http::Method,
    path_and_query: &str,
    protocol: &str,
    headers: &HeaderMap,
    imposed: Option<&Impersonation>,
    client_bytes: Body,
) -> Response {
    let config = &state.kube_config;
    let mut io = match connect(config).await {
        Ok(io) => io,
        Err(message) => return failure(message),
    };
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut head =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n");
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let skip = crate::k8s_proxy::HOP_BY_HOP.contains(&name.as_str()) || name == http::header::CONTENT_LENGTH;
        if !skip && !name.as_str().starts_with("x-glagent-") {
            forwarded.append(name.clone(), value.clone());
        }
    }
    if let Some(identity) = imposed {
        crate::k8s_proxy::impersonation_headers(identity, &mut forwarded);
    }
    match bearer_token(config) {
        Ok(Some(token)) => head.push_str(&format!("Authorization: Bearer {token}\r\n")),
        Ok(None) => {}
        Err(message) => return failure(message),
    }
    for (name, value) in &forwarded {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    if let Err(error) = io.write_all(head.as_bytes()).await {
        return failure(format!("sending the upgrade request: {error}"));
    }
    // Read the response head; bytes after it belong to the new protocol.
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) => return failure("the API server closed the connection".into()),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) => return failure(format!("reading the upgrade response: {error}")),
        }
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > 64 * 1024 {
            return failure("the API server's response head is too large".into());
        }
    };
    let text = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
            && !matches!(
                name.as_str(),
                "connection" | "upgrade" | "content-length" | "transfer-encoding"
            )
        {
            response.headers_mut().append(name, value);
        }
    }
    let leftover = Bytes::copy_from_slice(&buffer[head_end..]);
    if status != 101 {
        // A refusal: an ordinary response on a connection the server keeps
        // open, so read exactly its body (Go's server sends a length).
        let length = text
            .split("\r\n")
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        let mut body = leftover.to_vec();
        if let Some(length) = length {
            while body.len() < length {
                let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
                match io.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            body.truncate(length);
        }
        *response.body_mut() = Body::from(body);
        return response;
    }
    let (read_half, mut write_half) = tokio::io::split(io);
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(UPGRADE_STATUS_HEADER, http::HeaderValue::from_static("101"));
    tokio::spawn(async move {
        let mut from_kas = client_bytes.into_data_stream();
        while let Some(Ok(chunk)) = from_kas.next().await {
            if write_half.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    });
    // The server's bytes: whatever followed the head, then the rest.
    let rest = futures_util::stream::unfold((read_half, Some(leftover)), |(mut reader, first)| async move {
        if let Some(first) = first.filter(|b| !b.is_empty()) {
            return Some((Ok::<_, std::io::Error>(first), (reader, None)));
        }
        let mut chunk = vec![0u8; 32 * 1024];
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(Bytes::from(chunk)), (reader, None)))
            }
        }
    });
    *response.body_mut() = Body::from_stream(rest);
    response
}
