//! A stand-in kubelet, for `kubectl exec` and `kubectl logs -f` end to end
//! (kubectl → kas → agentk → API server → kubelet). The test cluster has no
//! kubelet, so a test registers a Node whose kubelet endpoint is this
//! stand-in: TLS, the paths the API server uses, the WebSocket channel
//! protocol (`v5.channel.k8s.io`) kubectl 1.30+ speaks for exec, and a log
//! that grows until its reader goes away. Everything between kubectl and
//! the stand-in is real, including the API server's own proxying and its
//! RBAC check of the identity kas imposed.

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

/// What the kubelet stand-in saw.
#[derive(Default)]
pub struct Kubelet {
    /// Request paths and queries, in order.
    pub paths: std::sync::Mutex<Vec<String>>,
    /// Set when a followed log's reader went away.
    pub log_reader_gone: AtomicBool,
    /// Pods whose log is a file (an agentk process's log), by pod name.
    pub log_files: std::sync::Mutex<std::collections::HashMap<String, std::path::PathBuf>>,
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
    if let Some(rest) = path.strip_prefix("/containerLogs/") {
        let pod = rest.split('/').nth(1).unwrap_or_default().to_string();
        let file = kubelet.log_files.lock().unwrap().get(&pod).cloned();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            return http::Response::new(http_body_util::Full::new(Bytes::from(text)).boxed());
        }
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
pub async fn pod_on_a_stand_in_kubelet(ns: &str) -> Arc<Kubelet> {
    pods_on_a_stand_in_kubelet(ns, &[("shell", json!({}), None)]).await
}

/// A Node whose kubelet is a fresh stand-in, and `pods` bound to it in
/// `ns`: (name, labels, the file the kubelet serves as its log).
pub async fn pods_on_a_stand_in_kubelet(
    ns: &str,
    pods: &[(&str, serde_json::Value, Option<std::path::PathBuf>)],
) -> Arc<Kubelet> {
    let kubelet = Arc::new(Kubelet::default());
    for (name, _, file) in pods {
        if let Some(file) = file {
            kubelet.log_files.lock().unwrap().insert(name.to_string(), file.clone());
        }
    }
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
    let api: Api<Pod> = Api::namespaced(admin, ns);
    for (name, labels, _) in pods {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "busybox"}]}
        }))
        .unwrap();
        // A new namespace's service account gets its token a moment later;
        // pods are refused until then.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while let Err(error) = api.create(&PostParams::default(), &pod).await {
            assert!(std::time::Instant::now() < deadline, "creating the pod: {error}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    kubelet
}
