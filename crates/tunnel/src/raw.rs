//! The client's side of the raw tunnel upgrade: one HTTP/1.1 request with
//! `Upgrade: glagent-tunnel` on a connection already made (TCP, TLS), and
//! on `101 Switching Protocols` the connection's bytes, with nothing lost
//! that the server sent after its answer. Any other answer is refused with
//! its status and (the start of) its body, which say why.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest refusal body read, for the error message.
const REFUSAL_BODY_LIMIT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("the HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the request is invalid: {0}")]
    Request(String),
    #[error("answered {status} instead of switching protocols: {body}")]
    Refused {
        status: http::StatusCode,
        headers: Box<http::HeaderMap>,
        body: String,
    },
}

/// The tunnel's bytes after a successful upgrade.
pub struct RawIo(TokioIo<Upgraded>);

impl AsyncRead for RawIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RawIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Sends `request` (its `Upgrade`/`Connection` headers are set here) on
/// `io` and returns the answer's headers and the upgraded connection.
pub async fn upgrade<T>(io: T, request: http::Request<()>) -> Result<(http::HeaderMap, RawIo), UpgradeError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut parts, ()) = request.into_parts();
    parts.headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(glagent_proto::RAW_TUNNEL_PROTOCOL),
    );
    parts
        .headers
        .insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    let request = http::Request::from_parts(parts, Empty::<Bytes>::new());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(connection.with_upgrades());
    let response = sender.send_request(request).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, REFUSAL_BODY_LIMIT).collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_string(),
            Err(_) => String::new(),
        };
        driver.abort();
        return Err(UpgradeError::Refused {
            status: parts.status,
            headers: Box::new(parts.headers),
            body,
        });
    }
    let headers = response.headers().clone();
    let upgraded = hyper::upgrade::on(response).await?;
    Ok((headers, RawIo(TokioIo::new(upgraded))))
}
