//! `ci_access`: CI jobs registered through the CI jobs API reach the
//! cluster with their job token (`ci:<agent>:<token>`), through the
//! KUBECONFIG `glagent ci kubeconfig` writes, as the `ci_job` identity the
//! API server's audit log shows, or as a configured static identity; and
//! are refused outside `ci_access` and once the job ended.

use std::process::Command;
use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{KUBECTLS, agent_with_cluster_access, as_admin, audited_rules_review, kubectl, ok};
use crate::{Setup, call, glagent, until};

/// A connected agent whose `ci_access` authorizes the project `acme/app`
/// (environments `review/*` and `production`, as the CI job, with a
/// namespace of the test's own as default) and the group `ops` (as the
/// static identity `deployer`); `acme/other` is not authorized. A CI bot,
/// developer of all three projects, registers the jobs with `pat`.
struct Ci {
    setup: Setup,
    _agent: Agentk,
    ns: String,
    group: Value,
    app: Value,
    pat: String,
}

impl Ci {
    async fn start(ns_prefix: &str) -> Ci {
        let setup = Setup::new().await;
        let env = KubeEnv::shared();
        let ns = env.namespace(ns_prefix).await;
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
        let agent = agent_with_cluster_access(&setup).await;
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
        Ci {
            setup,
            _agent: agent,
            ns,
            group,
            app,
            pat: pat["token"].as_str().unwrap().to_string(),
        }
    }

    /// Registers a CI job through the CI jobs API; its `token` is the job token.
    async fn job(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .setup
            .kas
            .http()
            .post(self.setup.kas.api("/ci/jobs"))
            .header("PRIVATE-TOKEN", &self.pat)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    /// The job of `acme/app` in `review/feature-x` (job 1001, pipeline 11),
    /// which `ci_access` authorizes.
    async fn review_job(&self) -> (StatusCode, Value) {
        self.job(
            json!({"project_id": "acme/app", "pipeline_id": 11, "job_id": 1001, "ref": "main", "ref_protected": true,
                   "environment": "review/feature-x", "environment_tier": "development"}),
        )
        .await
    }

    /// `ci:<agent>:<job token>` for a job registered by [`Ci::job`].
    fn credential(&self, job: &Value) -> String {
        format!("ci:{}:{}", self.setup.agent_id, job["token"].as_str().unwrap())
    }

    /// Lets the jobs of `acme/app` (the group `gitlab:project:<id>`) list
    /// and create ConfigMaps in the namespace.
    fn bind_app_jobs(&self) {
        as_admin(
            &self.ns,
            &[
                "create",
                "role",
                "deployer",
                "--verb=list,create",
                "--resource=configmaps",
            ],
        );
        as_admin(
            &self.ns,
            &[
                "create",
                "rolebinding",
                "app-jobs",
                "--role=deployer",
                &format!("--group=gitlab:project:{}", self.app["id"]),
            ],
        );
    }

    /// The status of listing the namespace's ConfigMaps through the proxy
    /// with `credential`.
    async fn list_configmaps(&self, credential: String) -> StatusCode {
        let url = format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{}/configmaps",
            self.setup.kas.url, self.ns
        );
        self.setup
            .kas
            .http()
            .get(url)
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_jobs_use_their_kubeconfig_with_the_ci_job_identity() {
    let ci = Ci::start("ci").await;
    let (setup, ns, group, app) = (&ci.setup, &ci.ns, &ci.group, &ci.app);

    let (status, job) = ci.review_job().await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job_token = job["token"].as_str().unwrap().to_string();
    assert!(job_token.starts_with("glcbt-"));

    // allowed_agents, in GitLab's shape.
    let allowed: Value = setup
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
    let output = Command::new(glagent())
        .args(["ci", "kubeconfig"])
        .env("GITLAB_HOST", &setup.kas.url)
        .env("CI_JOB_TOKEN", &job_token)
        .env("GLAGENT_CA_CERT", setup.kas.ca_file())
        .output()
        .expect("running glagent");
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
    ci.bind_app_jobs();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_job_tokens_are_refused_outside_ci_access_and_once_the_job_ends() {
    let ci = Ci::start("ci-refused").await;
    let setup = &ci.setup;

    // A job of a project under `ops` acts as the static identity.
    let (_, ops_job) = ci
        .job(json!({"project_id": "ops/deploy", "pipeline_id": 15, "job_id": 1005, "ref": "main"}))
        .await;
    let forbidden = setup
        .kas
        .http()
        .get(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{}/secrets",
            setup.kas.url, ci.ns
        ))
        .bearer_auth(ci.credential(&ops_job))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN, "deployer has no RoleBinding");
    let text = forbidden.text().await.unwrap();
    assert!(text.contains("User \\\"deployer\\\""), "{text}");
    // An environment outside the list.
    let (_, staging) = ci
        .job(json!({"project_id": "acme/app", "pipeline_id": 12, "job_id": 1002, "ref": "main", "ref_protected": true, "environment": "staging"}))
        .await;
    assert_eq!(ci.list_configmaps(ci.credential(&staging)).await, StatusCode::FORBIDDEN);
    // A project not in ci_access.
    let (_, stranger) = ci
        .job(json!({"project_id": "acme/other", "pipeline_id": 13, "job_id": 1003, "ref": "main", "environment": "production"}))
        .await;
    assert_eq!(
        ci.list_configmaps(ci.credential(&stranger)).await,
        StatusCode::FORBIDDEN
    );
    // An expired token, and a job that ended.
    let (_, short) = ci
        .job(json!({"project_id": "acme/app", "pipeline_id": 14, "job_id": 1004, "ref": "main", "environment": "production", "expires_in": 1}))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ci.list_configmaps(ci.credential(&short)).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, job) = ci.review_job().await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    ci.bind_app_jobs();
    until(
        Duration::from_secs(5),
        "the running job to list ConfigMaps",
        async || ci.list_configmaps(ci.credential(&job)).await == StatusCode::OK,
    )
    .await;
    let finished = setup
        .kas
        .http()
        .delete(setup.kas.api("/ci/jobs/1001"))
        .header("PRIVATE-TOKEN", &ci.pat)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::NO_CONTENT);
    assert_eq!(ci.list_configmaps(ci.credential(&job)).await, StatusCode::UNAUTHORIZED);
}
