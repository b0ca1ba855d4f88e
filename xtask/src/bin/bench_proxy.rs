//! The Kubernetes API proxy benchmark, run by `cargo xtask bench proxy`
//! (release builds). Against one real kube-apiserver, in one run, the same
//! requests go several ways: directly, through kas + agentk (the agent on
//! `wss://`, on `grpcs://`, and receptive: kas dials it over `grpcs://`),
//! through `kubectl proxy`, through two bare TCP relays and, when
//! `GLAGENT_BENCH_BASELINE` names a directory holding another build's `kas`
//! and `agentk`, through that pair too (old build against new build,
//! requests alternating), and through a pair whose kas keeps no audit log
//! (the audit log's cost). Then, path by path, the CPU time each process
//! on the path spends per GET (from `/proc`) and the throughput at 1, 8
//! and 64 concurrent GETs. Prints the figures and `RESULT` lines.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kas::{Kas, KasOptions};
use glagent_test_support::kube::{ADMIN_TOKEN, KubeEnv};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::{Value, json};

/// GETs per path; `GLAGENT_BENCH_GETS` raises it (to attach a profiler).
fn gets() -> usize {
    std::env::var("GLAGENT_BENCH_GETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}
const LIST_OBJECTS: usize = 5000;
const LISTS: usize = 5;
const WATCHES: usize = 100;
const WATCH_EVENTS: usize = 20;

/// One way to reach the API server.
struct Path {
    name: &'static str,
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Path {
    /// GETs `path`, reads the whole answer, fails unless it is a success.
    async fn get_ok(&self, path: &str) -> Result<()> {
        let response = self.get(path).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{}: GET {}",
            self.name,
            response.status()
        );
        response.bytes().await?;
        Ok(())
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// GET p50 and p99 for each path. Requests alternate between the paths,
/// so that drift on a busy machine affects all of them alike.
async fn bench_get(paths: &[&Path], ns: &str) -> Result<Vec<(Duration, Duration)>> {
    let url = format!("/api/v1/namespaces/{ns}/configmaps/target");
    for path in paths {
        for _ in 0..50 {
            path.get_ok(&url).await?;
        }
    }
    let gets = gets();
    let mut samples = vec![Vec::with_capacity(gets); paths.len()];
    for _ in 0..gets {
        for (i, path) in paths.iter().enumerate() {
            let start = Instant::now();
            path.get_ok(&url).await?;
            samples[i].push(start.elapsed());
        }
    }
    Ok(samples
        .iter_mut()
        .map(|s| (percentile(s, 50), percentile(s, 99)))
        .collect())
}

/// CPU time (user + system) a process has used, from `/proc`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line, in clock ticks.
    let after = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// The first process whose command line `matches`.
fn find_process(matches: impl Fn(&[String]) -> bool) -> Result<Option<(u32, Vec<String>)>> {
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if matches(&args) {
            return Ok(Some((pid, args)));
        }
    }
    Ok(None)
}

/// The kube-apiserver serving on `port`, and the etcd behind it.
fn control_plane_pids(port: u16) -> Result<(u32, u32)> {
    let (api_server, args) = find_process(|args| {
        args.first().is_some_and(|a| a.ends_with("kube-apiserver"))
            && args.iter().any(|a| a == &format!("--secure-port={port}"))
    })?
    .with_context(|| format!("no kube-apiserver process with --secure-port={port}"))?;
    let servers = args
        .iter()
        .find_map(|a| a.strip_prefix("--etcd-servers="))
        .context("the API server's --etcd-servers")?
        .to_string();
    let (etcd, _) = find_process(|args| {
        args.first().is_some_and(|a| a.ends_with("etcd"))
            && args.iter().any(|a| a == &format!("--listen-client-urls={servers}"))
    })?
    .with_context(|| format!("no etcd listening on {servers}"))?;
    Ok((api_server, etcd))
}

/// What one path's GETs cost: CPU per GET of each process on it, one GET
/// at a time; then requests per second and p99 at 1, 8 and 64 concurrent
/// GETs.
struct Cost {
    cpu_per_get: Vec<(&'static str, Duration)>,
    throughput: Vec<(usize, f64, Duration)>,
    /// CPU per GET of each process, and of this client, at the highest
    /// concurrency: what bounds the throughput on two cores.
    cpu_per_get_loaded: Vec<(&'static str, Duration)>,
}

const COST_GETS: usize = 2000;
/// Rounds of the cost phase, the paths taking turns.
const COST_ROUNDS: usize = 3;

/// The median of each figure over the rounds of one path.
fn median_cost(rounds: Vec<Cost>) -> Cost {
    fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        values[values.len() / 2]
    }
    let first = &rounds[0];
    let cpu = |pick: fn(&Cost) -> &Vec<(&'static str, Duration)>| -> Vec<(&'static str, Duration)> {
        pick(first)
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, median(rounds.iter().map(|r| pick(r)[i].1).collect())))
            .collect()
    };
    Cost {
        cpu_per_get: cpu(|c| &c.cpu_per_get),
        cpu_per_get_loaded: cpu(|c| &c.cpu_per_get_loaded),
        throughput: first
            .throughput
            .iter()
            .enumerate()
            .map(|(i, (concurrency, _, _))| {
                (
                    *concurrency,
                    median(rounds.iter().map(|r| r.throughput[i].1).collect()),
                    median(rounds.iter().map(|r| r.throughput[i].2).collect()),
                )
            })
            .collect(),
    }
}
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// The concurrency at which each process's CPU per GET is also measured.
const LOADED: usize = CONCURRENCY[CONCURRENCY.len() - 1];

async fn bench_cost(path: &Path, processes: &[(&'static str, u32)], ns: &str) -> Result<Cost> {
    let url = format!("/api/v1/namespaces/{ns}/configmaps/target");
    for _ in 0..50 {
        path.get_ok(&url).await?;
    }
    let before: Vec<Duration> = processes.iter().map(|(_, pid)| cpu_time(*pid)).collect::<Result<_>>()?;
    for _ in 0..COST_GETS {
        path.get_ok(&url).await?;
    }
    let mut cpu_per_get = Vec::new();
    for ((name, pid), before) in processes.iter().zip(before) {
        cpu_per_get.push((*name, cpu_time(*pid)?.saturating_sub(before) / COST_GETS as u32));
    }
    let mut throughput = Vec::new();
    let mut cpu_per_get_loaded = Vec::new();
    let with_client: Vec<(&'static str, u32)> = processes
        .iter()
        .copied()
        .chain([("client", std::process::id())])
        .collect();
    for concurrency in CONCURRENCY {
        let total = (concurrency * 250).max(2000);
        let before: Vec<Duration> = with_client
            .iter()
            .map(|(_, pid)| cpu_time(*pid))
            .collect::<Result<_>>()?;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let next = next.clone();
            let url = url.clone();
            async move {
                let mut samples = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    path.get_ok(&url).await?;
                    samples.push(sent.elapsed());
                }
                anyhow::Ok(samples)
            }
        });
        let mut samples: Vec<Duration> = futures_util::future::try_join_all(workers)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
        if concurrency == LOADED {
            for ((name, pid), before) in with_client.iter().zip(before) {
                cpu_per_get_loaded.push((*name, cpu_time(*pid)?.saturating_sub(before) / samples.len() as u32));
            }
        }
        throughput.push((concurrency, rate, percentile(&mut samples, 99)));
    }
    Ok(Cost {
        cpu_per_get,
        throughput,
        cpu_per_get_loaded,
    })
}

/// Objects per second listed.
async fn bench_list(path: &Path, ns: &str) -> Result<f64> {
    let url = format!("/api/v1/namespaces/{ns}/configmaps");
    path.get(&url).send().await?.bytes().await?;
    let start = Instant::now();
    for _ in 0..LISTS {
        let response = path.get(&url).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{}: LIST {}",
            path.name,
            response.status()
        );
        let body: Value = serde_json::from_slice(&response.bytes().await?)?;
        let items = body["items"].as_array().map(Vec::len).unwrap_or(0);
        anyhow::ensure!(items >= LIST_OBJECTS, "{}: listed {items} objects", path.name);
    }
    Ok((LISTS * LIST_OBJECTS) as f64 / start.elapsed().as_secs_f64())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// p99 of the time from a create to its event, for each path: 100 watches
/// per path, all open at once and seeing the same creates.
async fn bench_watch(paths: &[&Path], ns: &str, configmaps: &Api<ConfigMap>) -> Result<Vec<Duration>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Duration)>();
    let mut watches = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        for _ in 0..WATCHES {
            let response = path
                .get(&format!(
                    "/api/v1/namespaces/{ns}/configmaps?watch=1&labelSelector=watch%3Dbench"
                ))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{}: WATCH {}",
                path.name,
                response.status()
            );
            let tx = tx.clone();
            watches.push(tokio::spawn(async move {
                let mut stream = response.bytes_stream();
                let mut buffer = Vec::new();
                while let Some(Ok(chunk)) = stream.next().await {
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        let received = now_ns();
                        let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                            continue;
                        };
                        let sent = event["object"]["metadata"]["annotations"]["sent"]
                            .as_str()
                            .and_then(|s| s.parse::<u128>().ok());
                        if let (Some(sent), Some("ADDED")) = (sent, event["type"].as_str()) {
                            let _ = tx.send((index, Duration::from_nanos(received.saturating_sub(sent) as u64)));
                        }
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..WATCH_EVENTS {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("w-{i}"), "labels": {"watch": "bench"}, "annotations": {"sent": now_ns().to_string()}}
        }))?;
        configmaps.create(&Default::default(), &cm).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = paths.len() * WATCHES * WATCH_EVENTS;
    let mut latencies = vec![Vec::new(); paths.len()];
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received < expected && Instant::now() < deadline {
        if let Ok(Some((index, latency))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            latencies[index].push(latency);
            received += 1;
        }
    }
    for watch in watches {
        watch.abort();
    }
    anyhow::ensure!(received == expected, "{received} of {expected} watch events arrived");
    Ok(latencies.iter_mut().map(|l| percentile(l, 99)).collect())
}

