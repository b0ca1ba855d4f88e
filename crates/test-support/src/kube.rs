//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager from `KUBEBUILDER_ASSETS` (or the cache that
//! `scripts/kube-env.sh install` fills), started once per test binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// The bearer token of the cluster administrator (group system:masters).
pub const ADMIN_TOKEN: &str = "glagent-test-admin-token";

/// A running control plane.
pub struct KubeEnv {
    dir: tempfile::TempDir,
    pub api_port: u16,
    children: Mutex<Vec<Child>>,
}

/// Audits who asked, as the API server understood it, for access reviews
/// (`kubectl auth can-i`) only, so the log stays small and the API server's
/// other requests pay nothing.
pub const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources:
      - group: authorization.k8s.io
        resources: [selfsubjectaccessreviews, selfsubjectrulesreviews]
  - level: None
";

impl KubeEnv {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static KubeEnv {
        static ENV: OnceLock<KubeEnv> = OnceLock::new();
        ENV.get_or_init(|| KubeEnv::start().unwrap_or_else(|e| panic!("starting the test Kubernetes API: {e:#}")))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// PEM of the CA that signed the API server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// An administrator kubeconfig, for kubectl and other tools.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The directory holding the PKI, kubeconfig and component logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API server's audit events (JSON), in order. Only access reviews
    /// are audited (see [`AUDIT_POLICY`]): they show the API server's view
    /// of a caller, impersonated identity included.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// A new administrator client; create one per test runtime.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path()).expect("reading the test kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("building a client config");
        kube::Client::try_from(config).expect("building a client")
    }

    /// Creates a namespace of the test's own and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = crate::unique(prefix);
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("creating a test namespace");
        name
    }

    fn start() -> anyhow::Result<KubeEnv> {
        let assets = assets_dir()?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("glagent-kube-{}-", std::process::id()))
            .tempdir()?;
        write_pki(dir.path())?;
        let etcd_port = crate::free_port();
        let peer_port = crate::free_port();
        let api_port = crate::free_port();
        let env = KubeEnv {
            dir,
            api_port,
            children: Mutex::new(Vec::new()),
        };
        env.write_kubeconfig()?;
        let d = env.dir.path();
        std::fs::write(d.join("audit-policy.yaml"), AUDIT_POLICY)?;
        let log = |name: &str| -> anyhow::Result<Stdio> { Ok(std::fs::File::create(d.join(name))?.into()) };

        let mut etcd = Command::new(assets.join("etcd"));
        etcd.args([
            "--name=test",
            &format!("--data-dir={}", d.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            &format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"),
            "--listen-metrics-urls=http://127.0.0.1:0",
            "--unsafe-no-fsync",
        ])
        .stdout(log("etcd.log")?)
        .stderr(log("etcd.log")?);
        env.push(crate::process::spawn(etcd)?);

        let mut apiserver = Command::new(assets.join("kube-apiserver"));
        apiserver
            .args([
                &format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                "--insecure-port=0",
                &format!("--tls-cert-file={}", d.join("apiserver.crt").display()),
                &format!("--tls-private-key-file={}", d.join("apiserver.key").display()),
                &format!("--client-ca-file={}", d.join("ca.crt").display()),
                &format!("--token-auth-file={}", d.join("tokens.csv").display()),
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                &format!("--service-account-signing-key-file={}", d.join("sa.key").display()),
                &format!("--service-account-key-file={}", d.join("sa.pub").display()),
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                &format!("--audit-policy-file={}", d.join("audit-policy.yaml").display()),
                &format!("--audit-log-path={}", d.join("audit.log").display()),
                "--audit-log-format=json",
            ])
            .stdout(log("apiserver.log")?)
            .stderr(log("apiserver.log")?);
        env.push(crate::process::spawn(apiserver)?);
        env.wait_ready(Duration::from_secs(90))?;

        let mut kcm = Command::new(assets.join("kube-controller-manager"));
        kcm.args([
            &format!("--kubeconfig={}", d.join("kubeconfig").display()),
            "--leader-elect=false",
            "--controllers=namespace,garbagecollector,serviceaccount,serviceaccount-token,clusterrole-aggregation",
            &format!("--service-account-private-key-file={}", d.join("sa.key").display()),
            &format!("--root-ca-file={}", d.join("ca.crt").display()),
            "--port=0",
            "--secure-port=0",
        ])
        .stdout(log("kcm.log")?)
        .stderr(log("kcm.log")?);
        if assets.join("kube-controller-manager").exists() {
            env.push(crate::process::spawn(kcm)?);
        }
        Ok(env)
    }

    fn push(&self, child: Child) {
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push(child);
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let ca = std::fs::read(self.ca_file())?;
        let url = format!("{}/readyz", self.server_url());
        // Run on a thread of its own: this may be called inside a test runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let client = reqwest::Client::builder()
                        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
                        .build()?;
                    loop {
                        let ok = client
                            .get(&url)
                            .bearer_auth(ADMIN_TOKEN)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            return Ok(());
                        }
                        if Instant::now() > deadline {
                            let log =
                                std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
                            let tail: Vec<&str> = log.lines().rev().take(20).collect();
                            anyhow::bail!(
                                "kube-apiserver not ready after {timeout:?}; log tail:\n{}",
                                tail.join("\n")
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("readiness thread panicked"))?
        })
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut().rev() {
            crate::process::terminate(child, Duration::from_secs(5));
        }
    }
}

/// The control plane lives in a static, which is never dropped: its
/// processes die with the test binary (parent-death signal), and its
/// directory is removed by the next run once its owner is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("glagent-kube-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn assets_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            cache.join("glagent/kube-1.20/assets")
        }
    };
    for binary in ["etcd", "kube-apiserver"] {
        anyhow::ensure!(
            dir.join(binary).exists(),
            "{} has no {binary}: run scripts/kube-env.sh install (scripts/test.sh does) or set KUBEBUILDER_ASSETS",
            dir.display()
        );
    }
    Ok(dir)
}

fn write_pki(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "glagent-test-kube-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default.svc".into(),
    ])?;
    server.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
    server.subject_alt_names.push(SanType::IpAddress("10.0.0.1".parse()?));
    // Pods in a network namespace reach the API server through a relay on
    // their host side's address (see `netns`).
    for slot in 0..crate::netns::SLOTS {
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([10, 77, slot, 1])));
    }
    server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    std::fs::write(dir.join("apiserver.crt"), server_cert.pem())?;
    std::fs::write(dir.join("apiserver.key"), server_key.serialize_pem())?;
    std::fs::write(dir.join("sa.key"), sa_key.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n"),
    )?;
    Ok(())
}

impl KubeEnv {
    fn write_kubeconfig(&self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n\
             current-context: test\n",
            server = self.server_url(),
            ca = d.join("ca.crt").display(),
        );
        std::fs::write(d.join("kubeconfig"), kubeconfig)?;
        Ok(())
    }
}

/// A real kubectl (1.33, as google-cloud-cli installs it, else the
/// system's), for tools of the harness that shell out.
pub fn kubectl() -> std::path::PathBuf {
    [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "/usr/bin/kubectl.1.33",
        "/usr/bin/kubectl",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .expect("kubectl is not installed (google-cloud-cli's kubectl package)")
}
