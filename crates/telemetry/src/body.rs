//! A response body that keeps a value alive until the body is done: sent
//! to its end, or dropped when the client went away. Whatever the value
//! records in its `Drop` (a request's duration, an audit entry) happens
//! when the exchange has really ended, watches included.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// `body`, with `until_done` dropped when it is.
#[derive(Debug)]
pub struct KeepUntilDone<B, G> {
    body: B,
    _until_done: G,
}

impl<B, G> KeepUntilDone<B, G> {
    pub fn new(body: B, until_done: G) -> KeepUntilDone<B, G> {
        KeepUntilDone {
            body,
            _until_done: until_done,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for KeepUntilDone<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `body`, with `on_sent` called once if the body is sent to its end, and
/// never if it is dropped before (the client went away, the server
/// stopped). Its end is when the body says so: hyper stops polling a body
/// once [`Body::is_end_stream`] holds, so that counts as much as the last
/// `None`.
pub struct WhenSent<B, F: FnOnce()> {
    body: B,
    on_sent: Option<F>,
}

impl<B, F: FnOnce()> WhenSent<B, F> {
    pub fn new(body: B, on_sent: F) -> WhenSent<B, F> {
        WhenSent {
            body,
            on_sent: Some(on_sent),
        }
    }
}

impl<B: Body, F: FnOnce()> WhenSent<B, F> {
    fn sent(&mut self) {
        if let Some(on_sent) = self.on_sent.take() {
            on_sent();
        }
    }
}

impl<B: Body + Unpin, F: FnOnce() + Unpin> Body for WhenSent<B, F> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.sent(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.sent(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B, F: FnOnce()> std::fmt::Debug for WhenSent<B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhenSent")
            .field("sent", &self.on_sent.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;

    use super::*;

    fn counted() -> (Arc<AtomicUsize>, impl FnOnce() + Unpin) {
        let count = Arc::new(AtomicUsize::new(0));
        let inner = count.clone();
        (count, move || {
            inner.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn a_body_read_to_its_end_calls_back_once() {
        let (count, on_sent) = counted();
        let mut body = WhenSent::new(Full::new(bytes::Bytes::from_static(b"the token")), on_sent);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("a full body is ready at once");
        };
        assert_eq!(&frame.into_data().unwrap()[..], b"the token");
        assert_eq!(count.load(Ordering::SeqCst), 1, "sent once its last frame is taken");
        assert!(matches!(Pin::new(&mut body).poll_frame(&mut cx), Poll::Ready(None)));
        drop(body);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_body_dropped_before_its_end_does_not() {
        let (count, on_sent) = counted();
        drop(WhenSent::new(
            Full::new(bytes::Bytes::from_static(b"the token")),
            on_sent,
        ));
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }
}
