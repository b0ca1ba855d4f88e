//! `user_access` with personal access tokens (`pat:<agent>:<token>`): with
//! `access_as: agent` a client's own impersonation passes through to the
//! cluster's RBAC; with `access_as: user` kas imposes the GitLab identity
//! (user, project roles, extras), which the API server's audit log shows
//! and RBAC judges; and the proxy's refusals say why.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Fixture, KUBECTLS, as_admin, audited_rules_review, kubectl, member, ok};
use crate::{Setup, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_as_agent_a_clients_own_impersonation_meets_the_clusters_rbac() {
    let Fixture { ns, kc, .. } = &Fixture::start(Some("agent"), "proxy-as", "dora").await;
    // With access_as agent, a client's own impersonation passes through and
    // the cluster's RBAC judges it: nobody bound `someone`.
    let (allowed, _, stderr) = kubectl(KUBECTLS[1], kc, &["--as=someone", "-n", ns, "get", "secrets"], None);
    assert!(!allowed);
    assert!(stderr.contains("User \"someone\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_as_user_is_refused_until_rbac_binds_the_users_project_roles() {
    let Fixture { setup, ns, kc, .. } = &Fixture::start(Some("user"), "impersonate", "ursula").await;
    let bin = KUBECTLS[1];

    let (allowed, _, stderr) = kubectl(bin, kc, &["-n", ns, "get", "secrets"], None);
    assert!(!allowed, "no RoleBinding yet, so the API server must refuse");
    assert!(stderr.contains("User \"gitlab:user:ursula\""), "{stderr}");

    let project_group = format!("gitlab:project_role:{}:developer", setup.project_id);
    as_admin(
        ns,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get,list",
            "--resource=secrets",
        ],
    );
    as_admin(
        ns,
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
        async || kubectl(bin, kc, &["-n", ns, "get", "secrets"], None).0,
    )
    .await;
    // Reporters are included in a developer's groups, maintainers are not.
    let reporter_group = format!("gitlab:project_role:{}:reporter", setup.project_id);
    as_admin(
        ns,
        &["create", "role", "cm-reader", "--verb=list", "--resource=configmaps"],
    );
    as_admin(
        ns,
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

    // What the API server says the user may do, rule by rule.
    let rules = ok(
        kubectl(bin, kc, &["auth", "can-i", "--list", "-n", ns], None),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_as_user_shows_the_api_server_the_gitlab_identity() {
    let Fixture { setup, ns, kc, .. } = &Fixture::start(Some("user"), "identity", "ulrich").await;
    // The API server's own view of the caller: `auth can-i --list` sends a
    // SelfSubjectRulesReview, which the test API server audits.
    ok(
        kubectl(KUBECTLS[1], kc, &["auth", "can-i", "--list", "-n", ns], None),
        "can-i --list",
    );
    let (seen, mut groups) = audited_rules_review("gitlab:user:ulrich").await;
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
    assert_eq!(extra["agent.gitlab.com/username"], json!(["ulrich"]), "{seen}");
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
    assert_ne!(seen["user"]["username"], "gitlab:user:ulrich", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_as_user_refuses_a_clients_own_impersonation() {
    let Fixture { ns, kc, .. } = &Fixture::start(Some("user"), "nested", "una").await;
    // kubectl prints a refused discovery request as "rejected for an unknown
    // reason", whatever the body says: discover first, as any session has.
    let (_, _, stderr) = kubectl(KUBECTLS[1], kc, &["-n", ns, "get", "secrets"], None);
    assert!(
        stderr.contains(r#"User "gitlab:user:una" cannot list resource "secrets""#),
        "without --as the API server decides, as the imposed user: {stderr}"
    );
    // The client's own impersonation is refused while an identity is imposed.
    let (nested, _, stderr) = kubectl(
        KUBECTLS[1],
        kc,
        &["--as=someone-else", "-n", ns, "get", "secrets"],
        None,
    );
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
