//! `cargo xtask bench agent-idle`: the resident memory of an idle agentk
//! after one minute connected to kas (release builds), against the 20 MiB
//! target, with kas's own figure alongside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn curl(args: &[&str]) -> Result<String> {
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .args(args)
        .output()
        .context("running curl")?;
    let body = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        bail!(
            "curl {args:?} failed: {body} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(body)
}

fn json_field(body: &str, field: &str) -> Result<String> {
    let needle = format!("\"{field}\":");
    let start = body.find(&needle).with_context(|| format!("no {field} in {body}"))? + needle.len();
    let rest = body[start..].trim_start();
    let value: String = if let Some(stripped) = rest.strip_prefix('"') {
        stripped.chars().take_while(|c| *c != '"').collect()
    } else {
        rest.chars().take_while(|c| c.is_ascii_digit()).collect()
    };
    Ok(value)
}

pub fn agent_idle(root: &Path) -> Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "kas", "--bin", "agentk"])
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "release build failed");
    let bin = target_dir(root).join("release");
    let work = std::env::temp_dir().join(format!("glagent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let data = work.join("kas");
    let port = free_port()?;
    let kas = Killed(
        Command::new(bin.join("kas"))
            .env("KAS_DATA_DIR", &data)
            .env("KAS_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let ca = data.join("tls/ca.crt");
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&[
        "--cacert",
        ca.to_str().unwrap_or_default(),
        &format!("{base}/-/readiness"),
    ])
    .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "kas did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let root_token = std::fs::read_to_string(data.join("initial_root_token"))?
        .trim()
        .to_string();
    let auth = format!("PRIVATE-TOKEN: {root_token}");
    let api = |method: &str, path: &str, data: &str| {
        curl(&[
            "--cacert",
            ca.to_str().unwrap_or_default(),
            "-X",
            method,
            "-H",
            &auth,
            "-d",
            data,
            &format!("{base}/api/v4{path}"),
        ])
    };
    let project = json_field(&api("POST", "/projects", "name=bench")?, "id")?;
    let agent = json_field(
        &api("POST", &format!("/projects/{project}/cluster_agents"), "name=bench")?,
        "id",
    )?;
    let token = json_field(
        &api(
            "POST",
            &format!("/projects/{project}/cluster_agents/{agent}/tokens"),
            "name=t",
        )?,
        "token",
    )?;
    std::fs::write(work.join("token"), &token)?;
    std::fs::write(
        work.join("kubeconfig"),
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: \"https://127.0.0.1:9\"}}]\nusers: [{name: x, user: {token: x}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\ncurrent-context: x\n",
    )?;
    let obs = free_port()?;
    let agentk = Killed(
        Command::new(bin.join("agentk"))
            .args(["--kas-address", &format!("wss://127.0.0.1:{port}/-/kubernetes-agent/")])
            .arg("--token-file")
            .arg(work.join("token"))
            .arg("--kas-ca-cert-file")
            .arg(&ca)
            .arg("--kubeconfig")
            .arg(work.join("kubeconfig"))
            .args(["--observability-listen-address", &format!("127.0.0.1:{obs}")])
            .env("POD_NAME", "bench")
            .env("POD_NAMESPACE", "bench")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&[&format!("http://127.0.0.1:{obs}/readiness")]).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "agentk did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let at_start = rss_kib(agentk.0.id())?;
    println!("agentk connected; RSS {at_start} KiB; idling 60 s");
    std::thread::sleep(Duration::from_secs(60));
    let agent_rss = rss_kib(agentk.0.id())?;
    let kas_rss = rss_kib(kas.0.id())?;
    drop(agentk);
    drop(kas);
    let _ = std::fs::remove_dir_all(&work);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "agentk idle RSS after 60 s: {:.1} MiB (at connect {:.1} MiB)",
        mib(agent_rss),
        mib(at_start)
    );
    println!("kas RSS with one agent:    {:.1} MiB", mib(kas_rss));
    println!(
        "RESULT agentk_idle_rss_mib={:.1} target_mib=20 ratio_to_target={:.2} kas_rss_mib={:.1}",
        mib(agent_rss),
        mib(agent_rss) / 20.0,
        mib(kas_rss)
    );
    Ok(())
}

/// Builds kas, agentk and the driver `bench-<name>` in release and runs it.
fn driver(root: &Path, name: &str) -> Result<()> {
    driver_with(root, name, &[])
}

/// [`driver`], passing `args` to the driver.
fn driver_with(root: &Path, name: &str, args: &[String]) -> Result<()> {
    let driver = format!("bench-{name}");
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--bin",
            "kas",
            "--bin",
            "agentk",
            "--bin",
            &driver,
        ])
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "release build failed");
    let status = Command::new(target_dir(root).join("release").join(&driver))
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "the {name} benchmark failed");
    Ok(())
}

/// `cargo xtask bench proxy` (see `bin/bench_proxy.rs`).
pub fn proxy(root: &Path) -> Result<()> {
    driver(root, "proxy")
}

/// `cargo xtask bench ui` (see `bin/bench_ui.rs`).
pub fn ui(root: &Path) -> Result<()> {
    driver(root, "ui")
}

/// `cargo xtask bench flux` (see `bin/bench_flux.rs`).
pub fn flux(root: &Path) -> Result<()> {
    driver(root, "flux")
}

/// `cargo xtask bench dashboard` (see `bin/bench_dashboard.rs`).
pub fn dashboard(root: &Path) -> Result<()> {
    driver(root, "dashboard")
}

/// `cargo xtask bench fleet [--agents N] [--transport wss|grpcs]` (see `bin/bench_fleet.rs`).
pub fn fleet(root: &Path, args: &[String]) -> Result<()> {
    driver_with(root, "fleet", args)
}
