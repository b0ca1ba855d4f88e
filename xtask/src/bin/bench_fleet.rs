//! How many agents one kas holds, run by `cargo xtask bench fleet
//! [--agents N] [--transport wss|grpcs]` (release kas; default 1,000
//! agents over `wss://`): N agents registered through the REST API
//! (timed), then held by a fleet of simulated agents in this process
//! (`glagent-fleet`: agentk's own dialer and tunnel server, one connection
//! and token each, from 127.0.0.1 and, past 20,000, further loopback
//! addresses). It reports the connect storm, kas's RSS, CPU and database
//! statements a second (from its metrics) while idle, a push to one
//! project reaching its agent (p50, p99 over 20), one push of the 1,000
//! configuration files of one project reaching those agents, proxied GETs
//! spread over those 1,000 agents while the rest idle (p50, p99,
//! requests/s), and the storm after a kas restart. The open-files limit of
//! this process (and so of kas) is raised, the hard limit too when root.
//! Prints the figures and a `RESULT` line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use glagent_fleet::{FakeKubernetes, Fleet};
use glagent_test_support::kas::{Kas, KasOptions};
use serde_json::json;

/// Agents per project, but for the first, which holds up to 1,000.
const PER_PROJECT: usize = 100;
const BIG_PROJECT: usize = 1000;
const PUSHES: usize = 20;

fn main() -> Result<()> {
    let mut agents = 1000usize;
    let mut grpcs = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agents" => agents = args.next().context("--agents N")?.parse().context("--agents N")?,
            "--transport" => {
                grpcs = match args.next().as_deref() {
                    Some("wss") => false,
                    Some("grpcs") => true,
                    other => anyhow::bail!("--transport {other:?}: use wss or grpcs"),
                }
            }
            other => anyhow::bail!("unknown argument {other:?}: use --agents N and --transport wss|grpcs"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(agents, grpcs))
}

