//! The agent's half of the Kubernetes API proxy: requests kas forwards under
//! `/k8s-proxy/...` are performed against the cluster's API server with the
//! agent's own credentials, impersonating the identity kas imposed, if any.
//! Responses (watches included) stream back without being buffered. An
//! upgrade request (exec, attach, port-forward) is sent the same way, and
//! [`upgrade`] takes over the connection once the server switches.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use glagent_core::identity::client_may_impersonate;
use glagent_proto::forwarding::{copy_end_to_end, decode_identity, rebase, via};
use glagent_proto::{IMPERSONATION_HEADER, Impersonation, K8S_PROXY_PATH, UPGRADE_HEADER, UPGRADE_STATUS_HEADER};
use glagent_telemetry::body::KeepUntilDone;
use glagent_telemetry::metrics::{OpenGuard, kubernetes_verb, stream_kind};
use http_body_util::BodyExt;

use crate::state::AgentState;
use crate::upgrade;

/// Kubernetes refuses request bodies above 3 MiB; leave some room.
const MAX_REQUEST_BODY: usize = 8 << 20;

/// A Kubernetes `Status` answer, which kubectl prints as it is.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = glagent_proto::kubernetes_status(code.as_u16(), reason, message);
    (code, axum::Json(body)).into_response()
}

/// The answer when the API server could not be asked, or answered nothing.
fn api_unreachable(error: impl Display) -> Response {
    tracing::warn!(%error, "Kubernetes API request failed");
    status(
        StatusCode::BAD_GATEWAY,
        "ServiceUnavailable",
        &format!("the agent could not reach the Kubernetes API: {error}"),
    )
}

pub async fn handle(State(state): State<Arc<AgentState>>, request: Request) -> Response {
    let exchange = Exchange::begin(state.clone(), &request);
    let response = perform(&state, request).await;
    exchange.respond(response)
}

/// One request from kas, counted in the agent's metrics when it has
/// ended (a watch or an upgrade when it closes).
struct Exchange {
    state: Arc<AgentState>,
    started: Instant,
    verb: &'static str,
    code: u16,
    _open: Option<OpenGuard>,
}

impl Exchange {
    fn begin(state: Arc<AgentState>, request: &Request) -> Exchange {
        let uri = request.uri();
        let path = uri.path().strip_prefix(K8S_PROXY_PATH).unwrap_or(uri.path());
        let upgrade = request.headers().contains_key(UPGRADE_HEADER);
        let verb = kubernetes_verb(request.method().as_str(), path, uri.query(), upgrade);
        let open = stream_kind(verb, uri.query()).map(|kind| state.metrics.kubernetes_stream(kind));
        Exchange {
            state,
            started: Instant::now(),
            verb,
            code: 0,
            _open: open,
        }
    }

    fn respond(mut self, response: Response) -> Response {
        self.code = match response.headers().get(UPGRADE_STATUS_HEADER) {
            Some(switched) if switched == "101" => 101,
            _ => response.status().as_u16(),
        };
        response.map(|body| Body::new(KeepUntilDone::new(body, self)))
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.state
            .metrics
            .kubernetes_request(self.verb, self.code, self.started.elapsed());
    }
}

