//! Environments in the web UI and their live Kubernetes overview, in a real
//! browser: every call the page makes goes through kas's proxy with the
//! browser's session, then agentk, to the real API server. The test plays
//! the kubelet and Flux's controllers by writing status (the API server
//! has no kubelet and Flux cannot run here); the stand-in kubelet serves
//! the followed log. And the proxy's session credential refused every way
//! it must be.

use std::time::{Duration, Instant};

use glagent_test_support::browser::Browser;
use glagent_test_support::flux;
use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::kubelet::pods_on_a_stand_in_kubelet;
use crate::support::{agent_with_cluster_access, as_admin};
use crate::web::{commit_file, form_token, no_redirects, signed_in_client, wendy_as};
use crate::{Setup, call};

const PASSWORD: &str = "correct horse battery";

/// An agent with cluster access whose `user_access` lists its project
/// (`access_as` given), Wendy a developer, a namespace with three pods on
/// a stand-in kubelet, a Service and a HelmRelease, and the environment
/// `production` linked to all of it.
struct Dashboard {
    setup: Setup,
    _agent: glagent_test_support::agentk::Agentk,
    ns: String,
    environment_id: i64,
    url: String,
    _kubelet: std::sync::Arc<crate::support::kubelet::Kubelet>,
}

fn user_access(setup: &Setup, access_as: &str) -> String {
    format!(
        "user_access:\n  access_as:\n    {access_as}: {{}}\n  projects:\n    - id: {}\n",
        setup.project_path
    )
}

impl Dashboard {
    async fn start() -> Dashboard {
        let setup = Setup::new().await;
        wendy_as(&setup, 30).await;
        assert!(setup.write_config(&user_access(&setup, "agent")).await.is_success());
        let agent = agent_with_cluster_access(&setup).await;
        let ns = KubeEnv::shared().namespace("env-ui").await;
        flux::install_crds();
        let kubelet = pods_on_a_stand_in_kubelet(
            &ns,
            &[
                ("web-1", json!({"app": "web"}), None),
                ("web-2", json!({"app": "web"}), None),
                ("migrate-1", json!({"app": "migrate"}), None),
            ],
        )
        .await;
        as_admin(&ns, &["create", "service", "clusterip", "web", "--tcp=80:8080"]);
        let release = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"interval": "5m", "chart": {"spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "app"}}}}
        });
        let releases = helm_releases(&ns).await;
        releases
            .create(&PostParams::default(), &serde_json::from_value(release).unwrap())
            .await
            .unwrap();
        let (status, environment) = call(
            &setup.kas,
            "POST",
            &format!("/projects/{}/environments", setup.project_id),
            Some(json!({
                "name": "production",
                "cluster_agent_id": setup.agent_id,
                "kubernetes_namespace": ns,
                "flux_resource_path": format!("helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases/app"),
            })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{environment}");
        let environment_id = environment["id"].as_i64().unwrap();
        let url = format!(
            "{}/{}/-/environments/{environment_id}",
            setup.kas.url, setup.project_path
        );
        Dashboard {
            setup,
            _agent: agent,
            ns,
            environment_id,
            url,
            _kubelet: kubelet,
        }
    }

    async fn pods(&self) -> Api<Pod> {
        Api::namespaced(KubeEnv::shared().client().await, &self.ns)
    }

    /// Writes a pod's phase, as its kubelet would.
    async fn set_phase(&self, pod: &str, phase: &str) {
        self.pods()
            .await
            .patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": phase}})),
            )
            .await
            .unwrap();
    }

    /// Writes the HelmRelease's conditions, as helm-controller would.
    async fn set_conditions(&self, conditions: Value) {
        let now = "2026-12-02T00:00:00Z";
        let conditions: Vec<Value> = conditions
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c["lastTransitionTime"] = json!(now);
                c["message"] = c.get("message").cloned().unwrap_or(json!("as the test says"));
                c
            })
            .collect();
        helm_releases(&self.ns)
            .await
            .patch_status(
                "app",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await
            .unwrap();
    }

    fn browser(&self) -> Browser {
        let mut browser = Browser::start();
        browser.run(json!({"do": "goto", "url": self.url}));
        browser.run(json!({"do": "fill", "selector": "#username", "value": "wendy"}));
        browser.run(json!({"do": "fill", "selector": "#password", "value": PASSWORD}));
        browser.run(json!({"do": "click", "selector": "button[type=submit]"}));
        browser.run(json!({"do": "wait", "selector": "#k8s-overview"}));
        browser
    }
}