/// Raises the open-files limit to what `agents` connections need on both
/// ends (this process and kas, which inherits it): the hard limit too when
/// allowed (root), else up to the hard limit.
fn raise_open_files(agents: usize) -> Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = (2 * agents as u64 + 10_000).max(limit.current.unwrap_or(0));
    let raised = rustix::process::Rlimit {
        current: Some(wanted),
        maximum: Some(wanted.max(limit.maximum.unwrap_or(0))),
    };
    if setrlimit(Resource::Nofile, raised).is_err() {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// utime + stime of a process, in clock ticks.
/// Database statements kas has run so far, from its metrics.
async fn statements(metrics: &str) -> Result<f64> {
    let text = reqwest::get(metrics).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("kas_database_statement_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

async fn bench(total: usize, grpcs: bool) -> Result<()> {
    let release = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let files = raise_open_files(total)?;
    // One socket per agent on each side; here also both ends of the
    // connection each of the 1,000 agents that serve the proxied GETs
    // opens to the fake Kubernetes API; room for kas's database,
    // repositories, listeners and git processes.
    let headroom = 2 * BIG_PROJECT as u64 + 500;
    let needed = total as u64 + headroom;
    anyhow::ensure!(
        files >= needed,
        "{total} agents need {needed} open files in kas and in this process, but the limit is {files} and this \
         process may not raise its hard limit (it lacks CAP_SYS_RESOURCE): run as root on a machine that allows it, \
         or with --agents {}",
        files.saturating_sub(headroom)
    );
    println!("open-files limit raised to {files} (kas inherits it)");
    let metrics_port = glagent_test_support::free_port();
    let agent_port = glagent_test_support::free_port();
    let mut env = vec![("KAS_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics_port}"))];
    if grpcs {
        env.push(("KAS_AGENT_LISTEN".into(), format!("127.0.0.1:{agent_port}")));
    }
    let mut kas = Kas::start(
        &release.join("kas"),
        KasOptions {
            env,
            ..Default::default()
        },
    )
    .await;
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let pid = kas.pid().context("kas's pid")?;
    let rss_empty = rss_mib(pid)?;

    // Projects: the first holds up to 1,000 agents, the others 100 each.
    let mut sizes = vec![total.min(BIG_PROJECT)];
    let mut left = total - sizes[0];
    while left > 0 {
        sizes.push(left.min(PER_PROJECT));
        left -= sizes[sizes.len() - 1];
    }
    let started = Instant::now();
    let mut projects = Vec::new();
    let mut big_path = String::new();
    for (p, _) in sizes.iter().enumerate() {
        let (status, project) = kas
            .root_call("POST", "/projects", Some(json!({"name": format!("fleet-{p}")})))
            .await;
        anyhow::ensure!(status.is_success(), "creating project {p}: {project}");
        projects.push(project["id"].as_i64().context("project id")?);
        if p == 0 {
            big_path = project["path_with_namespace"]
                .as_str()
                .context("project path")?
                .to_string();
        }
    }
    let wanted: Vec<(usize, i64, String)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(p, size)| (0..*size).map(move |i| (p, format!("agent-{p}-{i}"))))
        .map(|(p, name)| (p, projects[p], name))
        .collect();
    let kas_ref = &kas;
    let registered: Vec<Result<(usize, i64, String, String)>> = futures_util::stream::iter(wanted)
        .map(|(p, pid, name)| async move {
            let (status, agent) = kas_ref
                .root_call(
                    "POST",
                    &format!("/projects/{pid}/cluster_agents"),
                    Some(json!({"name": name})),
                )
                .await;
            anyhow::ensure!(status.is_success(), "registering {name}: {agent}");
            let aid = agent["id"].as_i64().context("agent id")?;
            let (status, token) = kas_ref
                .root_call(
                    "POST",
                    &format!("/projects/{pid}/cluster_agents/{aid}/tokens"),
                    Some(json!({"name": "fleet"})),
                )
                .await;
            anyhow::ensure!(status.is_success(), "its token: {token}");
            Ok((p, aid, name, token["token"].as_str().context("token")?.to_string()))
        })
        .buffered(8)
        .collect()
        .await;
    let registered: Vec<(usize, i64, String, String)> = registered.into_iter().collect::<Result<_>>()?;
    let registration = started.elapsed();
    println!(
        "registered {total} agents and their tokens in {} projects through the REST API: {registration:.1?}",
        projects.len()
    );

    let kube = FakeKubernetes::start().await?;
    let ca = std::fs::read(kas.ca_file())?;
    let address = if grpcs {
        format!("grpcs://127.0.0.1:{agent_port}")
    } else {
        format!("wss://127.0.0.1:{}/-/kubernetes-agent/", kas.port)
    };
    println!("agents connect to {address}");
    let tokens: Vec<String> = registered.iter().map(|(_, _, _, t)| t.clone()).collect();
    let started = Instant::now();
    let fleet = Fleet::start(&address, Some(&ca), tokens, &kube).await?;
    let storm = fleet.wait_connected(total, Duration::from_secs(600)).await?;
    println!("connect storm (cold): all {total} connected in {storm:.1?}");
    // Every agent configured (the first update follows the connection).
    let deadline = Instant::now() + Duration::from_secs(300);
    while (0..total).any(|i| fleet.applied_commit(i).is_none()) {
        anyhow::ensure!(Instant::now() < deadline, "not every agent got its configuration");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("all configured {:.1?} after the start", started.elapsed());

    tokio::time::sleep(Duration::from_secs(5)).await;
    let statements_before = statements(&metrics).await?;
    let (ticks_before, idle_started) = (cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let ticks = cpu_ticks(pid)? - ticks_before;
    let queries_per_second = (statements(&metrics).await? - statements_before) / idle_started.elapsed().as_secs_f64();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let idle_cpu = ticks as f64 / hz / idle_started.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib(pid)?;
    println!(
        "kas idle with {total} agents: RSS {rss:.1} MiB ({rss_empty:.1} MiB empty, {:.1} KiB per agent), CPU {idle_cpu:.2} % of one core over 60 s, {queries_per_second:.2} database statements a second",
        (rss - rss_empty) * 1024.0 / total as f64
    );

    // A push to one project reaches its agent.
    let (target_project, target_agent) = if projects.len() > 1 {
        (
            1,
            registered
                .iter()
                .position(|(p, ..)| *p == 1)
                .context("an agent of project 1")?,
        )
    } else {
        (0, 0)
    };
    let mut latencies = Vec::new();
    for i in 0..PUSHES {
        let before = fleet.applied_commit(target_agent);
        let (status, _) = kas
            .root_call(
                "POST",
                &format!("/projects/{}/repository/files/push-{i}.txt", projects[target_project]),
                Some(json!({"branch": "main", "content": "x", "commit_message": "push"})),
            )
            .await;
        anyhow::ensure!(status.is_success(), "push {i}");
        let pushed = Instant::now();
        while fleet.applied_commit(target_agent) == before {
            anyhow::ensure!(pushed.elapsed() < Duration::from_secs(30), "push {i} never arrived");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(pushed.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let q = |v: &[f64], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let (push_p50, push_p99) = (q(&latencies, 0.5), q(&latencies, 0.99));
    println!(
        "push -> the agent of that project ({PUSHES} pushes, {total} connected): p50 {push_p50:.1} ms, p99 {push_p99:.1} ms"
    );

    // One git push of the configuration files of the project of up to
    // 1,000 agents (each lets the project's members through the proxy)
    // reaches all of them.
    let big: Vec<usize> = (0..total).filter(|i| registered[*i].0 == 0).collect();
    let before: Vec<Option<String>> = big.iter().map(|i| fleet.applied_commit(*i)).collect();
    let names: Vec<&str> = big.iter().map(|i| registered[*i].2.as_str()).collect();
    let pushed = push_configurations(&kas, &big_path, &names)?;
    while big.iter().zip(&before).any(|(i, b)| fleet.applied_commit(*i) == *b) {
        anyhow::ensure!(
            pushed.elapsed() < Duration::from_secs(120),
            "the shared push never reached every agent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shared = pushed.elapsed();
    println!(
        "one push to the project of {} agents reached all of them in {shared:.1?}",
        big.len()
    );

    // Proxied GETs spread over those agents while the others idle.
    let proxied = proxied_gets(&kas, &big.iter().map(|i| registered[*i].1).collect::<Vec<_>>()).await?;

    // kas restarts: every agent reconnects, with agentk's backoff.
    kas.restart().await;
    // kas is back and ready; its connections went with the old process.
    let reconnect = fleet.wait_connected(total, Duration::from_secs(600)).await?;
    println!("after a kas restart (SIGTERM, start): all {total} reconnected {reconnect:.1?} after kas was back");
    drop(fleet);
    println!(
        "RESULT fleet_agents={total} transport={} registration_s={:.1} connect_storm_s={:.1} idle_rss_mib={rss:.1} rss_per_agent_kib={:.1} idle_cpu_pct={idle_cpu:.2} idle_db_statements_per_s={queries_per_second:.2} push_p50_ms={push_p50:.1} push_p99_ms={push_p99:.1} shared_push_1000_ms={:.0} proxied_get_p50_ms={:.2} proxied_get_p99_ms={:.2} proxied_gets_per_s={:.0} restart_reconnect_s={:.1}",
        if grpcs { "grpcs" } else { "wss" },
        registration.as_secs_f64(),
        storm.as_secs_f64(),
        (rss - rss_empty) * 1024.0 / total as f64,
        shared.as_secs_f64() * 1000.0,
        proxied.p50_ms,
        proxied.p99_ms,
        proxied.per_second,
        reconnect.as_secs_f64()
    );
    Ok(())
}

/// Pushes, with git, one commit holding `.gitlab/agents/<name>/config.yaml`
/// for each agent (`user_access` for the project's members) to the
/// project at `path`; returns when the push was accepted.
fn push_configurations(kas: &Kas, path: &str, names: &[&str]) -> Result<Instant> {
    let dir = tempfile::tempdir()?;
    // The token goes in a header, never in a URL git may print.
    let basic = format!(
        "Authorization: Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("root:{}", kas.root_token)
        )
    );
    let git = |args: &[&str]| -> Result<()> {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com"])
            .args(["-c", &format!("http.extraHeader={basic}")])
            .env("GIT_SSL_CAINFO", kas.ca_file())
            .args(args)
            .current_dir(dir.path())
            .output()
            .context("running git")?;
        anyhow::ensure!(
            output.status.success(),
            "git {}: {}",
            args[0],
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    let url = format!("https://127.0.0.1:{}/{path}.git", kas.port);
    git(&["clone", "--quiet", &url, "."])?;
    for name in names {
        let folder = dir.path().join(".gitlab/agents").join(name);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(
            folder.join("config.yaml"),
            format!("user_access:\n  projects:\n    - id: {path}\n"),
        )?;
    }
    git(&["add", "."])?;
    git(&["commit", "--quiet", "-m", "configurations"])?;
    git(&["push", "--quiet", "origin", "HEAD:main"])?;
    Ok(Instant::now())
}

struct Proxied {
    p50_ms: f64,
    p99_ms: f64,
    per_second: f64,
}

/// 4,000 GETs of a ConfigMap through kas's Kubernetes proxy, 16 at a time,
/// each for one of `agents` in turn, as the project's owner.
async fn proxied_gets(kas: &Kas, agents: &[i64]) -> Result<Proxied> {
    const GETS: usize = 4_000;
    let http = kas.http();
    let url = format!(
        "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/default/configmaps/fleet",
        kas.url
    );
    let started = Instant::now();
    let mut latencies: Vec<f64> = futures_util::stream::iter(0..GETS)
        .map(|i| {
            let (http, url, credential) = (
                http.clone(),
                url.clone(),
                format!("pat:{}:{}", agents[i * 7919 % agents.len()], kas.root_token),
            );
            async move {
                let sent = Instant::now();
                let response = http.get(&url).bearer_auth(credential).send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "a proxied GET: {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(sent.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<Result<f64>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let proxied = Proxied {
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        per_second: GETS as f64 / elapsed,
    };
    println!(
        "proxied GETs over {} agents ({GETS}, 16 at a time) while the others idle: p50 {:.2} ms, p99 {:.2} ms, {:.0} requests/s",
        agents.len(),
        proxied.p50_ms,
        proxied.p99_ms,
        proxied.per_second
    );
    Ok(proxied)
}
