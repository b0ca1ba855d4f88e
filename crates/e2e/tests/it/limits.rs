//! Refusals reach HTTP/2 clients: a request whose body kas will not read
//! (a bad token, an unknown route) still gets its answer, not a reset
//! stream. The client is curl speaking HTTP/2 (as kubectl, helm and Go
//! tools do).

use std::process::Command;

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