async fn perform(state: &AgentState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let imposed = match parts
        .headers
        .get(IMPERSONATION_HEADER)
        .map(|value| decode_identity(value.as_bytes()))
        .transpose()
    {
        Ok(imposed) => imposed,
        Err(error) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("{IMPERSONATION_HEADER} from kas: {error}"),
            );
        }
    };
    if !client_may_impersonate(imposed.as_ref(), parts.headers.keys().map(HeaderName::as_str)) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "nested impersonation is not supported",
        );
    }
    let path = rebase(parts.uri.path(), parts.uri.query(), K8S_PROXY_PATH, "");
    let mut builder = http::Request::builder().method(parts.method).uri(path);
    let headers = builder.headers_mut().expect("fresh builder");
    copy_end_to_end(&parts.headers, headers);
    headers.append(header::VIA, via("1.1 glagent-agentk"));
    if let Some(identity) = &imposed {
        impersonation_headers(identity, headers);
    }
    // An upgrade request has no body of its own: kas's request body is the
    // client's side of the switched connection.
    let (api_body, client_bytes) = match parts.headers.get(UPGRADE_HEADER) {
        Some(protocol) => {
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
            (kube::client::Body::empty(), Some(body))
        }
        None => match http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => (collected.to_bytes().into(), None),
            Err(error) => {
                return status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    &format!("request body: {error}"),
                );
            }
        },
    };
    let request = match builder.body(api_body) {
        Ok(request) => request,
        Err(error) => return status(StatusCode::BAD_REQUEST, "BadRequest", &error.to_string()),
    };
    let response = match state.api.send(request).await {
        Ok(response) => response,
        Err(error) => return api_unreachable(error),
    };
    if let Some(client_bytes) = client_bytes
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return match upgrade::splice(response, client_bytes).await {
            Ok(response) => response,
            Err(error) => api_unreachable(format_args!("taking over the upgraded connection: {error}")),
        };
    }
    // Anything else, a refused upgrade included, is an ordinary answer.
    let (parts, body) = response.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, out.headers_mut());
    out
}

