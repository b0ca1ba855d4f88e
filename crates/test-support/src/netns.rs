//! A network namespace joined to the host by one veth pair: the host side
//! is `10.77.<slot>.1`, the namespace side `10.77.<slot>.2`. Processes
//! started in it reach the host only at the host side's address, so a
//! service the host binds to 127.0.0.1 (kas in these tests) is out of
//! their reach, while the host reaches them at the namespace side's
//! address. [`Netns::forward`] relays one host service (the API server, as
//! a cluster would have it inside) to the host side's address.
//!
//! Needs root (`ip netns`). The namespace and its veth pair are deleted
//! when the value is dropped; namespaces left by test processes that died
//! are deleted by the next one.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Slots 0..SLOTS: the API server's test certificate names each host-side
/// address (see `kube`).
pub const SLOTS: u8 = 32;

pub struct Netns {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("running ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {} (these tests need root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Deletes `glagent-<pid>-<slot>` namespaces whose process is gone.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("glagent-").and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Netns {
    pub fn create() -> Netns {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        remove_stale();
        let slot = NEXT.fetch_add(1, Ordering::SeqCst) % SLOTS;
        let pid = std::process::id();
        let name = format!("glagent-{pid}-{slot}");
        let host_if = format!("gl{}h{slot}", pid % 100_000);
        let ns_if = format!("gl{}n{slot}", pid % 100_000);
        let host_ip = Ipv4Addr::new(10, 77, slot, 1);
        let ns_ip = Ipv4Addr::new(10, 77, slot, 2);
        ip(&["netns", "add", &name]);
        let netns = Netns {
            name: name.clone(),
            host_ip,
            ns_ip,
            relays: Vec::new(),
        };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        netns
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Whether a process in the namespace can open a TCP connection to `to`.
    pub fn can_connect(&self, to: SocketAddr) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", "3", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port()))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Relays connections to the host side's address (a free port) to
    /// `target`, as a cluster's network would carry its pods' traffic to
    /// the API server. Returns the relay's address.
    pub async fn forward(&mut self, target: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind((self.host_ip, 0)).await.expect("binding the relay");
        let address = listener.local_addr().expect("the relay's address");
        self.relays.push(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        }));
        address
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for relay in &self.relays {
            relay.abort();
        }
        // The veth pair goes with the namespace.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
