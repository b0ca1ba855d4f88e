//! User access from a workstation, like glab: a kubeconfig context whose
//! user runs `glagent cluster agent get-token` as a client-go exec
//! credential plugin, and that plugin, which hands kubectl
//! `pat:<agent id>:<token>` with a `k8s_proxy` token valid until the end of
//! the day (created with GITLAB_TOKEN and cached).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use glagent_api_types::CreatedPersonalAccessToken;
use serde_json::{Value, json};

use crate::client::Client;

/// Names of the kubeconfig entries for one agent on one kas.
pub fn entry_name(host: &str, agent_id: i64) -> String {
    let host = host.split("://").last().unwrap_or(host).trim_end_matches('/');
    format!("{host}-agent-{agent_id}")
}

/// The kubeconfig file kubectl would use.
pub fn default_path() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next()) {
        return first;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".kube/config")
}

fn read(path: &Path) -> Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_saphyr::from_str(&text).with_context(|| format!("{} is not a valid kubeconfig", path.display()))
        }
        Ok(_) => Ok(json!({})),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the entry called `name` in the list `key`, or adds it.
fn upsert(config: &mut Value, key: &str, name: &str, entry: Value) {
    if !config[key].is_array() {
        config[key] = json!([]);
    }
    let list = config[key].as_array_mut().expect("array");
    list.retain(|e| e["name"] != name);
    list.push(entry);
}

pub struct Update<'a> {
    pub path: &'a Path,
    pub name: &'a str,
    pub server: &'a str,
    pub ca_pem: Option<&'a [u8]>,
    pub agent_id: i64,
    pub host: &'a str,
    pub ca_file: Option<&'a Path>,
    pub use_context: bool,
}

/// Adds or updates the cluster, user and context for an agent.
pub fn update(u: &Update<'_>) -> Result<()> {
    let mut config = read(u.path)?;
    if !config.is_object() {
        config = json!({});
    }
    config["apiVersion"] = json!("v1");
    config["kind"] = json!("Config");
    let mut cluster = json!({"server": u.server});
    if let Some(pem) = u.ca_pem {
        use base64::Engine;
        cluster["certificate-authority-data"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    upsert(
        &mut config,
        "clusters",
        u.name,
        json!({"name": u.name, "cluster": cluster}),
    );
    let program = std::env::current_exe().context("locating the glagent binary")?;
    let mut env = vec![json!({"name": "GITLAB_HOST", "value": u.host})];
    if let Some(ca) = u.ca_file {
        env.push(json!({"name": "GLAGENT_CA_CERT", "value": ca.display().to_string()}));
    }
    let exec = json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": program.display().to_string(),
        "args": ["cluster", "agent", "get-token", "--agent", u.agent_id.to_string()],
        "env": env,
        "interactiveMode": "Never",
    });
    upsert(
        &mut config,
        "users",
        u.name,
        json!({"name": u.name, "user": {"exec": exec}}),
    );
    upsert(
        &mut config,
        "contexts",
        u.name,
        json!({"name": u.name, "context": {"cluster": u.name, "user": u.name}}),
    );
    if u.use_context || config["current-context"].as_str().unwrap_or("").is_empty() {
        config["current-context"] = json!(u.name);
    }
    if let Some(dir) = u.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_saphyr::to_string(&config)?;
    write_private(u.path, &text)?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The ExecCredential kubectl expects on stdout.
pub async fn get_token(client: &Client, host: &str, agent_id: i64) -> Result<String> {
    let today = time::OffsetDateTime::now_utc().date();
    let cache = token_cache_path(host);
    let cached = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|v| v["date"] == today.to_string())
        .and_then(|v| v["token"].as_str().map(str::to_string));
    let token = match cached {
        Some(token) => token,
        None => {
            let tomorrow = today.next_day().context("date overflow")?;
            let created: CreatedPersonalAccessToken = client
                .post(
                    "/user/personal_access_tokens",
                    json!({"name": format!("glagent k8s_proxy {today}"), "scopes": ["k8s_proxy"], "expires_at": tomorrow.to_string()}),
                )
                .await?;
            let token = created.token;
            if let Some(dir) = cache.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_private(&cache, &json!({"date": today.to_string(), "token": token}).to_string())?;
            token
        }
    };
    let expires = format!("{}T23:59:59Z", today);
    Ok(json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": format!("pat:{agent_id}:{token}"), "expirationTimestamp": expires},
    })
    .to_string())
}

/// One cached token per kas (and per GITLAB_TOKEN user, through the host's
/// name and the token's digest).
fn token_cache_path(host: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    let owner = std::env::var("GITLAB_TOKEN").unwrap_or_default();
    let key = glagent_core::secret::digest(&format!("{host}\n{owner}"));
    base.join("glagent/k8s-proxy-tokens").join(&key[..32])
}
