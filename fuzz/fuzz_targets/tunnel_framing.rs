//! The tunnel's framing: any bytes from the network, read as WebSocket
//! frames into the byte stream HTTP/2 runs on, end in data, a clean end or
//! an error, within a bounded time and memory; never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (mut network, kas_side) = tokio::io::duplex(64 * 1024);
        let ws = WebSocketStream::from_raw_socket(kas_side, Role::Server, Some(glagent_tunnel::tunnel_config())).await;
        let mut io = glagent_tunnel::WsIo::new(ws);
        let bytes = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = network.write_all(&bytes).await;
            let _ = network.shutdown().await;
            network
        });
        let mut buffer = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            loop {
                match io.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        assert!(total <= data.len(), "more bytes out than came in");
                    }
                }
            }
        })
        .await;
        assert!(read.is_ok(), "reading the tunnel hung");
        let _ = writer.await;
    });
});
