//! Streams through the proxy: a watch sees events as they happen; watches
//! nobody reads stall neither other requests nor the API server, and end
//! there when dropped; requests share agentk's HTTP/2 connection to the API
//! server while each watch gets its own; `kubectl logs -f` streams line by
//! line from a (stand-in) kubelet and cancels there.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use glagent_test_support::kube::KubeEnv;
use serde_json::json;

use crate::support::kubelet::pod_on_a_stand_in_kubelet;
use crate::support::{Fixture, KUBECTLS, kubectl_path, watch_sees};
use crate::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_watch_receives_events_as_they_happen() {
    let f = Fixture::start(Some("agent"), "watch", "wanda").await;
    // A watch receives events as they happen.
    let seen = watch_sees(&f.kc, &f.ns, "watched-later", &f.kc).await;
    assert!(seen.contains("configmap/watched-later"), "the watch saw: {seen}");
}

/// The number of watches the API server holds on LimitRanges: a kind no
/// other test watches, so the count moves only with this test's watches.
async fn limitrange_watchers() -> u64 {
    let env = KubeEnv::shared();
    let client = env.client().await;
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_registered_watchers{") && l.contains("kind=\"LimitRange\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watches_do_not_slow_other_requests_and_cancel_at_the_api_server() {
    let Fixture {
        setup,
        agent: _agent,
        ns,
        pat,
        kc: _kc,
        dir: _dir,
    } = Fixture::start(None, "stall", "walter").await;
    let env = KubeEnv::shared();
    let http = setup.kas.http();
    let base = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let auth = format!("pat:{}:{pat}", setup.agent_id);
    let get_once = || {
        let request = http.get(format!("{base}/api/v1/namespaces/{ns}")).bearer_auth(&auth);
        async move {
            let start = Instant::now();
            let response = tokio::time::timeout(Duration::from_secs(5), request.send())
                .await
                .expect("GET timed out")
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            start.elapsed()
        }
    };
    let p99 = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
    };
    let mut baseline = Vec::new();
    for _ in 0..100 {
        baseline.push(get_once().await);
    }
    let watchers_before = limitrange_watchers().await;

    // 50 watches whose bodies nobody reads, while events keep coming.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let response = http
            .get(format!("{base}/api/v1/namespaces/{ns}/limitranges?watch=1"))
            .bearer_auth(&auth)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        stalled.push(response);
    }
    until(
        Duration::from_secs(10),
        "50 more watches at the API server",
        async || limitrange_watchers().await >= watchers_before + 50,
    )
    .await;
    let admin = env.client().await;
    let limitranges: kube::Api<k8s_openapi::api::core::v1::LimitRange> = kube::Api::namespaced(admin, &ns);
    let filler = "x".repeat(64 * 1024);
    for i in 0..20 {
        let lr: k8s_openapi::api::core::v1::LimitRange = serde_json::from_value(json!({
            "metadata": {"name": format!("fill-{i}"), "annotations": {"filler": filler}},
            "spec": {"limits": [{"type": "Container"}]}
        }))
        .unwrap();
        limitranges.create(&Default::default(), &lr).await.unwrap();
    }
    let mut during = Vec::new();
    for _ in 0..200 {
        during.push(get_once().await);
    }
    println!(
        "GET p99 through the proxy: {:?} alone, {:?} with 50 stalled watches (20 x 64 KiB events pending on each)",
        p99(baseline),
        p99(during)
    );

    // Dropping the client side ends the watches at the API server.
    let with_ours = limitrange_watchers().await;
    drop(stalled);
    let start = Instant::now();
    let mut now = with_ours;
    while start.elapsed() < Duration::from_secs(30) {
        now = limitrange_watchers().await;
        if now + 50 <= with_ours {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "API server LimitRange watches: {watchers_before} before, {with_ours} with ours, {now} after dropping them ({:?})",
        start.elapsed()
    );
    assert!(
        now + 50 <= with_ours,
        "the API server still holds the dropped watches: {with_ours} -> {now}"
    );
}

/// Established TCP connections from a process to a local port, from /proc.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().to_string();
                    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // remote address, state 01 = ESTABLISHED, inode
            fields.len() > 9 && fields[2].ends_with(&port) && fields[3] == "01" && inodes.contains(fields[9])
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_an_http2_connection_and_watches_get_their_own() {
    let Fixture {
        setup,
        agent,
        ns,
        pat,
        kc: _kc,
        dir: _dir,
    } = Fixture::start(None, "pool", "pia").await;
    let pid = agent.pid().expect("agentk runs");
    let env = KubeEnv::shared();
    let api_port: u16 = env.server_url().rsplit(':').next().unwrap().parse().unwrap();
    let http = setup.kas.http();
    let base = format!("{}/-/kubernetes-agent/k8s-proxy", setup.kas.url);
    let auth = format!("pat:{}:{pat}", setup.agent_id);
    // One request opens the shared connection (a burst before any exists
    // may race a few TLS handshakes); then 40 LISTs at once, which over
    // HTTP/1.1 would each need a connection of their own.
    let first = http
        .get(format!("{base}/api/v1/namespaces/{ns}/serviceaccounts"))
        .bearer_auth(&auth)
        .send()
        .await
        .unwrap();
    assert!(first.status().is_success(), "{}", first.status());
    first.bytes().await.unwrap();
    let before = connections_to(pid, api_port);
    let lists = (0..40).map(|_| {
        let request = http
            .get(format!("{base}/api/v1/namespaces/{ns}/serviceaccounts"))
            .bearer_auth(&auth);
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
        }
    });
    futures_util::future::join_all(lists).await;
    let after_lists = connections_to(pid, api_port);
    println!("agentk's connections to the API server: {before} before, {after_lists} after 40 concurrent LISTs");
    assert!(
        after_lists <= before,
        "40 concurrent requests should share the HTTP/2 connection: {before} -> {after_lists}"
    );

    let mut watches = Vec::new();
    for _ in 0..5 {
        let response = http
            .get(format!("{base}/api/v1/namespaces/{ns}/serviceaccounts?watch=1"))
            .bearer_auth(&auth)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        watches.push(response);
    }
    let with_watches = connections_to(pid, api_port);
    println!("with 5 watches open: {with_watches}");
    assert!(
        with_watches >= after_lists + 5,
        "each watch should have a connection of its own: {after_lists} -> {with_watches}"
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

    let mut follow = std::process::Command::new(kubectl_path(KUBECTLS[1]))
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
