//! `cargo xtask fuzz <target> [--seconds N]`: one cargo-fuzz target of
//! `fuzz/` (nightly, libFuzzer with AddressSanitizer) for N seconds
//! (default 600), from the committed corpus `fuzz/corpus/<target>`, which
//! grows with what the run finds, and the hand-written `fuzz/seeds/<target>`. cargo-fuzz is installed from crates.io
//! the first time. A crash leaves its input in `fuzz/artifacts/<target>`;
//! it becomes a regression test where the target's code lives.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The targets in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 6] = [
    "agent_config",
    "identity_header",
    "receptive_jwt",
    "private_signature",
    "tunnel_framing",
    "rest_input",
];

pub fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let Some(target) = args.first() else {
        bail!("usage: cargo xtask fuzz <{}> [--seconds N]", TARGETS.join("|"));
    };
    if !TARGETS.contains(&target.as_str()) {
        bail!("unknown fuzz target {target:?}: one of {}", TARGETS.join(", "));
    }
    let seconds: u64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .context("--seconds needs a number")?
            .parse()
            .context("--seconds needs a whole number of seconds")?,
        None => 600,
    };
    let installed = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()?;
        anyhow::ensure!(status.success(), "installing cargo-fuzz failed");
    }
    let corpus = root.join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    // Hand-written starting points (read only; what is found goes to corpus).
    let seeds = root.join("fuzz").join("seeds").join(target);
    let status = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .args(seeds.is_dir().then_some(&seeds))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-max_len=65536",
        ])
        .current_dir(root)
        // Its own target directory: sanitizer builds share nothing with
        // the workspace's.
        .env("CARGO_TARGET_DIR", root.join("fuzz").join("target"))
        .status()?;
    anyhow::ensure!(
        status.success(),
        "the fuzz target {target} failed: see fuzz/artifacts/{target}"
    );
    Ok(())
}
