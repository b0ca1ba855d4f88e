//! Refusals that reach HTTP/2 clients. A request refused before its body
//! is read (a bad token, an unknown route, a forbidden agent) would end in
//! a reset stream while the client is still sending, and HTTP/2 clients
//! (kubectl, helm, Go tools, curl) report a transport error instead of the
//! answer. So the body a handler leaves unread is read to its end (up to
//! [`DRAIN_LIMIT`] bytes, within [`DRAIN_TIMEOUT`]) before a refusal goes
//! out. Bodies are passed through untouched otherwise.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use parking_lot::Mutex;

/// The most a refused request's body is read for its answer to arrive.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long at most.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A body the handler reads while the middleware keeps a hold on it.
#[derive(Clone)]
struct Shared(Arc<Mutex<Option<Body>>>);

impl HttpBody for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut inner = self.0.lock();
        match inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

/// The middleware: runs the handler, and before a refusal (4xx, 5xx)
/// reads what is left of the request's body.
pub async fn answer_refusals_after_the_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let shared = Shared(Arc::new(Mutex::new(Some(body))));
    let response = next.run(Request::from_parts(parts, Body::new(shared.clone()))).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let left = shared.0.lock().take();
        // A body that says it is larger than what is read would be cut
        // anyway: the connection closes and the client sees the answer.
        let left = left.filter(|b| b.size_hint().lower() <= DRAIN_LIMIT as u64);
        if let Some(mut body) = left.filter(|b| !b.is_end_stream()) {
            let drain = async {
                let mut read = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map(Bytes::len).unwrap_or(0);
                    if read > DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        }
    }
    response
}
