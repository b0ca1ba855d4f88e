//! Token rotation without downtime: `glagent cluster agent token rotate`
//! writes a new token into the cluster's Secret; agentk (a real process,
//! its token file kept in step with the Secret by a stand-in for the
//! kubelet's Secret volume) connects with it while the old connection
//! finishes the watch it carries; the old token is revoked; no request of
//! a steady load fails, and the open watch keeps delivering events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::core::v1::Secret;
use reqwest::StatusCode;

use crate::support::{agent_with_cluster_access, as_admin, member};
use crate::{Setup, call, until};

/// Stand-in for the kubelet's Secret volume: writes the Secret's `token`
/// into the agent's token file whenever it changes (replacing the file in
/// one step, as the kubelet swaps the volume's symlink).
fn secret_volume(namespace: String, name: &'static str, file: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let secrets: kube::Api<Secret> = kube::Api::namespaced(KubeEnv::shared().client().await, &namespace);
        let mut written = Vec::new();
        loop {
            if let Ok(secret) = secrets.get(name).await
                && let Some(token) = secret.data.and_then(|d| d.get("token").cloned())
                && token.0 != written
            {
                let staged = file.with_extension("staged");
                std::fs::write(&staged, &token.0).unwrap();
                std::fs::rename(&staged, &file).unwrap();
                written = token.0;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rotated_under_load_with_no_failed_request_and_the_watch_kept() {
    let setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let agent = agent_with_cluster_access(&setup).await;
    let ns = KubeEnv::shared().namespace("rotation").await;
    let value = base64::engine::general_purpose::STANDARD.encode(&setup.token);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(KubeEnv::shared().client().await, &ns);
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "edge-token"},
                "data": {"token": value},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let volume = secret_volume(ns.clone(), "edge-token", agent.token_file());
    let pat = member(&setup, "rotator", 30, &["k8s_proxy"]).await;
    let http = setup.kas.http();
    let proxy = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let credential = format!("pat:{}:{pat}", setup.agent_id);

    // A watch open across the rotation.
    let watch = http
        .get(format!("{proxy}/api/v1/namespaces/{ns}/configmaps?watch=true"))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut events = watch.bytes_stream();

    // Steady load: four clients GETting one after another.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, credential) = (
                http.clone(),
                format!("{proxy}/api/v1/namespaces/{ns}/configmaps"),
                credential.clone(),
            );
            let (stop, done, failed, failures) = (stop.clone(), done.clone(), failed.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).bearer_auth(&credential).send().await {
                        Ok(response) if response.status() == StatusCode::OK => {
                            let _ = response.bytes().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            failures.lock().unwrap().push(format!("{status} {body}"));
                        }
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().unwrap().push(error.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    until(Duration::from_secs(10), "the load to run", async || {
        done.load(Ordering::Relaxed) > 20
    })
    .await;

    // Rotate.
    let mut rotate = setup.glagent_as(&setup.kas.root_token);
    rotate
        .args(["cluster", "agent", "token", "rotate", "-R", &setup.project_path])
        .args(["--agent", &setup.agent_id.to_string()])
        .args(["--token-id", &setup.token_id.to_string()])
        .args(["--secret", "edge-token", "--namespace", &ns, "--timeout", "60"])
        .arg("--kubeconfig")
        .arg(KubeEnv::shared().kubeconfig_path());
    let output = tokio::task::spawn_blocking(move || rotate.output().unwrap())
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{said}\nagentk:\n{}", agent.log());
    assert!(said.contains(&format!("token {} revoked", setup.token_id)), "{said}");
    let after_rotation = done.load(Ordering::Relaxed);
    until(Duration::from_secs(10), "requests after the rotation", async || {
        done.load(Ordering::Relaxed) > after_rotation + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests across the rotation: {:?}",
        failures.lock().unwrap()
    );
    println!(
        "{} requests across the rotation, none failed",
        done.load(Ordering::Relaxed)
    );

    // The old token is gone; the watch opened with the old connection
    // still delivers.
    let (status, _) = call(
        &setup.kas,
        "GET",
        &format!(
            "/projects/{}/cluster_agents/{}/tokens/{}",
            setup.project_id, setup.agent_id, setup.token_id
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the old token is revoked");
    as_admin(&ns, &["create", "configmap", "after-rotation"]);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("after-rotation") {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the watch ended or stalled after the rotation: {other:?}; saw {seen}"),
        }
    }

    // Once the watch ends, the old connection closes; the new one stays.
    drop(events);
    until(Duration::from_secs(10), "only the new token's connection", async || {
        let connections = setup.connections().await;
        connections.len() == 1 && connections[0].token_id != setup.token_id
    })
    .await;
    assert!(
        agent
            .log()
            .contains("the connection made with the previous token finished its requests and closed"),
        "{}",
        agent.log()
    );
    volume.abort();
}
