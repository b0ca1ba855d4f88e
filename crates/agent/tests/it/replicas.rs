//! Several kas replicas on one PostgreSQL database and one data directory:
//! a proxied request reaching a replica that holds no connection of its
//! agent is forwarded, with the identity decided, to one that does.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::kas::{Kas, KasOptions};
use glagent_test_support::kube::KubeEnv;
use reqwest::StatusCode;
use serde_json::json;

use crate::proxy::{KUBECTLS, kubeconfig_at, kubectl, member, ok, upgrade_echo_server};
use crate::{AGENTK, Setup, call, kas_binary, until};

/// Options for one replica, and the URL of its private API.
fn replica_options(
    database_url: &str,
    secret: &std::path::Path,
    data_dir: Option<std::path::PathBuf>,
) -> (KasOptions, String) {
    let private = format!("127.0.0.1:{}", glagent_test_support::free_port());
    let options = KasOptions {
        data_dir,
        database_url: Some(database_url.to_string()),
        env: vec![
            ("KAS_PRIVATE_LISTEN".into(), private.clone()),
            ("KAS_PRIVATE_API_SECRET_FILE".into(), secret.display().to_string()),
        ],
        ..Default::default()
    };
    (options, format!("http://{private}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_agent_forwards_to_the_replica_holding_it() {
    let database_url = glagent_test_support::postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("private-api-secret");
    std::fs::write(&secret, "s3cret-shared-by-all-kas-replicas-0123456789\n").unwrap();
    // Replica A holds the agents; replica B shares its database and files.
    let setup = Setup::with_options(replica_options(&database_url, &secret, None).0).await;
    let (b_options, b_private) = replica_options(&database_url, &secret, Some(setup.kas.data_dir.clone()));
    let b = Kas::start(&kas_binary(), b_options).await;
    let config = format!(
        "user_access:\n  access_as:\n    user: {{}}\n  projects:\n    - id: {}\n",
        setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let mut options = setup.agent_options();
    options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
    let mut agent = Agentk::start(AGENTK.as_ref(), options);
    agent.wait_ready(Duration::from_secs(20)).await;

    let env = KubeEnv::shared();
    let ns = env.namespace("replicas").await;
    let pat = member(&setup, "rhea", 30, &["k8s_proxy"]).await;
    let kc = kubeconfig_at(&b.url, &b.ca_file(), setup.agent_id, &pat, dir.path());
    let bin = KUBECTLS[1];

    // The identity decided on B reaches the API server through A.
    let (allowed, _, stderr) = kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None);
    assert!(!allowed);
    assert!(stderr.contains("User \"gitlab:user:rhea\""), "{stderr}");
    ok(
        kubectl(
            bin,
            &env.kubeconfig_path(),
            &[
                "-n",
                &ns,
                "create",
                "rolebinding",
                "users",
                "--clusterrole=edit",
                "--group=gitlab:user",
            ],
            None,
        ),
        "rolebinding",
    );
    until(Duration::from_secs(5), "RBAC for gitlab:user", async || {
        kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None).0
    })
    .await;
    ok(
        kubectl(bin, &kc, &["-n", &ns, "create", "configmap", "via-b"], None),
        "create through B",
    );

    // A watch through B receives events as they happen.
    let mut watch = Command::new(format!("/usr/lib/google-cloud-sdk/bin/{bin}"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["-n", &ns, "get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buffer = [0u8; 1024];
        while !seen.contains("configmap/later") {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(
        kubectl(
            bin,
            &env.kubeconfig_path(),
            &["-n", &ns, "create", "configmap", "later"],
            None,
        ),
        "create",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = reader.join().unwrap();
    assert!(seen.contains("configmap/later"), "the watch through B saw: {seen}");

    // An upgraded connection through B and A round-trips bytes, for a second
    // agent whose API server is an upgrade-capable stand-in.
    let (_, echo_agent) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        Some(json!({"name": "echo"})),
    )
    .await;
    let echo_id = echo_agent["id"].as_i64().unwrap();
    let (_, echo_token) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{echo_id}/tokens", setup.project_id),
        Some(json!({"name": "t"})),
    )
    .await;
    let (status, _) = call(
        &setup.kas,
        "POST",
        &format!(
            "/projects/{}/repository/files/.gitlab%2Fagents%2Fecho%2Fconfig.yaml",
            setup.project_id
        ),
        Some(json!({"branch": "main", "content": config, "commit_message": "echo agent"})),
    )
    .await;
    assert!(status.is_success());
    let (port, _head) = upgrade_echo_server().await;
    let echo_kc = dir.path().join("echo-kubeconfig");
    std::fs::write(
        &echo_kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: e, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: e, user: {{token: agent-sa-token}}}}]\ncontexts: [{{name: e, context: {{cluster: e, user: e}}}}]\ncurrent-context: e\n"
        ),
    )
    .unwrap();
    let mut options = setup.agent_options();
    options.token = echo_token["token"].as_str().unwrap().to_string();
    options.kubeconfig = Some(echo_kc);
    let mut echo = Agentk::start(AGENTK.as_ref(), options);
    echo.wait_ready(Duration::from_secs(20)).await;
    let client = reqwest::Client::builder()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(b.ca_file()).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
            b.url
        ))
        .bearer_auth(format!("pat:{echo_id}:{pat}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut stream = response.upgrade().await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for message in ["through two replicas", &"y".repeat(50_000)] {
            stream.write_all(message.as_bytes()).await.unwrap();
            let mut echoed = vec![0u8; message.len()];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(echoed, message.to_ascii_uppercase().as_bytes());
        }
    }
    drop(stream);
    echo.stop();

    // B's private API refuses what is not signed with the shared secret.
    let forged = reqwest::Client::new()
        .get(format!(
            "{b_private}/-/private/k8s-proxy/api/v1/namespaces/{ns}/secrets"
        ))
        .header("x-glagent-route-agent", setup.agent_id.to_string())
        .header("x-glagent-route-signature", "1.00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // Once the agent is gone from A, B says so instead of forwarding.
    agent.stop();
    until(Duration::from_secs(5), "B to stop routing to the agent", async || {
        let (_, _, stderr) = kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None);
        stderr.contains("is not connected to kas")
    })
    .await;
}
