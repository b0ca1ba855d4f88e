//! Where an authorised request goes, and how it gets there: down one of
//! this replica's connections of the agent (a new HTTP/2 stream to agentk),
//! or to another replica that holds one (a signed private request, which
//! that replica forwards down its connection, never further).
//!
//! Bodies stream both ways; dropping the client's request resets the
//! stream, which cancels the request at the agent. An HTTP upgrade (exec,
//! attach, port-forward) is spliced end to end in one way for both targets:
//! the client's upgraded connection is copied to and from the upstream's
//! byte stream until either side closes.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use glagent_connections::registry::{MAX_STREAMS, StreamSlot};
use glagent_connections::routing::{AGENT_HEADER, IDENTITY_HEADER, SIGNATURE_HEADER};
use glagent_connections::{AgentConnection, Connections, Routing};
use glagent_proto::forwarding::{copy_end_to_end, encode_identity, rebase, upgrade_protocol, via};
use glagent_proto::{IMPERSONATION_HEADER, K8S_PROXY_PATH, UPGRADE_HEADER, UPGRADE_STATUS_HEADER};
use glagent_store::Store;
use glagent_telemetry::body::KeepUntilDone;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};
use tokio_util::sync::{CancellationToken, PollSender};

use crate::authorize::Authorized;
use crate::error::ProxyError;

/// Where the private API of a replica serves proxied requests.
pub const PRIVATE_PREFIX: &str = "/-/private/k8s-proxy";

/// The `Via` kas adds.
const VIA: &str = "1.1 glagent-kas";

/// Where a request for an agent goes.
pub enum Target {
    /// One of this replica's connections of the agent.
    Local(Arc<AgentConnection>),
    /// Another replica that holds a connection of the agent.
    Replica { base: String, routing: Arc<Routing> },
}

impl Target {
    /// A connection here, or else a replica holding one.
    pub async fn find(connections: &Connections, store: &Store, agent_id: i64) -> Result<Target, ProxyError> {
        if let Some(connection) = connections.registry.pick(agent_id) {
            return Ok(Target::Local(connection));
        }
        if let Some(routing) = &connections.routing
            && let Some(base) = routing.find(store, agent_id).await?
        {
            return Ok(Target::Replica {
                base,
                routing: routing.clone(),
            });
        }
        Err(not_connected(agent_id))
    }

    /// A connection here only (for requests another replica forwarded).
    pub fn local(connections: &Connections, agent_id: i64) -> Result<Target, ProxyError> {
        connections
            .registry
            .pick(agent_id)
            .map(Target::Local)
            .ok_or_else(|| not_connected(agent_id))
    }
}

fn not_connected(agent_id: i64) -> ProxyError {
    ProxyError::Unavailable(format!(
        "agent {agent_id} is not connected to kas: check that agentk runs in the cluster"
    ))
}

fn header_value(value: &str) -> Result<HeaderValue, ProxyError> {
    HeaderValue::from_str(value).map_err(|_| ProxyError::BadRequest(format!("{value:?} is not a valid header value")))
}

