//! Real helm (v3 and v4, from `GLAGENT_HELM3` / `GLAGENT_HELM4`), the
//! repository's chart, and agentk run exactly as a rendered Deployment says
//! (the test cluster has no kubelet to run it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kube::KubeEnv;
use glagent_test_support::netns::Netns;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use crate::agentk;
use crate::support::{KUBECTLS, kubectl_path};

/// The chart in `deploy/helm/gitlab-agent`.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/gitlab-agent");

pub fn helm(version: u8) -> PathBuf {
    let var = format!("GLAGENT_HELM{version}");
    let path = PathBuf::from(std::env::var(&var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test.sh")));
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

/// Runs a shell script with `helm` (the given version) and the admin
/// kubeconfig, in `dir`.
pub fn sh(dir: &Path, helm_version: u8, script: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("helm");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(helm(helm_version), &link).unwrap();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .env("KUBECONFIG", KubeEnv::shared().kubeconfig_path())
        .env("HELM_CACHE_HOME", dir.join("helm/cache"))
        .env("HELM_CONFIG_HOME", dir.join("helm/config"))
        .env("HELM_DATA_HOME", dir.join("helm/data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "script failed:\n{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Starts agentk with the rendered Deployment's args and env, each mounted
/// Secret and ConfigMap written where its mount says, and a token of the
/// chart's ServiceAccount from the TokenRequest API.
pub async fn run_as_the_chart_says(namespace: &str, release: &str, dir: &Path) -> Agentk {
    run_as_the_chart_says_in(namespace, release, dir, None).await
}

/// [`run_as_the_chart_says`], inside `netns` when given: the agent then
/// reaches the API server through a relay on the namespace's host side.
pub async fn run_as_the_chart_says_in(namespace: &str, release: &str, dir: &Path, netns: Option<&mut Netns>) -> Agentk {
    let env = KubeEnv::shared();
    let client = env.client().await;
    let name = format!("{release}-gitlab-agent");
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(&name)
        .await
        .unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    // Each mounted volume's files, under dir/<release>-<volume>/.
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("no volume {}", mount.name));
        let files: Vec<(String, Vec<u8>)> = if let Some(secret) = &volume.secret {
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get(secret.secret_name.as_deref().unwrap())
                .await
                .unwrap();
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        } else if let Some(config_map) = &volume.config_map {
            let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get(&config_map.name)
                .await
                .unwrap();
            config_map
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect()
        } else {
            panic!("volume {} is neither a Secret nor a ConfigMap", mount.name)
        };
        let local = dir.join(format!("{release}-{}", mount.name));
        std::fs::create_dir_all(&local).unwrap();
        for (file, content) in files {
            std::fs::write(local.join(file), content).unwrap();
        }
        mounts.push((mount.mount_path.clone(), local));
    }
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(
            |a| match mounts.iter().find(|(path, _)| a.starts_with(&format!("{path}/"))) {
                Some((path, local)) => format!("{}{}", local.display(), &a[path.len()..]),
                None => a,
            },
        )
        .collect();
    let service_account = pod.service_account_name.unwrap();
    let sa_token = Command::new(kubectl_path(KUBECTLS[1]))
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["-n", namespace, "create", "token", &service_account])
        .output()
        .unwrap();
    assert!(
        sa_token.status.success(),
        "{}",
        String::from_utf8_lossy(&sa_token.stderr)
    );
    let (server, netns) = match netns {
        Some(netns) => {
            let relay = netns
                .forward(format!("127.0.0.1:{}", env.api_port).parse().unwrap())
                .await;
            (format!("https://{relay}"), Some((netns.name.clone(), netns.ns_ip)))
        }
        None => (env.server_url(), None),
    };
    let kubeconfig = dir.join(format!("{release}-in-cluster.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\n\
             users: [{{name: sa, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: sa}}}}]\ncurrent-context: c\n",
            server,
            env.ca_file().display(),
            String::from_utf8_lossy(&sa_token.stdout).trim()
        ),
    )
    .unwrap();
    let mut envs = Vec::new();
    for var in container.env.clone().unwrap_or_default() {
        let value = match var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str())
        {
            Some("metadata.namespace") => namespace.to_string(),
            Some("metadata.name") => format!("{name}-7d9f8-x2x4z"),
            Some("spec.serviceAccountName") => service_account.clone(),
            Some(other) => panic!("unexpected downward API field {other}"),
            None => var.value.unwrap_or_default(),
        };
        envs.push((var.name, value));
    }
    let mut args_with_kubeconfig = args;
    args_with_kubeconfig.push("--kubeconfig".into());
    args_with_kubeconfig.push(kubeconfig.display().to_string());
    let mut agent = Agentk::start(
        &agentk(),
        AgentkOptions {
            kas_address: String::new(),
            token: String::new(),
            args: args_with_kubeconfig,
            env: envs,
            netns,
            ..Default::default()
        },
    );
    agent.wait_ready(Duration::from_secs(30)).await;
    agent
}
