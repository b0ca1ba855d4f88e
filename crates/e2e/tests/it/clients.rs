//! Clients other than a hand-written kubeconfig, through the proxy: `glagent
//! cluster agent update-kubeconfig` and its `get-token` exec plugin with
//! every kubectl, the Python `kubernetes` client, and helm v3 and v4
//! installing, upgrading and uninstalling a chart.

use std::process::Command;

use glagent_test_support::kube::KubeEnv;

use crate::Setup;
use crate::support::helm::sh;
use crate::support::{Fixture, KUBECTLS, agent_with_cluster_access, kubectl_path, member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_kubeconfig_adds_a_context_using_the_exec_plugin() {
    let setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let _agent = agent_with_cluster_access(&setup).await;
    let api_pat = member(&setup, "wendy", 30, &["api"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("config");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n",
    )
    .unwrap();
    let output = setup
        .glagent_as(&api_pat)
        .args([
            "cluster",
            "agent",
            "update-kubeconfig",
            "--agent",
            &setup.agent_id.to_string(),
            "--use-context",
        ])
        .arg("--kubeconfig")
        .arg(&kc)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written = std::fs::read_to_string(&kc).unwrap();
    assert!(
        written.contains("get-token") && written.contains("k8s-proxy"),
        "{written}"
    );

    for bin in KUBECTLS {
        let output = Command::new(kubectl_path(bin))
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["get", "namespace", "default", "-o", "name"])
            .env("GITLAB_TOKEN", &api_pat)
            .env("XDG_CACHE_HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "namespace/default");
    }
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("glagent/k8s-proxy-tokens"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "the day's k8s_proxy token is cached and reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kubernetes_client_works_through_the_proxy() {
    let python = std::env::var("GLAGENT_PYTHON")
        .expect("GLAGENT_PYTHON is not set: run the tests with scripts/test.sh, which installs the kubernetes client");
    let Fixture {
        setup: _setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(None, "python", "pyuser").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kubernetes_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("KUBECONFIG", &kc)
            .env("NAMESPACE", &ns)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all kubernetes client checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_through_the_proxy() {
    let Fixture {
        setup: _setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir,
    } = Fixture::start(None, "helm", "hal").await;
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(KubeEnv::shared().client().await, &ns);
    let chart = dir.path().join("demo");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: demo\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n").unwrap();
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();
    for version in [3, 4] {
        let release = format!("demo{version}");
        // helm through the proxy's kubeconfig (the flag wins over the
        // administrator's KUBECONFIG that `sh` sets).
        let helm = |args: &[&str]| {
            let command = format!("helm {} --kubeconfig {} -n {ns}", args.join(" "), kc.display());
            sh(dir.path(), version, &command)
        };
        let chart = chart.to_str().unwrap();
        helm(&["upgrade", "--install", &release, chart, "--wait", "--timeout", "60s"]);
        let greeting = async |name: &str| {
            configmaps
                .get_opt(name)
                .await
                .unwrap()
                .and_then(|cm| cm.data)
                .and_then(|d| d.get("greeting").cloned())
        };
        let name = format!("{release}-greeting");
        assert_eq!(greeting(&name).await.as_deref(), Some("hello"), "helm {version}");
        helm(&["upgrade", &release, chart, "--set", "greeting=bye", "--wait"]);
        assert_eq!(greeting(&name).await.as_deref(), Some("bye"), "helm {version}");
        let list: serde_json::Value = serde_json::from_str(&helm(&["list", "-o", "json"])).unwrap();
        let listed = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == release.as_str())
            .unwrap_or_else(|| panic!("{release} in {list}"));
        assert_eq!(listed["revision"], "2", "{listed}");
        helm(&["uninstall", &release, "--wait"]);
        assert_eq!(greeting(&name).await, None, "helm {version} uninstalled");
    }
}
