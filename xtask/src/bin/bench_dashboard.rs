//! The environment dashboard's liveness, run by `cargo xtask bench
//! dashboard` (release builds): a real kas and agentk (with cluster
//! access), a real kube-apiserver, and Debian's chromium showing an
//! environment's Kubernetes overview. Each of 20 pod status changes
//! (written as a kubelet would) is timed from just before the write to
//! (a) the moment a watch of the API server itself sees it (the baseline,
//! in the same run) and (b) the moment the page shows it (a
//! MutationObserver in the page: browser and bench share the clock).
//! Target: the page's p50 at most 500 ms. Prints the figures and a
//! `RESULT` line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::browser::Browser;
use glagent_test_support::kas::{Kas, KasOptions};
use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

const CHANGES: usize = 20;
const TARGET_MS: f64 = 500.0;
const PASSWORD: &str = "bench-dashboard-password";

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

async fn bench() -> Result<()> {
    let release = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let env = KubeEnv::shared();
    let ns = env.namespace("bench-dashboard").await;
    let kas = Kas::start(
        &release.join("kas"),
        KasOptions {
            env: vec![("KAS_INITIAL_ROOT_PASSWORD".into(), PASSWORD.into())],
            ..Default::default()
        },
    )
    .await;
    let fixture = kas.project_with_agent("apps", "bench").await;
    let (pid, aid, path) = (fixture.project_id, fixture.agent_id, fixture.project_path.clone());
    let config = format!("user_access:\n  access_as:\n    agent: {{}}\n  projects:\n    - id: {path}\n");
    let (status, _) = kas
        .root_call(
            "POST",
            &format!("/projects/{pid}/repository/files/.gitlab%2Fagents%2Fbench%2Fconfig.yaml"),
            Some(json!({"branch": "main", "content": config, "commit_message": "agent"})),
        )
        .await;
    anyhow::ensure!(
        status.is_success(),
        "writing the agent's configuration failed: {status}"
    );
    let (status, environment) = kas
        .root_call(
            "POST",
            &format!("/projects/{pid}/environments"),
            Some(json!({"name": "production", "cluster_agent_id": aid, "kubernetes_namespace": ns})),
        )
        .await;
    anyhow::ensure!(status.is_success(), "creating the environment: {environment}");
    let eid = environment["id"].as_i64().context("environment id")?;
    let mut agentk = Agentk::start(
        &release.join("agentk"),
        AgentkOptions {
            kas_address: format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
            token: fixture.token.clone(),
            ca_file: Some(kas.ca_file()),
            kubeconfig: Some(env.kubeconfig_path()),
            ..Default::default()
        },
    );
    agentk.wait_ready(Duration::from_secs(30)).await;

    let pods: Api<Pod> = Api::namespaced(env.client().await, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bench-0"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Err(error) = pods.create(&PostParams::default(), &pod).await {
        anyhow::ensure!(std::time::Instant::now() < deadline, "creating the pod: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut browser = Browser::start();
    let page = format!("{}/{path}/-/environments/{eid}", kas.url);
    let run = |browser: &mut Browser, command: Value| {
        browser
            .try_run(command.clone())
            .map_err(|e| anyhow::anyhow!("{command}: {e}"))
    };
    run(&mut browser, json!({"do": "goto", "url": page}))?;
    run(
        &mut browser,
        json!({"do": "fill", "selector": "#username", "value": "root"}),
    )?;
    run(
        &mut browser,
        json!({"do": "fill", "selector": "#password", "value": PASSWORD}),
    )?;
    run(&mut browser, json!({"do": "click", "selector": "button[type=submit]"}))?;
    run(
        &mut browser,
        json!({"do": "wait", "selector": "#pods tr[data-pod=bench-0]"}),
    )?;
    run(
        &mut browser,
        json!({"do": "wait", "selector": "#dashboard-state", "text": "Synced"}),
    )?;

    // The baseline: a watch of the API server itself, from now on.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, f64)>();
    let watched = pods.clone();
    let version = pods.get("bench-0").await?.metadata.resource_version.unwrap_or_default();
    let watcher = tokio::spawn(async move {
        let mut stream = watched
            .watch(&WatchParams::default().fields("metadata.name=bench-0"), &version)
            .await?
            .boxed();
        while let Some(event) = stream.next().await {
            if let WatchEvent::Modified(pod) = event? {
                let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
                let _ = seen_tx.send((phase, now_ms()));
            }
        }
        anyhow::Ok(())
    });

    let (mut direct, mut shown) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let phase = if i % 2 == 0 { "Failed" } else { "Running" };
        // The page starts waiting before the change is written.
        browser.send(&json!({
            "do": "changedAt",
            "selector": "#pods tr[data-pod=bench-0] [data-field=phase]",
            "text": phase,
            "timeout": 10000,
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = now_ms();
        pods.patch_status(
            "bench-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await?;
        loop {
            let (seen_phase, at) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
                .await
                .context("the API server's watch never saw the change")?
                .context("the watch ended")?;
            if seen_phase == phase {
                direct.push(at - before);
                break;
            }
        }
        let answer = browser.answer().map_err(|e| anyhow::anyhow!("change {i}: {e}"))?;
        shown.push(answer["at"].as_f64().context("a time")? - before);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watcher.abort();
    drop(browser);
    drop(agentk);
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let (direct, shown) = (sorted(direct), sorted(shown));
    let p = |v: &[f64], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "pod status change -> API server watch ({CHANGES} changes): p50 {:.1} ms, max {:.1} ms",
        p(&direct, 0.5),
        p(&direct, 1.0)
    );
    println!(
        "pod status change -> the dashboard shows it (kas, agentk, browser): min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        p(&shown, 0.0),
        p(&shown, 0.5),
        p(&shown, 0.9),
        p(&shown, 1.0)
    );
    println!(
        "RESULT dashboard_p50_ms={:.1} dashboard_max_ms={:.1} direct_watch_p50_ms={:.1} dashboard_minus_direct_p50_ms={:.1} dashboard_p50_vs_target={:.2}",
        p(&shown, 0.5),
        p(&shown, 1.0),
        p(&direct, 0.5),
        p(&shown, 0.5) - p(&direct, 0.5),
        p(&shown, 0.5) / TARGET_MS
    );
    Ok(())
}
