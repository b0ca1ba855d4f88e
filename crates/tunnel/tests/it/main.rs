//! The kas–agentk stack as it runs in production, over an in-memory pipe:
//! HTTP/2 (kas as client, agentk as server) over [`WsIo`] over a WebSocket.
//! Many concurrent streams, a stalled stream that blocks nobody and holds
//! bounded memory, and cancellation that reaches the far side.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use glagent_tunnel::WsIo;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Probe {
    produced: AtomicU64,
    dropped: AtomicBool,
}

struct DropFlag(Arc<Probe>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped.store(true, Ordering::SeqCst);
    }
}

/// The agent side: `/echo` answers at once, `/endless` streams forever.
async fn serve(
    request: http::Request<hyper::body::Incoming>,
    probe: Arc<Probe>,
) -> Result<http::Response<Body>, Infallible> {
    if request.uri().path() == "/endless" {
        let guard = DropFlag(probe.clone());
        let chunks = stream::unfold((guard, probe), |(guard, probe)| async move {
            probe.produced.fetch_add(16 * 1024, Ordering::SeqCst);
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; 16 * 1024]))),
                (guard, probe),
            ))
        });
        return Ok(http::Response::new(BodyExt::boxed(StreamBody::new(chunks))));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(http::Response::new(Full::new(body).boxed()))
}

async fn connected_pair(probe: Arc<Probe>) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (kas_end, agent_end) = tokio::io::duplex(64 * 1024);
    let agent = tokio::spawn(async move {
        let ws = WebSocketStream::from_raw_socket(agent_end, Role::Client, None).await;
        let service = hyper::service::service_fn(move |req| serve(req, probe.clone()));
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(500)
            .serve_connection(TokioIo::new(WsIo::new(ws)), service)
            .await;
    });
    let ws = WebSocketStream::from_raw_socket(kas_end, Role::Server, None).await;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(WsIo::new(ws)))
        .await
        .expect("HTTP/2 handshake over the WebSocket");
    tokio::spawn(async move {
        let _ = connection.await;
        agent.abort();
    });
    sender
}

async fn echo(sender: &hyper::client::conn::http2::SendRequest<Full<Bytes>>, payload: String) -> String {
    let mut sender = sender.clone();
    sender.ready().await.unwrap();
    let request = http::Request::post("/echo")
        .body(Full::new(Bytes::from(payload)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams() {
    let sender = connected_pair(Arc::default()).await;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let sender = sender.clone();
            tokio::spawn(async move { (i, echo(&sender, format!("payload {i}")).await) })
        })
        .collect();
    for task in tasks {
        let (i, body) = task.await.unwrap();
        assert_eq!(body, format!("payload {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_blocks_nobody_holds_bounded_memory_and_cancels() {
    let probe = Arc::new(Probe::default());
    let sender = connected_pair(probe.clone()).await;

    // Open an endless response and never read it.
    let mut stalled_sender = sender.clone();
    stalled_sender.ready().await.unwrap();
    let stalled = stalled_sender
        .send_request(http::Request::get("/endless").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();

    // Everything else still flows.
    let start = Instant::now();
    for i in 0..200 {
        assert_eq!(echo(&sender, format!("{i}")).await, format!("{i}"));
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "200 requests next to a stalled stream took {elapsed:?}"
    );

    // Flow control caps what the stalled stream may buffer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let produced = probe.produced.load(Ordering::SeqCst);
    assert!(
        produced < 32 * 1024 * 1024,
        "the stalled stream produced {produced} bytes unread"
    );
    assert!(!probe.dropped.load(Ordering::SeqCst));

    // Dropping the response resets the stream; the agent side stops.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !probe.dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "cancellation did not reach the agent side");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(echo(&sender, "still alive".into()).await, "still alive");
}
