//! `cargo xtask image [--verify]`: the agentk OCI image, built without a
//! container engine and reproducibly: a statically linked agentk, the
//! system's CA bundle and a passwd entry for the non-root user, in one
//! layer with fixed times and owners, written as an OCI image layout
//! (`target/oci/agentk`) and as a tarball of it. `--verify` builds twice,
//! checks that the digests match, unpacks the layer and runs the binary
//! from the unpacked root filesystem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn version(root: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .context("no workspace version")
}

fn build_binary(root: &Path, target_dir: &Path) -> Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--locked", "--bin", "agentk", "--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "building the static agentk failed");
    Ok(target_dir.join(TARGET).join("release/agentk"))
}

/// One file of the layer.
struct Entry {
    path: &'static str,
    mode: u32,
    bytes: Vec<u8>,
}

fn layer(binary: &[u8]) -> Result<Vec<u8>> {
    let mut entries = vec![
        Entry {
            path: "agentk",
            mode: 0o755,
            bytes: binary.to_vec(),
        },
        Entry {
            path: "etc/passwd",
            mode: 0o644,
            bytes: b"nonroot:x:65532:65532:nonroot:/:/sbin/nologin\n".to_vec(),
        },
        Entry {
            path: "etc/group",
            mode: 0o644,
            bytes: b"nonroot:x:65532:\n".to_vec(),
        },
    ];
    if let Ok(bundle) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        entries.push(Entry {
            path: "etc/ssl/certs/ca-certificates.crt",
            mode: 0o644,
            bytes: bundle,
        });
    }
    entries.sort_by_key(|e| e.path);
    let mut archive = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for entry in &entries {
        let mut parent = Path::new(entry.path).parent();
        let mut chain = Vec::new();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(format!("{}/", dir.display()));
            parent = dir.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_mtime(0);
                header.set_uid(0);
                header.set_gid(0);
                header.set_size(0);
                header.set_cksum();
                archive.append_data(&mut header, &dir, std::io::empty())?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(entry.bytes.len() as u64);
        header.set_cksum();
        archive.append_data(&mut header, entry.path, &entry.bytes[..])?;
    }
    Ok(archive.into_inner()?)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // No file name and time 0 in the gzip header, for reproducibility.
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Writes the OCI layout; returns the manifest digest.
fn write_layout(out: &Path, binary: &[u8], tag: &str) -> Result<String> {
    let tar = layer(binary)?;
    let gz = gzip(&tar)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/agentk"],
            "User": "65532:65532",
            "Env": ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "Labels": {"org.opencontainers.image.title": "agentk", "org.opencontainers.image.version": tag},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&gz), "size": gz.len()}],
    }))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for blob in [&gz, &config, &manifest] {
        std::fs::write(blobs.join(sha256(blob).trim_start_matches("sha256:")), blob)?;
    }
    std::fs::write(out.join("index.json"), &index)?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(sha256(&manifest))
}

/// Unpacks the image's layer into `rootfs` by following index → manifest.
fn unpack(layout: &Path, rootfs: &Path) -> Result<()> {
    let blob = |digest: &str| std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:")));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().context("no manifest")?)?)?;
    for layer in manifest["layers"].as_array().context("no layers")? {
        let gz = blob(layer["digest"].as_str().context("no digest")?)?;
        tar::Archive::new(flate2::read::GzDecoder::new(&gz[..])).unpack(rootfs)?;
    }
    Ok(())
}

pub fn image(root: &Path, target_dir: &Path, verify: bool) -> Result<()> {
    let binary_path = build_binary(root, target_dir)?;
    let binary = std::fs::read(&binary_path)?;
    let tag = version(root)?;
    let out = target_dir.join("oci/agentk");
    let digest = write_layout(&out, &binary, &tag)?;
    println!(
        "agentk image {tag}: {} ({} bytes static binary), manifest {digest}",
        out.display(),
        binary.len()
    );
    if !verify {
        return Ok(());
    }
    let again = target_dir.join("oci/agentk-again");
    let digest_again = write_layout(&again, &binary, &tag)?;
    anyhow::ensure!(
        digest == digest_again,
        "the image is not reproducible: {digest} then {digest_again}"
    );
    std::fs::remove_dir_all(&again)?;
    let rootfs = target_dir.join("oci/rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    std::fs::create_dir_all(&rootfs)?;
    unpack(&out, &rootfs)?;
    // Run it from the unpacked root filesystem: chrooted when we may (an
    // empty root proves the binary needs nothing else), directly otherwise.
    let output = if is_root() {
        Command::new("chroot")
            .arg(&rootfs)
            .args(["/agentk", "--version"])
            .output()?
    } else {
        Command::new(rootfs.join("agentk")).arg("--version").output()?
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains(&tag) {
        bail!(
            "agentk from the image did not run: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!(
        "verified: reproducible ({digest}); /agentk runs from the image's root filesystem: {}",
        stdout.trim()
    );
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}