/// `bench-proxy relay <listen port> <upstream port>`: a plain TCP relay on
/// loopback, one process, one thread. Two of them in a row are the floor
/// of any path that adds two processes (as kas + agentk do): no TLS, no
/// HTTP, only the extra hops.
async fn relay(listen: u16, upstream: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen)).await?;
    loop {
        let (mut inbound, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

/// Kills a child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, listen, upstream] = args.as_slice()
        && mode == "relay"
    {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(relay(listen.parse()?, upstream.parse()?));
    }
    // Two workers whatever TOKIO_WORKER_THREADS says: that variable is for
    // trying kas with other runtime sizes.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<()> {
    let release = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let env = KubeEnv::shared();
    let admin = env.client().await;
    let ns = env.namespace("bench").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    println!("creating {LIST_OBJECTS} ConfigMaps in {ns}");
    let target: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "target"}, "data": {"k": "v"}}))?;
    configmaps.create(&Default::default(), &target).await?;
    futures_util::stream::iter(0..LIST_OBJECTS - 1)
        .map(|i| {
            let api = configmaps.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("item-{i}")}, "data": {"index": i.to_string()}}),
                )?;
                api.create(&Default::default(), &cm).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;

    // kas + agentk (release builds), user access as the agent.
    let (kas, agentk, via) = start_pair("kas+agentk", &release, env, Transport::Wss, &[]).await?;
    let (quiet_kas, quiet_agentk, unaudited) = start_pair(
        "no audit log",
        &release,
        env,
        Transport::Wss,
        &[("KAS_AUDIT_LOG", "false")],
    )
    .await?;
    let (_grpcs_kas, _grpcs_agentk, grpcs) = start_pair("grpcs://", &release, env, Transport::Grpcs, &[]).await?;
    let (_receptive_kas, _receptive_agentk, receptive) =
        start_pair("receptive", &release, env, Transport::Receptive, &[]).await?;
    let baseline = match std::env::var_os("GLAGENT_BENCH_BASELINE") {
        Some(dir) => Some(start_pair("baseline", &PathBuf::from(dir), env, Transport::Wss, &[]).await?),
        None => None,
    };

    // kubectl proxy, a proxy users know.
    let proxy_port = glagent_test_support::free_port();
    let kubectl = ["/usr/lib/google-cloud-sdk/bin/kubectl.1.33", "/usr/bin/kubectl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("kubectl")?;
    let mut kubectl_proxy = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["proxy", &format!("--port={proxy_port}"), "--address=127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    // Two TCP relays in a row in front of the API server.
    let api_port: u16 = env.server_url().rsplit(':').next().context("API port")?.parse()?;
    let (relay_in, relay_mid) = (glagent_test_support::free_port(), glagent_test_support::free_port());
    let spawn_relay = |listen: u16, upstream: u16| -> Result<Child> {
        Ok(Child(
            Command::new(std::env::current_exe()?)
                .args(["relay", &listen.to_string(), &upstream.to_string()])
                .spawn()?,
        ))
    };
    let _relays = [spawn_relay(relay_mid, api_port)?, spawn_relay(relay_in, relay_mid)?];

    let ca = std::fs::read(env.ca_file())?;
    let direct = Path {
        name: "direct",
        base: env.server_url(),
        http: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?,
        token: Some(ADMIN_TOKEN.to_string()),
    };
    let kproxy = Path {
        name: "kubectl proxy",
        base: format!("http://127.0.0.1:{proxy_port}"),
        http: reqwest::Client::new(),
        token: None,
    };
    let relays = Path {
        name: "2 TCP relays",
        base: format!("https://127.0.0.1:{relay_in}"),
        http: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .build()?,
        token: Some(ADMIN_TOKEN.to_string()),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while kproxy.get("/version").send().await.is_err() || relays.get("/version").send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "kubectl proxy or the relays did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut paths = vec![&direct, &via, &kproxy, &relays, &grpcs, &receptive, &unaudited];
    if let Some((_, _, path)) = &baseline {
        paths.push(path);
    }
    let gets = bench_get(&paths, &ns).await?;
    let mut results = Vec::new();
    for (path, (p50, p99)) in paths.iter().zip(gets) {
        let list = bench_list(path, &ns).await?;
        println!(
            "{:>13}: GET p50 {:.2} ms, p99 {:.2} ms; LIST {:.0} objects/s",
            path.name,
            ms(p50),
            ms(p99),
            list
        );
        results.push((p50, p99, list));
    }
    let mut watched = vec![&direct, &via];
    if let Some((_, _, path)) = &baseline {
        watched.push(path);
    }
    let watch = bench_watch(&watched, &ns, &configmaps).await?;
    let (watch_direct, watch_via) = (watch[0], watch[1]);
    println!(
        "watch event p99 over {WATCHES} watches x {WATCH_EVENTS} events: direct {:.2} ms, kas+agentk {:.2} ms{}",
        ms(watch_direct),
        ms(watch_via),
        watch
            .get(2)
            .map(|w| format!(", baseline {:.2} ms", ms(*w)))
            .unwrap_or_default()
    );
    // What a GET costs on each path, and throughput under concurrency.
    let (api_server, etcd) = control_plane_pids(api_port)?;
    let pid = |pid: Option<u32>| pid.context("a running process");
    let costs = [
        (&direct, vec![("API server", api_server), ("etcd", etcd)]),
        (
            &via,
            vec![
                ("kas", pid(kas.pid())?),
                ("agentk", pid(agentk.pid())?),
                ("API server", api_server),
                ("etcd", etcd),
            ],
        ),
        (
            &kproxy,
            vec![
                ("kubectl proxy", kubectl_proxy.id()),
                ("API server", api_server),
                ("etcd", etcd),
            ],
        ),
        (
            &unaudited,
            vec![
                ("kas", pid(quiet_kas.pid())?),
                ("agentk", pid(quiet_agentk.pid())?),
                ("API server", api_server),
                ("etcd", etcd),
            ],
        ),
    ];
    // The paths take turns, round after round, and each figure is the
    // median of its rounds: the machine's state drifts by more than the
    // differences measured (the same path's CPU per GET moved by half
    // between runs measured one path after the other).
    let mut rounds: Vec<Vec<Cost>> = costs.iter().map(|_| Vec::new()).collect();
    for _ in 0..COST_ROUNDS {
        for ((path, processes), round) in costs.iter().zip(&mut rounds) {
            round.push(bench_cost(path, processes, &ns).await?);
        }
    }
    let mut measured = Vec::new();
    for ((path, _), round) in costs.iter().zip(rounds) {
        let cost = median_cost(round);
        let cpu: Vec<String> = cost
            .cpu_per_get
            .iter()
            .map(|(name, cpu)| format!("{name} {:.0} µs", cpu.as_secs_f64() * 1e6))
            .collect();
        let rates: Vec<String> = cost
            .throughput
            .iter()
            .map(|(c, rate, p99)| format!("{c}: {rate:.0}/s p99 {:.2} ms", ms(*p99)))
            .collect();
        let loaded: Vec<String> = cost
            .cpu_per_get_loaded
            .iter()
            .map(|(name, cpu)| format!("{name} {:.0} µs", cpu.as_secs_f64() * 1e6))
            .collect();
        let total: f64 = cost.cpu_per_get_loaded.iter().map(|(_, cpu)| cpu.as_secs_f64()).sum();
        println!(
            "{:>13}: CPU per GET {}; concurrent GETs {}; CPU per GET at {}: {} (all {:.0} µs: two cores allow {:.0}/s)",
            path.name,
            cpu.join(", "),
            rates.join(", "),
            LOADED,
            loaded.join(", "),
            total * 1e6,
            2.0 / total,
        );
        measured.push(cost);
    }
    let proxy_cpu = |cost: &Cost| -> f64 {
        cost.cpu_per_get
            .iter()
            .filter(|(name, _)| !matches!(*name, "API server" | "etcd"))
            .map(|(_, cpu)| cpu.as_secs_f64() * 1e6)
            .sum()
    };
    let (ours, theirs, quiet) = (&measured[1], &measured[2], &measured[3]);
    println!(
        "RESULT audit_cpu_per_get_us={:.0} (kas+agentk with the audit log {:.0} µs, without {:.0} µs)",
        proxy_cpu(ours) - proxy_cpu(quiet),
        proxy_cpu(ours),
        proxy_cpu(quiet),
    );
    println!(
        "RESULT cpu_per_get_us={:.0} kubectl_proxy_cpu_per_get_us={:.0} cpu_ratio={:.2} p99_8_ratio={:.2} throughput_64_ratio={:.2}",
        proxy_cpu(ours),
        proxy_cpu(theirs),
        proxy_cpu(ours) / proxy_cpu(theirs),
        ms(ours.throughput[1].2) / ms(theirs.throughput[1].2),
        ours.throughput[2].1 / theirs.throughput[2].1,
    );
    let _ = kubectl_proxy.kill();
    let _ = kubectl_proxy.wait();
    let (d, v, k, r, g, rc) = (results[0], results[1], results[2], results[3], results[4], results[5]);
    let quiet = results[6];
    println!(
        "RESULT audit_get_p50_ratio={:.2} audit_get_p99_ratio={:.2} (kas+agentk with the audit log against without, same run)",
        ms(v.0) / ms(quiet.0),
        ms(v.1) / ms(quiet.1),
    );
    println!(
        "RESULT get_p50_ratio={:.2} get_p99_ratio={:.2} list_throughput_ratio={:.2} watch_p99_extra_ms={:.2} kubectl_proxy_get_p50_ratio={:.2} two_relays_get_p50_ratio={:.2}",
        ms(v.0) / ms(d.0),
        ms(v.1) / ms(d.1),
        v.2 / d.2,
        ms(watch_via) - ms(watch_direct),
        ms(k.0) / ms(d.0),
        ms(r.0) / ms(d.0),
    );
    println!(
        "RESULT grpcs_vs_wss_get_p50_ratio={:.2} receptive_vs_wss_get_p50_ratio={:.2} grpcs_vs_wss_list_ratio={:.2} receptive_vs_wss_list_ratio={:.2}",
        ms(g.0) / ms(v.0),
        ms(rc.0) / ms(v.0),
        g.2 / v.2,
        rc.2 / v.2,
    );
    if let (Some(b), Some(watch_baseline)) = (results.get(7), watch.get(2)) {
        println!(
            "RESULT vs_baseline_get_p50_ratio={:.2} vs_baseline_get_p99_ratio={:.2} vs_baseline_list_ratio={:.2} vs_baseline_watch_p99_extra_ms={:.2} baseline_get_p50_ratio={:.2}",
            ms(v.0) / ms(b.0),
            ms(v.1) / ms(b.1),
            v.2 / b.2,
            ms(watch_via) - ms(*watch_baseline),
            ms(b.0) / ms(d.0),
        );
    }
    drop(kas);
    Ok(())
}

/// How the pair's agent and kas are connected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// The agent dials `wss://` (WebSocket).
    Wss,
    /// The agent dials kas's agent port over `grpcs://` (raw tunnel).
    Grpcs,
    /// kas dials the receptive agent over `grpcs://`, with its JWT.
    Receptive,
}

/// A kas and an agentk from `binaries`, connected as `transport` says,
/// with user access as the agent for root, and the path that reaches the
/// API server through them.
async fn start_pair(
    name: &'static str,
    binaries: &std::path::Path,
    env: &KubeEnv,
    transport: Transport,
    kas_env: &[(&str, &str)],
) -> Result<(Kas, Agentk, Path)> {
    let agent_port = glagent_test_support::free_port();
    let mut options = KasOptions {
        env: kas_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    if transport == Transport::Grpcs {
        options
            .env
            .push(("KAS_AGENT_LISTEN".into(), format!("127.0.0.1:{agent_port}")));
    }
    let kas = Kas::start(&binaries.join("kas"), options).await;
    let fixture = kas.project_with_agent("bench", "bench").await;
    let (pid, aid) = (fixture.project_id, fixture.agent_id);
    let (status, _) = kas
        .root_call(
            "POST",
            &format!("/projects/{pid}/repository/files/.gitlab%2Fagents%2Fbench%2Fconfig.yaml"),
            Some(json!({"branch": "main", "commit_message": "c", "content": format!("user_access:\n  projects:\n    - id: {}\n", fixture.project_path)})),
        )
        .await;
    anyhow::ensure!(status.is_success(), "writing the agent's configuration: {status}");
    let mut options = AgentkOptions {
        kas_address: format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port),
        token: fixture.token.clone(),
        ca_file: Some(kas.ca_file()),
        kubeconfig: Some(env.kubeconfig_path()),
        ..Default::default()
    };
    let dir = std::env::temp_dir().join(format!("glagent-bench-{}-{agent_port}", std::process::id()));
    match transport {
        Transport::Wss => {}
        Transport::Grpcs => options.kas_address = format!("grpcs://127.0.0.1:{agent_port}"),
        Transport::Receptive => {
            // The agent serves TLS with a self-signed certificate, which the
            // URL configuration trusts as its ca_cert.
            let cert = rcgen::generate_simple_self_signed(vec!["agent.bench".to_string()])?;
            let (status, config) = kas
                .root_call(
                    "POST",
                    &format!("/projects/{pid}/cluster_agents/{aid}/url_configurations"),
                    Some(json!({"url": format!("grpcs://127.0.0.1:{agent_port}"), "ca_cert": cert.cert.pem(), "tls_host": "agent.bench"})),
                )
                .await;
            anyhow::ensure!(status.is_success(), "creating the URL configuration: {config}");
            std::fs::create_dir_all(&dir)?;
            let write = |name: &str, content: &str| -> Result<String> {
                let path = dir.join(name);
                std::fs::write(&path, content)?;
                Ok(path.display().to_string())
            };
            options.kas_address = String::new();
            options.ca_file = None;
            options.args = vec![
                "--api-listen-address".into(),
                format!("127.0.0.1:{agent_port}"),
                "--api-jwt-file".into(),
                write("api-jwt", config["public_key"].as_str().context("public_key")?)?,
                "--api-cert-file".into(),
                write("agent.crt", &cert.cert.pem())?,
                "--api-key-file".into(),
                write("agent.key", &cert.signing_key.serialize_pem())?,
            ];
        }
    }
    let mut agentk = Agentk::start(&binaries.join("agentk"), options);
    agentk.wait_ready(Duration::from_secs(30)).await;
    // A receptive agent is ready when it listens; wait for kas to dial it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agentk.is_connected().await || agentk.config_commit().await.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "{name}: the agent did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = Path {
        name,
        base: format!("{}/-/kubernetes-agent/k8s-proxy", kas.url),
        http: kas.http(),
        token: Some(format!("pat:{aid}:{}", kas.root_token)),
    };
    Ok((kas, agentk, path))
}
