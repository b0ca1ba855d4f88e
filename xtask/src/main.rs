//! Project chores, run as `cargo xtask <task>` (matklad's cargo-xtask).
//!
//! - `bench agent-idle`: idle agentk memory (see `bench.rs`).
//! - `bench proxy`: the Kubernetes API proxy against direct access and
//!   `kubectl proxy` (see `bin/bench_proxy.rs`).
//! - `image [--verify]`: the agentk OCI image (see `image.rs`).
//! - `tidy`: checks that every crate root says why it exists (`//!`) and
//!   that no debugging leftovers (`dbg!`) are committed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

mod bench;
mod image;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "tidy" => tidy(&workspace_root()),
        "image" => {
            let verify = std::env::args().any(|a| a == "--verify");
            let root = workspace_root();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            image::image(&root, &target, verify)
        }
        "bench" => match std::env::args().nth(2).as_deref() {
            Some("agent-idle") => bench::agent_idle(&workspace_root()),
            Some("proxy") => bench::proxy(&workspace_root()),
            _ => bail!("usage: cargo xtask bench agent-idle|proxy"),
        },
        _ => {
            eprintln!("usage: cargo xtask tidy | image [--verify] | bench agent-idle|proxy");
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

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn tidy(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files)?;
    rust_files(&root.join("xtask/src"), &mut files)?;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let is_root = matches!(name, "lib.rs" | "main.rs") && file.parent().is_some_and(|p| p.ends_with("src"));
        if is_root && !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{}: crate root has no //! doc saying why it exists",
                file.display()
            ));
        }
        if text.contains(concat!("dbg", "!(")) {
            problems.push(format!("{}: dbg! left in", file.display()));
        }
    }
    if problems.is_empty() {
        println!("tidy: {} files checked, all clean", files.len());
        Ok(())
    } else {
        bail!("tidy found problems:\n{}", problems.join("\n"))
    }
}
