//! A stand-in for the API server's exec endpoint that upgrades
//! (`SPDY/3.1`) and echoes bytes upper-cased, so a test can check that an
//! upgraded connection through kas and agentk carries bytes both ways, and
//! what request reached the API server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use glagent_test_support::kas::Kas;
use reqwest::StatusCode;

/// A kubeconfig for agentk pointing at [`upgrade_echo_server`].
pub fn echo_kubeconfig(port: u16, dir: &Path) -> PathBuf {
    let path = dir.join(format!("echo-kubeconfig-{port}"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: e, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: e, user: {{token: agent-sa-token}}}}]\ncontexts: [{{name: e, context: {{cluster: e, user: e}}}}]\ncurrent-context: e\n"
        ),
    )
    .unwrap();
    path
}

/// Upgrades an exec request through `kas` to the agent (whose API server
/// is [`upgrade_echo_server`]) and checks bytes round-trip both ways.
pub async fn upgrade_round_trip(kas: &Kas, agent_id: i64, pat: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let client = reqwest::Client::builder()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(kas.ca_file()).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
            kas.url
        ))
        .bearer_auth(format!("pat:{agent_id}:{pat}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["x-stream-protocol-version"], "v4.channel.k8s.io");
    let mut stream = response.upgrade().await.unwrap();
    for message in ["hello through the tunnel", &"x".repeat(100_000)] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message.to_ascii_uppercase().as_bytes());
    }
}

/// An upgrade-capable stand-in for the API server's exec endpoint: checks
/// the upgrade request, switches protocols, and answers each chunk with the
/// same bytes upper-cased.
pub async fn upgrade_echo_server() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut head_tx = Some(head_tx);
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            if !text.to_ascii_lowercase().contains("upgrade: spdy/3.1") {
                // Not an upgrade (e.g. agentk asking /version): refuse plainly.
                let _ = socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                continue;
            }
            if let Some(tx) = head_tx.take() {
                let _ = tx.send(text);
            }
            socket
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
                .await
                .unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let upper: Vec<u8> = buf[..n].iter().map(u8::to_ascii_uppercase).collect();
                            if socket.write_all(&upper).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, head_rx)
}
