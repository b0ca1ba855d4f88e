//! A real `agentk` process for a test, pointed at a kas, with its
//! observability server on a free port and its log in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct AgentkOptions {
    pub kas_address: String,
    /// Written to a token file passed with --token-file (unless empty).
    pub token: String,
    pub ca_file: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub pod_name: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Run inside this network namespace (name, its side's address); the
    /// observability server then listens on that address.
    pub netns: Option<(String, std::net::Ipv4Addr)>,
}

pub struct Agentk {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    options: AgentkOptions,
    pub observability_port: u16,
}

impl Agentk {
    /// Starts agentk; does not wait for it to connect.
    pub fn start(binary: &Path, options: AgentkOptions) -> Agentk {
        let dir = tempfile::Builder::new()
            .prefix("glagent-agentk-")
            .tempdir()
            .expect("temp dir");
        let mut agent = Agentk {
            child: None,
            dir,
            binary: binary.to_path_buf(),
            options,
            observability_port: crate::free_port(),
        };
        agent.spawn();
        agent
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    fn spawn(&mut self) {
        if !self.options.token.is_empty() {
            std::fs::write(self.token_file(), format!("{}\n", self.options.token)).expect("writing the token file");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut command = match &self.options.netns {
            Some((name, _)) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let observability = format!("{}:{}", self.host(), self.observability_port);
        if !self.options.kas_address.is_empty() {
            command.arg("--kas-address").arg(&self.options.kas_address);
        }
        if !self.options.token.is_empty() {
            command.arg("--token-file").arg(self.token_file());
        }
        // Arguments that already name an observability address (a Helm
        // chart's) get this process's port instead.
        let mut args = self.options.args.clone();
        if let Some(at) = args.iter().position(|a| a == "--observability-listen-address") {
            if at + 1 < args.len() {
                args[at + 1] = observability;
            }
        } else {
            command.arg("--observability-listen-address").arg(observability);
        }
        command
            .args(&args)
            .env(
                "POD_NAME",
                self.options.pod_name.as_deref().unwrap_or("agentk-test-pod"),
            )
            .env("POD_NAMESPACE", "gitlab-agent")
            .env("RUST_LOG", "info")
            .env_remove("AGENTK_TOKEN")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log));
        if let Some(ca) = &self.options.ca_file {
            command.arg("--kas-ca-cert-file").arg(ca);
        }
        if let Some(kubeconfig) = &self.options.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        for (k, v) in &self.options.env {
            command.env(k, v);
        }
        self.child = Some(crate::process::spawn(command).expect("starting agentk"));
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agentk.log")
    }

    /// Everything agentk logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process has exited, and how.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit (for start-up errors).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agentk still runs after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the observability server listens.
    fn host(&self) -> String {
        match &self.options.netns {
            Some((_, ip)) => ip.to_string(),
            None => "127.0.0.1".into(),
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}:{}{path}", self.host(), self.observability_port);
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The value of a metric line starting with `prefix`.
    pub async fn metric(&self, prefix: &str) -> Option<String> {
        let (_, text) = self.get("/metrics").await?;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    }

    /// The commit of the configuration in force, from /metrics.
    pub async fn config_commit(&self) -> Option<String> {
        let (_, text) = self.get("/metrics").await?;
        let line = text.lines().find(|l| l.starts_with("agentk_configuration_info{"))?;
        let start = line.find("commit_id=\"")? + "commit_id=\"".len();
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_string())
    }

    pub async fn is_connected(&self) -> bool {
        self.metric("agentk_connected ").await.as_deref() == Some("1")
    }

    pub async fn is_ready(&self) -> bool {
        matches!(self.get("/readiness").await, Some((200, _)))
    }

    /// Waits until ready (connected and configured); returns how long it took.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.is_ready().await {
                return start.elapsed();
            }
            if let Some(status) = self.exit_status() {
                panic!("agentk exited with {status}; log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < timeout,
                "agentk not ready after {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut child) => crate::process::terminate(&mut child, Duration::from_secs(5)),
            None => true,
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Agentk {
    fn drop(&mut self) {
        self.stop();
    }
}
