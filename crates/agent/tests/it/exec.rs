//! `kubectl exec` that succeeds, end to end: kubectl → kas → agentk → the
//! real kube-apiserver → a kubelet. The test cluster has no kubelet, so the
//! test registers a Node whose kubelet endpoint is a stand-in it serves:
//! TLS, the exec path the API server uses, and the WebSocket channel
//! protocol (`v5.channel.k8s.io`) kubectl 1.30+ speaks. Everything between
//! kubectl and the stand-in is real, including the API server's own
//! upgrade proxying and its RBAC check of the identity kas imposed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::Setup;
use crate::proxy::{agent_with_cluster_access, kubeconfig, kubectl, member};

/// A kubelet's exec endpoint that can run `echo`: one command per
/// connection, its arguments joined by spaces on stdout, then a Success
/// status.
/// Returns its port and the request paths it served.
async fn kubelet_stand_in() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else { return };
                let mut path = String::new();
                #[allow(clippy::result_large_err, reason = "the shape of tungstenite's handshake callback")]
                let callback = |request: &Request, mut response: Response| {
                    path = request.uri().to_string();
                    let offered = request
                        .headers()
                        .get_all("sec-websocket-protocol")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(','))
                        .any(|p| p.trim() == "v5.channel.k8s.io");
                    if offered {
                        response
                            .headers_mut()
                            .insert("sec-websocket-protocol", "v5.channel.k8s.io".parse().unwrap());
                    }
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, callback).await else {
                    return;
                };
                seen.lock().unwrap().push(path.clone());
                let url = url::Url::parse(&format!("https://kubelet{path}")).unwrap();
                let words: Vec<String> = url
                    .query_pairs()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.to_string())
                    .collect();
                let mut stdout = vec![1u8];
                // Runs `echo`: its arguments, joined, on stdout.
                stdout.extend_from_slice(format!("{}\n", words[1..].join(" ")).as_bytes());
                let _ = ws.send(Message::Binary(stdout.into())).await;
                let mut status = vec![3u8];
                status.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
                let _ = ws.send(Message::Binary(status.into())).await;
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))
                    .await;
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (port, paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_as_the_imposed_user_through_the_real_api_server() {
    let setup = Setup::new().await;
    let config = format!(
        "user_access:\n  access_as:\n    user: {{}}\n  projects:\n    - id: {}\n",
        setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let _agent = agent_with_cluster_access(&setup).await;
    let env = KubeEnv::shared();
    let admin = env.client().await;
    let ns = env.namespace("exec").await;
    let (port, paths) = kubelet_stand_in().await;

    // A Node whose kubelet is the stand-in, and a Pod bound to it.
    let node_name = glagent_test_support::unique("stand-in-node");
    let nodes: Api<Node> = Api::all(admin.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": node_name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shell"},
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let pat = member(&setup, "xena", 30, &["k8s_proxy"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(&setup, &pat, dir.path());
    // The exec runs as the user kas imposes: refused by the API server until
    // RBAC lets the project's developers exec.
    let refused = kubectl(
        "kubectl.1.33",
        &kc,
        &["-n", &ns, "exec", "shell", "--", "echo", "no"],
        None,
    );
    assert!(!refused.0, "{refused:?}");
    assert!(refused.2.contains("User \"gitlab:user:xena\""), "{}", refused.2);
    let admin_kc = env.kubeconfig_path();
    let developers = format!("--group=gitlab:project_role:{}:developer", setup.project_id);
    for args in [
        vec![
            "create",
            "role",
            "exec",
            "--verb=get,create",
            "--resource=pods,pods/exec",
        ],
        vec!["create", "rolebinding", "exec", "--role=exec", developers.as_str()],
    ] {
        let mut full = vec!["-n", ns.as_str()];
        full.extend(args);
        let result = kubectl("kubectl.1.33", &admin_kc, &full, None);
        assert!(result.0, "{result:?}");
    }
    let exec = || {
        kubectl(
            "kubectl.1.33",
            &kc,
            &["-n", &ns, "exec", "shell", "--", "echo", "hello", "from the kubelet"],
            None,
        )
    };
    let mut last = exec();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !last.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = exec();
    }
    assert_eq!(last.1, "hello from the kubelet\n", "stderr: {}", last.2);
    let served = paths.lock().unwrap().clone();
    assert!(
        served
            .iter()
            .any(|p| p.starts_with(&format!("/exec/{ns}/shell/main?")) && p.contains("command=echo")),
        "the API server's request to the kubelet: {served:?}"
    );
    let _ = nodes.delete(&node_name, &Default::default()).await;
}
