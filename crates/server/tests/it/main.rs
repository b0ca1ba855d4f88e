//! kas integration tests: a real kas process over real TLS, driven by real
//! clients (HTTP, git, python-gitlab) on SQLite and PostgreSQL.

mod api;
mod git;
mod kube;
mod persistence;
mod python;

use glagent_test_support::kas::{Kas, KasOptions};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const KAS: &str = env!("CARGO_BIN_EXE_kas");

pub async fn start_kas() -> Kas {
    Kas::start(KAS.as_ref(), KasOptions::default()).await
}

/// A REST client acting with one personal access token.
pub struct Client<'a> {
    pub kas: &'a Kas,
    pub token: String,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    pub fn root(kas: &'a Kas) -> Client<'a> {
        Client::new(kas, &kas.root_token)
    }

    pub fn new(kas: &'a Kas, token: &str) -> Client<'a> {
        Client {
            kas,
            token: token.to_string(),
            http: kas.http(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.call_with_headers(method, path, body).await;
        (status, body)
    }

    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, self.kas.api(path))
            .header("PRIVATE-TOKEN", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to kas");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a user and a token for them (scopes api + k8s_proxy).
    pub async fn new_user(&self, username: &str) -> (i64, String) {
        let (status, user) = self
            .post("/users", serde_json::json!({"username": username, "name": username, "email": format!("{username}@example.com"), "password": "a long enough password"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let id = user["id"].as_i64().unwrap();
        let (status, token) = self
            .post(
                &format!("/users/{id}/personal_access_tokens"),
                serde_json::json!({"name": "t", "scopes": ["api", "k8s_proxy"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        (id, token["token"].as_str().unwrap().to_string())
    }
}
