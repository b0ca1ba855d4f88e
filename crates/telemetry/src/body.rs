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
