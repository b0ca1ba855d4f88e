//! Through the real kube-apiserver to a kubelet: `kubectl exec` that
//! succeeds and `kubectl logs -f` that streams, end to end (kubectl → kas →
//! agentk → API server → kubelet). The test cluster has no kubelet, so the
//! tests register a Node whose kubelet endpoint is a stand-in they serve:
//! TLS, the paths the API server uses, the WebSocket channel protocol
//! (`v5.channel.k8s.io`) kubectl 1.30+ speaks for exec, and a log that
//! grows until its reader goes away. Everything between kubectl and the
//! stand-in is real, including the API server's own proxying and its RBAC
//! check of the identity kas imposed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use glagent_test_support::kube::KubeEnv;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::proxy::{Fixture, as_admin, kubectl, kubectl_path};
use crate::until;

/// What the kubelet stand-in saw.
#[derive(Default)]
struct Kubelet {
    /// Request paths and queries, in order.
    paths: std::sync::Mutex<Vec<String>>,
    /// Set when a followed log's reader went away.
    log_reader_gone: AtomicBool,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Runs `echo` for an exec over the WebSocket channel protocol: its
/// arguments, joined, on stdout, then a Success status and a normal close.
async fn run_echo(mut ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>, words: Vec<String>) {
    let mut stdout = vec![1u8];
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
}

async fn kubelet_request(kubelet: Arc<Kubelet>, mut request: http::Request<Incoming>) -> http::Response<Body> {
    let path = request.uri().to_string();
    kubelet.paths.lock().unwrap().push(path.clone());
    let empty = || http_body_util::Empty::new().boxed();
    if path.starts_with("/exec/") {
        let headers = request.headers();
        let Some(key) = headers.get("sec-websocket-key") else {
            return http::Response::builder().status(400).body(empty()).unwrap();
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let v5 = headers
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "v5.channel.k8s.io");
        let url = url::Url::parse(&format!("https://kubelet{path}")).unwrap();
        let words: Vec<String> = url
            .query_pairs()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.to_string())
            .collect();
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                run_echo(
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await,
                    words,
                )
                .await;
            }
        });
        let mut response = http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept);
        if v5 {
            response = response.header("sec-websocket-protocol", "v5.channel.k8s.io");
        }
        return response.body(empty()).unwrap();
    }
    if path.starts_with("/containerLogs/") {
        // A log that grows by a line every 200 ms for as long as it is read.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for i in 1.. {
                if tx
                    .send(Ok(Frame::data(Bytes::from(format!("line {i}\n")))))
                    .await
                    .is_err()
                {
                    kubelet.log_reader_gone.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let lines = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|line| (line, rx)) });
        return http::Response::new(BodyExt::boxed(StreamBody::new(lines)));
    }
    http::Response::builder().status(404).body(empty()).unwrap()
}

/// Serves the stand-in over TLS on a free port; returns the port.
async fn serve_kubelet(kubelet: Arc<Kubelet>) -> u16 {
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
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, kubelet) = (acceptor.clone(), kubelet.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else { return };
                let service = hyper::service::service_fn(move |request| {
                    let kubelet = kubelet.clone();
                    async move { Ok::<_, Infallible>(kubelet_request(kubelet, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

/// A Node whose kubelet is a fresh stand-in, and the Pod `shell` bound to
/// it in `ns`.
async fn pod_on_a_stand_in_kubelet(ns: &str) -> Arc<Kubelet> {
    let kubelet = Arc::new(Kubelet::default());
    let port = serve_kubelet(kubelet.clone()).await;
    let admin = KubeEnv::shared().client().await;
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
    let pods: Api<Pod> = Api::namespaced(admin, ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shell"},
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap();
    // A new namespace's service account gets its token a moment later; pods
    // are refused until then.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Err(error) = pods.create(&PostParams::default(), &pod).await {
        assert!(std::time::Instant::now() < deadline, "creating the pod: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kubelet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_as_the_imposed_user_through_the_real_api_server() {
    let Fixture {
        setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(Some("user"), "exec", "xena").await;
    let kubelet = pod_on_a_stand_in_kubelet(&ns).await;
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
    let developers = format!("--group=gitlab:project_role:{}:developer", setup.project_id);
    as_admin(
        &ns,
        &[
            "create",
            "role",
            "exec",
            "--verb=get,create",
            "--resource=pods,pods/exec",
        ],
    );
    as_admin(&ns, &["create", "rolebinding", "exec", "--role=exec", &developers]);
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
    let served = kubelet.paths.lock().unwrap().clone();
    assert!(
        served
            .iter()
            .any(|p| p.starts_with(&format!("/exec/{ns}/shell/main?")) && p.contains("command=echo")),
        "the API server's request to the kubelet: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_streams_and_cancels_at_the_kubelet() {
    let Fixture {
        setup: _setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(None, "logs", "lou").await;
    let kubelet = pod_on_a_stand_in_kubelet(&ns).await;

    let mut follow = std::process::Command::new(kubectl_path("kubectl.1.33"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["-n", &ns, "logs", "-f", "shell"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    // Lines arrive one by one while the log grows: each is timed on arrival.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let start = std::time::Instant::now();
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(5)
            .map(|line| (line, start.elapsed()))
            .collect::<Vec<_>>()
    });
    let lines = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let texts: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(texts, ["line 1", "line 2", "line 3", "line 4", "line 5"], "{lines:?}");
    let spread = lines[4].1 - lines[0].1;
    assert!(
        spread >= Duration::from_millis(300),
        "lines must stream as written (200 ms apart), not arrive together: {lines:?}"
    );
    assert!(follow.try_wait().unwrap().is_none(), "kubectl logs -f still follows");
    let served = kubelet.paths.lock().unwrap().clone();
    assert!(
        served
            .iter()
            .any(|p| p.starts_with(&format!("/containerLogs/{ns}/shell/main?")) && p.contains("follow=true")),
        "{served:?}"
    );

    // Stopping kubectl ends the read at the kubelet, through every hop.
    follow.kill().unwrap();
    follow.wait().unwrap();
    let gone = until(
        Duration::from_secs(10),
        "the kubelet to see its reader go",
        async || kubelet.log_reader_gone.load(Ordering::SeqCst),
    )
    .await;
    println!(
        "kubectl logs -f: lines 1-5 over {spread:?}; the kubelet saw its reader go {gone:?} after kubectl was killed"
    );
}
