//! What operators read: kas's `/metrics` on its own listener and agentk's,
//! moved by exactly the requests made; JSON log lines from both binaries
//! (and no escape codes in a file); the audit log of proxied requests in
//! the API, the CLI and on the `audit` log target.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use glagent_test_support::agentk::Agentk;
use glagent_test_support::kas::{Kas, KasOptions};
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{KUBECTLS, as_admin, kubectl, member};
use crate::{Setup, agentk, call, kas, until};

/// The value of the sample `series` (name and labels exactly) in `text`;
/// 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("the metrics listener answers");
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

/// Every line of a JSON log: one object with time, level, message, module.
fn json_lines(log: &str, who: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who} wrote a line that is not JSON ({e}): {line}"));
            for key in ["time", "level", "message", "module"] {
                assert!(value.get(key).is_some(), "{who}: no {key} in {line}");
            }
            value
        })
        .collect()
}

#[tokio::test]
async fn proxied_requests_move_the_metrics_of_both_and_are_audited_in_api_cli_and_log() {
    let metrics_port = glagent_test_support::free_port();
    let setup = Setup::with_options(KasOptions {
        env: vec![
            ("KAS_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics_port}")),
            ("KAS_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "debug,audit=info".into()),
        ],
        ..Default::default()
    })
    .await;
    let kas_metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let config = format!(
        "user_access:\n  access_as:\n    user: {{}}\n  projects:\n    - id: {0}\nci_access:\n  projects:\n    - id: {0}\n",
        setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let mut options = setup.agent_options();
    options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
    options.args = vec!["--log-format".into(), "json".into()];
    options.env = vec![("RUST_LOG".into(), "debug".into())];
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    let ns = KubeEnv::shared().namespace("telemetry").await;
    let pat = member(&setup, "auditor", 30, &["k8s_proxy", "api"]).await;
    as_admin(
        &ns,
        &[
            "create",
            "rolebinding",
            "auditor-view",
            "--clusterrole=view",
            "--user=gitlab:user:auditor",
        ],
    );
    until(
        Duration::from_secs(10),
        "the API server to apply the binding",
        async || {
            let admin = KubeEnv::shared().kubeconfig_path();
            let args = [
                "-n",
                ns.as_str(),
                "auth",
                "can-i",
                "list",
                "configmaps",
                "--as",
                "gitlab:user:auditor",
            ];
            kubectl(KUBECTLS[1], &admin, &args, None).1.trim() == "yes"
        },
    )
    .await;
    let proxy = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let configmaps = format!("/api/v1/namespaces/{ns}/configmaps");
    let http = setup.kas.http();
    let agent_metrics = format!("http://127.0.0.1:{}/metrics", agent.observability_port);

    // One list through the proxy moves one series on each side.
    let list = r#"{credential="personal_access_token",verb="list",code="200"}"#;
    let kas_before = scrape(&kas_metrics).await;
    let agent_before = scrape(&agent_metrics).await;
    let response = http
        .get(format!("{proxy}{configmaps}"))
        .bearer_auth(format!("pat:{}:{pat}", setup.agent_id))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let kas_after = scrape(&kas_metrics).await;
    let agent_after = scrape(&agent_metrics).await;
    let moved = |before: &str, after: &str, series: &str| sample(after, series) - sample(before, series);
    assert_eq!(
        moved(&kas_before, &kas_after, &format!("kas_proxy_requests_total{list}")),
        1.0,
        "{kas_after}"
    );
    assert_eq!(
        moved(
            &kas_before,
            &kas_after,
            r#"kas_proxy_request_duration_seconds_count{credential="personal_access_token",verb="list"}"#
        ),
        1.0
    );
    assert_eq!(
        moved(
            &agent_before,
            &agent_after,
            r#"agentk_kubernetes_requests_total{verb="list",code="200"}"#
        ),
        1.0,
        "{agent_after}"
    );
    assert_eq!(
        sample(&kas_after, r#"kas_agent_connections{transport="websocket"}"#),
        1.0
    );
    assert_eq!(sample(&kas_after, "kas_agents_connected"), 1.0);
    assert_eq!(sample(&kas_after, "kas_configuration_pushes_total"), 1.0, "{kas_after}");
    assert!(
        sample(
            &kas_after,
            r#"kas_database_statement_duration_seconds_count{statement="select"}"#
        ) > 0.0
    );
    for unbounded in ["auditor", ns.as_str(), "/api/v1", pat.as_str()] {
        assert!(
            !kas_after.contains(unbounded),
            "{unbounded:?} is not a label value: {kas_after}"
        );
        assert!(!agent_after.contains(unbounded), "{unbounded:?} is not a label value");
    }

    // A refusal before the caller is known is counted, not audited.
    let refused = http
        .get(format!("{proxy}{configmaps}"))
        .bearer_auth(format!("pat:{}:glpat-not-a-token", setup.agent_id))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refusal = refused.text().await.unwrap();
    assert!(
        !refusal.contains("glpat-not-a-token"),
        "the refusal echoes no credential: {refusal}"
    );
    let kas_refused = scrape(&kas_metrics).await;
    assert_eq!(
        moved(
            &kas_after,
            &kas_refused,
            r#"kas_proxy_requests_total{credential="none",verb="list",code="401"}"#
        ),
        1.0
    );

    // A CI job's request (ci_access, the agent's own account).
    let (status, job) = call(
        &setup.kas,
        "POST",
        "/ci/jobs",
        Some(json!({"project_id": setup.project_path, "pipeline_id": 71, "job_id": 7001, "ref": "main"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job_token = job["token"].as_str().unwrap().to_string();
    let response = http
        .get(format!("{proxy}/api/v1/namespaces/{ns}"))
        .bearer_auth(format!("ci:{}:{job_token}", setup.agent_id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap();

    // A watch is open while it is, and recorded at its end with its duration.
    let watch = http
        .get(format!("{proxy}{configmaps}?watch=true"))
        .bearer_auth(format!("pat:{}:{pat}", setup.agent_id))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let opened = Instant::now();
    let mut events = watch.bytes_stream();
    until(Duration::from_secs(5), "the watch counted on both sides", async || {
        sample(&scrape(&kas_metrics).await, r#"kas_proxy_open_streams{kind="watch"}"#) == 1.0
            && sample(
                &scrape(&agent_metrics).await,
                r#"agentk_kubernetes_open_streams{kind="watch"}"#,
            ) == 1.0
    })
    .await;
    as_admin(&ns, &["create", "configmap", "seen-by-the-watch"]);
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "the watch streams an event");
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(opened.elapsed())).await;
    drop(events);
    let watched = opened.elapsed();
    until(Duration::from_secs(5), "the watch's end on both sides", async || {
        sample(&scrape(&kas_metrics).await, r#"kas_proxy_open_streams{kind="watch"}"#) == 0.0
            && sample(
                &scrape(&agent_metrics).await,
                r#"agentk_kubernetes_open_streams{kind="watch"}"#,
            ) == 0.0
    })
    .await;

    // The audit log, newest first, as the maintainer reads it.
    let audit = format!(
        "/projects/{}/cluster_agents/{}/audit_events",
        setup.project_id, setup.agent_id
    );
    until(Duration::from_secs(5), "three audit events", async || {
        call(&setup.kas, "GET", &audit, None).await.1.as_array().map(Vec::len) == Some(3)
    })
    .await;
    let (_, events) = call(&setup.kas, "GET", &audit, None).await;
    let [watched_event, job_event, listed] = events.as_array().unwrap().as_slice() else {
        panic!("three events: {events}");
    };
    assert_eq!(listed["verb"], "list");
    assert_eq!(listed["path"], configmaps);
    assert_eq!(listed["status"], 200);
    assert_eq!(listed["credential"], "personal_access_token");
    assert_eq!(listed["user"]["username"], "auditor");
    assert_eq!(listed["impersonated_as"], "gitlab:user:auditor");
    assert!(listed["ci_job"].is_null());
    assert!(listed["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(job_event["credential"], "ci_job");
    assert_eq!(job_event["verb"], "get");
    assert_eq!(
        job_event["ci_job"],
        json!({"id": 7001, "pipeline_id": 71, "project_id": setup.project_id})
    );
    assert_eq!(job_event["user"]["username"], "root");
    assert!(
        job_event["impersonated_as"].is_null(),
        "ci_access without access_as: the agent's account"
    );
    assert_eq!(watched_event["verb"], "watch");
    let watch_ms = watched_event["duration_ms"].as_f64().unwrap();
    assert!(
        watch_ms >= 1000.0 && watch_ms <= watched.as_secs_f64() * 1000.0 + 1000.0,
        "the watch lasted {watched:?}; recorded {watch_ms} ms"
    );

    // Only maintainers read it.
    let developer = http
        .get(setup.kas.api(&audit))
        .header("PRIVATE-TOKEN", &pat)
        .send()
        .await
        .unwrap();
    assert_eq!(developer.status(), StatusCode::FORBIDDEN);

    // The CLI shows the same.
    let output = setup
        .glagent_as(&setup.kas.root_token)
        .args(["cluster", "agent", "audit", "-R", &setup.project_path])
        .args(["--agent", &setup.agent_id.to_string(), "--limit", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "a header and two requests:\n{table}");
    assert!(rows[0].starts_with("STARTED") && rows[0].ends_with("PATH"), "{table}");
    assert!(rows[1].contains("auditor") && rows[1].contains("watch"), "{table}");
    assert!(
        rows[2].contains("ci_job 7001 (pipeline 71") && rows[2].ends_with(&format!("/api/v1/namespaces/{ns}")),
        "{table}"
    );

    // JSON lines from both, the audit target among kas's; no secret in
    // any line, even at debug level.
    let kas_log = json_lines(&setup.kas.log(), "kas");
    let audited: Vec<&Value> = kas_log.iter().filter(|l| l["module"] == "audit").collect();
    assert_eq!(audited.len(), 3, "one audit line per request");
    assert!(audited.iter().any(|l| l["verb"] == "list"
        && l["username"] == "auditor"
        && l["path"] == configmaps.as_str()
        && l["status"] == 200
        && l["message"] == "proxied request"));
    let agent_log = json_lines(&agent.log(), "agentk");
    assert!(
        agent_log.iter().any(|l| l["level"] == "debug"),
        "debug lines were written"
    );
    let raw = format!("{}\n{}", setup.kas.log(), agent.log());
    for (what, secret) in [
        ("the PAT", pat.as_str()),
        ("the agent token", setup.token.as_str()),
        ("the job token", job_token.as_str()),
        ("the root token", setup.kas.root_token.as_str()),
    ] {
        assert!(!raw.contains(secret), "{what} is in a log line");
    }
    assert!(!raw.contains('\u{1b}'), "no escape codes in JSON lines");

    // Nor in the database's files: tokens are stored as digests, the
    // password as a PBKDF2 digest.
    let password = std::fs::read_to_string(setup.kas.data_dir.join("initial_root_password")).unwrap();
    let mut stored = Vec::new();
    for file in ["kas.sqlite3", "kas.sqlite3-wal"] {
        stored.extend(std::fs::read(setup.kas.data_dir.join(file)).unwrap_or_default());
    }
    assert!(stored.len() > 10_000, "the database was read");
    let stored = String::from_utf8_lossy(&stored);
    for (what, secret) in [
        ("the PAT", pat.as_str()),
        ("the agent token", setup.token.as_str()),
        ("the job token", job_token.as_str()),
        ("the root token", setup.kas.root_token.as_str()),
        ("the root password", password.trim()),
    ] {
        assert!(!stored.contains(secret), "{what} is stored in usable form");
        assert!(!raw.contains(secret), "{what} is in a log line");
    }
}

#[tokio::test]
async fn text_logs_written_to_a_file_have_no_escape_codes_and_a_bad_format_is_refused() {
    let mut kas_process = Kas::start(&kas(), KasOptions::default()).await;
    kas_process.stop();
    let log = kas_process.log();
    assert!(log.contains("kas is serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log:?}");

    for (binary, flag) in [(kas(), "--log-format"), (agentk(), "--log-format")] {
        let output = Command::new(&binary).args([flag, "yaml"]).output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("unknown log format \"yaml\": use text or json"),
            "{}: {stderr}",
            binary.display()
        );
    }
}
