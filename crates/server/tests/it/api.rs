//! The REST API: permissions, validation, pagination and agent tokens.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Client, start_kas};

#[tokio::test]
async fn health_metadata_and_auth() {
    let kas = start_kas().await;
    let http = kas.http();
    let live = http.get(format!("{}/-/liveness", kas.url)).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        kas.root_token.starts_with("glpat-"),
        "root token {:?}",
        kas.root_token.len()
    );

    let anonymous = http.get(kas.api("/user")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["message"], "401 Unauthorized");

    let bearer = http
        .get(kas.api("/user"))
        .bearer_auth(&kas.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    let me: Value = bearer.json().await.unwrap();
    assert_eq!(me["username"], "root");
    assert_eq!(me["is_admin"], true);

    let (status, meta) = Client::root(&kas).get("/metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["kas"]["enabled"], true);
    assert_eq!(
        meta["kas"]["externalUrl"],
        format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port)
    );
    assert_eq!(
        meta["kas"]["externalK8sProxyUrl"],
        format!("https://127.0.0.1:{}/-/kubernetes-agent/k8s-proxy/", kas.port)
    );
    assert_eq!(meta["kas"]["version"], meta["version"]);
    let (status, version) = Client::root(&kas).get("/version").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["version"], meta["version"]);
}

