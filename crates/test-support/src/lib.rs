//! Test harness built from real components.
//!
//! - [`kube`]: etcd + kube-apiserver + kube-controller-manager, started once
//!   per test binary on free loopback ports with TLS and RBAC; each test
//!   takes its own namespace.
//! - [`kas`]: a `kas` process on a free port with its own data directory.
//! - [`agentk`]: an `agentk` process pointed at a kas.
//! - [`connect_proxy`]: an HTTP CONNECT proxy the test controls.
//! - [`postgres`]: a fresh database on the PostgreSQL server that
//!   `scripts/test.sh` starts.
//!
//! Every child process is started with a parent-death signal, so nothing
//! outlives the test binary, whether it exits, panics or is killed.

pub mod agentk;
pub mod connect_proxy;
pub mod kas;
pub mod kube;
pub mod postgres;
pub mod process;

use std::future::Future;
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A short random suffix for names that must not collide between tests.
pub fn unique(prefix: &str) -> String {
    use rand::RngExt;
    let n: u32 = rand::rng().random();
    format!("{prefix}-{n:08x}")
}
