//! Multiplexed streams over any `AsyncRead + AsyncWrite`, with reconnect
//! backoff.
//!
//! Empty until the agent connection lands (issue 3).