/// Forwards an authorised request; `prefix` is the part of the request's
/// path before the API server's.
pub async fn forward(
    target: Target,
    authorized: &Authorized,
    mut request: Request,
    prefix: &str,
) -> Result<Forwarded, ProxyError> {
    let upgrade = upgrade_protocol(request.headers()).map(str::to_string);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut headers = http::HeaderMap::new();
    copy_end_to_end(&parts.headers, &mut headers);
    let path = parts.uri.path();
    let query = parts.uri.query();

    let mut slot = None;
    let (response, upstream) = match &target {
        Target::Local(connection) => {
            slot = Some(connection.open_stream().ok_or_else(|| {
                ProxyError::TooManyRequests(format!(
                    "agent {} has {MAX_STREAMS} requests open through this kas (the limit per connection): \
                     close watches, logs or port-forwards you no longer need, or try again",
                    authorized.agent_id
                ))
            })?);
            headers.append(header::VIA, via(VIA));
            if let Some(identity) = &authorized.impersonation {
                headers.insert(IMPERSONATION_HEADER, encode_identity(identity));
            }
            // For an upgrade, the request body is the client's side of the
            // switched connection, written once the client is upgraded.
            let (body, to_agent) = match &upgrade {
                Some(protocol) => {
                    headers.insert(UPGRADE_HEADER, header_value(protocol)?);
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
                    let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, std::io::Error>);
                    (Body::from_stream(frames), Some(tx))
                }
                None => (body, None),
            };
            let mut forwarded = http::Request::builder()
                .method(parts.method.clone())
                .uri(rebase(path, query, prefix, K8S_PROXY_PATH))
                .body(body)
                .map_err(|e| ProxyError::BadRequest(format!("cannot forward this request: {e}")))?;
            *forwarded.headers_mut() = headers;
            let mut sender = connection.sender.clone();
            sender
                .ready()
                .await
                .map_err(|e| ProxyError::Unavailable(format!("the agent connection closed: {e}")))?;
            let response = sender
                .send_request(forwarded)
                .await
                .map_err(|e| ProxyError::Unavailable(format!("the agent did not answer: {e}")))?;
            let switched = response
                .headers()
                .get(UPGRADE_STATUS_HEADER)
                .is_some_and(|v| v == "101");
            let (parts, body) = response.into_parts();
            match to_agent {
                Some(to_agent) if switched => {
                    let stream = stream_io(Body::new(body), to_agent);
                    (
                        http::Response::from_parts(parts, Body::empty()),
                        Some(Upstream::Stream(stream)),
                    )
                }
                _ => (http::Response::from_parts(parts, Body::new(body)), None),
            }
        }
        Target::Replica { base, routing } => {
            let path = rebase(path, query, prefix, PRIVATE_PREFIX);
            let identity = authorized
                .impersonation
                .as_ref()
                .map(encode_identity)
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            let signature = routing.sign(authorized.agent_id, &identity, parts.method.as_str(), &path);
            headers.insert(AGENT_HEADER, HeaderValue::from(authorized.agent_id));
            headers.insert(SIGNATURE_HEADER, header_value(&signature)?);
            if !identity.is_empty() {
                headers.insert(IDENTITY_HEADER, header_value(&identity)?);
            }
            if let Some(protocol) = &upgrade {
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(header::UPGRADE, header_value(protocol)?);
            }
            let mut forwarded = http::Request::builder()
                .method(parts.method.clone())
                .uri(format!("{base}{path}"))
                .body(body)
                .map_err(|e| ProxyError::BadRequest(format!("cannot forward this request: {e}")))?;
            *forwarded.headers_mut() = headers;
            let mut response = routing.client().request(forwarded).await.map_err(|e| {
                glagent_telemetry::metrics::kas().replica_forward("failed");
                let message = format!(
                    "the kas replica holding agent {}'s connection did not answer: {e}",
                    authorized.agent_id
                );
                if e.is_connect() {
                    // The request never reached it: another may take it.
                    routing.unreachable(authorized.agent_id, base);
                    ProxyError::ReplicaUnreachable(message)
                } else {
                    routing.forget(authorized.agent_id);
                    ProxyError::Unavailable(message)
                }
            })?;
            glagent_telemetry::metrics::kas().replica_forward("answered");
            let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_some();
            let upstream = switched.then(|| Upstream::Upgraded(hyper::upgrade::on(&mut response)));
            let (parts, body) = response.into_parts();
            (http::Response::from_parts(parts, Body::new(body)), upstream)
        }
    };

    let (parts, body) = response.into_parts();
    let mut out = Response::new(body);
    copy_end_to_end(&parts.headers, out.headers_mut());
    if let (Some(upstream), Some(protocol), Some(client)) = (upstream, upgrade, client_upgrade) {
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.body_mut() = Body::empty();
        out.headers_mut().remove(header::CONTENT_LENGTH);
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        out.headers_mut().insert(header::UPGRADE, header_value(&protocol)?);
        let splice = async move {
            match upstream {
                Upstream::Stream(stream) => splice(client, stream).await,
                Upstream::Upgraded(upgraded) => match upgraded.await {
                    Ok(upgraded) => splice(client, TokioIo::new(upgraded)).await,
                    Err(error) => tracing::debug!(%error, "an upgrade through another replica failed"),
                },
            }
        };
        return Ok(Forwarded {
            response: out,
            splice: Some(Box::pin(splice)),
            slot,
        });
    }
    *out.status_mut() = parts.status;
    if matches!(target, Target::Local(_)) {
        out.headers_mut().append(header::VIA, via(VIA));
    }
    Ok(Forwarded {
        response: out,
        splice: None,
        slot,
    })
}

/// The upstream's answer, and for an upgrade the splice that carries the
/// switched connection.
pub struct Forwarded {
    response: Response,
    splice: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The agent connection's stream, held until the exchange ends.
    slot: Option<StreamSlot>,
}

impl Forwarded {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The response to send; `keep` lives until the exchange has ended:
    /// the body sent or dropped, or the upgraded connection closed. With
    /// `end`, the body (a watch's, a followed log's) ends cleanly when it
    /// is cancelled: kas is stopping, and clients should watch again.
    pub fn respond<G: Send + Unpin + 'static>(self, keep: G, end: Option<&CancellationToken>) -> Response {
        let keep = (keep, self.slot);
        match self.splice {
            Some(splice) => {
                tokio::spawn(async move {
                    splice.await;
                    drop(keep);
                });
                self.response
            }
            None => self.response.map(|body| {
                let body = match end {
                    Some(end) => Body::new(EndsWhen::new(body, end.clone())),
                    None => body,
                };
                Body::new(KeepUntilDone::new(body, keep))
            }),
        }
    }
}

/// A body that ends, cleanly, when its token is cancelled.
struct EndsWhen {
    body: Body,
    end: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl EndsWhen {
    fn new(body: Body, end: CancellationToken) -> EndsWhen {
        EndsWhen {
            body,
            end: Box::pin(end.cancelled_owned()),
        }
    }
}

impl HttpBody for EndsWhen {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        if self.end.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
}

/// The upstream side of an upgraded connection.
enum Upstream<S> {
    /// The agent's HTTP/2 stream, as bytes.
    Stream(S),
    /// Another replica's upgraded HTTP/1.1 connection.
    Upgraded(hyper::upgrade::OnUpgrade),
}

/// One HTTP/2 stream to the agent as a byte stream: reads are the
/// response body, writes go into the request body.
fn stream_io(from_agent: Body, to_agent: tokio::sync::mpsc::Sender<Bytes>) -> impl AsyncRead + AsyncWrite + Unpin {
    let reader = StreamReader::new(from_agent.into_data_stream().map_err(std::io::Error::other));
    let sink = PollSender::new(to_agent).sink_map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    let writer = SinkWriter::new(CopyToBytes::new(sink));
    tokio::io::join(reader, writer)
}

/// Carries bytes both ways between the upgraded client connection and the
/// upstream until both sides have closed.
async fn splice(client: hyper::upgrade::OnUpgrade, mut upstream: impl AsyncRead + AsyncWrite + Unpin) {
    let upgraded = match client.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "client upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(upgraded);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "an upgraded connection ended with an error");
    }
}
