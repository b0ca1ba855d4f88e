//! What kas and agentk tell their operators: log lines (text on a
//! terminal, plain text in a file or pipe, or JSON lines) and Prometheus
//! metrics with bounded labels.
//!
//! Both binaries set up logging here ([`logging::init`]); every metric kas
//! serves is declared in [`metrics::Kas`], every metric agentk serves in
//! [`metrics::Agent`], so names and labels have one home.

pub mod logging;
pub mod metrics;

pub mod body;
