//! The examples in `examples/`, each run as its README says, against a
//! real kas, agentk and kube-apiserver (and, for Flux, the stand-in for
//! Flux's controllers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::flux::{FluxStandIn, git_repositories};
use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};

use crate::support::helm::{helm, sh};
use crate::support::{KUBECTLS, kubectl_path};
use crate::{Setup, agentk, call, glagent, until};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

fn example(name: &str) -> PathBuf {
    Path::new(EXAMPLES).join(name)
}

/// A `PATH` value for the script: glagent and kubectl 1.33 (as
/// `kubectl`) in front of the script's own (which has helm).
fn path_with_tools(dir: &Path) -> String {
    let bin = dir.join("tools");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("kubectl");
    if !link.exists() {
        std::os::unix::fs::symlink(kubectl_path(KUBECTLS[1]), &link).unwrap();
    }
    format!("{}:{}:$PATH", bin.display(), glagent().parent().unwrap().display())
}

async fn message(ns: &str, name: &str) -> Option<String> {
    let configmaps: Api<ConfigMap> = Api::namespaced(KubeEnv::shared().client().await, ns);
    configmaps.get_opt(name).await.ok().flatten()?.data?.remove("message")
}

/// A CI job of `project` (path), registered through the CI jobs API by a
/// developer of it; returns the job token.
async fn ci_job(setup: &Setup, project: &Value, job_id: i64) -> String {
    let (_, user) = call(
        &setup.kas,
        "POST",
        "/users",
        Some(json!({"username": format!("runner-{job_id}")})),
    )
    .await;
    call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/members", project["id"]),
        Some(json!({"user_id": user["id"], "access_level": 30})),
    )
    .await;
    let (_, pat) = call(
        &setup.kas,
        "POST",
        &format!("/users/{}/personal_access_tokens", user["id"]),
        Some(json!({"name": "ci", "scopes": ["api"]})),
    )
    .await;
    let job: Value = setup
        .kas
        .http()
        .post(setup.kas.api("/ci/jobs"))
        .header("PRIVATE-TOKEN", pat["token"].as_str().unwrap())
        .json(&json!({"project_id": project["path_with_namespace"], "pipeline_id": job_id, "job_id": job_id, "ref": "main"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    job["token"].as_str().expect("a job token").to_string()
}

/// agentk for `setup`'s agent (or `token`), with cluster access, leading
/// in `namespace`.
async fn agent_in(setup: &Setup, token: Option<&str>, namespace: &str) -> Agentk {
    let mut options = setup.agent_options();
    options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
    options.env = vec![("POD_NAMESPACE".into(), namespace.to_string())];
    if let Some(token) = token {
        options.token = token.to_string();
    }
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_app_is_deployed_by_flux_and_a_push_is_applied_at_once() {
    let setup = Setup::new().await;
    let env = KubeEnv::shared();
    let ns = env.namespace("example-flux").await;
    let _flux = FluxStandIn::start(helm(3), &[&ns]).await;
    let _agent = agent_in(&setup, None, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let prelude = format!(
        "export PATH={} KAS={} TOKEN={} PROJECT={} NAMESPACE={ns} GLAGENT_CA_CERT={}\n",
        path_with_tools(dir.path()),
        setup.kas.url,
        setup.kas.root_token,
        setup.project_path,
        setup.kas.ca_file().display()
    );
    sh(
        dir.path(),
        3,
        &format!("{prelude}{}/run.sh", example("flux-app").display()),
    );
    until(Duration::from_secs(30), "Flux to apply the application", async || {
        message(&ns, "greeting").await.as_deref() == Some("hello from Flux")
    })
    .await;
    until(
        Duration::from_secs(20),
        "kas to learn the agent's Flux projects",
        async || setup.kas.log().contains("point at these projects") && setup.kas.log().contains(&setup.project_path),
    )
    .await;

    // The stand-in, like Flux between intervals, fetches only when asked:
    // the change arrives because the agent asks on the push.
    sh(
        dir.path(),
        3,
        &format!("{prelude}{}/update.sh 'hello again'", example("flux-app").display()),
    );
    let took = until(
        Duration::from_secs(10),
        "the pushed change in the cluster",
        async || message(&ns, "greeting").await.as_deref() == Some("hello again"),
    )
    .await;
    println!("a push reached the cluster in {took:?}");
    let repositories: Api<DynamicObject> = Api::namespaced_with(env.client().await, &ns, &git_repositories());
    let source = repositories.get("hello").await.unwrap();
    assert!(
        source
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("reconcile.fluxcd.io/requestedAt"),
        "the agent asked for the reconciliation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_deploy_applies_its_manifests_with_the_job_kubeconfig() {
    let setup = Setup::new().await;
    let ns = KubeEnv::shared().namespace("example-ci").await;
    let (_, project) = call(&setup.kas, "GET", &format!("/projects/{}", setup.project_id), None).await;
    // The agent's configuration, as agent-config.yaml says.
    let config = std::fs::read_to_string(example("ci-deploy/agent-config.yaml"))
        .unwrap()
        .replace("${CI_PROJECT_PATH}", &setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let _agent = agent_in(&setup, None, &ns).await;
    let job_token = ci_job(&setup, &project, 4242).await;
    let dir = tempfile::tempdir().unwrap();
    let out = sh(
        dir.path(),
        3,
        &format!(
            "export PATH={} CI_JOB_TOKEN={job_token} GITLAB_HOST={} GLAGENT_CA_CERT={} AGENT={}:edge NAMESPACE={ns}\n{}/deploy.sh",
            path_with_tools(dir.path()),
            setup.kas.url,
            setup.kas.ca_file().display(),
            setup.project_path,
            example("ci-deploy").display()
        ),
    );
    assert!(out.trim_end().ends_with("ci"), "{out}");
    let configmaps: Api<ConfigMap> = Api::namespaced(KubeEnv::shared().client().await, &ns);
    let deployed = configmaps.get("web-settings").await.unwrap();
    assert_eq!(deployed.data.unwrap()["deployed-by"], "ci");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_management_installs_its_charts_for_the_group() {
    let setup = Setup::new().await;
    let ns = KubeEnv::shared().namespace("example-shared").await;
    let (_, group) = call(
        &setup.kas,
        "POST",
        "/groups",
        Some(json!({"name": "platform", "path": "platform"})),
    )
    .await;
    let (_, web) = call(
        &setup.kas,
        "POST",
        "/projects",
        Some(json!({"name": "web", "namespace_id": group["id"]})),
    )
    .await;
    // The agent `cluster`, configured by the example's file.
    let (_, agent) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        Some(json!({"name": "cluster"})),
    )
    .await;
    let (_, token) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{}/tokens", setup.project_id, agent["id"]),
        Some(json!({"name": "t"})),
    )
    .await;
    let config = std::fs::read_to_string(example("cluster-management/.gitlab/agents/cluster/config.yaml"))
        .unwrap()
        .replace("${GROUP}", "platform");
    let (status, body) = call(
        &setup.kas,
        "POST",
        &format!(
            "/projects/{}/repository/files/.gitlab%2Fagents%2Fcluster%2Fconfig.yaml",
            setup.project_id
        ),
        Some(json!({"branch": "main", "content": config, "commit_message": "agent cluster"})),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let _agent = agent_in(&setup, token["token"].as_str(), &ns).await;
    // A job of another project of the group installs the shared charts.
    let job_token = ci_job(&setup, &web, 5151).await;
    let dir = tempfile::tempdir().unwrap();
    let out = sh(
        dir.path(),
        3,
        &format!(
            "export PATH={} CI_JOB_TOKEN={job_token} GITLAB_HOST={} GLAGENT_CA_CERT={} PROJECT={} NAMESPACE={ns}\n{}/install.sh",
            path_with_tools(dir.path()),
            setup.kas.url,
            setup.kas.ca_file().display(),
            setup.project_path,
            example("cluster-management").display()
        ),
    );
    assert!(out.contains("hello") && out.contains("deployed"), "{out}");
    assert_eq!(
        message(&ns, "hello").await.as_deref(),
        Some("hello from the cluster-management project")
    );
}
