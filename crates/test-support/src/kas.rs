//! A real `kas` process for a test: its own data directory (SQLite by
//! default, or a PostgreSQL database), a free port, TLS with the CA it
//! generates, and a root token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How to start kas.
#[derive(Clone, Debug, Default)]
pub struct KasOptions {
    /// Reuse this data directory (for restart tests); default: a new one.
    pub data_dir: Option<PathBuf>,
    /// `postgres://...`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Reuse this port (for restart tests); default: a free one.
    pub port: Option<u16>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

pub struct Kas {
    child: Option<Child>,
    _tempdir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub url: String,
    pub root_token: String,
    options: KasOptions,
    binary: PathBuf,
}

impl Kas {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_kas")`, or
    /// [`crate::binary`]`("kas")` outside the kas package) and waits until it
    /// is ready.
    pub async fn start(binary: &Path, options: KasOptions) -> Kas {
        let (tempdir, data_dir) = match &options.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("glagent-kas-")
                    .tempdir()
                    .expect("temp data dir");
                let path = dir.path().join("data");
                (Some(dir), path)
            }
        };
        let port = options.port.unwrap_or_else(crate::free_port);
        let plain = options
            .env
            .iter()
            .any(|(k, v)| k == "KAS_EXTERNAL_URL" && v.starts_with("http://"));
        let scheme = if plain { "http" } else { "https" };
        let mut kas = Kas {
            child: None,
            _tempdir: tempdir,
            data_dir,
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            root_token: String::new(),
            options,
            binary: binary.to_path_buf(),
        };
        kas.spawn().await;
        kas
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .ok();
        let mut command = Command::new(&self.binary);
        command
            .env("KAS_DATA_DIR", &self.data_dir)
            .env("KAS_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("RUST_LOG", "info")
            .env_remove("KAS_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(
                log.as_ref()
                    .and_then(|f| f.try_clone().ok())
                    .map(Stdio::from)
                    .unwrap_or_else(Stdio::null),
            )
            .stderr(log.map(Stdio::from).unwrap_or_else(Stdio::null));
        std::fs::create_dir_all(self.data_dir.parent().unwrap_or(Path::new("."))).ok();
        if let Some(url) = &self.options.database_url {
            command.env("KAS_DATABASE_URL", url);
        }
        for (k, v) in &self.options.env {
            command.env(k, v);
        }
        self.child = Some(crate::process::spawn(command).expect("starting kas"));
        let token_file = self.data_dir.join("initial_root_token");
        let ca_file = self.ca_file();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("kas exited with {status} before it was ready; log:\n{}", self.log());
            }
            if self.ready(&ca_file).await {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kas not ready after 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.root_token = std::fs::read_to_string(&token_file)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
    }

    async fn ready(&self, ca_file: &Path) -> bool {
        if self.url.starts_with("http://") {
            return match reqwest::get(format!("{}/-/readiness", self.url)).await {
                Ok(response) => response.status().is_success(),
                Err(_) => false,
            };
        }
        let Ok(ca) = std::fs::read(ca_file) else { return false };
        let Ok(cert) = reqwest::Certificate::from_pem(&ca) else {
            return false;
        };
        let Ok(client) = reqwest::Client::builder().add_root_certificate(cert).build() else {
            return false;
        };
        match client.get(format!("{}/-/readiness", self.url)).send().await {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    /// Stops kas with SIGTERM; returns whether it exited in time.
    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut child) => crate::process::terminate(&mut child, Duration::from_secs(10)),
            None => true,
        }
    }

    /// The kas process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills kas with SIGKILL: no chance to clean up, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts kas again on the same port and data after [`Kas::stop`] or
    /// [`Kas::kill`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "kas is still running");
        self.spawn().await;
    }

    /// Stops and starts kas again on the same port and data.
    pub async fn restart(&mut self) {
        assert!(self.stop(), "kas did not stop on SIGTERM within 10 s");
        self.spawn().await;
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls/ca.crt")
    }

    fn log_path(&self) -> PathBuf {
        let parent = self.data_dir.parent().unwrap_or(Path::new("."));
        parent.join(format!("kas-{}.log", self.port))
    }

    /// Everything kas printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// An HTTP client trusting this kas's CA.
    pub fn http(&self) -> reqwest::Client {
        if self.url.starts_with("http://") {
            return reqwest::Client::new();
        }
        let ca = std::fs::read(self.ca_file()).expect("reading the kas CA");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .build()
            .expect("HTTP client")
    }

    /// `<url>/api/v4<path>`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.url)
    }

    /// A REST call as root: the status and the JSON body (`null` when
    /// there is none).
    pub async fn root_call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self
            .http()
            .request(method, self.api(path))
            .header("PRIVATE-TOKEN", &self.root_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("kas answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A new project of root's with one agent and one token of it: where
    /// the benchmarks start.
    pub async fn project_with_agent(&self, project: &str, agent: &str) -> ProjectAgent {
        let created = |what: &str, (status, body): (reqwest::StatusCode, serde_json::Value)| {
            assert!(status.is_success(), "creating {what}: {status} {body}");
            body
        };
        let found = created(
            "the project",
            self.root_call("POST", "/projects", Some(serde_json::json!({"name": project})))
                .await,
        );
        let project_id = found["id"].as_i64().expect("a project id");
        let project_path = found["path_with_namespace"].as_str().expect("a path").to_string();
        let found = created(
            "the agent",
            self.root_call(
                "POST",
                &format!("/projects/{project_id}/cluster_agents"),
                Some(serde_json::json!({"name": agent})),
            )
            .await,
        );
        let agent_id = found["id"].as_i64().expect("an agent id");
        let found = created(
            "the agent token",
            self.root_call(
                "POST",
                &format!("/projects/{project_id}/cluster_agents/{agent_id}/tokens"),
                Some(serde_json::json!({"name": "t"})),
            )
            .await,
        );
        ProjectAgent {
            project_id,
            project_path,
            agent_id,
            token: found["token"].as_str().expect("a token").to_string(),
        }
    }
}

/// What [`Kas::project_with_agent`] made.
pub struct ProjectAgent {
    pub project_id: i64,
    pub project_path: String,
    pub agent_id: i64,
    pub token: String,
}

impl Drop for Kas {
    fn drop(&mut self) {
        self.stop();
    }
}
