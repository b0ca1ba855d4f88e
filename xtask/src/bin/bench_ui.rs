//! The Kubernetes clusters page with 1,000 agents, run by `cargo xtask
//! bench ui` (release build of kas): 1,000 agents registered through the
//! REST API, a signed-in session, then 200 GETs of the page (after 20
//! warm-ups), timed at the client over loopback (so the figure includes
//! one HTTP exchange: an upper bound of the render time). Target: p50 at
//! most 50 ms. Prints the figures and a `RESULT` line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use glagent_test_support::kas::{Kas, KasOptions};
use serde_json::json;

const AGENTS: usize = 1000;
const GETS: usize = 200;
const TARGET_MS: f64 = 50.0;
const PASSWORD: &str = "bench-root-password";

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<()> {
    let release = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let kas = Kas::start(
        &release.join("kas"),
        KasOptions {
            env: vec![("KAS_INITIAL_ROOT_PASSWORD".into(), PASSWORD.into())],
            ..Default::default()
        },
    )
    .await;
    let (status, project) = kas.root_call("POST", "/projects", Some(json!({"name": "fleet"}))).await;
    anyhow::ensure!(status.is_success(), "creating the project: {project}");
    let pid = project["id"].as_i64().context("project id")?;
    let path = project["path_with_namespace"].as_str().context("path")?.to_string();
    let started = Instant::now();
    for i in 0..AGENTS {
        let (status, _) = kas
            .root_call(
                "POST",
                &format!("/projects/{pid}/cluster_agents"),
                Some(json!({"name": format!("agent-{i:04}")})),
            )
            .await;
        anyhow::ensure!(status.is_success(), "agent {i}: {status}");
    }
    println!("registered {AGENTS} agents in {:?}", started.elapsed());

    // Sign in as a browser does.
    let ca = std::fs::read(kas.ca_file())?;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http.get(format!("{}/users/sign_in", kas.url)).send().await?;
    let anonymous = form
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no CSRF cookie")?
        .to_string();
    let html = form.text().await?;
    let needle = "name=\"authenticity_token\" value=\"";
    let start = html.find(needle).context("no token")? + needle.len();
    let token = html[start..start + 64].to_string();
    let signed_in = http
        .post(format!("{}/users/sign_in", kas.url))
        .header("Cookie", anonymous)
        .form(&[
            ("authenticity_token", token.as_str()),
            ("username", "root"),
            ("password", PASSWORD),
        ])
        .send()
        .await?;
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("_glagent_session="))
        .and_then(|v| v.split(';').next())
        .context("sign-in failed")?
        .to_string();

    let url = format!("{}/{path}/-/clusters", kas.url);
    let mut samples = Vec::with_capacity(GETS);
    for i in 0..(GETS + 20) {
        let begun = Instant::now();
        let response = http.get(&url).header("Cookie", &session).send().await?;
        anyhow::ensure!(response.status().is_success(), "GET {}", response.status());
        let body = response.text().await?;
        if i == 0 {
            anyhow::ensure!(
                body.matches("data-agent-id=").count() == AGENTS,
                "the page lists every agent"
            );
        }
        if i >= 20 {
            samples.push(begun.elapsed());
        }
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = ms(samples[samples.len() / 2]);
    let p99 = ms(samples[samples.len() * 99 / 100]);
    println!("Kubernetes clusters page, {AGENTS} agents, {GETS} GETs: p50 {p50:.1} ms, p99 {p99:.1} ms");
    println!(
        "RESULT ui_clusters_1000_p50_ms={p50:.1} ui_clusters_1000_p99_ms={p99:.1} ui_clusters_p50_vs_target={:.2}",
        p50 / TARGET_MS
    );
    Ok(())
}
