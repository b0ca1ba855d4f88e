//! A small client for kas's REST API.

use std::path::Path;

use anyhow::{Context, Result, bail};
use glagent_api_types::Message;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client authenticated with a personal access token. `host` is a kas
    /// URL or host[:port] (then HTTPS); `ca_cert` is an extra CA
    /// certificate (PEM) to trust.
    pub fn new(host: &str, token: Option<&str>, ca_cert: Option<&Path>) -> Result<Client> {
        let token = token
            .filter(|t| !t.is_empty())
            .context("no token: set GITLAB_TOKEN to a personal access token (or pass --token)")?;
        Client::with_token(host, token.to_string(), ca_cert)
    }

    /// A client for calls authenticated otherwise (a job token).
    pub fn anonymous(host: &str, ca_cert: Option<&Path>) -> Result<Client> {
        Client::with_token(host, String::new(), ca_cert)
    }

    fn with_token(host: &str, token: String, ca_cert: Option<&Path>) -> Result<Client> {
        let host = host.trim_end_matches('/');
        let base = if host.contains("://") {
            host.to_string()
        } else {
            format!("https://{host}")
        };
        url::Url::parse(&base).with_context(|| format!("GITLAB_HOST {host:?} is not a URL"))?;
        let mut builder = reqwest::Client::builder().user_agent(format!("glagent/{}", glagent_core::VERSION));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading the CA certificate {}", path.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Client {
            http: builder.build()?,
            base: format!("{base}/api/v4"),
            token,
        })
    }

    /// POSTs JSON and returns the answer as a `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body), path)
            .await
    }

    /// GETs one entity.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)), path).await
    }

    /// GETs one entity, or `None` when kas answers 404.
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("PRIVATE-TOKEN", &self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status}: {}", message_of(&body));
        }
        decode(path, body).map(Some)
    }

    /// PUTs JSON and returns the answer as a `T`.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body), path)
            .await
    }

    /// DELETEs; any success status will do.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.exchange(self.http.delete(format!("{}{path}", self.base)), path)
            .await
            .map(|_| ())
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, path: &str) -> Result<T> {
        decode(path, self.exchange(request, path).await?.1)
    }

    /// Sends with the token; a failure status becomes an error with kas's
    /// message. Returns the headers and the JSON body.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<(reqwest::header::HeaderMap, Value)> {
        let response = request
            .header("PRIVATE-TOKEN", &self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status}: {}", message_of(&body));
        }
        Ok((headers, body))
    }

    /// The kas URL this client talks to (without /api/v4).
    pub fn host(&self) -> &str {
        self.base.trim_end_matches("/api/v4")
    }

    /// The KUBECONFIG of a CI job.
    pub async fn job_kubeconfig(&self, job_token: &str) -> Result<String> {
        let url = format!("{}/job/kubeconfig", self.base);
        let response = self
            .http
            .get(&url)
            .header("JOB-TOKEN", job_token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{url}: {status}: {text}");
        }
        Ok(text)
    }

    /// A project reference for a URL: ids as they are, paths URL-encoded.
    pub fn project_ref(&self, repo: &str) -> String {
        percent_encoding::utf8_percent_encode(repo.trim_matches('/'), percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    /// GETs every page of a list.
    pub async fn get_list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let url = format!("{}{path}{separator}per_page=100&page={page}", self.base);
            let (headers, body) = self.exchange(self.http.get(&url), path).await?;
            let next = headers
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            match body {
                Value::Array(page_items) => {
                    for item in page_items {
                        items.push(decode(path, item)?);
                    }
                }
                other => bail!("{path}: expected a list, got {other}"),
            }
            match next {
                Some(n) => page = n,
                None => return Ok(items),
            }
        }
    }
}

/// kas's `{"message": ...}`, or the whole body.
fn message_of(body: &Value) -> String {
    match serde_json::from_value::<Message>(body.clone()) {
        Ok(error) => error.message,
        Err(_) => body.to_string(),
    }
}

/// A JSON answer as the entity it should be.
fn decode<T: DeserializeOwned>(path: &str, body: Value) -> Result<T> {
    serde_json::from_value(body).with_context(|| format!("{path}: cannot read kas's answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_token_is_refused_with_the_flag_to_set() {
        for token in [None, Some("")] {
            let error = Client::new("kas.example.com", token, None).err().expect("no client");
            assert_eq!(
                error.to_string(),
                "no token: set GITLAB_TOKEN to a personal access token (or pass --token)"
            );
        }
    }

    #[test]
    fn a_bare_host_means_https() -> Result<()> {
        assert_eq!(
            Client::new("kas.example.com:8443/", Some("pat"), None)?.host(),
            "https://kas.example.com:8443"
        );
        assert_eq!(
            Client::anonymous("http://127.0.0.1:8080", None)?.host(),
            "http://127.0.0.1:8080"
        );
        Ok(())
    }

    #[test]
    fn an_unreadable_ca_certificate_is_named() {
        let error = Client::anonymous("kas.example.com", Some(Path::new("/nonexistent/ca.crt")))
            .err()
            .expect("no client");
        assert_eq!(error.to_string(), "reading the CA certificate /nonexistent/ca.crt");
    }
}