async fn helm_releases(ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(KubeEnv::shared().client().await, ns, &flux::helm_releases())
}

fn count(browser: &mut Browser, phase: &str) -> String {
    browser.run(json!({"do": "text", "selector": format!("#pod-phases [data-phase={phase}] [data-count]")}))["text"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_count(browser: &mut Browser, phase: &str, expected: &str) {
    browser.run(json!({
        "do": "wait",
        "selector": format!("#pod-phases [data-phase={phase}] [data-count]"),
        "text": expected,
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_overview_follows_pods_flux_and_logs_live_through_the_agent() {
    let dashboard = Dashboard::start().await;
    dashboard.set_phase("web-1", "Running").await;
    dashboard.set_phase("migrate-1", "Succeeded").await;
    let mut browser = dashboard.browser();

    // Pods by phase, the health, the tables.
    wait_count(&mut browser, "Running", "1");
    wait_count(&mut browser, "Succeeded", "1");
    assert_eq!(
        ["Running", "Pending", "Succeeded", "Failed"].map(|p| count(&mut browser, p)),
        ["1", "1", "1", "0"]
    );
    browser.run(json!({"do": "wait", "selector": "#health", "state": "healthy"}));
    let pods = browser.run(json!({"do": "texts", "selector": "#pods tbody tr td:first-child"}));
    assert_eq!(pods["texts"], json!(["migrate-1", "web-1", "web-2"]));
    browser.run(json!({"do": "wait", "selector": "#services tbody tr", "text": "web"}));
    browser.run(json!({"do": "wait", "selector": "#dashboard-state", "text": "Synced"}));

    // A tile filters the table.
    browser.run(json!({"do": "click", "selector": "#pod-phases [data-phase=Running]"}));
    let filtered = browser.run(json!({"do": "texts", "selector": "#pods tbody tr td:first-child"}));
    assert_eq!(filtered["texts"], json!(["web-1"]));
    browser.run(json!({"do": "click", "selector": "#pod-phases [data-phase=Running]"}));

    // A pod that fails flips the health and the counts, no reload.
    dashboard.set_phase("web-2", "Failed").await;
    browser.run(json!({"do": "wait", "selector": "#health", "state": "unhealthy"}));
    wait_count(&mut browser, "Failed", "1");
    assert_eq!(count(&mut browser, "Pending"), "0");

    // Flux: every state GitLab tells apart, in turn, as the controller
    // writes them; the message of a failure is shown.
    browser.run(json!({"do": "wait", "selector": "#flux-badge", "state": "unavailable"}));
    for (conditions, state, label) in [
        (
            json!([{"type": "Reconciling", "status": "True", "reason": "Progressing"}]),
            "reconciling",
            "Reconciling",
        ),
        (
            json!([{"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "values do not validate"}]),
            "reconcilingWithBadConfig",
            "Reconciling",
        ),
        (
            json!([{"type": "Stalled", "status": "True", "reason": "InvalidChartReference"}, {"type": "Ready", "status": "Unknown", "reason": "Other"}]),
            "stalled",
            "Stalled",
        ),
        (
            json!([{"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "install retries exhausted"}]),
            "failed",
            "Failed",
        ),
        (
            json!([{"type": "Ready", "status": "True", "reason": "InstallSucceeded"}]),
            "reconciled",
            "Reconciled",
        ),
        (
            json!([{"type": "Ready", "status": "Unknown", "reason": "Other"}]),
            "unknown",
            "Unknown",
        ),
    ] {
        dashboard.set_conditions(conditions).await;
        let shown = browser.run(json!({"do": "wait", "selector": "#flux-badge", "state": state}));
        assert_eq!(shown["text"], label, "{state}");
        if state == "failed" {
            browser.run(json!({"do": "wait", "selector": "#flux-message", "text": "install retries exhausted"}));
            browser.screenshot("environment.png");
        }
    }

    // The Flux actions change the object in the API server.
    let releases = helm_releases(&dashboard.ns).await;
    browser.run(json!({"do": "click", "selector": "[data-flux-action=reconcile]"}));
    crate::until(Duration::from_secs(10), "requestedAt is set", async || {
        let release = releases.get("app").await.unwrap();
        release
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("reconcile.fluxcd.io/requestedAt")
    })
    .await;
    browser.run(json!({"do": "click", "selector": "[data-flux-action=suspend]"}));
    let paused = browser.run(json!({"do": "wait", "selector": "#flux-badge", "state": "suspended"}));
    assert_eq!(paused["text"], "Paused");
    assert_eq!(releases.get("app").await.unwrap().data["spec"]["suspend"], true);
    browser.run(json!({"do": "click", "selector": "[data-flux-action=resume]"}));
    browser.run(json!({"do": "wait", "selector": "#flux-badge", "state": "unknown"}));
    assert_eq!(releases.get("app").await.unwrap().data["spec"]["suspend"], false);

    // The drawer: labels, an event written after it opened, and the
    // followed log, whose lines the stand-in kubelet writes as it goes.
    browser.run(json!({"do": "click", "selector": "#pods tr[data-pod=web-1]"}));
    browser.run(json!({"do": "wait", "selector": "#drawer [data-section=Labels]", "text": "app=web"}));
    let pod = dashboard.pods().await.get("web-1").await.unwrap();
    let events: Api<Event> = Api::namespaced(KubeEnv::shared().client().await, &dashboard.ns);
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": glagent_test_support::unique("web-1-event")},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": dashboard.ns, "uid": pod.metadata.uid},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "type": "Warning",
        "lastTimestamp": "2026-12-02T00:00:00Z",
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    browser.run(
        json!({"do": "wait", "selector": "#drawer [data-events]", "text": "Back-off restarting failed container"}),
    );
    browser.run(json!({"do": "click", "selector": "#drawer button:has-text('View logs of main')"}));
    browser.run(json!({"do": "wait", "selector": "#drawer [data-log=main]", "text": "line 3"}));
    browser.screenshot("environment-drawer.png");
    browser.run(json!({"do": "click", "selector": "#drawer-close"}));

    // Deleting a pod from the page deletes it in the cluster.
    browser.run(json!({"do": "click", "selector": "[data-delete-pod=migrate-1]"}));
    crate::until(Duration::from_secs(10), "migrate-1 is deleted", async || {
        dashboard.pods().await.get_opt("migrate-1").await.unwrap().is_none()
    })
    .await;
    wait_count(&mut browser, "Succeeded", "0");

    // With access_as user, the API server decides as Wendy, whom the
    // cluster's RBAC does not know: its refusal is shown verbatim.
    assert!(
        dashboard
            .setup
            .write_config(&user_access(&dashboard.setup, "user"))
            .await
            .is_success()
    );
    browser.run(json!({"do": "goto", "url": dashboard.url}));
    let refused = browser.run(json!({"do": "wait", "selector": "#k8s-error", "text": "forbidden"}));
    let message = refused["text"].as_str().unwrap();
    assert!(
        message.contains("User \"gitlab:user:wendy\" cannot list resource \"pods\""),
        "{message}"
    );
    browser.screenshot("environment-forbidden.png");
    let _ = dashboard.environment_id;
}

/// The environment page's proxy cookie and CSRF token, read as a browser
/// gets them.
async fn proxy_credentials(http: &reqwest::Client, url: &str) -> (String, String, String) {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("_glagent_kas="))
        .expect("the page sets the proxy's cookie")
        .to_string();
    let html = response.text().await.unwrap();
    let needle = "data-csrf=\"";
    let start = html.find(needle).unwrap() + needle.len();
    let csrf = html[start..start + 64].to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    (set_cookie, cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_a_session_without_its_csrf_token_with_two_agents_from_elsewhere_or_signed_out() {
    let dashboard = Dashboard::start().await;
    let setup = &dashboard.setup;
    let http = signed_in_client(setup, "wendy", PASSWORD).await;
    let (set_cookie, cookie, csrf) = proxy_credentials(&http, &dashboard.url).await;
    for attribute in [
        "Path=/-/kubernetes-agent/k8s-proxy",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
    ] {
        assert!(set_cookie.contains(attribute), "{attribute} in {set_cookie}");
    }
    // A bare client: only what each case sends (not the site's session).
    let bare = no_redirects(setup);
    let pods = format!(
        "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{}/pods",
        setup.kas.url, dashboard.ns
    );
    let agent = setup.agent_id.to_string();
    let send = |headers: Vec<(&'static str, String)>| {
        let (bare, pods) = (bare.clone(), pods.clone());
        async move {
            let mut request = bare.get(pods);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let unauthorized = response
                .headers()
                .get("gitlab-unauthorized")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status(), unauthorized, response.text().await.unwrap())
        }
    };
    let good = || {
        vec![
            ("cookie", cookie.clone()),
            ("gitlab-agent-id", agent.clone()),
            ("x-csrf-token", csrf.clone()),
            ("origin", setup.kas.url.clone()),
        ]
    };
    let (status, _, body) = send(good()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let without = |name: &str| good().into_iter().filter(|(n, _)| *n != name).collect::<Vec<_>>();
    let mut two_agents = good();
    two_agents.push(("gitlab-agent-id", agent.clone()));
    let mut wrong_csrf = without("x-csrf-token");
    wrong_csrf.push(("x-csrf-token", "0".repeat(64)));
    let mut elsewhere = without("origin");
    elsewhere.push(("origin", "https://evil.example".into()));
    for (case, headers, says) in [
        ("no CSRF header", without("x-csrf-token"), "exactly one x-csrf-token"),
        (
            "a CSRF token of no session",
            wrong_csrf,
            "does not belong to this session",
        ),
        ("two Gitlab-Agent-Id", two_agents, "exactly one gitlab-agent-id"),
        ("another origin", elsewhere, "may only be used from"),
    ] {
        let (status, unauthorized, body) = send(headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        assert_eq!(unauthorized.as_deref(), Some("true"), "{case}");
        assert!(body.contains(says), "{case}: {body}");
    }

    // After signing out, the same cookie and token are refused.
    let page = http.get(&dashboard.url).send().await.unwrap().text().await.unwrap();
    let out = http
        .post(format!("{}/users/sign_out", setup.kas.url))
        .form(&[("authenticity_token", &form_token(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let started = Instant::now();
    let (status, unauthorized, body) = send(good()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "after sign out: {body}");
    assert_eq!(unauthorized.as_deref(), Some("true"));
    assert!(body.contains("session has ended"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // No secret of the session reached the log.
    let token = cookie.trim_start_matches("_glagent_kas=");
    assert!(!setup.kas.log().contains(token), "the session token in kas's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_created_in_the_page_from_the_agents_namespaces_and_flux_resources_offered() {
    let dashboard = Dashboard::start().await;
    let setup = &dashboard.setup;
    // Another project's agent shared with this one through user_access,
    // and one that is not.
    let (_, platform) = call(&setup.kas, "POST", "/projects", Some(json!({"name": "platform"}))).await;
    for (name, shared) in [("shared-k8s", true), ("private-k8s", false)] {
        let (status, _) = call(
            &setup.kas,
            "POST",
            &format!("/projects/{}/cluster_agents", platform["id"]),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let config = if shared {
            format!("user_access:\n  projects:\n    - id: {}\n", setup.project_path)
        } else {
            "observability:\n  logging:\n    level: info\n".to_string()
        };
        commit_file(
            setup,
            &platform["id"],
            &format!(".gitlab/agents/{name}/config.yaml"),
            &config,
        )
        .await;
    }
    let environments = format!("{}/{}/-/environments", setup.kas.url, setup.project_path);
    let mut browser = Browser::start();
    browser.run(json!({"do": "goto", "url": format!("{environments}/new")}));
    browser.run(json!({"do": "fill", "selector": "#username", "value": "wendy"}));
    browser.run(json!({"do": "fill", "selector": "#password", "value": PASSWORD}));
    browser.run(json!({"do": "click", "selector": "button[type=submit]"}));
    browser.run(json!({"do": "wait", "selector": "[data-environment-form]"}));
    let agents = browser.run(json!({"do": "texts", "selector": "#environment-agent option"}));
    assert_eq!(
        agents["texts"],
        json!([
            "No agent",
            format!("edge ({})", setup.project_path),
            format!("shared-k8s ({})", platform["path_with_namespace"].as_str().unwrap()),
        ]),
        "the project's agent and the one shared through user_access"
    );

    // A namespace without an agent is refused, with the rule, and nothing
    // is created.
    browser.run(json!({"do": "fill", "selector": "#environment-name", "value": "staging"}));
    browser.run(json!({"do": "fill", "selector": "#environment-namespace", "value": dashboard.ns}));
    browser.run(json!({"do": "click", "selector": "[data-environment-form] button[type=submit]"}));
    let refused = browser.run(json!({"do": "wait", "selector": "[role=alert]"}));
    assert!(
        refused["text"]
            .as_str()
            .unwrap()
            .contains("kubernetes_namespace needs a cluster_agent_id"),
        "{refused}"
    );
    let (_, listed) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/environments", setup.project_id),
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "only production: {listed}");

    // The agent lists the cluster's namespaces, then the namespace's Flux
    // resources, through the proxy with the session.
    browser.run(json!({"do": "select", "selector": "#environment-agent", "value": setup.agent_id.to_string()}));
    browser.run(json!({
        "do": "wait",
        "selector": format!("#environment-namespaces option[value=\"{}\"]", dashboard.ns),
        "attached": true,
    }));
    browser.run(json!({"do": "fill", "selector": "#environment-namespace", "value": dashboard.ns, "change": true}));
    let flux_path = format!("helm.toolkit.fluxcd.io/v2/namespaces/{}/helmreleases/app", dashboard.ns);
    browser.run(json!({
        "do": "wait",
        "selector": format!("#environment-flux-resources option[value=\"{flux_path}\"]"),
        "attached": true,
    }));
    browser.run(json!({"do": "fill", "selector": "#environment-flux", "value": flux_path}));
    browser.screenshot("environment-new.png");
    browser.run(json!({"do": "click", "selector": "[data-environment-form] button[type=submit]"}));
    browser.run(json!({"do": "wait", "selector": "#k8s-overview"}));
    let (_, listed) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/environments?name=staging", setup.project_id),
        None,
    )
    .await;
    let staging = &listed[0];
    assert_eq!(staging["tier"], "staging", "guessed from the name");
    assert_eq!(staging["cluster_agent"]["id"], setup.agent_id);
    assert_eq!(staging["kubernetes_namespace"], json!(dashboard.ns));
    assert_eq!(staging["flux_resource_path"], json!(flux_path));

    browser.run(json!({"do": "goto", "url": environments}));
    let rows = browser.run(json!({"do": "texts", "selector": "table[data-environments] tbody tr td:first-child"}));
    assert_eq!(rows["texts"], json!(["production", "staging"]));
    browser.screenshot("environments.png");

    // Edit it (one more namespace), then stop and delete it from its page.
    browser.run(json!({"do": "goto", "url": format!("{environments}/{}", staging["id"])}));
    browser.run(json!({"do": "click", "selector": "main a:has-text('Edit')"}));
    browser.run(json!({"do": "fill", "selector": "#environment-more-namespaces", "value": "app-green"}));
    browser.run(json!({"do": "click", "selector": "[data-environment-form] button[type=submit]"}));
    browser.run(json!({"do": "wait", "selector": "#k8s-overview"}));
    let (_, edited) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/environments/{}", setup.project_id, staging["id"]),
        None,
    )
    .await;
    assert_eq!(
        edited["kubernetes_namespaces"],
        json!([dashboard.ns, "app-green"]),
        "{edited}"
    );
    assert_eq!(edited["flux_resource_path"], json!(flux_path), "the rest kept");
    browser.run(json!({"do": "click", "selector": "main button:has-text('Stop')"}));
    browser.run(json!({"do": "wait", "selector": "h1", "text": "stopped"}));
    browser.run(json!({"do": "click", "selector": "main button:has-text('Delete')"}));
    browser.run(json!({"do": "wait", "selector": "table[data-environments]"}));
    let (status, _) = call(
        &setup.kas,
        "GET",
        &format!("/projects/{}/environments/{}", setup.project_id, staging["id"]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted");

    // Where the user may not list namespaces, the form says so and still
    // takes a typed one.
    assert!(setup.write_config(&user_access(setup, "user")).await.is_success());
    browser.run(json!({"do": "goto", "url": format!("{environments}/new")}));
    browser.run(json!({"do": "select", "selector": "#environment-agent", "value": setup.agent_id.to_string()}));
    let help = browser.run(json!({"do": "wait", "selector": "#environment-namespace-help", "text": "permission"}));
    assert!(
        help["text"].as_str().unwrap().contains("you can still enter its name")
            && help["text"]
                .as_str()
                .unwrap()
                .contains("cannot list resource \"namespaces\""),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_jobs_fill_an_environment_s_dashboard_and_an_environment_watches_several_namespaces() {
    let dashboard = Dashboard::start().await;
    let setup = &dashboard.setup;
    let carol = crate::support::member(setup, "carol", 30, &["api"]).await;
    let job = |body: Value| {
        let (http, url, carol) = (setup.kas.http(), setup.kas.api("/ci/jobs"), carol.clone());
        async move {
            let response = http
                .post(url)
                .header("PRIVATE-TOKEN", carol)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap_or_default())
        }
    };
    let environment = |name: &'static str| async move {
        let (_, found) = call(
            &setup.kas,
            "GET",
            &format!("/projects/{}/environments?name={name}", setup.project_id),
            None,
        )
        .await;
        found[0].clone()
    };
    let flux_path = format!("helm.toolkit.fluxcd.io/v2/namespaces/{}/helmreleases/app", dashboard.ns);
    let kubernetes = json!({
        "agent": format!("{}:edge", setup.project_path),
        "namespace": dashboard.ns,
        "flux_resource_path": flux_path,
    });
    let deploy = |job_id: i64, environment: &str, kubernetes: Value| {
        json!({"project_id": setup.project_id, "pipeline_id": 7, "job_id": job_id, "ref": "feature-1",
               "environment": environment, "environment_kubernetes": kubernetes})
    };

    // Bad input is refused before anything is made.
    let (status, body) = job(deploy(2000, "review/feature-1", json!({"agent": "edge"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("<project path>:<agent name>"), "{body}");
    assert_eq!(environment("review/feature-1").await, Value::Null, "nothing created");

    // The first deployment creates the environment and links it.
    let (status, body) = job(deploy(2001, "review/feature-1", kubernetes.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let review = environment("review/feature-1").await;
    assert_eq!(review["tier"], "development", "guessed from the name");
    assert_eq!(review["cluster_agent"]["id"], setup.agent_id, "{review}");
    assert_eq!(review["kubernetes_namespace"], json!(dashboard.ns));
    assert_eq!(review["flux_resource_path"], json!(flux_path));
    // A later deployment naming another namespace changes nothing.
    let (status, _) = job(deploy(
        2002,
        "review/feature-1",
        json!({"agent": format!("{}:edge", setup.project_path), "namespace": "elsewhere"}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        environment("review/feature-1").await["kubernetes_namespace"],
        json!(dashboard.ns)
    );
    // An agent that does not let the job's user in is ignored, as GitLab does.
    let (_, platform) = call(&setup.kas, "POST", "/projects", Some(json!({"name": "platform"}))).await;
    call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", platform["id"]),
        Some(json!({"name": "private-k8s"})),
    )
    .await;
    let private = json!({"agent": format!("{}:private-k8s", platform["path_with_namespace"].as_str().unwrap())});
    let (status, _) = job(deploy(2003, "review/feature-2", private)).await;
    assert_eq!(status, StatusCode::CREATED);
    let unlinked = environment("review/feature-2").await;
    assert!(
        unlinked["name"] == "review/feature-2" && unlinked.get("cluster_agent").is_none(),
        "{unlinked}"
    );
    assert!(setup.kas.log().contains("environment:kubernetes is ignored"));

    // The job's environment page has its dashboard.
    let http = signed_in_client(setup, "wendy", PASSWORD).await;
    let page = http
        .get(format!(
            "{}/{}/-/environments/{}",
            setup.kas.url, setup.project_path, review["id"]
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("data-namespaces=\"{}\"", dashboard.ns)),
        "{page}"
    );

    // Several namespaces: the dashboard watches each.
    let ns2 = KubeEnv::shared().namespace("env-ui-db").await;
    let pods: Api<Pod> = Api::namespaced(KubeEnv::shared().client().await, &ns2);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db-1"},
        "spec": {"containers": [{"name": "main", "image": "postgres"}]}
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while pods.create(&PostParams::default(), &pod).await.is_err() {
        assert!(Instant::now() < deadline, "creating db-1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = format!(
        "/projects/{}/environments/{}",
        setup.project_id, dashboard.environment_id
    );
    let (status, body) = call(
        &setup.kas,
        "PUT",
        &url,
        Some(json!({"kubernetes_namespaces": [dashboard.ns, dashboard.ns]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("twice"), "{body}");
    let (status, body) = call(
        &setup.kas,
        "PUT",
        &url,
        Some(json!({"kubernetes_namespaces": [dashboard.ns, ns2]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kubernetes_namespaces"], json!([dashboard.ns, ns2]));
    assert_eq!(
        body["kubernetes_namespace"],
        json!(dashboard.ns),
        "GitLab's field: the first"
    );
    let mut browser = dashboard.browser();
    browser.run(json!({"do": "wait", "selector": "#pods tr[data-pod=db-1]"}));
    let pods = browser.run(json!({"do": "texts", "selector": "#pods tbody tr td:first-child"}));
    let mut names: Vec<&str> = pods["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["db-1", "migrate-1", "web-1", "web-2"],
        "pods of both namespaces"
    );
    assert_eq!(count(&mut browser, "Pending"), "4");
}
