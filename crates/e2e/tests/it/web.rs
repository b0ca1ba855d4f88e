//! The web UI in a real browser (Debian's chromium, driven by
//! playwright-core; scripts in `tests/browser/`), and its defences tested
//! with raw requests: forms without their CSRF token, from another
//! origin, sessions after sign-out, guessing passwords.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::helm::{run_as_the_chart_says, sh};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Setup, call};

const BROWSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ui");

/// Runs a browser script; returns its result lines by step.
fn browse(script: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let output = Command::new("node")
        .arg(format!("{BROWSER}/{script}"))
        .envs(env.iter().copied())
        .env("SCREENSHOTS", SCREENSHOTS)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {lines:?}"))
}

/// A user with a password, developer of the setup's project.
async fn wendy(setup: &Setup) {
    wendy_as(setup, 30).await;
}

/// The same user with another role.
pub(crate) async fn wendy_as(setup: &Setup, level: i64) {
    let (status, user) = call(
        &setup.kas,
        "POST",
        "/users",
        Some(json!({"username": "wendy", "name": "Wendy", "email": "wendy@example.com", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, _) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/members", setup.project_id),
        Some(json!({"user_id": user["id"], "access_level": level})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

pub(crate) fn no_redirects(setup: &Setup) -> reqwest::Client {
    client_with(setup, reqwest::header::HeaderMap::new())
}

/// A client trusting kas, following no redirect, sending `headers` with
/// every request.
fn client_with(setup: &Setup, headers: reqwest::header::HeaderMap) -> reqwest::Client {
    let ca = std::fs::read(setup.kas.ca_file()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_sees_their_projects_and_signs_out_in_a_real_browser() {
    let setup = Setup::new().await;
    wendy(&setup).await;
    // A project Wendy is not a member of.
    call(&setup.kas, "POST", "/projects", Some(json!({"name": "secret-plans"}))).await;
    let lines = browse(
        "sign_in.mjs",
        &[
            ("KAS_URL", setup.kas.url.as_str()),
            ("USERNAME", "wendy"),
            ("PASSWORD", "correct horse battery"),
        ],
    );
    assert!(
        step(&lines, "redirected")["url"]
            .as_str()
            .unwrap()
            .ends_with("/users/sign_in?return_to=%2F")
    );
    assert_eq!(step(&lines, "wrong password")["alert"], "Invalid username or password.");
    let signed_in = step(&lines, "signed in");
    assert_eq!(signed_in["heading"], "Projects");
    assert_eq!(signed_in["projects"], json!(["cluster-config"]), "only her projects");
    let cookie = step(&lines, "cookie");
    assert_eq!(
        (&cookie["httpOnly"], &cookie["secure"], &cookie["sameSite"]),
        (&json!(true), &json!(true), &json!("Lax"))
    );
    assert!(
        step(&lines, "after sign out")["url"]
            .as_str()
            .unwrap()
            .contains("/users/sign_in")
    );

    // The session the browser held ended on the server.
    let old = cookie["value"].as_str().unwrap();
    let response = no_redirects(&setup)
        .get(format!("{}/", setup.kas.url))
        .header("Cookie", format!("_glagent_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/users/sign_in")
    );
    for screenshot in ["sign-in.png", "projects.png"] {
        assert!(
            std::path::Path::new(SCREENSHOTS).join(screenshot).exists(),
            "{screenshot}"
        );
    }
}

/// The CSRF token of a page's first form.
pub(crate) fn form_token(html: &str) -> String {
    let needle = "name=\"authenticity_token\" value=\"";
    let start = html.find(needle).expect("a form with its token") + needle.len();
    html[start..start + 64].to_string()
}

/// The sign-in form's cookie and token, as a browser gets them.
async fn sign_in_form(http: &reqwest::Client, setup: &Setup) -> (String, String) {
    let response = http
        .get(format!("{}/users/sign_in", setup.kas.url))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = form_token(&response.text().await.unwrap());
    (cookie, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_token_from_other_origins_and_password_guessing_are_refused() {
    let setup = Setup::new().await;
    wendy(&setup).await;
    let http = no_redirects(&setup);
    let url = format!("{}/users/sign_in", setup.kas.url);
    let (cookie, token) = sign_in_form(&http, &setup).await;
    let post = |form: Vec<(&'static str, String)>, origin: &'static str| {
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
        async move {
            let mut request = http.post(url).header("Cookie", cookie).form(&form);
            if !origin.is_empty() {
                request = request.header("Origin", origin);
            }
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let credentials = |token: &str, password: &str| {
        vec![
            ("authenticity_token", token.to_string()),
            ("username", "wendy".to_string()),
            ("password", password.to_string()),
        ]
    };
    // No token, a wrong token, another site: refused before the password
    // is even looked at.
    let (status, body) = post(credentials("", "correct horse battery"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("did not come from this site"), "{body}");
    let (status, _) = post(credentials(&"0".repeat(64), "correct horse battery"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post(credentials(&token, "correct horse battery"), "https://evil.example").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("sent from another site"), "{body}");

    // Five wrong passwords lock the name for a while, even for the right one.
    for _ in 0..5 {
        let (status, body) = post(credentials(&token, "guess"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = post(credentials(&token, "correct horse battery"), "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("Too many failed sign-in attempts"), "{body}");

    // Passwords follow GitLab's rule, and are never shown.
    let (status, body) = call(
        &setup.kas,
        "POST",
        "/users",
        Some(json!({"username": "shorty", "password": "short"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("password is too short (minimum is 8 characters)"),
        "{body}"
    );
    let (_, users) = call(&setup.kas, "GET", "/users?username=wendy", None).await;
    assert!(!users.to_string().contains("correct horse"), "{users}");
    assert!(!setup.kas.log().contains("correct horse"), "a password in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_a_cluster_in_the_browser_registers_an_agent_whose_row_turns_connected_live() {
    let setup = Setup::new().await;
    wendy_as(&setup, 40).await;
    let mut node = Command::new("node")
        .arg(format!("{BROWSER}/connect.mjs"))
        .env("KAS_URL", &setup.kas.url)
        .env("USERNAME", "wendy")
        .env("PASSWORD", "correct horse battery")
        .env("PROJECT", &setup.project_path)
        .env("AGENT", "edge-ui")
        .env("SCREENSHOTS", SCREENSHOTS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running node");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(value);
            }
        }
    });
    let mut lines = Vec::new();
    let mut until_step = |name: &str| -> Value {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("the browser never reached {name:?}; so far {lines:?}"));
            lines.push(line.clone());
            if line["step"] == name {
                return line;
            }
        }
    };
    // The setup's agent, registered through the API and never connected.
    assert_eq!(until_step("clusters")["rows"], json!([["edge", "Never connected"]]));
    let rule = until_step("rule");
    assert_eq!(rule["text"], "Use lowercase letters, digits and '-' only.");
    let blocked = until_step("blocked");
    assert!(blocked["url"].as_str().unwrap().ends_with("/-/clusters"), "{blocked}");
    let token = until_step("token");
    assert_eq!(
        token["warning"],
        "You cannot see this token again after you close this window."
    );
    let agent_token = token["token"].as_str().unwrap().to_string();
    assert!(agent_token.starts_with("glagent-"), "{token}");
    let command = token["command"].as_str().unwrap().to_string();
    assert!(
        command.contains(&format!("--set config.token={agent_token}")),
        "{command}"
    );

    // The page's command, as shown, against the real API server; then
    // agentk as the chart's Deployment says.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(setup.kas.ca_file(), dir.path().join("kas-ca.crt")).unwrap();
    sh(dir.path(), 3, &command);
    let namespace = "gitlab-agent-edge-ui";
    let _agent = run_as_the_chart_says(namespace, "edge-ui", dir.path()).await;
    node.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let connected = until_step("connected");
    assert_eq!(connected["status"].as_str().unwrap().trim(), "Connected");
    assert!(
        connected["version"].as_str().unwrap().contains(glagent_core::VERSION),
        "{connected}"
    );
    let agent_page = until_step("agent page");
    assert_eq!(agent_page["heading"], "edge-ui");
    assert_eq!(agent_page["connections"], 1, "{agent_page}");
    assert_eq!(agent_page["tokens"], json!(["default"]), "{agent_page}");
    assert_eq!(until_step("revoked")["tokens"], 0);
    assert_eq!(until_step("disconnected")["status"], "Not connected");
    assert!(node.wait().unwrap().success());
    sh(
        dir.path(),
        3,
        &format!("helm uninstall edge-ui --namespace {namespace}"),
    );
}

/// Signs in with raw requests; returns a client that sends the session
/// cookie with every request.
pub(crate) async fn signed_in_client(setup: &Setup, username: &str, password: &str) -> reqwest::Client {
    let http = no_redirects(setup);
    let (cookie, token) = sign_in_form(&http, setup).await;
    let response = http
        .post(format!("{}/users/sign_in", setup.kas.url))
        .header("Cookie", cookie)
        .form(&[
            ("authenticity_token", token.as_str()),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let session = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("_glagent_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", session.parse().unwrap());
    client_with(setup, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_pages_hide_other_projects_and_refuse_foreign_forms() {
    let setup = Setup::new().await;
    wendy_as(&setup, 40).await;
    let (_, secret) = call(&setup.kas, "POST", "/projects", Some(json!({"name": "secret-plans"}))).await;
    let http = signed_in_client(&setup, "wendy", "correct horse battery").await;
    // Another user's project: the same 404 as the API, for the page and its JSON.
    for path in ["/-/clusters", "/-/clusters/status.json"] {
        let response = http
            .get(format!(
                "{}/{}{path}",
                setup.kas.url,
                secret["path_with_namespace"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            response.text().await.unwrap().contains("404 Project Not Found"),
            "{path}"
        );
    }
    // Her own project's page; its form's token works only from kas's origin.
    let page = http
        .get(format!("{}/{}/-/clusters", setup.kas.url, setup.project_path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = form_token(&page);
    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let (http, url) = (
            http.clone(),
            format!("{}/{}/-/cluster_agents", setup.kas.url, setup.project_path),
        );
        async move {
            let mut request = http.post(url).form(&form);
            if let Some(origin) = origin {
                request = request.header("Origin", origin);
            }
            request.send().await.unwrap().status()
        }
    };
    assert_eq!(
        post(vec![("name", "sneaky".into())], None).await,
        StatusCode::FORBIDDEN,
        "no token"
    );
    assert_eq!(
        post(
            vec![("authenticity_token", token.clone()), ("name", "sneaky".into())],
            Some("https://evil.example")
        )
        .await,
        StatusCode::FORBIDDEN,
        "another origin"
    );
    // Script in a name is refused by the rule and shown inert.
    let status = post(
        vec![
            ("authenticity_token", token.clone()),
            ("name", "<script>alert(1)</script>".into()),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, agents) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        None,
    )
    .await;
    assert!(
        !agents.to_string().contains("sneaky") && !agents.to_string().contains("<script>"),
        "{agents}"
    );
    let refused = http
        .post(format!("{}/{}/-/cluster_agents", setup.kas.url, setup.project_path))
        .form(&[
            ("authenticity_token", token.as_str()),
            ("name", "<script>alert(1)</script>"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!refused.contains("<script>alert(1)</script>"), "rendered live");
    let inert = |html: &str| {
        !html.contains("<script>alert(1)</script>")
            && (html.contains("&#60;script&#62;alert(1)") || html.contains("&lt;script&gt;alert(1)"))
    };
    assert!(inert(&refused), "escaped: {refused}");

    // Script in a token name and in a configuration error: shown inert on
    // the agent page.
    let agent_url = format!("{}/{}/-/cluster_agents/edge", setup.kas.url, setup.project_path);
    let created = http
        .post(format!("{agent_url}/tokens"))
        .form(&[
            ("authenticity_token", token.as_str()),
            ("name", "<script>alert(1)</script>"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let created = created.text().await.unwrap();
    assert!(inert(&created), "token name: {created}");
    assert!(created.contains("You cannot see this token again"), "{created}");
    assert!(
        setup
            .write_config("user_access:\n  <script>alert(1)</script>: x\n")
            .await
            .is_success()
    );
    let shown = http.get(&agent_url).send().await.unwrap().text().await.unwrap();
    assert!(inert(&shown), "configuration error: {shown}");
    assert!(shown.contains("line 2"), "the error says where: {shown}");

    // Deleting needs the agent's name typed.
    let wrong = http
        .post(format!("{agent_url}/delete"))
        .form(&[("authenticity_token", token.as_str()), ("confirm_name", "edg")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert!(wrong.text().await.unwrap().contains("type its name, edge, to confirm"));
    let deleted = http
        .post(format!("{agent_url}/delete"))
        .form(&[("authenticity_token", token.as_str()), ("confirm_name", "edge")])
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    let (_, agents) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        None,
    )
    .await;
    assert_eq!(agents, json!([]), "deleted");
}

/// Writes a file on `main` of a project through the Files API, as root.
pub(crate) async fn commit_file(setup: &Setup, project_id: &Value, path: &str, content: &str) {
    let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let (status, body) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{project_id}/repository/files/{encoded}"),
        Some(json!({"branch": "main", "content": content, "commit_message": path})),
    )
    .await;
    assert!(status.is_success(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_tabs_and_the_agent_activity_show_what_kas_knows() {
    let setup = Setup::new().await;
    wendy_as(&setup, 40).await;
    let project = json!(setup.project_id);
    // A configuration folder with no agent yet.
    commit_file(
        &setup,
        &project,
        ".gitlab/agents/spare/config.yaml",
        "observability:\n  logging:\n    level: info\n",
    )
    .await;
    // Another project's agent shared with this one through ci_access, and
    // one shared with nobody.
    let (_, tools) = call(&setup.kas, "POST", "/projects", Some(json!({"name": "platform-tools"}))).await;
    for (name, config) in [
        (
            "shared-one",
            format!("ci_access:\n  projects:\n    - id: {}\n", setup.project_path),
        ),
        (
            "private-one",
            "observability:\n  logging:\n    level: info\n".to_string(),
        ),
    ] {
        let (status, _) = call(
            &setup.kas,
            "POST",
            &format!("/projects/{}/cluster_agents", tools["id"]),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        commit_file(
            &setup,
            &tools["id"],
            &format!(".gitlab/agents/{name}/config.yaml"),
            &config,
        )
        .await;
    }
    // A project of Wendy's without agents, and one she cannot see.
    let (_, empty) = call(&setup.kas, "POST", "/projects", Some(json!({"name": "empty-project"}))).await;
    let (_, user) = call(&setup.kas, "GET", "/users?username=wendy", None).await;
    let (status, member) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/members", empty["id"]),
        Some(json!({"user_id": user[0]["id"], "access_level": 30})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{member} {user}");
    // The setup's agent connects once, so its activity has a connection.
    {
        let agent = setup.start_agent();
        crate::until(Duration::from_secs(20), "the agent connects", async || {
            !setup.connections().await.is_empty()
        })
        .await;
        drop(agent);
    }

    let lines = browse(
        "tabs.mjs",
        &[
            ("KAS_URL", setup.kas.url.as_str()),
            ("USERNAME", "wendy"),
            ("PASSWORD", "correct horse battery"),
            ("PROJECT", setup.project_path.as_str()),
            ("EMPTY_PROJECT", empty["path_with_namespace"].as_str().unwrap()),
            ("HIDDEN_PROJECT", tools["path_with_namespace"].as_str().unwrap()),
        ],
    );
    let own = step(&lines, "project agents");
    assert_eq!(own["rows"][0]["name"], "edge", "{own}");
    assert_eq!(
        own["tabs"],
        json!(["Project agents 1", "Shared agents", "Available configurations 1"]),
        "{own}"
    );
    let shared = step(&lines, "shared agents");
    assert_eq!(
        shared["rows"].as_array().unwrap().len(),
        1,
        "only the shared one: {shared}"
    );
    assert_eq!(shared["rows"][0]["name"], "shared-one");
    assert_eq!(shared["tabs"][1], "Shared agents 1", "{shared}");
    assert_eq!(shared["rows"][0]["configuration"], "External project (CI/CD access)");
    assert_eq!(shared["rows"][0]["badges"], json!(["Shared"]));
    assert_eq!(shared["rows"][0]["status"], "Never connected");
    assert_eq!(
        step(&lines, "available configurations")["folders"],
        json!([".gitlab/agents/spare/config.yaml"])
    );
    let registered = step(&lines, "registered");
    assert!(
        registered["heading"].as_str().unwrap().contains("spare"),
        "{registered}"
    );
    let (_, agents) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        None,
    )
    .await;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge", "spare"], "registered from its folder");

    // Newest first: the connection and its end, then the token and the
    // registration made by the setup.
    let activity = step(&lines, "activity");
    let kinds: Vec<&str> = activity["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Disconnected", "Connected", "Token created", "Agent registered"],
        "{activity}"
    );
    assert_eq!(activity["days"], json!(["Today"]));
    let details = activity["details"].to_string();
    assert!(details.contains("Token test created by @root"), "{details}");
    assert!(details.contains("Connected with token test"), "{details}");
    assert!(!details.contains(&setup.token), "no token in the activity");

    let empty = step(&lines, "empty");
    assert!(
        empty["text"].as_str().unwrap().contains("doesn't have any agents"),
        "{empty}"
    );
    let hidden = step(&lines, "hidden");
    assert_eq!(hidden["status"], 404);
    assert!(hidden["text"].as_str().unwrap().contains("404 Project Not Found"));
    for screenshot in [
        "clusters-shared.png",
        "clusters-configurations.png",
        "agent-activity.png",
        "clusters-empty.png",
        "not-found.png",
    ] {
        assert!(
            std::path::Path::new(SCREENSHOTS).join(screenshot).exists(),
            "{screenshot}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_status_stream_pushes_changes_and_ends_with_the_session() {
    let setup = Setup::new().await;
    wendy_as(&setup, 30).await;
    let http = signed_in_client(&setup, "wendy", "correct horse battery").await;
    let mut stream = http
        .get(format!("{}/{}/-/clusters/status", setup.kas.url, setup.project_path))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let mut next_event = async || -> Option<Value> {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Some(serde_json::from_str(data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), stream.chunk())
                .await
                .expect("an event or the end within 15 s")
                .unwrap()?;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let first = next_event().await.unwrap();
    assert_eq!(first["agents"][0]["status"], "Never connected", "{first}");
    let _agent = setup.start_agent();
    let started = std::time::Instant::now();
    loop {
        let event = next_event().await.unwrap();
        if event["agents"][0]["status"] == "Connected" && event["agents"][0]["version"] != "-" {
            break;
        }
    }
    let pushed_in = started.elapsed();
    assert!(pushed_in < Duration::from_secs(10), "pushed in {pushed_in:?}");

    // Signing out ends the stream.
    let page = http
        .get(format!("{}/", setup.kas.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = &form_token(&page);
    let out = http
        .post(format!("{}/users/sign_out", setup.kas.url))
        .form(&[("authenticity_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let ended = async { while next_event().await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(15), ended)
        .await
        .expect("the stream ends after sign out");
}
