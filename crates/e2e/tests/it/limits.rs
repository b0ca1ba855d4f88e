//! Refusals reach HTTP/2 clients: a request whose body kas will not read
//! (a bad token, an unknown route) still gets its answer, not a reset
//! stream. The client is curl speaking HTTP/2 (as kubectl, helm and Go
//! tools do).

use std::process::Command;
use std::time::Duration;

use crate::Setup;

/// `curl --http2` POSTing `body_file`: curl's exit code, the status and
/// the headers and body it received.
fn curl_h2(setup: &Setup, url: &str, authorization: Option<&str>, body_file: &std::path::Path) -> (i32, String) {
    let mut command = Command::new("curl");
    command
        .args(["--http2", "-sS", "-i", "--cacert"])
        .arg(setup.kas.ca_file())
        .args(["-X", "POST", "--data-binary"])
        .arg(format!("@{}", body_file.display()))
        .arg(url);
    if let Some(authorization) = authorization {
        command.args(["-H", &format!("Authorization: {authorization}")]);
    }
    let output = command.output().expect("running curl");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_large_bodies_reach_http2_clients() {
    let setup = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 200 * 1024]).unwrap();
    let cases = [
        (
            format!(
                "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/default/configmaps",
                setup.kas.url
            ),
            Some("Bearer pat:1:glpat-not-a-token"),
            "HTTP/2 401",
        ),
        (
            format!("{}/api/v4/projects", setup.kas.url),
            Some("Bearer glpat-not-a-token"),
            "HTTP/2 401",
        ),
        (format!("{}/no/such/route", setup.kas.url), None, "HTTP/2 404"),
    ];
    for (url, authorization, expected) in cases {
        for attempt in 0..30 {
            let (code, shown) = curl_h2(&setup, &url, authorization, &body);
            assert_eq!(
                code, 0,
                "{url}, attempt {attempt}: curl failed instead of reading the answer:\n{shown}"
            );
            assert!(shown.starts_with(expected), "{url}: {shown}");
            if url.contains("k8s-proxy") {
                assert!(shown.contains("gitlab-unauthorized: true"), "{shown}");
            }
        }
    }
}

/// `curl` with a header of `size` bytes to `url`: the status line.
fn status_with_header(setup: &Setup, url: &str, http2: bool, size: usize) -> String {
    let output = Command::new("curl")
        .args([
            if http2 { "--http2" } else { "--http1.1" },
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(setup.kas.ca_file())
        .args(["-H", &format!("X-Padding: {}", "p".repeat(size))])
        .arg(url)
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test]
async fn bodies_and_headers_beyond_the_limits_are_refused_with_the_limit_named_and_nothing_changes() {
    let setup = Setup::new().await;
    let http = setup.kas.http();
    // A JSON body above the REST API's 10 MiB.
    let body = serde_json::json!({"name": "too-big", "description": "d".repeat(11 << 20)});
    let response = http
        .post(setup.kas.api("/projects"))
        .header("PRIVATE-TOKEN", &setup.kas.root_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let message: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        message["message"],
        "413 Request Entity Too Large - the request body is larger than 10 MiB, the limit of this API"
    );
    let (status, _) = crate::call(&setup.kas, "GET", "/projects/root%2Ftoo-big", None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "nothing was created");
    // Just below it is fine.
    let (status, _) = crate::call(
        &setup.kas,
        "POST",
        "/projects",
        Some(serde_json::json!({"name": "big-enough", "description": "d".repeat(9 << 20)})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);

    // Headers above 64 KiB, over HTTP/1.1 and HTTP/2, on the API, Git and
    // the proxy.
    let routes = [
        setup.kas.api("/version"),
        format!(
            "{}/{}.git/info/refs?service=git-upload-pack",
            setup.kas.url, setup.project_path
        ),
        format!("{}/-/kubernetes-agent/k8s-proxy/version", setup.kas.url),
    ];
    for url in &routes {
        assert_eq!(status_with_header(&setup, url, false, 70 << 10), "431", "{url}");
        // Over HTTP/2 the stream is refused after a 431 (h2's way, RFC 9113
        // §10.5.1); curl then gives up on the request.
        let refused = status_with_header(&setup, url, true, 70 << 10);
        assert!(refused == "431" || refused == "000", "{url}: {refused}");
        for http2 in [false, true] {
            let answered = status_with_header(&setup, url, http2, 8 << 10);
            assert!(
                answered != "431" && answered != "000",
                "{url} http2={http2}: {answered}"
            );
        }
    }

    // A push that says it is above 1 GiB is refused before it is read.
    let output = Command::new("curl")
        .args(["--http1.1", "-sS", "-i", "--cacert"])
        .arg(setup.kas.ca_file())
        .args(["-u", &format!("root:{}", setup.kas.root_token)])
        .args(["-H", "Content-Type: application/x-git-receive-pack-request"])
        .args(["-H", "Content-Length: 2147483648", "--data-binary", "0000"])
        .arg(format!("{}/{}.git/git-receive-pack", setup.kas.url, setup.project_path))
        .output()
        .expect("running curl");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.starts_with("HTTP/1.1 413"), "{shown}");
    assert!(shown.contains("A push is at most 1024 MiB on this server"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connection_carries_500_requests_the_next_is_told_to_wait_and_a_token_100_connections() {
    use crate::support::{agent_with_cluster_access, member};
    use glagent_test_support::kube::KubeEnv;

    let setup = Setup::new().await;
    let config = format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path);
    assert!(setup.write_config(&config).await.is_success());
    let _agent = agent_with_cluster_access(&setup).await;
    let ns = KubeEnv::shared().namespace("limits").await;
    let pat = member(&setup, "streamer", 30, &["k8s_proxy"]).await;
    let http = setup.kas.http();
    let watch = || {
        http.get(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{ns}/configmaps?watch=true",
            setup.kas.url
        ))
        .bearer_auth(format!("pat:{}:{pat}", setup.agent_id))
        .send()
    };
    // 500 watches open at once, each through the agent's one connection.
    let mut open = Vec::new();
    for batch in 0..10 {
        let started = futures_util::future::join_all((0..50).map(|_| watch())).await;
        for response in started {
            let response = response.expect("kas answers");
            assert_eq!(response.status(), reqwest::StatusCode::OK, "batch {batch}");
            open.push(response);
        }
    }
    let refused = watch().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    let status: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("has 500 requests open through this kas (the limit per connection)"),
        "{status}"
    );
    // A watch that ends gives its slot back.
    open.pop();
    crate::until(Duration::from_secs(5), "a slot to come back", async || {
        watch().await.is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    })
    .await;
    drop(open);

    // 101 simulated agents with one token: 100 connect, the last is refused.
    let kube = glagent_fleet::FakeKubernetes::start().await.unwrap();
    let ca = std::fs::read(setup.kas.ca_file()).unwrap();
    let fleet = glagent_fleet::Fleet::start(&setup.wss(), Some(&ca), vec![setup.token.clone(); 101], &kube)
        .await
        .unwrap();
    // The real agent holds one of the token's connections too.
    fleet.wait_connected(99, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fleet.connected(),
        99,
        "the token's 100 connections are the real agent and 99 of these"
    );
    assert!(
        setup
            .kas
            .log()
            .contains("agent connection refused: too many with one token"),
        "kas says why"
    );
}
