//! The transport under the kas–agentk connection.
//!
//! - [`WsIo`]: a WebSocket (binary messages) seen as one byte stream, so an
//!   HTTP/2 connection can run over it on both sides.
//! - [`raw`]: the client's side of the upgrade to the tunnel without
//!   WebSocket framing (`grpc(s)://` agents, kas dialing receptive agents).
//! - [`Backoff`]: exponential reconnect delays with jitter.
//! - [`proxy`]: which HTTP CONNECT proxy to use for an address, from
//!   `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`.

mod backoff;
pub mod proxy;
pub mod raw;
mod ws_io;

pub use backoff::Backoff;
pub use ws_io::{WsIo, tunnel_config};
