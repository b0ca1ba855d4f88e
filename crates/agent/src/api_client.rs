//! The agent's HTTP client for proxied Kubernetes API requests.
//!
//! Two pools, both with the agent's credentials (token files are re-read
//! as they rotate) and TCP_NODELAY:
//! - requests that end (GET, LIST, apply, delete...) share HTTP/2
//!   connections, negotiated with ALPN (HTTP/1.1 if the server lacks h2):
//!   a burst of requests costs no new TLS handshakes;
//! - watches and followed logs get HTTP/1.1 connections of their own. A
//!   watch never ends, so on a shared HTTP/2 connection it would hold one of
//!   the server's concurrent-stream slots (250 by default in Go) for good,
//!   and a client that stops reading would pin flow-control window on a
//!   connection everyone uses. On its own connection a stalled watch only
//!   fills its own TCP buffers. HTTP upgrades (exec, attach, port-forward)
//!   go there too: HTTP/2 has no upgrade, and a switched connection leaves
//!   the pool with its request (the `upgrade` module takes it over).

use std::time::Duration;

use glagent_proto::forwarding::upgrade_protocol;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ConfigExt};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

type Service = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("Kubernetes client configuration: {0}")]
    Config(#[from] kube::Error),
    #[error("the kubeconfig's proxy-url {0} is not supported: use an http:// proxy")]
    Proxy(String),
    #[error("TLS server name {name:?}: {source}")]
    ServerName {
        name: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

#[derive(Clone)]
pub struct ApiClient {
    short: Service,
    streaming: Service,
}

/// Which pool serves a request.
#[derive(Debug, PartialEq, Eq)]
enum Pool {
    Short,
    Streaming,
}

impl ApiClient {
    pub fn new(config: &kube::Config) -> Result<Self, ApiClientError> {
        Ok(ApiClient {
            short: service(config, true)?,
            streaming: service(config, false)?,
        })
    }

    /// Sends a request through the pool that suits it. For an upgrade
    /// request (`Connection: Upgrade`), a `101` answer carries the switched
    /// connection: take it with `hyper::upgrade::on`.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let service = match pool(request.uri(), request.headers()) {
            Pool::Short => self.short.clone(),
            Pool::Streaming => self.streaming.clone(),
        };
        service.oneshot(request).await
    }
}

/// Watches (`?watch=true`, `/watch/` paths), followed logs and upgrades
/// are streams.
fn pool(uri: &Uri, headers: &HeaderMap) -> Pool {
    if upgrade_protocol(headers).is_some() {
        return Pool::Streaming;
    }
    // `/api/<version>/watch/...` and `/apis/<group>/<version>/watch/...`.
    let mut segments = uri.path().split('/').skip(1);
    let watch_path = match segments.next() {
        Some("api") => segments.nth(1) == Some("watch"),
        Some("apis") => segments.nth(2) == Some("watch"),
        _ => false,
    };
    if watch_path {
        return Pool::Streaming;
    }
    let streaming = uri.query().unwrap_or_default().split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        matches!(key, "watch" | "follow") && matches!(value, "" | "1" | "true" | "True")
    });
    if streaming { Pool::Streaming } else { Pool::Short }
}

fn service(config: &kube::Config, http2: bool) -> Result<Service, ApiClientError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    match &config.proxy_url {
        None => with_tls(config, http, http2),
        Some(proxy) if proxy.scheme_str() == Some("http") => {
            let mut tunnel = Tunnel::new(proxy.clone(), http);
            if let Some(authorization) = proxy_authorization(proxy) {
                tunnel = tunnel.with_auth(authorization);
            }
            with_tls(config, tunnel, http2)
        }
        Some(proxy) => Err(ApiClientError::Proxy(proxy.to_string())),
    }
}

/// `Proxy-Authorization` for credentials in the proxy URL (`user:pass@`).
fn proxy_authorization(proxy: &Uri) -> Option<HeaderValue> {
    use base64::Engine;
    let (userinfo, _) = proxy.authority()?.as_str().split_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let credentials = format!("{}:{}", decode(user), decode(password));
    let mut value = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn with_tls<C>(config: &kube::Config, connector: C, http2: bool) -> Result<Service, ApiClientError>
where
    C: tower::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    let tls = config.rustls_client_config()?;
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let server_name =
            rustls::pki_types::ServerName::try_from(name.clone()).map_err(|source| ApiClientError::ServerName {
                name: name.clone(),
                source,
            })?;
        builder = builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(server_name));
    }
    let https = if http2 {
        builder.enable_all_versions().wrap_connector(connector)
    } else {
        builder.enable_http1().wrap_connector(connector)
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90));
    if http2 {
        client
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .http2_max_concurrent_reset_streams(1024);
    }
    let client = client.build::<_, Body>(https);
    let stack = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(client);
    Ok(BoxCloneSyncService::new(stack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_and_followed_logs_get_their_own_connections() {
        let cases = [
            ("/api/v1/namespaces/a/configmaps", Pool::Short),
            ("/api/v1/namespaces/a/configmaps?watch=1", Pool::Streaming),
            (
                "/api/v1/namespaces/a/configmaps?labelSelector=x&watch=true",
                Pool::Streaming,
            ),
            ("/api/v1/namespaces/a/configmaps?watch=false", Pool::Short),
            ("/api/v1/namespaces/a/configmaps?allowWatchBookmarks=true", Pool::Short),
            ("/api/v1/watch/namespaces/a/pods", Pool::Streaming),
            ("/apis/apps/v1/watch/deployments", Pool::Streaming),
            (
                "/api/v1/namespaces/a/pods/p/log?follow=true&container=c",
                Pool::Streaming,
            ),
            ("/api/v1/namespaces/a/pods/p/log?container=c", Pool::Short),
            ("/api/v1/namespaces/watch/configmaps", Pool::Short),
            ("/apis/apps/v1/namespaces/watch/deployments", Pool::Short),
        ];
        for (uri, expected) in cases {
            assert_eq!(pool(&uri.parse().unwrap(), &HeaderMap::new()), expected, "{uri}");
        }
    }

    #[test]
    fn upgrades_get_their_own_connections() {
        let exec = "/api/v1/namespaces/a/pods/p/exec?command=sh".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(
            pool(&exec, &headers),
            Pool::Short,
            "Upgrade without Connection: Upgrade"
        );
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
        assert_eq!(pool(&exec, &headers), Pool::Streaming);
    }
}
