//! The Environments API's rules: links to a cluster through an agent that
//! shares itself with the project, shown only to those who may read the
//! agent.

use axum::http::StatusCode;
use serde_json::json;

use super::{Api, message};

async fn project(api: &Api, name: &str) -> i64 {
    let (status, _, project) = api.call("POST", "/api/v4/projects", Some(json!({"name": name}))).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    project["id"].as_i64().unwrap()
}

async fn agent(api: &Api, project: i64, name: &str, config: Option<&str>) -> i64 {
    let (_, _, agent) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{project}/cluster_agents"),
            Some(json!({"name": name})),
        )
        .await;
    if let Some(config) = config {
        let file = format!("/api/v4/projects/{project}/repository/files/.gitlab%2Fagents%2F{name}%2Fconfig.yaml");
        let (status, _, answer) = api
            .call(
                "POST",
                &file,
                Some(json!({"branch": "main", "content": config, "commit_message": "agent"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    agent["id"].as_i64().unwrap()
}

#[tokio::test]
async fn an_environment_links_only_agents_shared_with_its_project() {
    let api = Api::new().await;
    let app = project(&api, "app").await;
    let config = project(&api, "cluster-config").await;
    let shared = agent(
        &api,
        config,
        "shared",
        Some("user_access:\n  projects:\n    - id: root/app\n"),
    )
    .await;
    let private = agent(&api, config, "private", None).await;
    let own = agent(&api, app, "own", None).await;
    let environments = format!("/api/v4/projects/{app}/environments");

    for agent in [shared, own] {
        let (status, _, env) = api
            .call(
                "POST",
                &environments,
                Some(json!({"name": format!("env-{agent}"), "cluster_agent_id": agent, "kubernetes_namespace": "web"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{env}");
        assert_eq!(env["cluster_agent"]["id"], agent);
        assert_eq!(env["kubernetes_namespace"], "web");
        assert_eq!(env["flux_resource_path"], json!(null));
    }
    for agent in [json!(private), json!(999_999), json!("seven")] {
        let (status, _, answer) = api
            .call(
                "POST",
                &environments,
                Some(json!({"name": "refused", "cluster_agent_id": agent})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{agent}: {answer}");
        assert!(
            message(&answer).contains("cannot be associated") || message(&answer).contains("an agent's id"),
            "{answer}"
        );
    }
    let (_, _, listed) = api.call("GET", &environments, None).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "refused environments were not created"
    );
}

#[tokio::test]
async fn the_cluster_link_is_shown_only_to_those_who_may_read_the_agent() {
    let api = Api::new().await;
    let app = project(&api, "app").await;
    let config = project(&api, "cluster-config").await;
    let shared = agent(
        &api,
        config,
        "shared",
        Some("user_access:\n  projects:\n    - id: root/app\n"),
    )
    .await;
    let path = "helm.toolkit.fluxcd.io/v2/namespaces/web/helmreleases/web";
    let (status, _, env) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{app}/environments"),
            Some(json!({"name": "production", "cluster_agent_id": shared, "kubernetes_namespace": "web", "flux_resource_path": path})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{env}");
    assert_eq!(env["flux_resource_path"], path);

    let bob = api.user("bob").await;
    api.token(bob, "glpat-bob", &["api"], None).await;
    let (status, _, _) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{app}/members"),
            Some(json!({"user_id": bob, "access_level": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let one = format!("/api/v4/projects/{app}/environments/{}", env["id"]);
    let (status, _, seen) = api.call_as("glpat-bob", "GET", &one, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["name"], "production");
    for hidden in ["cluster_agent", "kubernetes_namespace", "flux_resource_path"] {
        assert!(
            seen.get(hidden).is_none(),
            "{hidden} shown to a non-member of the agent's project: {seen}"
        );
    }
    let (status, _, _) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{config}/members"),
            Some(json!({"user_id": bob, "access_level": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, seen) = api.call_as("glpat-bob", "GET", &one, None).await;
    assert_eq!(seen["cluster_agent"]["id"], shared, "{seen}");
}

#[tokio::test]
async fn updates_clear_fields_with_null_and_names_never_change() {
    let api = Api::new().await;
    let app = project(&api, "app").await;
    let own = agent(&api, app, "own", None).await;
    let (_, _, env) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{app}/environments"),
            Some(json!({"name": "staging", "external_url": "https://s.example.com", "cluster_agent_id": own, "kubernetes_namespace": "s"})),
        )
        .await;
    assert_eq!(env["tier"], "staging", "guessed from the name");
    let one = format!("/api/v4/projects/{app}/environments/{}", env["id"]);
    for (body, expected) in [
        (json!({"name": "prod"}), "name cannot be changed"),
        (json!({"slug": "x"}), "slug is automatically generated"),
        (
            json!({"external_url": "s.example.com"}),
            "must be an http:// or https:// URL",
        ),
        (
            json!({"kubernetes_namespace": "Bad_NS"}),
            "is not a Kubernetes namespace name",
        ),
        (
            json!({"flux_resource_path": "HelmRelease/flux-system"}),
            "the path after /apis/",
        ),
        (json!({"tier": "prod"}), "is not one of production"),
    ] {
        let (status, _, answer) = api.call("PUT", &one, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(message(&answer).contains(expected), "{body}: {answer}");
    }
    let (_, _, unchanged) = api.call("GET", &one, None).await;
    assert_eq!(
        unchanged["external_url"], "https://s.example.com",
        "refused updates change nothing"
    );

    let (status, _, cleared) = api
        .call(
            "PUT",
            &one,
            Some(json!({"external_url": null, "cluster_agent_id": null, "tier": "testing"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["external_url"], json!(null));
    assert_eq!(cleared["tier"], "testing");
    assert!(cleared.get("cluster_agent").is_none(), "{cleared}");
    let (status, _, answer) = api.call("PUT", &one, Some(json!({"kubernetes_namespace": "s"}))).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "without an agent, no namespace: {answer}"
    );

    let (status, _, answer) = api
        .call("GET", &format!("/api/v4/projects/{app}/environments?search=st"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&answer).contains("at least 3 characters"), "{answer}");
    let (status, _, _) = api
        .call(
            "GET",
            &format!("/api/v4/projects/{app}/environments?name=a&search=abc"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = api
        .call("GET", &format!("/api/v4/projects/{app}/environments/999"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_update_that_names_no_agent_does_not_ask_again_whether_it_may_be_linked() {
    let api = Api::new().await;
    let app = project(&api, "app").await;
    let config = project(&api, "cluster-config").await;
    let shared = agent(
        &api,
        config,
        "shared",
        Some("user_access:\n  projects:\n    - id: root/app\n"),
    )
    .await;
    let (_, _, env) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{app}/environments"),
            Some(json!({"name": "Review/Feature-X", "cluster_agent_id": shared})),
        )
        .await;
    // The agent stops sharing itself with the project.
    let file = format!("/api/v4/projects/{config}/repository/files/.gitlab%2Fagents%2Fshared%2Fconfig.yaml");
    let (status, _, _) = api
        .call(
            "PUT",
            &file,
            Some(json!({"branch": "main", "content": "user_access: {}\n", "commit_message": "unshare"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let one = format!("/api/v4/projects/{app}/environments/{}", env["id"]);
    let (status, _, updated) = api.call("PUT", &one, Some(json!({"description": "still here"}))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["description"], "still here");
    let (status, _, _) = api.call("PUT", &one, Some(json!({"cluster_agent_id": shared}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "naming the agent asks again");

    // search: the name or a folder's part of it starts with the text, any case.
    for (search, found) in [("revi", 1), ("FEAT", 1), ("ature", 0)] {
        let (_, _, listed) = api
            .call(
                "GET",
                &format!("/api/v4/projects/{app}/environments?search={search}"),
                None,
            )
            .await;
        assert_eq!(listed.as_array().unwrap().len(), found, "{search}");
    }
}