/// The `Impersonate-*` headers of the Kubernetes API for an identity.
pub fn impersonation_headers(identity: &Impersonation, headers: &mut HeaderMap) {
    if let Ok(user) = HeaderValue::from_str(&identity.username) {
        headers.insert("impersonate-user", user);
    }
    if let Some(uid) = identity.uid.as_deref().and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert("impersonate-uid", uid);
    }
    for group in &identity.groups {
        if let Ok(group) = HeaderValue::from_str(group) {
            headers.append("impersonate-group", group);
        }
    }
    for (key, values) in &identity.extra {
        // Extra keys go into the header name, percent-encoded (Kubernetes
        // decodes them): `agent.gitlab.com/id` -> `agent.gitlab.com%2fid`.
        let encoded: String = key
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                other => format!("%{other:02x}"),
            })
            .collect();
        let Ok(name) = HeaderName::from_bytes(format!("impersonate-extra-{encoded}").as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::TryStreamExt;
    use glagent_proto::forwarding::encode_identity;
    use glagent_test_support::connect_proxy::ConnectProxy;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn headers_for_an_identity() {
        let identity = Impersonation {
            username: "gitlab:user:alice".into(),
            uid: Some("42".into()),
            groups: vec!["gitlab:user".into(), "gitlab:project_role:3:developer".into()],
            extra: [("agent.gitlab.com/id".to_string(), vec!["7".to_string()])].into(),
        };
        let mut headers = HeaderMap::new();
        impersonation_headers(&identity, &mut headers);
        assert_eq!(headers["impersonate-user"], "gitlab:user:alice");
        assert_eq!(headers["impersonate-uid"], "42");
        assert_eq!(headers.get_all("impersonate-group").iter().count(), 2);
        assert_eq!(headers["impersonate-extra-agent.gitlab.com%2fid"], "7");
    }

    const TOKEN: &str = "agent-sa-token";
    const EXEC: &str = "/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true";
    /// The pod whose exec the stand-in API server refuses.
    const LOCKED_EXEC: &str = "/api/v1/namespaces/default/pods/locked/exec?command=sh";
    const FORBIDDEN: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}"#;

    /// The request heads a stand-in API server received.
    type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

    /// An HTTP/1.1 server on a loopback port standing in for the API
    /// server's exec endpoint: it refuses [`LOCKED_EXEC`] with a `403` and
    /// keeps the connection; anything else switches to `SPDY/3.1`, says
    /// `ready`, echoes each chunk upper-cased and says `bye` once the
    /// client half-closes.
    async fn api_server() -> (u16, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Seen::default();
        let requests = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let requests = requests.clone();
                let service = hyper::service::service_fn(move |request| answer(request, requests.clone()));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades(),
                );
            }
        });
        (port, seen)
    }

    async fn answer(
        mut request: http::Request<Incoming>,
        seen: Seen,
    ) -> Result<http::Response<Full<Bytes>>, Infallible> {
        let target = request.uri().to_string();
        seen.lock().unwrap().push((target.clone(), request.headers().clone()));
        if target == LOCKED_EXEC {
            let mut refusal = http::Response::new(Full::new(Bytes::from_static(FORBIDDEN.as_bytes())));
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            refusal
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(refusal);
        }
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgrade.await.unwrap()));
            write.write_all(b"ready\n").await.unwrap();
            let mut chunk = [0u8; 1024];
            loop {
                let n = read.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                write.write_all(&chunk[..n].to_ascii_uppercase()).await.unwrap();
            }
            write.write_all(b"bye").await.unwrap();
            write.shutdown().await.unwrap();
        });
        let mut switched = http::Response::new(Full::default());
        *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (name, value) in [
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ] {
            switched.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        Ok(switched)
    }

    /// An agent whose API server is `http://127.0.0.1:<port>`, reached with
    /// a bearer token (and through `proxy`, if given).
    fn agent(port: u16, proxy: Option<&ConnectProxy>) -> Arc<AgentState> {
        let mut config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        config.auth_info.token = Some(TOKEN.to_string().into());
        config.proxy_url = proxy.map(|proxy| proxy.url().parse().unwrap());
        Arc::new(AgentState::for_tests(&config))
    }

    fn alice() -> Impersonation {
        Impersonation {
            username: "gitlab:user:alice".into(),
            uid: None,
            groups: vec!["gitlab:user".into()],
            extra: [("agent.gitlab.com/id".to_string(), vec!["7".to_string()])].into(),
        }
    }

    /// An upgrade request as kas forwards it, with kas's own headers; the
    /// body is what `client` sends.
    fn upgrade_request(path: &str, client: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Request {
        let mut client = client;
        let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| client.poll_recv(cx)));
        http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{K8S_PROXY_PATH}{path}"))
            .version(http::Version::HTTP_2)
            .header(UPGRADE_HEADER, "SPDY/3.1")
            .header(IMPERSONATION_HEADER, encode_identity(&alice()))
            .header("x-glagent-route-identity", "e30=")
            .header("x-stream-protocol-version", "v4.channel.k8s.io")
            .body(body)
            .unwrap()
    }

    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .unwrap_or_else(|_| panic!("{what} took more than 10 s"))
    }

    async fn read_exactly(from: &mut (impl AsyncRead + Unpin), n: usize) -> String {
        let mut bytes = vec![0u8; n];
        within("reading the server's bytes", from.read_exact(&mut bytes))
            .await
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// What the end of the client's bytes does on the way to the server.
    #[derive(PartialEq)]
    enum Ending {
        /// The server sees a half-close and can still answer.
        HalfClose,
        /// A proxy on the way tears the tunnel down: the stream just ends.
        Close,
    }

    /// Runs an exec through the agent and checks what kas gets back and
    /// that bytes travel both ways; returns the head the server received.
    async fn exec_round_trip(state: Arc<AgentState>, seen: &Seen, ending: Ending) -> HeaderMap {
        let (to_server, client) = mpsc::channel(4);
        let response = within("the upgrade", handle(State(state), upgrade_request(EXEC, client))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[glagent_proto::UPGRADE_STATUS_HEADER], "101");
        assert_eq!(response.headers()["x-stream-protocol-version"], "v4.channel.k8s.io");
        assert!(
            response.headers().get(header::UPGRADE).is_none(),
            "hop-by-hop headers stay behind"
        );
        let server_bytes = TryStreamExt::map_err(response.into_body().into_data_stream(), std::io::Error::other);
        let mut from_server = tokio_util::io::StreamReader::new(server_bytes);
        assert_eq!(read_exactly(&mut from_server, 6).await, "ready\n");
        to_server.send(Ok(Bytes::from_static(b"hello"))).await.unwrap();
        assert_eq!(read_exactly(&mut from_server, 5).await, "HELLO");
        let long = "x".repeat(100_000);
        to_server.send(Ok(Bytes::from(long.clone()))).await.unwrap();
        assert_eq!(read_exactly(&mut from_server, long.len()).await, long.to_uppercase());
        // The end of kas's body half-closes the connection to the server.
        drop(to_server);
        let mut rest = String::new();
        within("the end of the server's bytes", from_server.read_to_string(&mut rest))
            .await
            .unwrap();
        if ending == Ending::HalfClose {
            assert_eq!(rest, "bye");
        }

        let (target, headers) = seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the server saw the request");
        assert_eq!(target, EXEC);
        headers
    }

    fn assert_agent_credentials_and_identity(headers: &HeaderMap) {
        assert_eq!(headers[header::AUTHORIZATION], format!("Bearer {TOKEN}"));
        assert_eq!(headers["impersonate-user"], "gitlab:user:alice");
        assert_eq!(headers["impersonate-group"], "gitlab:user");
        assert_eq!(headers["impersonate-extra-agent.gitlab.com%2fid"], "7");
        assert_eq!(headers["x-stream-protocol-version"], "v4.channel.k8s.io");
        assert_eq!(headers[header::UPGRADE], "SPDY/3.1");
        assert!(
            headers[header::CONNECTION]
                .to_str()
                .unwrap()
                .eq_ignore_ascii_case("upgrade")
        );
        assert_eq!(headers[header::VIA], "1.1 glagent-agentk");
        let own: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-glagent-"))
            .collect();
        assert!(own.is_empty(), "kas's own headers reached the API server: {own:?}");
    }

    #[tokio::test]
    async fn upgrades_go_through_the_api_client_with_its_credentials() {
        let (port, seen) = api_server().await;
        let headers = exec_round_trip(agent(port, None), &seen, Ending::HalfClose).await;
        assert_agent_credentials_and_identity(&headers);
    }

    #[tokio::test]
    async fn upgrades_go_through_the_kubeconfig_proxy() {
        let (port, seen) = api_server().await;
        let proxy = ConnectProxy::start().await;
        // The test proxy drops a tunnel when either side closes its half.
        let headers = exec_round_trip(agent(port, Some(&proxy)), &seen, Ending::Close).await;
        assert_agent_credentials_and_identity(&headers);
        assert_eq!(proxy.tunnels(), 1, "the upgrade went around the proxy");
    }

    #[tokio::test]
    async fn a_refused_upgrade_comes_back_as_it_is_and_the_next_one_works() {
        let (port, seen) = api_server().await;
        let state = agent(port, None);
        let (_to_server, client) = mpsc::channel(1);
        let response = within(
            "the refusal",
            handle(State(state.clone()), upgrade_request(LOCKED_EXEC, client)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(glagent_proto::UPGRADE_STATUS_HEADER).is_none());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = within("the refusal's body", response.into_body().collect())
            .await
            .unwrap();
        assert_eq!(body.to_bytes(), FORBIDDEN.as_bytes());
        // Nothing is left stuck: the next upgrade through the same agent works.
        exec_round_trip(state, &seen, Ending::HalfClose).await;
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_a_502_status() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (_to_server, client) = mpsc::channel(1);
        let response = within(
            "the failure",
            handle(State(agent(port, None)), upgrade_request(EXEC, client)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = within("the failure's body", response.into_body().collect())
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(status["kind"], "Status");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.contains("the agent could not reach the Kubernetes API"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn clients_may_not_impersonate_under_an_imposed_identity() {
        let (port, seen) = api_server().await;
        let (_to_server, client) = mpsc::channel(1);
        let mut request = upgrade_request(EXEC, client);
        request
            .headers_mut()
            .insert("impersonate-user", HeaderValue::from_static("system:admin"));
        let response = handle(State(agent(port, None)), request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["code"], 400);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("nested impersonation is not supported")
        );

        let (_to_server, client) = mpsc::channel(1);
        let mut request = upgrade_request(EXEC, client);
        request
            .headers_mut()
            .insert(IMPERSONATION_HEADER, HeaderValue::from_static("not base64!"));
        let response = handle(State(agent(port, None)), request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(
            seen.lock().unwrap().is_empty(),
            "a refused request reached the API server"
        );
    }
}
