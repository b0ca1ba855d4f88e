//! Project chores, run as `cargo xtask <task>` (matklad's cargo-xtask).
//!
//! - `bench agent-idle`: idle agentk memory (see `bench.rs`).
//! - `bench proxy`: the Kubernetes API proxy against direct access and
//!   `kubectl proxy` (see `bin/bench_proxy.rs`).
//! - `bench flux`: a push's end to the GitRepository's reconcile request
//!   (see `bin/bench_flux.rs`).
//! - `bench ui`: the Kubernetes clusters page with 1,000 agents (see
//!   `bin/bench_ui.rs`).
//! - `fuzz <target> [--seconds N]`: a cargo-fuzz target (see `fuzz.rs`).
//! - `image [--verify]`: the agentk OCI image (see `image.rs`).
//! - `tidy`: checks that every crate root says why it exists (`//!`), that
//!   no `dbg!` is committed, that no integration-test file is over 800
//!   lines, and that no crate has a `use` cycle between its top-level
//!   modules (`crate::`/`super::` paths, comments, strings and test modules
//!   left out); see `tidy.rs`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

mod bench;
mod fuzz;
mod image;
mod tidy;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "tidy" => tidy::tidy(&workspace_root()),
        "image" => {
            let verify = std::env::args().any(|a| a == "--verify");
            let root = workspace_root();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            image::image(&root, &target, verify)
        }
        "fuzz" => fuzz::fuzz(&workspace_root(), &std::env::args().skip(2).collect::<Vec<_>>()),
        "bench" => match std::env::args().nth(2).as_deref() {
            Some("agent-idle") => bench::agent_idle(&workspace_root()),
            Some("proxy") => bench::proxy(&workspace_root()),
            Some("flux") => bench::flux(&workspace_root()),
            Some("ui") => bench::ui(&workspace_root()),
            Some("dashboard") => bench::dashboard(&workspace_root()),
            Some("fleet") => bench::fleet(&workspace_root(), &std::env::args().skip(3).collect::<Vec<_>>()),
            _ => bail!("usage: cargo xtask bench agent-idle|proxy|flux|ui|dashboard|fleet [--agents N]"),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask tidy | image [--verify] | fuzz <target> [--seconds N] | bench agent-idle|proxy|flux|ui|dashboard|fleet [--agents N]"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