#[tokio::test]
async fn token_scopes_are_enforced() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (alice, _) = root.new_user("alice").await;
    let (status, read_only) = root
        .post(
            &format!("/users/{alice}/personal_access_tokens"),
            json!({"name": "ro", "scopes": ["read_api"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reader = Client::new(&kas, read_only["token"].as_str().unwrap());
    assert_eq!(reader.get("/user").await.0, StatusCode::OK);
    let (status, body) = reader.post("/projects", json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("insufficient_scope"),
        "{body}"
    );

    let (status, body) = root
        .post(
            &format!("/users/{alice}/personal_access_tokens"),
            json!({"name": "bad", "scopes": ["sudo"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = root
        .post(
            &format!("/users/{alice}/personal_access_tokens"),
            json!({"name": "old", "scopes": ["api"], "expires_at": "2001-01-01"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let expired = Client::new(&kas, body["token"].as_str().unwrap());
    assert_eq!(expired.get("/user").await.0, StatusCode::UNAUTHORIZED);

    // Only administrators manage users.
    let (_, alice_token) = root.new_user("alice2").await;
    let alice2 = Client::new(&kas, &alice_token);
    assert_eq!(
        alice2.post("/users", json!({"username": "mallory"})).await.0,
        StatusCode::FORBIDDEN
    );
}

/// Sets up group `acme` / subgroup `team` / project `app` with members of
/// each role, and returns (project id, tokens by role).
async fn roles_fixture(root: &Client<'_>) -> (i64, Vec<(&'static str, String)>) {
    let (status, acme) = root.post("/groups", json!({"name": "Acme", "path": "acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    let (status, team) = root
        .post(
            "/groups",
            json!({"name": "team", "path": "team", "parent_id": acme["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    assert_eq!(team["full_path"], "acme/team");
    let (status, project) = root
        .post("/projects", json!({"name": "app", "namespace_id": team["id"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!(project["path_with_namespace"], "acme/team/app");
    let project_id = project["id"].as_i64().unwrap();
    let mut tokens = Vec::new();
    for (role, level, on_group) in [
        ("reporter", 20, false),
        ("developer", 30, true),
        ("maintainer", 40, false),
        ("outsider", 0, false),
    ] {
        let (id, token) = root.new_user(role).await;
        if level > 0 {
            let path = if on_group {
                // Inherited: a member of the top group is a member of the project.
                format!("/groups/{}/members", acme["id"])
            } else {
                format!("/projects/{project_id}/members")
            };
            let (status, body) = root.post(&path, json!({"user_id": id, "access_level": level})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        tokens.push((role, token));
    }
    (project_id, tokens)
}

#[tokio::test]
async fn agent_permissions_follow_roles() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (project, tokens) = roles_fixture(&root).await;
    let as_role = |role: &str| Client::new(&kas, &tokens.iter().find(|(r, _)| *r == role).unwrap().1);
    let agents = format!("/projects/{project}/cluster_agents");

    assert_eq!(as_role("outsider").get(&agents).await.0, StatusCode::NOT_FOUND);
    assert_eq!(as_role("reporter").get(&agents).await.0, StatusCode::FORBIDDEN);
    assert_eq!(as_role("developer").get(&agents).await.0, StatusCode::OK);
    assert_eq!(
        as_role("developer").post(&agents, json!({"name": "dev"})).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, agent) = as_role("maintainer").post(&agents, json!({"name": "prod"})).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    assert_eq!(agent["config_project"]["path_with_namespace"], "acme/team/app");
    let agent_id = agent["id"].as_i64().unwrap();

    // Addressed by URL-encoded full path too.
    let (status, list) = as_role("developer")
        .get("/projects/acme%2Fteam%2Fapp/cluster_agents")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    let tokens_path = format!("{agents}/{agent_id}/tokens");
    assert_eq!(
        as_role("developer").post(&tokens_path, json!({"name": "t"})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(as_role("developer").get(&tokens_path).await.0, StatusCode::OK);
    assert_eq!(
        as_role("developer").delete(&format!("{agents}/{agent_id}")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        as_role("maintainer").delete(&format!("{agents}/{agent_id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        as_role("maintainer").get(&format!("{agents}/{agent_id}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn agent_tokens_lifecycle() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "infra"})).await;
    let agents = format!("/projects/{}/cluster_agents", project["id"]);
    let (_, agent) = root.post(&agents, json!({"name": "primary"})).await;
    let tokens_path = format!("{agents}/{}/tokens", agent["id"]);

    let (status, first) = root
        .post(&tokens_path, json!({"name": "one", "description": "first"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let secret = first["token"].as_str().unwrap();
    let rest = secret.strip_prefix("glagent-").expect("glagent- prefix");
    assert_eq!(rest.len(), 50);
    assert!(rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    for key in [
        "id",
        "name",
        "description",
        "agent_id",
        "status",
        "created_at",
        "created_by_user_id",
    ] {
        assert!(first.get(key).is_some(), "missing {key} in {first}");
    }
    assert_eq!(first["status"], "active");

    let (status, second) = root.post(&tokens_path, json!({"name": "two"})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (status, third) = root.post(&tokens_path, json!({"name": "three"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{third}");
    assert!(
        third["message"].as_str().unwrap().contains("only 2 active tokens"),
        "{third}"
    );

    let (status, list) = root.get(&tokens_path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(
        list[0].get("token").is_none() && list[0].get("last_used_at").is_none(),
        "{list}"
    );
    let one = format!("{tokens_path}/{}", first["id"]);
    let (status, single) = root.get(&one).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        single.get("last_used_at").is_some() && single.get("token").is_none(),
        "{single}"
    );

    assert_eq!(root.delete(&one).await.0, StatusCode::NO_CONTENT);
    assert_eq!(root.get(&one).await.0, StatusCode::NOT_FOUND);
    assert_eq!(root.delete(&one).await.0, StatusCode::NOT_FOUND);
    assert_eq!(root.get(&tokens_path).await.1.as_array().unwrap().len(), 1);
    let (status, replacement) = root.post(&tokens_path, json!({"name": "three"})).await;
    assert_eq!(status, StatusCode::CREATED, "{replacement}");
    assert_eq!(root.post(&tokens_path, json!({})).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_agent_names_are_refused_and_change_nothing() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "names"})).await;
    let agents = format!("/projects/{}/cluster_agents", project["id"]);
    let (status, _) = root.post(&agents, json!({"name": "taken"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let cases: [(String, &str); 9] = [
        ("a".repeat(64), "63"),
        ("Agent".into(), "lowercase"),
        ("-agent".into(), "start"),
        ("agent-".into(), "end"),
        ("my_agent".into(), "'_'"),
        ("my.agent".into(), "'.'"),
        ("".into(), "empty"),
        ("agént".into(), "'é'"),
        ("taken".into(), "already been taken"),
    ];
    for (name, expected) in cases {
        let (status, body) = root.post(&agents, json!({ "name": name })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{name:?}: {message}");
    }
    assert_eq!(root.post(&agents, json!({})).await.0, StatusCode::BAD_REQUEST);
    let (_, list) = root.get(&agents).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // The longest valid name is fine.
    assert_eq!(
        root.post(&agents, json!({"name": "a".repeat(63)})).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn lists_paginate_like_gitlab() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, project) = root.post("/projects", json!({"name": "paged"})).await;
    let agents = format!("/projects/{}/cluster_agents", project["id"]);
    for i in 0..5 {
        assert_eq!(
            root.post(&agents, json!({"name": format!("agent-{i}")})).await.0,
            StatusCode::CREATED
        );
    }
    let (status, headers, page) = root
        .call_with_headers(reqwest::Method::GET, &format!("{agents}?per_page=2&page=2"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["agent-2", "agent-3"]);
    let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(header("x-total"), "5");
    assert_eq!(header("x-total-pages"), "3");
    assert_eq!(header("x-page"), "2");
    assert_eq!(header("x-next-page"), "3");
    assert_eq!(header("x-prev-page"), "1");
    assert!(header("link").contains("rel=\"next\""));
}

#[tokio::test]
async fn groups_and_projects_lifecycle() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, top) = root.post("/groups", json!({"name": "Top", "path": "top"})).await;
    let (_, sub) = root
        .post("/groups", json!({"name": "Sub", "path": "sub", "parent_id": top["id"]}))
        .await;
    let (status, p) = root
        .post(
            "/projects",
            json!({"name": "P", "path": "p", "namespace_id": sub["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(root.get("/groups/top%2Fsub").await.1["id"], sub["id"]);
    assert_eq!(
        root.post("/projects", json!({"path": "p", "namespace_id": sub["id"]}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        root.post("/groups", json!({"path": "bad/path"})).await.0,
        StatusCode::BAD_REQUEST
    );

    let (alice, token) = root.new_user("alice").await;
    let alice_client = Client::new(&kas, &token);
    assert_eq!(
        alice_client.get(&format!("/projects/{}", p["id"])).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(alice_client.get("/projects").await.1.as_array().unwrap().len(), 0);
    root.post(
        &format!("/groups/{}/members", sub["id"]),
        json!({"user_id": alice, "access_level": 10}),
    )
    .await;
    assert_eq!(
        alice_client.get(&format!("/projects/{}", p["id"])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        alice_client.delete(&format!("/groups/{}", top["id"])).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice_client.delete(&format!("/groups/{}", sub["id"])).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = root
        .post(
            &format!("/projects/{}/members", p["id"]),
            json!({"user_id": alice, "access_level": 35}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    assert_eq!(
        root.delete(&format!("/groups/{}", top["id"])).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        root.get(&format!("/projects/{}", p["id"])).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        root.get(&format!("/groups/{}", sub["id"])).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn personal_access_tokens_are_listed_and_revoked() {
    let kas = start_kas().await;
    let root = Client::root(&kas);
    let (_, alice_token) = root.new_user("alice").await;
    let (_, bob_token) = root.new_user("bob").await;
    let alice = Client::new(&kas, &alice_token);
    let (status, tokens) = alice.get("/personal_access_tokens").await;
    assert_eq!(status, StatusCode::OK);
    let list = tokens.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].get("token").is_none(), "a list never shows secrets");
    assert_eq!(list[0]["active"], true);
    let id = list[0]["id"].as_i64().unwrap();

    // Bob cannot see or revoke Alice's token.
    let bob = Client::new(&kas, &bob_token);
    assert_eq!(
        bob.delete(&format!("/personal_access_tokens/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.get(&format!("/personal_access_tokens?user_id={}", list[0]["user_id"]))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    assert_eq!(
        alice.delete(&format!("/personal_access_tokens/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        alice.get("/user").await.0,
        StatusCode::UNAUTHORIZED,
        "a revoked token stops working at once"
    );
    let (_, listed) = root
        .get(&format!("/personal_access_tokens?user_id={}", list[0]["user_id"]))
        .await;
    assert_eq!(listed[0]["revoked"], true);
    assert_eq!(listed[0]["active"], false);
}
