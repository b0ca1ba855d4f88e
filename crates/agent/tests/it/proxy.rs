//! The Kubernetes API proxy with real kubectl (1.27 and 1.33) against the
//! real kube-apiserver, through kas and agentk.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use glagent_test_support::agentk::Agentk;
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;
use serde_json::json;

use crate::{AGENTK, Setup, call, until};

pub(crate) const KUBECTLS: [&str; 2] = ["kubectl.1.27", "kubectl.1.33"];

pub(crate) fn kubectl_path(name: &str) -> PathBuf {
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
pub(crate) async fn member(setup: &Setup, username: &str, level: i64, scopes: &[&str]) -> String {
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
pub(crate) fn kubeconfig(setup: &Setup, pat: &str, dir: &Path) -> PathBuf {
    kubeconfig_at(&setup.kas.url, &setup.kas.ca_file(), setup.agent_id, pat, dir)
}

/// A kubeconfig for the proxy of the kas at `url`.
pub(crate) fn kubeconfig_at(url: &str, ca: &Path, agent_id: i64, pat: &str, dir: &Path) -> PathBuf {
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

pub(crate) fn kubectl(binary: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
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

pub(crate) fn ok(result: (bool, String, String), what: &str) -> String {
    assert!(result.0, "{what} failed:\n{}\n{}", result.1, result.2);
    result.1
}

/// Runs kubectl in `ns` as the cluster's administrator (RBAC set-up).
pub(crate) fn as_admin(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    ok(
        kubectl(KUBECTLS[1], &KubeEnv::shared().kubeconfig_path(), &full, None),
        &format!("kubectl {args:?} as the administrator"),
    )
}

pub(crate) async fn agent_with_cluster_access(setup: &Setup) -> Agentk {
    let mut options = setup.agent_options();
    options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
    let mut agent = Agentk::start(AGENTK.as_ref(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    agent
}

/// One agent with cluster access whose `user_access` lists its own project
/// (with `access_as` when given: "agent" or "user"), a namespace of the
/// test's own, and a developer with a `k8s_proxy` token and a kubeconfig
/// for the proxy.
pub(crate) struct Fixture {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_through_the_proxy() {
    let Fixture {
        setup: _setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(Some("agent"), "proxy", "dora").await;

    for (i, bin) in KUBECTLS.iter().enumerate() {
        let name = format!("cm-{i}");
        ok(kubectl(bin, &kc, &["get", "namespace", &ns], None), "get namespace");
        ok(
            kubectl(
                bin,
                &kc,
                &["-n", &ns, "create", "configmap", &name, "--from-literal=a=1"],
                None,
            ),
            "create",
        );
        let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"2\"\n");
        ok(
            kubectl(bin, &kc, &["-n", &ns, "apply", "-f", "-"], Some(&manifest)),
            "apply",
        );
        ok(
            kubectl(
                bin,
                &kc,
                &[
                    "-n",
                    &ns,
                    "patch",
                    "configmap",
                    &name,
                    "--type=merge",
                    "-p",
                    r#"{"data":{"b":"3"}}"#,
                ],
                None,
            ),
            "patch",
        );
        let ssa = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-{i}\ndata:\n  s: \"1\"\n");
        ok(
            kubectl(
                bin,
                &kc,
                &[
                    "-n",
                    &ns,
                    "apply",
                    "--server-side",
                    "--field-manager=glagent-test",
                    "-f",
                    "-",
                ],
                Some(&ssa),
            ),
            "server-side apply",
        );
        let data = ok(
            kubectl(
                bin,
                &kc,
                &[
                    "-n",
                    &ns,
                    "get",
                    "configmap",
                    &name,
                    "-o",
                    "jsonpath={.data.a}{.data.b}",
                ],
                None,
            ),
            "get",
        );
        assert_eq!(data, "23");
        assert_eq!(
            ok(
                kubectl(bin, &kc, &["auth", "can-i", "create", "configmaps", "-n", &ns], None),
                "can-i"
            )
            .trim(),
            "yes"
        );
        ok(
            kubectl(bin, &kc, &["-n", &ns, "delete", "configmap", &name], None),
            "delete",
        );
    }
    // With access_as agent, a client's own impersonation passes through and
    // the cluster's RBAC judges it: nobody bound `someone`.
    let (allowed, _, stderr) = kubectl(KUBECTLS[1], &kc, &["--as=someone", "-n", &ns, "get", "secrets"], None);
    assert!(!allowed);
    assert!(stderr.contains("User \"someone\""), "{stderr}");
    // A real upgrade request (kubectl exec) reaches the real API server
    // through the tunnel and its answer comes back. No kubelet runs here,
    // so the pod stays unscheduled and the API server refuses the exec.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  containers:\n  - name: main\n    image: busybox\n";
    ok(
        kubectl(
            KUBECTLS[1],
            &KubeEnv::shared().kubeconfig_path(),
            &["-n", &ns, "apply", "-f", "-"],
            Some(pod),
        ),
        "pod",
    );
    for bin in KUBECTLS {
        let (ran, _, stderr) = kubectl(bin, &kc, &["-n", &ns, "exec", "sleeper", "--", "true"], None);
        assert!(!ran);
        assert!(stderr.contains("does not have a host assigned"), "{bin}: {stderr}");
    }

    // A watch receives events as they happen.
    let seen = watch_sees(&kc, &ns, "watched-later", &kc).await;
    assert!(seen.contains("configmap/watched-later"), "the watch saw: {seen}");
}

/// Runs `kubectl get configmaps --watch` with `kubeconfig`, creates the
/// ConfigMap `name` with `creator`, and returns what the watch printed.
pub(crate) async fn watch_sees(kubeconfig: &Path, ns: &str, name: &str, creator: &Path) -> String {
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
async fn audited_rules_review(username: &str) -> (serde_json::Value, Vec<String>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_as_user_impersonates_the_gitlab_identity() {
    let Fixture {
        setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(Some("user"), "impersonate", "ursula").await;
    let bin = KUBECTLS[1];

    let (allowed, _, stderr) = kubectl(bin, &kc, &["-n", &ns, "get", "secrets"], None);
    assert!(!allowed, "no RoleBinding yet, so the API server must refuse");
    assert!(stderr.contains("User \"gitlab:user:ursula\""), "{stderr}");

    let project_group = format!("gitlab:project_role:{}:developer", setup.project_id);
    as_admin(
        &ns,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get,list",
            "--resource=secrets",
        ],
    );
    as_admin(
        &ns,
        &[
            "create",
            "rolebinding",
            "devs",
            "--role=secret-reader",
            &format!("--group={project_group}"),
        ],
    );
    let _ = until(
        Duration::from_secs(5),
        "RBAC to allow the project's developers",
        async || kubectl(bin, &kc, &["-n", &ns, "get", "secrets"], None).0,
    )
    .await;
    // Reporters are included in a developer's groups, maintainers are not.
    let reporter_group = format!("gitlab:project_role:{}:reporter", setup.project_id);
    as_admin(
        &ns,
        &["create", "role", "cm-reader", "--verb=list", "--resource=configmaps"],
    );
    as_admin(
        &ns,
        &[
            "create",
            "rolebinding",
            "reporters",
            "--role=cm-reader",
            &format!("--group={reporter_group}"),
        ],
    );
    let can = |resource: &'static str, verb: &'static str| {
        let kc = kc.clone();
        let ns = ns.clone();
        async move {
            kubectl(bin, &kc, &["auth", "can-i", verb, resource, "-n", &ns], None)
                .1
                .trim()
                .to_string()
        }
    };
    until(Duration::from_secs(5), "the reporter group to apply", async || {
        can("configmaps", "list").await == "yes"
    })
    .await;
    assert_eq!(can("pods", "list").await, "no");

    // The API server's own view of the caller: `auth can-i --list` sends a
    // SelfSubjectRulesReview, which the test API server audits.
    let rules = ok(
        kubectl(bin, &kc, &["auth", "can-i", "--list", "-n", &ns], None),
        "can-i --list",
    );
    let line = |resource: &str| {
        rules
            .lines()
            .find(|l| l.starts_with(resource))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("secrets ").contains("[get list]"), "{rules}");
    assert!(line("configmaps ").contains("[list]"), "{rules}");
    let (seen, mut groups) = audited_rules_review("gitlab:user:ursula").await;
    let impersonated = &seen["impersonatedUser"];
    groups.sort();
    let pid = setup.project_id;
    assert_eq!(
        groups,
        [
            "gitlab:project_role:{pid}:developer",
            "gitlab:project_role:{pid}:guest",
            "gitlab:project_role:{pid}:reporter",
            "gitlab:user",
        ]
        .map(|g| g.replace("{pid}", &pid.to_string())),
        "{seen}"
    );
    let extra = &impersonated["extra"];
    assert_eq!(
        extra["agent.gitlab.com/id"],
        json!([setup.agent_id.to_string()]),
        "{seen}"
    );
    assert_eq!(extra["agent.gitlab.com/username"], json!(["ursula"]), "{seen}");
    assert_eq!(
        extra["agent.gitlab.com/access_type"],
        json!(["personal_access_token"]),
        "{seen}"
    );
    assert_eq!(
        extra["agent.gitlab.com/config_project_id"],
        json!([pid.to_string()]),
        "{seen}"
    );
    // The one authenticated is the agent: kas's caller never reaches the cluster.
    assert_ne!(seen["user"]["username"], "gitlab:user:ursula", "{seen}");

    // The client's own impersonation is refused while an identity is imposed.
    let (nested, _, stderr) = kubectl(bin, &kc, &["--as=someone-else", "-n", &ns, "get", "secrets"], None);
    assert!(!nested);
    assert!(stderr.contains("nested impersonation is not supported"), "{stderr}");
}

#[tokio::test]
async fn proxy_refusals_say_why() {
    let setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let member_pat = member(&setup, "mia", 30, &["k8s_proxy"]).await;
    let no_scope_pat = member(&setup, "nico", 30, &["api"]).await;
    let reporter_pat = member(&setup, "rex", 20, &["k8s_proxy"]).await;
    let http = setup.kas.http();
    let url = format!("{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces", setup.kas.url);
    let get = |token: Option<String>| {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };

    let anonymous = get(None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["gitlab-unauthorized"], "true");
    let wrong = get(Some(format!("pat:{}:glpat-notarealtoken00000", setup.agent_id))).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.headers()["gitlab-unauthorized"], "true");
    let scope = get(Some(format!("pat:{}:{no_scope_pat}", setup.agent_id))).await;
    assert_eq!(scope.status(), StatusCode::FORBIDDEN);
    assert!(scope.text().await.unwrap().contains("k8s_proxy scope"));
    let reporter = get(Some(format!("pat:{}:{reporter_pat}", setup.agent_id))).await;
    assert_eq!(reporter.status(), StatusCode::FORBIDDEN);
    assert!(reporter.text().await.unwrap().contains("developer role"));
    let other_agent = get(Some(format!("pat:999:{member_pat}"))).await;
    assert_eq!(other_agent.status(), StatusCode::FORBIDDEN);
    let not_connected = get(Some(format!("pat:{}:{member_pat}", setup.agent_id))).await;
    assert_eq!(not_connected.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(not_connected.text().await.unwrap().contains("not connected"));
}

/// Registers a CI job of `project` and returns its job token.
async fn ci_job(setup: &Setup, pat: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let response = setup
        .kas
        .http()
        .post(setup.kas.api("/ci/jobs"))
        .header("PRIVATE-TOKEN", pat)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_jobs_use_their_kubeconfig_with_the_ci_job_identity() {
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let ns = env.namespace("ci").await;
    let (_, group) = call(
        &setup.kas,
        "POST",
        "/groups",
        Some(json!({"name": "acme", "path": "acme"})),
    )
    .await;
    let (_, app) = call(
        &setup.kas,
        "POST",
        "/projects",
        Some(json!({"name": "app", "namespace_id": group["id"]})),
    )
    .await;
    let (_, other) = call(
        &setup.kas,
        "POST",
        "/projects",
        Some(json!({"name": "other", "namespace_id": group["id"]})),
    )
    .await;
    let (_, ops) = call(
        &setup.kas,
        "POST",
        "/groups",
        Some(json!({"name": "ops", "path": "ops"})),
    )
    .await;
    let (_, deploy) = call(
        &setup.kas,
        "POST",
        "/projects",
        Some(json!({"name": "deploy", "namespace_id": ops["id"]})),
    )
    .await;
    let config = format!(
        "ci_access:\n  projects:\n    - id: acme/app\n      default_namespace: {ns}\n      environments: [\"review/*\", production]\n      access_as:\n        ci_job: {{}}\n  groups:\n    - id: ops\n      access_as:\n        impersonate:\n          username: deployer\n          groups: [deployers]\n"
    );
    assert!(setup.write_config(&config).await.is_success());
    let _agent = agent_with_cluster_access(&setup).await;
    let (_, bot) = call(&setup.kas, "POST", "/users", Some(json!({"username": "ci-bot"}))).await;
    for project in [&app, &other, &deploy] {
        call(
            &setup.kas,
            "POST",
            &format!("/projects/{}/members", project["id"]),
            Some(json!({"user_id": bot["id"], "access_level": 30})),
        )
        .await;
    }
    let (_, pat) = call(
        &setup.kas,
        "POST",
        &format!("/users/{}/personal_access_tokens", bot["id"]),
        Some(json!({"name": "ci", "scopes": ["api"]})),
    )
    .await;
    let pat = pat["token"].as_str().unwrap().to_string();

    let (status, job) = ci_job(
        &setup,
        &pat,
        json!({"project_id": "acme/app", "pipeline_id": 11, "job_id": 1001, "ref": "main", "ref_protected": true,
               "environment": "review/feature-x", "environment_tier": "development"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job_token = job["token"].as_str().unwrap().to_string();
    assert!(job_token.starts_with("glcbt-"));

    // allowed_agents, in GitLab's shape.
    let allowed: serde_json::Value = setup
        .kas
        .http()
        .get(setup.kas.api("/job/allowed_agents"))
        .header("JOB-TOKEN", &job_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(allowed["allowed_agents"][0]["id"], setup.agent_id, "{allowed}");
    assert_eq!(
        allowed["allowed_agents"][0]["configuration"]["default_namespace"],
        ns.as_str()
    );
    assert_eq!(allowed["job"]["id"], 1001);
    assert_eq!(allowed["pipeline"]["id"], 11);
    assert_eq!(allowed["project"]["groups"][0]["id"], group["id"]);
    assert_eq!(allowed["environment"]["slug"], "review/feature-x");

    // `glagent ci kubeconfig` writes the job's KUBECONFIG.
    let glagent = PathBuf::from(AGENTK).with_file_name("glagent");
    let output = Command::new(&glagent)
        .args(["ci", "kubeconfig"])
        .env("GITLAB_HOST", &setup.kas.url)
        .env("CI_JOB_TOKEN", &job_token)
        .env("GLAGENT_CA_CERT", setup.kas.ca_file())
        .output()
        .expect("glagent is built next to agentk");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, &output.stdout).unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(text.contains(&format!("ci:{}:{job_token}", setup.agent_id)), "{text}");
    let context = format!("{}:edge", setup.project_path);
    let bin = KUBECTLS[0];
    let (allowed_now, _, stderr) = kubectl(bin, &kc, &["--context", &context, "get", "configmaps"], None);
    assert!(!allowed_now);
    assert!(stderr.contains("User \"gitlab:ci_job:1001\""), "{stderr}");
    as_admin(
        &ns,
        &[
            "create",
            "role",
            "deployer",
            "--verb=list,create",
            "--resource=configmaps",
        ],
    );
    as_admin(
        &ns,
        &[
            "create",
            "rolebinding",
            "app-jobs",
            "--role=deployer",
            &format!("--group=gitlab:project:{}", app["id"]),
        ],
    );
    until(Duration::from_secs(5), "RBAC for the job's project group", async || {
        kubectl(bin, &kc, &["--context", &context, "get", "configmaps"], None).0
    })
    .await;
    ok(
        kubectl(
            bin,
            &kc,
            &["--context", &context, "create", "configmap", "deployed-by-ci"],
            None,
        ),
        "create from CI",
    );
    // The API server's view of the job, from its audit log.
    ok(
        kubectl(bin, &kc, &["--context", &context, "auth", "can-i", "--list"], None),
        "can-i --list from CI",
    );
    let (seen, groups) = audited_rules_review("gitlab:ci_job:1001").await;
    let impersonated = &seen["impersonatedUser"];
    let (gid, pid) = (&group["id"], &app["id"]);
    assert_eq!(
        groups,
        [
            "gitlab:ci_job".to_string(),
            format!("gitlab:group:{gid}"),
            format!("gitlab:group_env_tier:{gid}:development"),
            format!("gitlab:project:{pid}"),
            format!("gitlab:project_env:{pid}:review/feature-x"),
            format!("gitlab:project_env_tier:{pid}:development"),
        ],
        "{seen}"
    );
    let extra = &impersonated["extra"];
    for (key, value) in [
        ("agent.gitlab.com/id", setup.agent_id.to_string()),
        ("agent.gitlab.com/config_project_id", setup.project_id.to_string()),
        ("agent.gitlab.com/project_id", pid.to_string()),
        ("agent.gitlab.com/ci_pipeline_id", "11".to_string()),
        ("agent.gitlab.com/ci_job_id", "1001".to_string()),
        ("agent.gitlab.com/environment_slug", "review/feature-x".to_string()),
        ("agent.gitlab.com/environment_tier", "development".to_string()),
    ] {
        assert_eq!(extra[key], json!([value]), "{key} in {seen}");
    }
    assert!(extra["agent.gitlab.com/username"][0].is_string(), "{seen}");

    let proxy_get = |token: String| {
        let http = setup.kas.http();
        let url = format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{ns}/configmaps",
            setup.kas.url
        );
        async move { http.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    // A job of a project under `ops` acts as the static identity.
    let (_, ops_job) = ci_job(
        &setup,
        &pat,
        json!({"project_id": "ops/deploy", "pipeline_id": 15, "job_id": 1005, "ref": "main"}),
    )
    .await;
    let ops_token = format!("ci:{}:{}", setup.agent_id, ops_job["token"].as_str().unwrap());
    let forbidden = setup
        .kas
        .http()
        .get(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{ns}/secrets",
            setup.kas.url
        ))
        .bearer_auth(&ops_token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN, "deployer has no RoleBinding");
    let text = forbidden.text().await.unwrap();
    assert!(text.contains("User \\\"deployer\\\""), "{text}");
    // An environment outside the list.
    let (_, staging) = ci_job(
        &setup,
        &pat,
        json!({"project_id": "acme/app", "pipeline_id": 12, "job_id": 1002, "ref": "main", "ref_protected": true, "environment": "staging"}),
    )
    .await;
    assert_eq!(
        proxy_get(format!("ci:{}:{}", setup.agent_id, staging["token"].as_str().unwrap())).await,
        StatusCode::FORBIDDEN
    );
    // A project not in ci_access.
    let (_, stranger) = ci_job(
        &setup,
        &pat,
        json!({"project_id": "acme/other", "pipeline_id": 13, "job_id": 1003, "ref": "main", "environment": "production"}),
    )
    .await;
    assert_eq!(
        proxy_get(format!("ci:{}:{}", setup.agent_id, stranger["token"].as_str().unwrap())).await,
        StatusCode::FORBIDDEN
    );
    // An expired token, and a job that ended.
    let (_, short) = ci_job(
        &setup,
        &pat,
        json!({"project_id": "acme/app", "pipeline_id": 14, "job_id": 1004, "ref": "main", "environment": "production", "expires_in": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        proxy_get(format!("ci:{}:{}", setup.agent_id, short["token"].as_str().unwrap())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        proxy_get(format!("ci:{}:{job_token}", setup.agent_id)).await,
        StatusCode::OK
    );
    let finished = setup
        .kas
        .http()
        .delete(setup.kas.api("/ci/jobs/1001"))
        .header("PRIVATE-TOKEN", &pat)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        proxy_get(format!("ci:{}:{job_token}", setup.agent_id)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_kubeconfig_adds_a_context_using_the_exec_plugin() {
    let setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let _agent = agent_with_cluster_access(&setup).await;
    let api_pat = member(&setup, "wendy", 30, &["api"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n",
    )
    .unwrap();
    let glagent = PathBuf::from(AGENTK).with_file_name("glagent");
    let output = Command::new(&glagent)
        .args([
            "cluster",
            "agent",
            "update-kubeconfig",
            "--agent",
            &setup.agent_id.to_string(),
            "--use-context",
        ])
        .arg("--kubeconfig")
        .arg(&kc)
        .env("GITLAB_HOST", &setup.kas.url)
        .env("GITLAB_TOKEN", &api_pat)
        .env("GLAGENT_CA_CERT", setup.kas.ca_file())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written = std::fs::read_to_string(&kc).unwrap();
    assert!(
        written.contains("get-token") && written.contains("k8s-proxy"),
        "{written}"
    );

    for bin in KUBECTLS {
        let output = Command::new(kubectl_path(bin))
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "namespace", "default", "-o", "name"])
            .env("GITLAB_TOKEN", &api_pat)
            .env("XDG_CACHE_HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "namespace/default");
    }
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("glagent/k8s-proxy-tokens"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "the day's k8s_proxy token is cached and reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kubernetes_client_works_through_the_proxy() {
    let python = std::env::var("GLAGENT_PYTHON")
        .expect("GLAGENT_PYTHON is not set: run the tests with scripts/test.sh, which installs the kubernetes client");
    let Fixture {
        setup: _setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(None, "python", "pyuser").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kubernetes_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("KUBECONFIG", &kc)
            .env("NAMESPACE", &ns)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all kubernetes client checks passed"), "{stdout}");
}

/// The number of watches the API server holds on LimitRanges: a kind no
/// other test watches, so the count moves only with this test's watches.
async fn limitrange_watchers() -> u64 {
    let env = KubeEnv::shared();
    let client = env.client().await;
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_registered_watchers{") && l.contains("kind=\"LimitRange\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watches_do_not_slow_other_requests_and_cancel_at_the_api_server() {
    let Fixture {
        setup,
        agent: _agent,
        ns,
        pat,
        kc: _kc,
        dir: _dir,
    } = Fixture::start(None, "stall", "walter").await;
    let env = KubeEnv::shared();
    let http = setup.kas.http();
    let base = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let auth = format!("pat:{}:{pat}", setup.agent_id);
    let get_once = || {
        let request = http.get(format!("{base}/api/v1/namespaces/{ns}")).bearer_auth(&auth);
        async move {
            let start = Instant::now();
            let response = tokio::time::timeout(Duration::from_secs(5), request.send())
                .await
                .expect("GET timed out")
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            start.elapsed()
        }
    };
    let p99 = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
    };
    let mut baseline = Vec::new();
    for _ in 0..100 {
        baseline.push(get_once().await);
    }
    let watchers_before = limitrange_watchers().await;

    // 50 watches whose bodies nobody reads, while events keep coming.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let response = http
            .get(format!("{base}/api/v1/namespaces/{ns}/limitranges?watch=1"))
            .bearer_auth(&auth)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        stalled.push(response);
    }
    until(
        Duration::from_secs(10),
        "50 more watches at the API server",
        async || limitrange_watchers().await >= watchers_before + 50,
    )
    .await;
    let admin = env.client().await;
    let limitranges: kube::Api<k8s_openapi::api::core::v1::LimitRange> = kube::Api::namespaced(admin, &ns);
    let filler = "x".repeat(64 * 1024);
    for i in 0..20 {
        let lr: k8s_openapi::api::core::v1::LimitRange = serde_json::from_value(json!({
            "metadata": {"name": format!("fill-{i}"), "annotations": {"filler": filler}},
            "spec": {"limits": [{"type": "Container"}]}
        }))
        .unwrap();
        limitranges.create(&Default::default(), &lr).await.unwrap();
    }
    let mut during = Vec::new();
    for _ in 0..200 {
        during.push(get_once().await);
    }
    println!(
        "GET p99 through the proxy: {:?} alone, {:?} with 50 stalled watches (20 x 64 KiB events pending on each)",
        p99(baseline),
        p99(during)
    );

    // Dropping the client side ends the watches at the API server.
    let with_ours = limitrange_watchers().await;
    drop(stalled);
    let start = Instant::now();
    let mut now = with_ours;
    while start.elapsed() < Duration::from_secs(30) {
        now = limitrange_watchers().await;
        if now + 50 <= with_ours {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "API server LimitRange watches: {watchers_before} before, {with_ours} with ours, {now} after dropping them ({:?})",
        start.elapsed()
    );
    assert!(
        now + 50 <= with_ours,
        "the API server still holds the dropped watches: {with_ours} -> {now}"
    );
}

/// Established TCP connections from a process to a local port, from /proc.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().to_string();
                    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // remote address, state 01 = ESTABLISHED, inode
            fields.len() > 9 && fields[2].ends_with(&port) && fields[3] == "01" && inodes.contains(fields[9])
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_an_http2_connection_and_watches_get_their_own() {
    let Fixture {
        setup,
        agent,
        ns,
        pat,
        kc: _kc,
        dir: _dir,
    } = Fixture::start(None, "pool", "pia").await;
    let pid = agent.pid().expect("agentk runs");
    let env = KubeEnv::shared();
    let api_port: u16 = env.server_url().rsplit(':').next().unwrap().parse().unwrap();
    let http = setup.kas.http();
    let base = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let auth = format!("pat:{}:{pat}", setup.agent_id);
    // One request opens the shared connection (a burst before any exists
    // may race a few TLS handshakes); then 40 LISTs at once, which over
    // HTTP/1.1 would each need a connection of their own.
    let first = http
        .get(format!("{base}/api/v1/namespaces/{ns}/serviceaccounts"))
        .bearer_auth(&auth)
        .send()
        .await
        .unwrap();
    assert!(first.status().is_success(), "{}", first.status());
    first.bytes().await.unwrap();
    let before = connections_to(pid, api_port);
    let lists = (0..40).map(|_| {
        let request = http
            .get(format!("{base}/api/v1/namespaces/{ns}/serviceaccounts"))
            .bearer_auth(&auth);
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
        }
    });
    futures_util::future::join_all(lists).await;
    let after_lists = connections_to(pid, api_port);
    println!("agentk's connections to the API server: {before} before, {after_lists} after 40 concurrent LISTs");
    assert!(
        after_lists <= before,
        "40 concurrent requests should share the HTTP/2 connection: {before} -> {after_lists}"
    );

    let mut watches = Vec::new();
    for _ in 0..5 {
        let response = http
            .get(format!("{base}/api/v1/namespaces/{ns}/serviceaccounts?watch=1"))
            .bearer_auth(&auth)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        watches.push(response);
    }
    let with_watches = connections_to(pid, api_port);
    println!("with 5 watches open: {with_watches}");
    assert!(
        with_watches >= after_lists + 5,
        "each watch should have a connection of its own: {after_lists} -> {with_watches}"
    );
}

/// A kubeconfig for agentk pointing at [`upgrade_echo_server`].
pub(crate) fn echo_kubeconfig(port: u16, dir: &Path) -> PathBuf {
    let path = dir.join(format!("echo-kubeconfig-{port}"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: e, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: e, user: {{token: agent-sa-token}}}}]\ncontexts: [{{name: e, context: {{cluster: e, user: e}}}}]\ncurrent-context: e\n"
        ),
    )
    .unwrap();
    path
}

/// Upgrades an exec request through `kas` to the agent (whose API server
/// is [`upgrade_echo_server`]) and checks bytes round-trip both ways.
pub(crate) async fn upgrade_round_trip(kas: &glagent_test_support::kas::Kas, agent_id: i64, pat: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = reqwest::Client::builder()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(kas.ca_file()).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
            kas.url
        ))
        .bearer_auth(format!("pat:{agent_id}:{pat}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["x-stream-protocol-version"], "v4.channel.k8s.io");
    let mut stream = response.upgrade().await.unwrap();
    for message in ["hello through the tunnel", &"x".repeat(100_000)] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message.to_ascii_uppercase().as_bytes());
    }
}

/// An upgrade-capable stand-in for the API server's exec endpoint: checks
/// the upgrade request, switches protocols, and answers each chunk with the
/// same bytes upper-cased.
pub(crate) async fn upgrade_echo_server() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut head_tx = Some(head_tx);
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            if !text.to_ascii_lowercase().contains("upgrade: spdy/3.1") {
                // Not an upgrade (e.g. agentk asking /version): refuse plainly.
                let _ = socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                continue;
            }
            if let Some(tx) = head_tx.take() {
                let _ = tx.send(text);
            }
            socket
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
                .await
                .unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let upper: Vec<u8> = buf[..n].iter().map(u8::to_ascii_uppercase).collect();
                            if socket.write_all(&upper).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, head_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_carry_bytes_both_ways() {
    let setup = Setup::new().await;
    let config = format!(
        "user_access:\n  access_as:\n    user: {{}}\n  projects:\n    - id: {}\n",
        setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let (port, head) = upgrade_echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = setup.agent_options();
    options.kubeconfig = Some(echo_kubeconfig(port, dir.path()));
    let mut agent = Agentk::start(AGENTK.as_ref(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    let pat = member(&setup, "eve", 30, &["k8s_proxy"]).await;

    upgrade_round_trip(&setup.kas, setup.agent_id, &pat).await;
    let head = head.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("post /api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true http/1.1"),
        "{head}"
    );
    assert!(
        head.contains("authorization: bearer agent-sa-token"),
        "the agent's own credentials: {head}"
    );
    assert!(head.contains("impersonate-user: gitlab:user:eve"), "{head}");
    assert!(
        !head.contains(&pat.to_ascii_lowercase()),
        "the user's token must not reach the cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_through_the_proxy() {
    let Fixture {
        setup: _setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir,
    } = Fixture::start(None, "helm", "hal").await;
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(KubeEnv::shared().client().await, &ns);
    let chart = dir.path().join("demo");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: demo\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n").unwrap();
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();
    for version in [3, 4] {
        let release = format!("demo{version}");
        // helm through the proxy's kubeconfig (the flag wins over the
        // administrator's KUBECONFIG that `sh` sets).
        let helm = |args: &[&str]| {
            let command = format!("helm {} --kubeconfig {} -n {ns}", args.join(" "), kc.display());
            crate::install::sh(dir.path(), version, &command)
        };
        let chart = chart.to_str().unwrap();
        helm(&["upgrade", "--install", &release, chart, "--wait", "--timeout", "60s"]);
        let greeting = async |name: &str| {
            configmaps
                .get_opt(name)
                .await
                .unwrap()
                .and_then(|cm| cm.data)
                .and_then(|d| d.get("greeting").cloned())
        };
        let name = format!("{release}-greeting");
        assert_eq!(greeting(&name).await.as_deref(), Some("hello"), "helm {version}");
        helm(&["upgrade", &release, chart, "--set", "greeting=bye", "--wait"]);
        assert_eq!(greeting(&name).await.as_deref(), Some("bye"), "helm {version}");
        let list: serde_json::Value = serde_json::from_str(&helm(&["list", "-o", "json"])).unwrap();
        let listed = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == release.as_str())
            .unwrap_or_else(|| panic!("{release} in {list}"));
        assert_eq!(listed["revision"], "2", "{listed}");
        helm(&["uninstall", &release, "--wait"]);
        assert_eq!(greeting(&name).await, None, "helm {version} uninstalled");
    }
}
