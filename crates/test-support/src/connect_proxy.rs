//! A small HTTP CONNECT proxy on 127.0.0.1 that a test controls: it counts
//! the tunnels it opened, can refuse CONNECT, and can cut the network
//! (drop open tunnels and refuse new ones) for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct ConnectProxy {
    pub port: u16,
    tunnels: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let port = listener.local_addr().expect("address").port();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let refuse = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn({
            let tunnels = tunnels.clone();
            let refuse = refuse.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let tunnels = tunnels.clone();
                    let refuse = refuse.clone();
                    let cut_rx = cut_rx.clone();
                    tokio::spawn(async move {
                        let _ = serve(client, &tunnels, &refuse, cut_rx).await;
                    });
                }
            }
        });
        ConnectProxy {
            port,
            tunnels,
            refuse,
            cut,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many tunnels were opened so far.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    /// Answer CONNECT with 403 from now on (or not).
    pub fn set_refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Cuts the network: open tunnels go silent and are dropped, and new
    /// connections are refused, until `set_cut(false)`.
    pub fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    client: TcpStream,
    tunnels: &AtomicUsize,
    refuse: &AtomicBool,
    mut cut: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if *cut.borrow() {
        return Ok(());
    }
    let mut reader = BufReader::new(client);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut client = reader.into_inner();
    if method != "CONNECT" {
        client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await?;
        return Ok(());
    }
    if refuse.load(Ordering::SeqCst) {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    let upstream = match TcpStream::connect(&target).await {
        Ok(upstream) => upstream,
        Err(_) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    tunnels.fetch_add(1, Ordering::SeqCst);
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let was_cut = tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut up_write) => false,
        _ = tokio::io::copy(&mut up_read, &mut client_write) => false,
        _ = cut.wait_for(|cut| *cut) => true,
    };
    if was_cut {
        // A cut network: stop forwarding and hold the sockets open without
        // a word, as a dead link does, until the cut ends.
        let _ = cut.wait_for(|cut| !*cut).await;
    }
    Ok(())
}
