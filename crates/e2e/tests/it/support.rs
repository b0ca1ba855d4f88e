//! What the end-to-end tests share beyond a kas with an agent: the
//! Kubernetes API proxy fixture (an agent with cluster access, a namespace,
//! a developer with a `k8s_proxy` token and a kubeconfig for the proxy),
//! kubectl, watches and the API server's audit log; and, in submodules,
//! helm, a stand-in kubelet and a stand-in API server that upgrades.

pub mod helm;
pub mod kubelet;
pub mod upgrade_echo;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use glagent_test_support::agentk::Agentk;
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;
use serde_json::json;

use crate::{Setup, agentk, call, until};

pub const KUBECTLS: [&str; 2] = ["kubectl.1.27", "kubectl.1.33"];

pub fn kubectl_path(name: &str) -> PathBuf {
    let candidates = [
        Path::new("/usr/lib/google-cloud-sdk/bin").join(name),
        Path::new("/usr/bin").join(name),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed (google-cloud-cli's kubectl package)"))
}

/// A user who is a member of the setup's project with `level`, and a
/// personal access token with the given scopes.
pub async fn member(setup: &Setup, username: &str, level: i64, scopes: &[&str]) -> String {
    let (_, user) = call(
        &setup.kas,
        "POST",
        "/users",
        Some(json!({"username": username, "email": format!("{username}@example.com")})),
    )
    .await;
    let id = user["id"].as_i64().unwrap();
    if level > 0 {
        let (status, _) = call(
            &setup.kas,
            "POST",
            &format!("/projects/{}/members", setup.project_id),
            Some(json!({"user_id": id, "access_level": level})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, token) = call(
        &setup.kas,
        "POST",
        &format!("/users/{id}/personal_access_tokens"),
        Some(json!({"name": "k8s", "scopes": scopes})),
    )
    .await;
    token["token"].as_str().unwrap().to_string()
}

/// A kubeconfig pointing at kas's proxy for the setup's agent.
pub fn kubeconfig(setup: &Setup, pat: &str, dir: &Path) -> PathBuf {
    kubeconfig_at(&setup.kas.url, &setup.kas.ca_file(), setup.agent_id, pat, dir)
}

/// A kubeconfig for the proxy of the kas at `url`.
pub fn kubeconfig_at(url: &str, ca: &Path, agent_id: i64, pat: &str, dir: &Path) -> PathBuf {
    let path = dir.join(format!(
        "kubeconfig-{}-{}",
        url.rsplit(':').next().unwrap_or_default(),
        &pat[pat.len() - 6..]
    ));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gitlab\n  cluster:\n    server: {}/-/kubernetes-agent/k8s-proxy/\n    certificate-authority: {}\n\
             users:\n- name: agent\n  user:\n    token: pat:{}:{}\ncontexts:\n- name: gitlab\n  context:\n    cluster: gitlab\n    user: agent\ncurrent-context: gitlab\n",
            url,
            ca.display(),
            agent_id,
            pat
        ),
    )
    .unwrap();
    path
}

pub fn kubectl(binary: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(kubectl_path(binary));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

pub fn ok(result: (bool, String, String), what: &str) -> String {
    assert!(result.0, "{what} failed:\n{}\n{}", result.1, result.2);
    result.1
}

/// Runs kubectl in `ns` as the cluster's administrator (RBAC set-up).
pub fn as_admin(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    ok(
        kubectl(KUBECTLS[1], &KubeEnv::shared().kubeconfig_path(), &full, None),
        &format!("kubectl {args:?} as the administrator"),
    )
}

pub async fn agent_with_cluster_access(setup: &Setup) -> Agentk {
    let mut options = setup.agent_options();
    options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    agent
}

/// One agent with cluster access whose `user_access` lists its own project
/// (with `access_as` when given: "agent" or "user"), a namespace of the
/// test's own, and a developer with a `k8s_proxy` token and a kubeconfig
/// for the proxy.
pub struct Fixture {
    pub setup: Setup,
    pub agent: Agentk,
    pub ns: String,
    pub pat: String,
    pub kc: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start(access_as: Option<&str>, ns_prefix: &str, username: &str) -> Fixture {
        let setup = Setup::new().await;
        let access = access_as
            .map(|a| format!("  access_as:\n    {a}: {{}}\n"))
            .unwrap_or_default();
        let config = format!("user_access:\n{access}  projects:\n    - id: {}\n", setup.project_path);
        assert!(setup.write_config(&config).await.is_success());
        let agent = agent_with_cluster_access(&setup).await;
        let ns = KubeEnv::shared().namespace(ns_prefix).await;
        let pat = member(&setup, username, 30, &["k8s_proxy"]).await;
        let dir = tempfile::tempdir().unwrap();
        let kc = kubeconfig(&setup, &pat, dir.path());
        Fixture {
            setup,
            agent,
            ns,
            pat,
            kc,
            dir,
        }
    }

    /// `kubectl -n <the fixture's namespace> <args>` with `bin`, through
    /// the proxy.
    pub fn kubectl_in_ns(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        kubectl(bin, &self.kc, &full, stdin)
    }
}

/// Runs `kubectl get configmaps --watch` with `kubeconfig`, creates the
/// ConfigMap `name` with `creator`, and returns what the watch printed.
pub async fn watch_sees(kubeconfig: &Path, ns: &str, name: &str, creator: &Path) -> String {
    let mut watch = Command::new(kubectl_path(KUBECTLS[1]))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let expected = format!("configmap/{name}");
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !seen.contains(&expected) {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    ok(
        kubectl(KUBECTLS[1], creator, &["-n", ns, "create", "configmap", name], None),
        "create during watch",
    );
    let seen = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    seen
}

/// The API server's audit event for a SelfSubjectRulesReview
/// (`kubectl auth can-i --list`) made as the impersonated `username`, and
/// the gitlab:* groups it saw, in order.
pub async fn audited_rules_review(username: &str) -> (serde_json::Value, Vec<String>) {
    let env = KubeEnv::shared();
    let review = |event: &serde_json::Value| {
        event["objectRef"]["resource"] == "selfsubjectrulesreviews" && event["impersonatedUser"]["username"] == username
    };
    until(
        Duration::from_secs(5),
        &format!("{username}'s rules review in the audit log"),
        async || env.audit_events().iter().any(review),
    )
    .await;
    let seen = env.audit_events().into_iter().find(review).unwrap();
    let groups = seen["impersonatedUser"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .filter(|g| g.starts_with("gitlab:"))
        .map(str::to_string)
        .collect();
    (seen, groups)
}
