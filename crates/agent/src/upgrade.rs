//! The switched half of an HTTP upgrade through the proxy (exec, attach,
//! port-forward). The upgrade request itself is an ordinary request through
//! the agent's API client, with its credentials and proxy; once the API
//! server answers `101 Switching Protocols`, this module joins the upgraded
//! connection to the HTTP/2 stream from kas. HTTP/2 has no `101`, so kas
//! learns of the switch from a `200` with `x-glagent-upgrade-status: 101`;
//! from then on kas's request body is the client's bytes and the response
//! body the server's.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::TryStreamExt;
use glagent_proto::UPGRADE_STATUS_HEADER;
use glagent_proto::forwarding::copy_end_to_end;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::io::{ReaderStream, StreamReader};

/// How much of the server's side is read at a time.
const CHUNK: usize = 32 * 1024;

/// Takes over the connection a `101` answer switched and answers kas:
/// `client_bytes` (kas's request body) are written to the server, and the
/// response body streams what the server sends. The server's end-to-end
/// headers (`Sec-WebSocket-Protocol`, `X-Stream-Protocol-Version`) come
/// along for kas to put on its own `101`.
pub async fn splice(mut switched: http::Response<Incoming>, client_bytes: Body) -> Result<Response, hyper::Error> {
    let upgraded = hyper::upgrade::on(&mut switched).await?;
    let (from_server, mut to_server) = tokio::io::split(TokioIo::new(upgraded));
    tokio::spawn(async move {
        let mut from_client = StreamReader::new(client_bytes.into_data_stream().map_err(std::io::Error::other));
        if let Err(error) = tokio::io::copy(&mut from_client, &mut to_server).await {
            tracing::debug!(%error, "upgraded connection: the client's side ended");
        }
        // The client is done sending: pass the half-close on.
        let _ = to_server.shutdown().await;
    });
    let mut response = Response::new(Body::from_stream(ReaderStream::with_capacity(from_server, CHUNK)));
    copy_end_to_end(switched.headers(), response.headers_mut());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
        .headers_mut()
        .insert(UPGRADE_STATUS_HEADER, HeaderValue::from_static("101"));
    Ok(response)
}
