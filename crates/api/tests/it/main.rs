//! The REST API's edges in process: requests go through the whole router
//! with `tower::ServiceExt::oneshot`, against a real SQLite store and real
//! git repositories in a temporary directory; no socket, no kas process.
//! What needs processes (python-gitlab, git clients, agents) is tested in
//! crates/server and crates/e2e.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use glagent_connections::Connections;
use glagent_core::secret;
use glagent_git::Repos;
use glagent_services::Services;
use glagent_services::events::AccessChange;
use glagent_services::urls::Urls;
use glagent_store::{NewPersonalAccessToken, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod environments;
mod url_configurations;

const ROOT_TOKEN: &str = "glpat-root-token-for-the-api-tests";

struct Api {
    app: Router,
    services: Services,
    changes: Arc<Mutex<Vec<AccessChange>>>,
    dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Api {
        Api::with_settings(Default::default()).await
    }

    async fn with_settings(settings: glagent_services::Settings) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("kas.sqlite3").display());
        let store = Store::connect(&url).await.unwrap();
        let repos = Repos::new(dir.path().join("repositories")).unwrap();
        let urls = Urls::new(url::Url::parse("https://kas.test").unwrap(), None);
        let sealer = glagent_services::sealed::Sealer::open_dir(&dir.path().join("secrets")).unwrap();
        let services = Services::new(store, repos, urls, sealer, settings);
        let changes = Arc::new(Mutex::new(Vec::new()));
        services.events.on_access_change({
            let changes = changes.clone();
            move |change| changes.lock().unwrap().push(*change)
        });
        let connections = Connections::new(&services, None);
        let api = Api {
            app: glagent_api::router(services.clone(), connections),
            services,
            changes,
            dir,
        };
        let root = glagent_services::users::create_user(&api.services.store, "root", "Root", "root@test", true)
            .await
            .unwrap();
        api.token(root.id, ROOT_TOKEN, &["api"], None).await;
        api
    }

    async fn token(&self, user_id: i64, token: &str, scopes: &[&str], expires_at: Option<&str>) -> i64 {
        self.services
            .store
            .create_personal_access_token(&NewPersonalAccessToken {
                user_id,
                name: "test".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                token_digest: secret::digest(token),
                expires_at: expires_at.map(str::to_string),
            })
            .await
            .unwrap()
            .id
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, body)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
        self.call_as(ROOT_TOKEN, method, uri, body).await
    }

    async fn call_as(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("private-token", token);
        let request = match body {
            Some(body) => builder
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    async fn user(&self, username: &str) -> i64 {
        let (status, _, user) = self
            .call("POST", "/api/v4/users", Some(json!({"username": username})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user["id"].as_i64().unwrap()
    }

    fn changes(&self) -> Vec<AccessChange> {
        std::mem::take(&mut *self.changes.lock().unwrap())
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401_in_gitlabs_shape() {
    let api = Api::new().await;
    let anonymous = Request::get("/api/v4/user").body(Body::empty()).unwrap();
    let (status, _, body) = api.send(anonymous).await;
    assert_eq!((status, message(&body)), (StatusCode::UNAUTHORIZED, "401 Unauthorized"));
    let (status, _, body) = api.call_as("glpat-nobody", "GET", "/api/v4/user", None).await;
    assert_eq!((status, message(&body)), (StatusCode::UNAUTHORIZED, "401 Unauthorized"));

    let bearer = Request::get("/api/v4/user")
        .header("authorization", format!("Bearer {ROOT_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = api.send(bearer).await;
    assert_eq!((status, body["username"].as_str()), (StatusCode::OK, Some("root")));

    let bob = api.user("bob").await;
    api.token(bob, "glpat-bob-expired", &["api"], Some("2001-01-01")).await;
    let (status, _, _) = api.call_as("glpat-bob-expired", "GET", "/api/v4/user", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");
    let id = api.token(bob, "glpat-bob-revoked", &["api"], None).await;
    let (status, _, body) = api.call_as("glpat-bob-revoked", "GET", "/api/v4/user", None).await;
    assert_eq!((status, body["username"].as_str()), (StatusCode::OK, Some("bob")));
    api.changes();
    let (status, _, _) = api
        .call_as(
            "glpat-bob-revoked",
            "DELETE",
            &format!("/api/v4/personal_access_tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.changes(),
        [AccessChange::PersonalAccessTokenRevoked { token_id: id }]
    );
    let (status, _, _) = api.call_as("glpat-bob-revoked", "GET", "/api/v4/user", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
}

#[tokio::test]
async fn read_api_tokens_read_but_do_not_write() {
    let api = Api::new().await;
    let bob = api.user("bob").await;
    api.token(bob, "glpat-bob-read", &["read_api"], None).await;
    let (status, _, _) = api.call_as("glpat-bob-read", "GET", "/api/v4/projects", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = api
        .call_as("glpat-bob-read", "POST", "/api/v4/projects", Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message(&body).contains("insufficient_scope"), "{body}");
    api.token(bob, "glpat-bob-k8s", &["k8s_proxy"], None).await;
    let (status, _, _) = api.call_as("glpat-bob-k8s", "GET", "/api/v4/projects", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "k8s_proxy alone is not an API scope");
}

#[tokio::test]
async fn lists_carry_gitlabs_pagination_headers() {
    let api = Api::new().await;
    for name in ["u1", "u2", "u3", "u4"] {
        api.user(name).await;
    }
    let (status, headers, body) = api
        .call("GET", "/api/v4/users?per_page=2&page=2&active=true", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["u2", "u3"]);
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap();
    assert_eq!(
        [
            "x-total",
            "x-total-pages",
            "x-page",
            "x-per-page",
            "x-next-page",
            "x-prev-page"
        ]
        .map(header),
        ["5", "3", "2", "2", "3", "1"]
    );
    let link = header("link");
    for (page, rel) in [(1, "first"), (3, "last"), (3, "next"), (1, "prev")] {
        let expected = format!("<https://kas.test/api/v4/users?active=true&page={page}&per_page=2>; rel=\"{rel}\"");
        assert!(link.contains(&expected), "{expected} not in {link}");
    }

    let (_, headers, body) = api.call("GET", "/api/v4/users?per_page=1000&page=0", None).await;
    assert_eq!(headers["x-per-page"], "100", "per_page is at most 100");
    assert_eq!(headers["x-page"], "1");
    assert_eq!(headers["x-next-page"], "");
    assert_eq!(body.as_array().unwrap().len(), 5);

    let (_, headers, body) = api.call("GET", "/api/v4/users?username=u3", None).await;
    let found: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(
        (found, headers["x-total"].to_str().unwrap()),
        (vec!["u3"], "1"),
        "username is an exact filter"
    );
    let (_, _, body) = api.call("GET", "/api/v4/users?username=nobody", None).await;
    assert_eq!(body, serde_json::json!([]));

    let (status, _, body) = api.call("GET", "/api/v4/users?page=two", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("\"two\" is not an integer"), "{body}");
}

#[tokio::test]
async fn bad_input_is_a_400_that_says_what_was_wrong_and_changes_nothing() {
    let api = Api::new().await;
    let (_, _, before) = api.call("GET", "/api/v4/projects", None).await;
    for (body, expected) in [
        (json!({}), "400 Bad request - name or path is missing"),
        (json!({"path": "-leading-dash"}), "400 Bad request - path: "),
        (
            json!({"name": "ok", "default_branch": "a..b"}),
            "branch name \"a..b\" is invalid",
        ),
    ] {
        let (status, _, answer) = api.call("POST", "/api/v4/projects", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(message(&answer).contains(expected), "{body}: {answer}");
    }
    let broken = Request::post("/api/v4/projects")
        .header("private-token", ROOT_TOKEN)
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let (status, _, answer) = api.send(broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&answer).contains("the JSON body is invalid"), "{answer}");
    let (status, _, answer) = api.call("POST", "/api/v4/projects", Some(json!(["x"]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&answer).contains("must be an object"), "{answer}");
    let (_, _, after) = api.call("GET", "/api/v4/projects", None).await;
    assert_eq!(before, after, "no project was created");

    let (status, _, project) = api
        .call("POST", "/api/v4/projects", Some(json!({"name": "config"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let id = project["id"].as_i64().unwrap();
    let (status, _, answer) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{id}/cluster_agents"),
            Some(json!({"name": "Not_A-Name!"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let bob = api.user("bob").await;
    let (status, _, answer) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{id}/members"),
            Some(json!({"user_id": bob, "access_level": 35})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&answer).contains("access_level 35 is not a role"), "{answer}");
    let (_, _, members) = api.call("GET", &format!("/api/v4/projects/{id}/members"), None).await;
    assert_eq!(members, json!([]), "no member was added");
    assert_eq!(api.changes(), [], "nothing changed, so nobody was told");
}

#[tokio::test]
async fn unknown_routes_and_invisible_projects_are_404s() {
    let api = Api::new().await;
    let (status, _, body) = api.call("GET", "/api/v4/nothing-here", None).await;
    assert_eq!((status, message(&body)), (StatusCode::NOT_FOUND, "404 Route Not Found"));
    let (status, _, body) = api.call("GET", "/some/page", None).await;
    assert_eq!((status, message(&body)), (StatusCode::NOT_FOUND, "404 Not Found"));

    let (_, _, project) = api
        .call("POST", "/api/v4/projects", Some(json!({"name": "secret"})))
        .await;
    let bob = api.user("bob").await;
    api.token(bob, "glpat-bob", &["api"], None).await;
    for path in [
        format!("/api/v4/projects/{}", project["id"]),
        "/api/v4/projects/root%2Fsecret".into(),
    ] {
        let (status, _, body) = api.call_as("glpat-bob", "GET", &path, None).await;
        assert_eq!(
            (status, message(&body)),
            (StatusCode::NOT_FOUND, "404 Project Not Found"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn changes_of_access_are_announced() {
    let api = Api::new().await;
    let (_, _, project) = api
        .call("POST", "/api/v4/projects", Some(json!({"name": "config"})))
        .await;
    let id = project["id"].as_i64().unwrap();
    let bob = api.user("bob").await;
    api.changes();

    let members = format!("/api/v4/projects/{id}/members");
    let (status, _, _) = api
        .call("POST", &members, Some(json!({"user_id": bob, "access_level": 30})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = api.call("DELETE", &format!("{members}/{bob}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.changes(), [AccessChange::Membership, AccessChange::Membership]);

    let (_, _, agent) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{id}/cluster_agents"),
            Some(json!({"name": "edge"})),
        )
        .await;
    let agent_id = agent["id"].as_i64().unwrap();
    let tokens = format!("/api/v4/projects/{id}/cluster_agents/{agent_id}/tokens");
    let (_, _, token) = api.call("POST", &tokens, Some(json!({"name": "t"}))).await;
    let token_id = token["id"].as_i64().unwrap();
    let (status, _, _) = api.call("DELETE", &format!("{tokens}/{token_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = api
        .call(
            "DELETE",
            &format!("/api/v4/projects/{id}/cluster_agents/{agent_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let file = format!("/api/v4/projects/{id}/repository/files/.gitlab%2Fagents%2Fedge%2Fconfig.yaml");
    let (status, _, answer) = api
        .call(
            "POST",
            &file,
            Some(json!({"branch": "main", "content": "user_access: {}\n", "commit_message": "c"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, _, _) = api.call("DELETE", &format!("/api/v4/projects/{id}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        api.changes(),
        [
            AccessChange::AgentTokenRevoked { agent_id, token_id },
            AccessChange::AgentDeleted { agent_id },
            AccessChange::Repository { project_id: id },
            AccessChange::ProjectDeleted { project_id: id },
        ]
    );
}
