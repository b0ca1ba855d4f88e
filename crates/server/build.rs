//! Embeds the Helm chart (deploy/helm/gitlab-agent) so that kas can serve
//! it as a Helm repository with no files beside the binary.

use std::path::{Path, PathBuf};

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("reading the chart").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("inside the chart")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, path));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let chart = manifest
        .join("../../deploy/helm/gitlab-agent")
        .canonicalize()
        .expect("the chart exists");
    println!("cargo:rerun-if-changed={}", chart.display());
    let mut files = Vec::new();
    collect(&chart, &chart, &mut files);
    let mut code = String::from(
        "/// The gitlab-agent chart's files, relative to the chart directory.\npub static CHART_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (relative, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({relative:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("chart_files.rs");
    std::fs::write(out, code).expect("writing chart_files.rs");
}
