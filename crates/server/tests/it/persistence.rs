//! kas keeps its data across restarts and never stores secrets usably.

use glagent_test_support::kas::{Kas, KasOptions};
use reqwest::StatusCode;
use serde_json::json;

use crate::{Client, KAS};

async fn restart_keeps_everything(database_url: Option<String>) -> (Kas, Vec<String>) {
    let mut kas = Kas::start(
        KAS.as_ref(),
        KasOptions {
            database_url,
            ..Default::default()
        },
    )
    .await;
    let root = Client::root(&kas);
    let (_, project) = root
        .post("/projects", json!({"name": "keep", "initialize_with_readme": true}))
        .await;
    let agents = format!("/projects/{}/cluster_agents", project["id"]);
    let (_, agent) = root.post(&agents, json!({"name": "kept"})).await;
    let (_, token) = root
        .post(&format!("{agents}/{}/tokens", agent["id"]), json!({"name": "t"}))
        .await;
    let (_, user_token) = root.new_user("persisted").await;
    let secrets = vec![
        kas.root_token.clone(),
        token["token"].as_str().unwrap().to_string(),
        user_token.clone(),
    ];

    kas.restart().await;
    let root = Client::root(&kas);
    let (status, agents_after) = root.get(&agents).await;
    assert_eq!(status, StatusCode::OK, "root token must survive a restart");
    assert_eq!(agents_after[0]["name"], "kept");
    let (status, tokens) = root.get(&format!("{agents}/{}/tokens", agent["id"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens[0]["name"], "t");
    assert_eq!(
        Client::new(&kas, &user_token).get("/user").await.1["username"],
        "persisted"
    );
    let (status, readme) = root
        .get(&format!(
            "/projects/{}/repository/files/README.md?ref=main",
            project["id"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{readme}");
    (kas, secrets)
}

fn assert_no_secret(dump: &[u8], secrets: &[String]) {
    assert!(dump.len() > 1000, "the dump looks empty ({} bytes)", dump.len());
    let text = String::from_utf8_lossy(dump);
    for secret in secrets {
        assert!(!secret.is_empty());
        // Neither the whole token nor its random part may appear.
        let random = secret.split_once('-').map(|(_, r)| r).unwrap_or(secret);
        assert!(!text.contains(random), "a secret is stored in usable form");
    }
    // The digests are there: the dump did contain the token tables.
    let digest = glagent_core::secret::digest(&secrets[0]);
    assert!(text.contains(&digest), "expected the token digest in the dump");
}

#[tokio::test]
async fn sqlite_restart_and_dump() {
    let (kas, secrets) = restart_keeps_everything(None).await;
    let mut dump = Vec::new();
    for entry in std::fs::read_dir(&kas.data_dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("kas.sqlite3") {
            dump.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    assert_no_secret(&dump, &secrets);
}

#[tokio::test]
async fn postgres_restart_and_dump() {
    let url = glagent_test_support::postgres::fresh_database().await;
    let (_kas, secrets) = restart_keeps_everything(Some(url.clone())).await;
    let pg_dump = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("bin/pg_dump"))
        .find(|p| p.exists())
        .expect("pg_dump from Debian's postgresql package");
    let output = std::process::Command::new(pg_dump).arg(&url).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_secret(&output.stdout, &secrets);
}

#[tokio::test]
async fn preset_root_token_and_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let preset = "glpat-preset-root-token-0123456789".to_string();
    let kas = Kas::start(
        KAS.as_ref(),
        KasOptions {
            env: vec![("KAS_INITIAL_ROOT_TOKEN".into(), preset.clone())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(kas.root_token, preset);
    let mode = std::fs::metadata(kas.data_dir.join("initial_root_token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = kas.log();
    assert!(log.contains("created the root user"), "{log}");
    assert!(log.contains("initial_root_token"), "the log says where the token is");
    assert!(!log.contains(&preset), "the log never holds the token");
    assert_eq!(Client::root(&kas).get("/user").await.1["username"], "root");
}

#[tokio::test]
async fn admin_commands_script_users_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = |args: &[&str]| {
        let output = std::process::Command::new(KAS)
            .arg("--data-dir")
            .arg(&data)
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, user, stderr) = admin(&["create-user", "--username", "ops", "--email", "ops@example.com"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&user).unwrap()["username"],
        "ops"
    );
    let (ok, token, stderr) = admin(&["create-token", "--username", "ops", "--scopes", "api,k8s_proxy"]);
    assert!(ok, "{stderr}");
    assert!(token.starts_with("glpat-"), "{token}");
    let (ok, _, stderr) = admin(&["create-token", "--username", "ops", "--scopes", "everything"]);
    assert!(!ok && stderr.contains("is not a scope"), "{stderr}");
    let (ok, _, stderr) = admin(&["create-user", "--username", "Bad Name"]);
    assert!(!ok && stderr.contains("--username"), "{stderr}");

    let kas = Kas::start(
        KAS.as_ref(),
        KasOptions {
            data_dir: Some(data.clone()),
            ..Default::default()
        },
    )
    .await;
    let (status, me) = Client::new(&kas, &token).get("/user").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "ops");
}

/// A token whose answer was sent is delivered: the sweep of undelivered
/// tokens, run every quarter of the grace, leaves it alone.
#[tokio::test]
async fn a_token_sent_in_full_outlives_the_undelivered_token_grace() {
    let kas = Kas::start(
        KAS.as_ref(),
        KasOptions {
            env: vec![("KAS_UNDELIVERED_TOKEN_GRACE".into(), "5".into())],
            ..Default::default()
        },
    )
    .await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "sent"})).await;
    let agents = format!("/projects/{}/cluster_agents", project["id"]);
    let (_, agent) = root.post(&agents, json!({"name": "sent"})).await;
    let tokens = format!("{agents}/{}/tokens", agent["id"]);
    let (status, created) = root.post(&tokens, json!({"name": "kept"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let (_, listed) = root.get(&tokens).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], created["id"]);
    assert!(!kas.log().contains("agent token deleted"), "{}", kas.log());
}
