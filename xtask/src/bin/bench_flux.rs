//! The push-to-reconciliation benchmark, run by `cargo xtask bench flux`
//! (release builds): a real kas and agentk, Flux's CRDs in a real
//! kube-apiserver, and a GitRepository pointing at the agent's project.
//! Each of 20 pushes (Files API commits) is timed from the commit's answer
//! (the push's end) to the moment the GitRepository carries a new
//! `reconcile.fluxcd.io/requestedAt` (polled every 2 ms). Target: p50 at
//! most 200 ms. Prints the figures and a `RESULT` line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::flux::{git_repositories, install_crds};
use glagent_test_support::kas::{Kas, KasOptions};
use glagent_test_support::kube::KubeEnv;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

const PUSHES: usize = 20;
const TARGET_MS: f64 = 200.0;

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

fn requested_at(object: &DynamicObject) -> Option<String> {
    object
        .metadata
        .annotations
        .as_ref()?
        .get("reconcile.fluxcd.io/requestedAt")
        .cloned()
}

async fn bench() -> Result<()> {
    let release = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let env = KubeEnv::shared();
    install_crds();
    let ns = env.namespace("bench-flux").await;
    let kas = Kas::start(&release.join("kas"), KasOptions::default()).await;
    let fixture = kas.project_with_agent("apps", "bench").await;
    let (pid, path) = (fixture.project_id, fixture.project_path.clone());
    let repositories: Api<DynamicObject> = Api::namespaced_with(env.client().await, &ns, &git_repositories());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "apps"},
        "spec": {"interval": "1h", "url": format!("{}/{path}.git", kas.url), "ref": {"branch": "main"}},
    }))?;
    repositories.create(&PostParams::default(), &object).await?;
    let mut agentk = Agentk::start(
        &release.join("agentk"),
        AgentkOptions {
            kas_address: format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
            token: fixture.token.clone(),
            ca_file: Some(kas.ca_file()),
            kubeconfig: Some(env.kubeconfig_path()),
            env: vec![("POD_NAMESPACE".into(), ns.clone())],
            ..Default::default()
        },
    );
    agentk.wait_ready(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(kas.log().contains("point at these projects") && kas.log().contains(&path)) {
        anyhow::ensure!(Instant::now() < deadline, "kas never learned the agent's Flux projects");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut latencies = Vec::new();
    for i in 0..PUSHES {
        let before = requested_at(&repositories.get("apps").await?);
        let (status, _) = kas
            .root_call(
                "POST",
                &format!("/projects/{pid}/repository/files/push-{i}.txt"),
                Some(
                    json!({"branch": "main", "content": format!("push {i}\n"), "commit_message": format!("push {i}")}),
                ),
            )
            .await;
        anyhow::ensure!(status.is_success(), "commit {i}: {status}");
        let pushed = Instant::now();
        loop {
            if requested_at(&repositories.get("apps").await?) != before {
                latencies.push(pushed.elapsed());
                break;
            }
            anyhow::ensure!(
                pushed.elapsed() < Duration::from_secs(10),
                "push {i} was never reconciled"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Requests a second apart, as pushes come.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = ms(latencies[latencies.len() / 2]);
    let max = ms(*latencies.last().context("no pushes")?);
    let min = ms(latencies[0]);
    println!("push -> requestedAt over {PUSHES} pushes: min {min:.1} ms, p50 {p50:.1} ms, max {max:.1} ms");
    println!(
        "RESULT flux_push_p50_ms={p50:.1} flux_push_max_ms={max:.1} flux_push_p50_vs_target={:.2}",
        p50 / TARGET_MS
    );
    Ok(())
}
