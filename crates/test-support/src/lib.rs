//! Test harness built from real components.
//!
//! - [`kube`]: etcd + kube-apiserver + kube-controller-manager, started once
//!   per test binary on free loopback ports with TLS and RBAC; each test
//!   takes its own namespace.
//! - [`kas`]: a `kas` process on a free port with its own data directory.
//! - [`agentk`]: an `agentk` process pointed at a kas.
//! - [`connect_proxy`]: an HTTP CONNECT proxy the test controls.
//! - [`browser`]: Debian's chromium, driven one command at a time.
//! - [`flux`]: Flux's CRDs and **a stand-in for Flux's controllers** made
//!   of real git, kubectl and helm (no Flux controller can run here).
//! - [`netns`]: a network namespace with one veth pair to the host, for
//!   agents that cannot reach kas.
//! - [`postgres`]: a fresh database on the PostgreSQL server that
//!   `scripts/test.sh` starts.
//! - [`binary`]: a workspace binary (`kas`, `agentk`, `glagent`) from the
//!   target directory of the running test.
//!
//! Every child process is started with a parent-death signal, so nothing
//! outlives the test binary, whether it exits, panics or is killed.

pub mod agentk;
pub mod browser;
pub mod connect_proxy;
pub mod flux;
pub mod kas;
pub mod kube;
pub mod netns;
pub mod postgres;
pub mod process;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The workspace binary `name` (`kas`, `agentk`, `glagent`) built into the
/// same target directory as the running test binary.
///
/// `env!("CARGO_BIN_EXE_<name>")` only names the binaries of the test's own
/// package; a system test starts the binaries of several. A test binary is
/// `<target>/<profile>/deps/<test>-<hash>`, and cargo puts the binaries in
/// `<target>/<profile>`. Panics, saying how to build it, if it is missing.
pub fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the path of the running test binary");
    let path = binary_dir(&test).join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --bins`",
        path.display()
    );
    path
}

/// `<target>/<profile>` for a test binary in `<target>/<profile>/deps`.
fn binary_dir(test: &Path) -> PathBuf {
    let dir = test.parent().expect("the test binary is in a directory");
    match dir.file_name() {
        Some(deps) if deps == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_next_to_the_deps_directory() {
        assert_eq!(
            binary_dir(Path::new("/t/target/debug/deps/it-0123abcd")),
            Path::new("/t/target/debug")
        );
        assert_eq!(
            binary_dir(Path::new(
                "/t/target/x86_64-unknown-linux-musl/release/deps/it-0123abcd"
            )),
            Path::new("/t/target/x86_64-unknown-linux-musl/release")
        );
        assert_eq!(binary_dir(Path::new("/opt/glagent/it")), Path::new("/opt/glagent"));
    }

    #[test]
    #[should_panic(expected = "is missing: build the binaries first with `cargo build --bins`")]
    fn a_missing_binary_says_how_to_build_it() {
        binary("no-such-glagent-binary");
    }
}
