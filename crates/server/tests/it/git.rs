//! Git over HTTP with the real git client, the Files API, and the agent
//! configuration file read from the repository.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use glagent_store::Store;
use reqwest::StatusCode;
use serde_json::json;

use crate::{Client, start_kas};

fn git(dir: &Path, ca: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_SSL_CAINFO", ca)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("running git")
}

fn ok(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn remote(kas: &glagent_test_support::kas::Kas, user: &str, token: &str, path: &str) -> String {
    format!("https://{user}:{token}@127.0.0.1:{}/{path}.git", kas.port)
}

#[tokio::test]
async fn push_config_then_read_it_back() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "gitops"})).await;
    let project_id = project["id"].as_i64().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ca = kas.ca_file();

    // An empty repository clones; the config is committed and pushed.
    ok(git(
        work.path(),
        &ca,
        &[
            "clone",
            "-q",
            &remote(&kas, "root", &kas.root_token, "root/gitops"),
            "repo",
        ],
    ));
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join(".gitlab/agents/edge")).unwrap();
    let config = "ci_access:\n  projects:\n    - id: root/gitops\n      default_namespace: apps\nobservability:\n  logging:\n    level: debug\n";
    std::fs::write(repo.join(".gitlab/agents/edge/config.yaml"), config).unwrap();
    ok(git(&repo, &ca, &["add", "."]));
    ok(git(&repo, &ca, &["commit", "-qm", "agent config"]));
    ok(git(&repo, &ca, &["push", "-q", "origin", "main"]));
    let head = ok(git(&repo, &ca, &["rev-parse", "HEAD"])).trim().to_string();

    // The Files API sees the pushed file.
    let (status, file) = root
        .get(&format!(
            "/projects/{project_id}/repository/files/.gitlab%2Fagents%2Fedge%2Fconfig.yaml?ref=main"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(file["commit_id"], head);
    assert_eq!(file["last_commit_id"], head);
    let content = base64::engine::general_purpose::STANDARD
        .decode(file["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(content, config.as_bytes());

    // Registering an agent whose configuration already exists uses it.
    let (status, agent) = root
        .post(
            &format!("/projects/{project_id}/cluster_agents"),
            json!({"name": "edge"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, cfg) = root
        .get(&format!(
            "/projects/{project_id}/cluster_agents/{}/configuration",
            agent["id"]
        ))
        .await;
    assert_eq!(cfg["valid"], true, "{cfg}");
    assert_eq!(cfg["commit_id"], head);
    assert_eq!(cfg["config"]["ci_access"]["projects"][0]["default_namespace"], "apps");
    assert_eq!(cfg["config"]["observability"]["logging"]["level"], "debug");

    // The push was recorded.
    let store = Store::connect(&format!("sqlite://{}", kas.data_dir.join("kas.sqlite3").display()))
        .await
        .unwrap();
    let pushes = store.push_events(project_id).await.unwrap();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].ref_name, "refs/heads/main");
    assert_eq!(pushes[0].after_sha, head);

    // A Files API commit is a push too, and git sees it.
    let (status, body) = root
        .put(
            &format!("/projects/{project_id}/repository/files/.gitlab%2Fagents%2Fedge%2Fconfig.yaml"),
            json!({"branch": "main", "content": "{}\n", "commit_message": "reset config"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ok(git(&repo, &ca, &["pull", "-q"]));
    assert_eq!(
        std::fs::read_to_string(repo.join(".gitlab/agents/edge/config.yaml")).unwrap(),
        "{}\n"
    );
    assert_eq!(store.push_events(project_id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn git_access_needs_a_token_and_the_right_role() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root
        .post("/projects", json!({"name": "locked", "initialize_with_readme": true}))
        .await;
    let (reporter, reporter_token) = root.new_user("rita").await;
    root.post(
        &format!("/projects/{}/members", project["id"]),
        json!({"user_id": reporter, "access_level": 20}),
    )
    .await;
    let (_, outsider_token) = root.new_user("otto").await;
    let work = tempfile::tempdir().unwrap();
    let ca = kas.ca_file();

    let anonymous = git(
        work.path(),
        &ca,
        &[
            "clone",
            "-q",
            &format!("https://127.0.0.1:{}/root/locked.git", kas.port),
            "a",
        ],
    );
    assert!(!anonymous.status.success());
    let wrong = git(
        work.path(),
        &ca,
        &[
            "clone",
            "-q",
            &remote(&kas, "x", "glpat-wrongwrongwrongwrong", "root/locked"),
            "b",
        ],
    );
    assert!(!wrong.status.success());
    let outsider = git(
        work.path(),
        &ca,
        &[
            "clone",
            "-q",
            &remote(&kas, "otto", &outsider_token, "root/locked"),
            "c",
        ],
    );
    assert!(!outsider.status.success());
    assert!(
        String::from_utf8_lossy(&outsider.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&outsider.stderr)
    );

    ok(git(
        work.path(),
        &ca,
        &[
            "clone",
            "-q",
            &remote(&kas, "rita", &reporter_token, "root/locked"),
            "d",
        ],
    ));
    let repo = work.path().join("d");
    assert!(repo.join("README.md").exists());
    std::fs::write(repo.join("x.txt"), "x").unwrap();
    ok(git(&repo, &ca, &["add", "."]));
    ok(git(&repo, &ca, &["commit", "-qm", "x"]));
    let push = git(&repo, &ca, &["push", "-q", "origin", "main"]);
    assert!(!push.status.success(), "a reporter must not push");
    assert!(
        String::from_utf8_lossy(&push.stderr).contains("not allowed to push"),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
}

/// Writes the agent's config file: creates it, or updates it if present.
async fn put_config(root: &Client<'_>, project_id: i64, content: &str) -> StatusCode {
    let path = format!("/projects/{project_id}/repository/files/.gitlab%2Fagents%2Fa%2Fconfig.yaml");
    let body = json!({"branch": "main", "content": content, "commit_message": "config"});
    match root.post(&path, body.clone()).await {
        (StatusCode::BAD_REQUEST, _) => root.put(&path, body).await.0,
        (status, _) => status,
    }
}

#[tokio::test]
async fn broken_config_files_explain_themselves() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "configs"})).await;
    let project_id = project["id"].as_i64().unwrap();
    let (_, agent) = root
        .post(&format!("/projects/{project_id}/cluster_agents"), json!({"name": "a"}))
        .await;
    let config_url = format!("/projects/{project_id}/cluster_agents/{}/configuration", agent["id"]);

    // No file: defaults.
    let (_, cfg) = root.get(&config_url).await;
    assert_eq!(
        (cfg["valid"].clone(), cfg["file_exists"].clone()),
        (json!(true), json!(false)),
        "{cfg}"
    );

    let big = format!("# {}\n", "x".repeat(130 * 1024));
    let cases: [(&str, Option<i64>, &str); 4] = [
        (
            "user_access:\n  projects:\n    - id: g/p\n  group: []\n",
            Some(4),
            "group",
        ),
        (
            "ci_access:\n  projects:\n    - id: g/p\n      protected_branches_only: sometimes\n",
            Some(4),
            "boolean",
        ),
        ("ci_access:\n  projects: [\n", Some(2), "unclosed"),
        (&big, None, "128 KiB"),
    ];
    for (content, line, expected) in cases {
        let status = put_config(&root, project_id, content).await;
        assert!(status.is_success(), "{status}");
        let (_, cfg) = root.get(&config_url).await;
        assert_eq!(cfg["valid"], false, "{content:?} should be refused: {cfg}");
        let message = cfg["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(".gitlab/agents/a/config.yaml"), "{message}");
        assert!(message.contains(expected), "{message}");
        if let Some(line) = line {
            assert_eq!(cfg["error"]["line"], line, "{message}");
        }
    }
}

#[tokio::test]
async fn files_api_validates_input() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "files"})).await;
    let base = format!("/projects/{}/repository/files", project["id"]);
    let (status, body) = root
        .post(
            &format!("{base}/a.txt"),
            json!({"branch": "main", "content": "1", "commit_message": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = root
        .post(
            &format!("{base}/a.txt"),
            json!({"branch": "main", "content": "1", "commit_message": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already exists"));
    let (status, _) = root
        .put(
            &format!("{base}/nope.txt"),
            json!({"branch": "main", "content": "1", "commit_message": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = root
        .post(
            &format!("{base}/..%2Fescape"),
            json!({"branch": "main", "content": "1", "commit_message": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = root
        .post(&format!("{base}/b.txt"), json!({"branch": "main", "content": "1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = root
        .post(
            &format!("{base}/c.bin"),
            json!({"branch": "main", "content": "AAEC", "encoding": "base64", "commit_message": "bin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let raw = kas
        .http()
        .get(kas.api(&format!("{base}/c.bin/raw?ref=main")))
        .header("PRIVATE-TOKEN", &kas.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.bytes().await.unwrap().as_ref(), &[0u8, 1, 2]);
    assert_eq!(
        root.get(&format!("{base}/missing.txt?ref=main")).await.0,
        StatusCode::NOT_FOUND
    );
}
