//! Receptive agents (kas dials the agent) and the `grpc(s)://` transports:
//! an agent in a network namespace that cannot reach kas, installed with
//! the chart and dialed by kas, serves everything an agent that dials kas
//! does; TLS with `ca_cert`/`tls_host`, cleartext and mTLS each work and
//! wrong certificates are refused in words; agentk refuses every JWT that
//! is not kas's, each with its reason; a token of another agent is
//! refused; and an agent dialing kas's agent port over `grpcs://` or
//! `grpc://` works as one on `wss://`.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use glagent_test_support::agentk::{Agentk, AgentkOptions};
use glagent_test_support::kas::KasOptions;
use glagent_test_support::kube::KubeEnv;
use glagent_test_support::netns::Netns;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::helm::{CHART, run_as_the_chart_says_in, sh};
use crate::support::kubelet::pod_on_a_stand_in_kubelet;
use crate::support::{KUBECTLS, kubeconfig, kubectl, member, ok, watch_sees};
use crate::{Setup, agentk, call, until};

/// Creates the URL configuration of the setup's agent.
async fn url_configuration(setup: &Setup, body: Value) -> Value {
    let (status, config) = call(
        &setup.kas,
        "POST",
        &format!(
            "/projects/{}/cluster_agents/{}/url_configurations",
            setup.project_id, setup.agent_id
        ),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    config
}

async fn delete_url_configuration(setup: &Setup, config: &Value) {
    let (status, body) = call(
        &setup.kas,
        "DELETE",
        &format!(
            "/projects/{}/cluster_agents/{}/url_configurations/{}",
            setup.project_id, setup.agent_id, config["id"]
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn connected(setup: &Setup) -> bool {
    !setup.connections().await.is_empty()
}

/// A CA, and certificates it signs.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Pki {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// (certificate, key) PEM for `name`.
    fn sign(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

/// agentk as a receptive agent on 127.0.0.1:`port` with `args` and
/// `token` (no `--kas-address`).
fn receptive_agent(token: &str, port: u16, args: Vec<String>) -> Agentk {
    let mut all = vec!["--api-listen-address".to_string(), format!("127.0.0.1:{port}")];
    all.extend(args);
    Agentk::start(
        &agentk(),
        AgentkOptions {
            token: token.to_string(),
            kubeconfig: Some(KubeEnv::shared().kubeconfig_path()),
            args: all,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receptive_agent_that_cannot_reach_kas_is_dialed_and_serves_everything() {
    let mut setup = Setup::new().await;
    let config = format!(
        "user_access:\n  access_as:\n    agent: {{}}\n  projects:\n    - id: {p}\nci_access:\n  projects:\n    - id: {p}\n",
        p = setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let mut netns = Netns::create();
    // The cluster's network cannot reach kas, by either address.
    let kas_port = setup.kas.port;
    assert!(!netns.can_connect(format!("127.0.0.1:{kas_port}").parse().unwrap()));
    assert!(!netns.can_connect(format!("{}:{kas_port}", netns.host_ip).parse().unwrap()));

    // As docs/install.md says: the URL configuration, then the chart with
    // its public key. kas dials the pod's address (what the Service's
    // port 8182 forwards to).
    let created = Instant::now();
    let url_config = url_configuration(&setup, json!({"url": format!("grpc://{}:8082", netns.ns_ip)})).await;
    let public_key = url_config["public_key"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let namespace = KubeEnv::shared().namespace("receptive").await;
    sh(
        dir.path(),
        3,
        &format!(
            "helm upgrade --install edge {CHART} --namespace {namespace} --set config.token={} \
             --set config.receptive.enabled=true --set config.api.jwtPublicKey={public_key} --wait=false",
            setup.token
        ),
    );
    let agent = run_as_the_chart_says_in(&namespace, "edge", dir.path(), Some(&mut netns)).await;
    let listening = Instant::now();
    until(
        Duration::from_secs(70),
        "kas to connect to the receptive agent",
        async || connected(&setup).await,
    )
    .await;
    println!(
        "receptive agent connected {:?} after the URL configuration's creation, {:?} after it listened",
        created.elapsed(),
        listening.elapsed()
    );
    until(Duration::from_secs(10), "the agent to be configured", async || {
        agent.config_commit().await.is_some_and(|c| !c.is_empty())
    })
    .await;
    assert!(
        agent.log().contains("kas connected (receptive agent)"),
        "{}",
        agent.log()
    );
    let connection = &setup.connections().await[0];
    assert_eq!(
        connection.metadata.as_ref().map(|m| m.pod_namespace.as_str()),
        Some(namespace.as_str()),
        "registered with the metadata the agent reports"
    );

    // kubectl get, apply and a watch through kas, which dialed the agent.
    let ns = KubeEnv::shared().namespace("receptive-work").await;
    let pat = member(&setup, "rita", 30, &["k8s_proxy"]).await;
    let kc = kubeconfig(&setup, &pat, dir.path());
    let bin = KUBECTLS[1];
    ok(kubectl(bin, &kc, &["-n", &ns, "get", "configmaps"], None), "get");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  via: receptive\n";
    ok(
        kubectl(bin, &kc, &["-n", &ns, "apply", "-f", "-"], Some(manifest)),
        "apply",
    );
    let applied = ok(
        kubectl(
            bin,
            &kc,
            &["-n", &ns, "get", "configmap", "applied", "-o", "jsonpath={.data.via}"],
            None,
        ),
        "get applied",
    );
    assert_eq!(applied, "receptive");
    let seen = watch_sees(&kc, &ns, "watched", &kc).await;
    assert!(seen.contains("configmap/watched"), "{seen}");
    // exec through the real API server to a stand-in kubelet.
    pod_on_a_stand_in_kubelet(&ns).await;
    let exec = || kubectl(bin, &kc, &["-n", &ns, "exec", "shell", "--", "echo", "dialed"], None);
    let mut last = exec();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !last.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = exec();
    }
    assert_eq!(last.1, "dialed\n", "stderr: {}", last.2);

    // A CI job's context.
    let ci_pat = member(&setup, "ci-runner", 30, &["api"]).await;
    let job: Value = setup
        .kas
        .http()
        .post(setup.kas.api("/ci/jobs"))
        .header("PRIVATE-TOKEN", &ci_pat)
        .json(&json!({"project_id": setup.project_path, "pipeline_id": 5, "job_id": 55, "ref": "main"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let credential = format!("ci:{}:{}", setup.agent_id, job["token"].as_str().unwrap());
    let status = setup
        .kas
        .http()
        .get(format!(
            "{}/-/kubernetes-agent/k8s-proxy/api/v1/namespaces/{ns}/configmaps",
            setup.kas.url
        ))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);

    // kas dials again when it starts.
    setup.kas.restart().await;
    let after_start = until(
        Duration::from_secs(10),
        "kas to dial again after its restart",
        async || connected(&setup).await,
    )
    .await;
    println!("receptive agent connected {after_start:?} after kas's restart");
    assert!(after_start < Duration::from_secs(2), "{after_start:?}");

    // Deleting the configuration disconnects the agent.
    let url_config = call(
        &setup.kas,
        "GET",
        &format!(
            "/projects/{}/cluster_agents/{}/url_configurations",
            setup.project_id, setup.agent_id
        ),
        None,
    )
    .await
    .1[0]
        .clone();
    delete_url_configuration(&setup, &url_config).await;
    until(
        Duration::from_secs(2),
        "the receptive agent to be disconnected",
        async || !connected(&setup).await,
    )
    .await;
    until(Duration::from_secs(5), "the agent to see kas leave", async || {
        !agent.is_connected().await
    })
    .await;
    sh(dir.path(), 3, &format!("helm uninstall edge --namespace {namespace}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_with_ca_and_tls_host_grpc_and_mtls_each_work_and_wrong_certificates_are_refused() {
    let setup = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let agents_ca = Pki::new("agents-ca");
    let (cert, key) = agents_ca.sign("agent.receptive.test");
    let cert_file = write(dir.path(), "agent.crt", &cert);
    let key_file = write(dir.path(), "agent.key", &key);
    let tls_args = |jwt: &str| {
        vec![
            "--api-cert-file".to_string(),
            cert_file.clone(),
            "--api-key-file".into(),
            key_file.clone(),
            "--api-jwt-file".into(),
            write(dir.path(), "api-jwt", jwt),
        ]
    };

    // grpcs:// with the CA and the name of the agent's certificate.
    let port = glagent_test_support::free_port();
    let config = url_configuration(
        &setup,
        json!({"url": format!("grpcs://127.0.0.1:{port}"), "ca_cert": agents_ca.pem, "tls_host": "agent.receptive.test"}),
    )
    .await;
    let agent = receptive_agent(&setup.token, port, tls_args(config["public_key"].as_str().unwrap()));
    let took = until(Duration::from_secs(10), "kas to connect over grpcs://", async || {
        connected(&setup).await
    })
    .await;
    println!("grpcs:// receptive agent connected after {took:?}");
    delete_url_configuration(&setup, &config).await;
    until(Duration::from_secs(2), "disconnect", async || !connected(&setup).await).await;

    // A CA that did not sign the agent's certificate, then a tls_host the
    // certificate does not name: refused in the TLS handshake, in words.
    let other_ca = Pki::new("other-ca");
    for (body, words) in [
        (
            json!({"url": format!("grpcs://127.0.0.1:{port}"), "ca_cert": other_ca.pem, "tls_host": "agent.receptive.test"}),
            "not signed by the URL configuration's ca_cert",
        ),
        (
            json!({"url": format!("grpcs://127.0.0.1:{port}"), "ca_cert": agents_ca.pem, "tls_host": "wrong.receptive.test"}),
            "not valid for wrong.receptive.test",
        ),
        // TLS is right, but this configuration's new key is not the one
        // the agent was installed with.
        (
            json!({"url": format!("grpcs://127.0.0.1:{port}"), "ca_cert": agents_ca.pem, "tls_host": "agent.receptive.test"}),
            "the agent refused kas's JWT (JWT validation failed: the JWT's signature does not verify",
        ),
    ] {
        let config = url_configuration(&setup, body).await;
        until(Duration::from_secs(10), words, async || setup.kas.log().contains(words)).await;
        assert!(!connected(&setup).await);
        delete_url_configuration(&setup, &config).await;
    }
    drop(agent);

    // grpc:// in cleartext, with the JWT, by an agent that also dials kas:
    // one connection each way.
    let port = glagent_test_support::free_port();
    let config = url_configuration(&setup, json!({"url": format!("grpc://127.0.0.1:{port}")})).await;
    let jwt_file = write(dir.path(), "plain-jwt", config["public_key"].as_str().unwrap());
    let agent = receptive_agent(
        &setup.token,
        port,
        vec![
            "--api-jwt-file".into(),
            jwt_file,
            "--kas-address".into(),
            setup.wss(),
            "--kas-ca-cert-file".into(),
            setup.kas.ca_file().display().to_string(),
        ],
    );
    until(
        Duration::from_secs(10),
        "kas to connect over grpc:// and the agent over wss://",
        async || setup.connections().await.len() == 2,
    )
    .await;
    delete_url_configuration(&setup, &config).await;
    until(
        Duration::from_secs(2),
        "the dialed connection to close, the other to stay",
        async || setup.connections().await.len() == 1,
    )
    .await;
    drop(agent);
    until(
        Duration::from_secs(5),
        "the agent's own connection to close",
        async || !connected(&setup).await,
    )
    .await;

    // mTLS: kas presents the configuration's client certificate instead of a JWT.
    let clients_ca = Pki::new("kas-clients-ca");
    let (client_cert, client_key) = clients_ca.sign("kas");
    let port = glagent_test_support::free_port();
    let mtls_args = vec![
        "--api-cert-file".to_string(),
        cert_file.clone(),
        "--api-key-file".into(),
        key_file.clone(),
        "--api-mtls".into(),
        "--api-client-ca-cert-file".into(),
        write(dir.path(), "clients-ca.crt", &clients_ca.pem),
    ];
    // The agent listens first: kas connects within a second of the configuration's creation.
    let mut agent = receptive_agent(&setup.token, port, mtls_args.clone());
    agent.wait_ready(Duration::from_secs(10)).await;
    let config = url_configuration(
        &setup,
        json!({"url": format!("grpcs://127.0.0.1:{port}"), "ca_cert": agents_ca.pem, "tls_host": "agent.receptive.test",
               "client_cert": client_cert, "client_key": client_key}),
    )
    .await;
    assert!(config["public_key"].is_null(), "{config}");
    let took = until(Duration::from_secs(10), "kas to connect with mTLS", async || {
        connected(&setup).await
    })
    .await;
    println!("mTLS receptive agent connected {took:?} after the URL configuration's creation");
    assert!(took < Duration::from_secs(1), "{took:?}");
    delete_url_configuration(&setup, &config).await;
    drop(agent);

    // mTLS with a client certificate the agent does not trust.
    let (stranger_cert, stranger_key) = other_ca.sign("kas");
    let agent = receptive_agent(&setup.token, port, mtls_args);
    let config = url_configuration(
        &setup,
        json!({"url": format!("grpcs://127.0.0.1:{port}"), "ca_cert": agents_ca.pem, "tls_host": "agent.receptive.test",
               "client_cert": stranger_cert, "client_key": stranger_key}),
    )
    .await;
    until(
        Duration::from_secs(10),
        "the agent to refuse kas's client certificate",
        async || {
            agent
                .log()
                .contains("refused a connection from kas: the TLS handshake failed")
        },
    )
    .await;
    assert!(!connected(&setup).await);
    delete_url_configuration(&setup, &config).await;
}

/// A JWT from parts, signed (or not) as given.
fn jwt(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64.encode(signature))
}

/// Plays kas: dials the agent's listener with `authorization` and returns
/// the status and either the agent token or the refusal's body.
async fn dial_as_kas(port: u16, authorization: Option<String>) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = http::Request::get(glagent_proto::AGENT_PATH).header("host", format!("127.0.0.1:{port}"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    match glagent_tunnel::raw::upgrade(stream, request.body(()).unwrap()).await {
        Ok((headers, _)) => (
            101,
            headers[glagent_proto::AGENT_TOKEN_HEADER].to_str().unwrap().to_string(),
        ),
        Err(glagent_tunnel::raw::UpgradeError::Refused { status, body, .. }) => {
            let message: Value = serde_json::from_str(&body).unwrap_or_default();
            (
                status.as_u16(),
                message["message"].as_str().unwrap_or(&body).to_string(),
            )
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentk_refuses_every_jwt_that_is_not_kas_s_each_with_its_reason() {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    let setup = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(key.as_ref()).unwrap();
    let other = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
    let port = glagent_test_support::free_port();
    let jwt_file = write(dir.path(), "api-jwt", &format!("{public}\n"));
    let mut agent = receptive_agent(&setup.token, port, vec!["--api-jwt-file".into(), jwt_file]);
    agent.wait_ready(Duration::from_secs(10)).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        |aud: &str, nbf: u64, exp: u64| json!({"iss": "gitlab-kas", "aud": [aud], "iat": now, "nbf": nbf, "exp": exp});
    let eddsa = json!({"alg": "EdDSA", "typ": "JWT"});
    let ours = |input: &[u8]| pair.sign(input).as_ref().to_vec();
    let hmac = |input: &[u8]| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes());
        ring::hmac::sign(&key, input).as_ref().to_vec()
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no JWT", None, "no JWT"),
        (
            "alg none",
            Some(jwt(
                json!({"alg": "none"}),
                claims("gitlab-agent", now - 5, now + 5),
                |_| Vec::new(),
            )),
            "algorithm is \"none\"",
        ),
        (
            "HS256 keyed with the public key",
            Some(jwt(
                json!({"alg": "HS256"}),
                claims("gitlab-agent", now - 5, now + 5),
                hmac,
            )),
            "algorithm is \"HS256\"",
        ),
        (
            "another key",
            Some(jwt(eddsa.clone(), claims("gitlab-agent", now - 5, now + 5), |i| {
                other.sign(i).as_ref().to_vec()
            })),
            "signature does not verify",
        ),
        (
            "expired",
            Some(jwt(eddsa.clone(), claims("gitlab-agent", now - 60, now - 30), ours)),
            "expired",
        ),
        (
            "not yet valid",
            Some(jwt(eddsa.clone(), claims("gitlab-agent", now + 60, now + 90), ours)),
            "not valid for another",
        ),
        (
            "wrong audience",
            Some(jwt(eddsa.clone(), claims("gitlab-kas", now - 5, now + 5), ours)),
            "audience",
        ),
    ];
    for (case, jwt, reason) in cases {
        let (status, body) = dial_as_kas(port, jwt.map(|j| format!("Bearer {j}"))).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(body.contains(reason), "{case}: {body}");
        until(Duration::from_secs(5), case, async || {
            agent
                .log()
                .lines()
                .any(|l| l.contains("refused a connection from kas") && l.contains(reason))
        })
        .await;
    }
    assert_eq!(
        agent.metric("agentk_connected ").await.as_deref(),
        Some("0"),
        "no refused dial became a connection"
    );
    // kas's own JWT is accepted, and the agent answers with its token.
    let good = glagent_proto::jwt::sign(key.as_ref(), now).unwrap();
    let (status, token) = dial_as_kas(port, Some(format!("Bearer {good}"))).await;
    assert_eq!((status, token.as_str()), (101, setup.token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kas_refuses_a_receptive_agent_that_presents_another_agent_s_token() {
    let setup = Setup::new().await;
    let (_, other) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents", setup.project_id),
        Some(json!({"name": "other"})),
    )
    .await;
    let (_, other_token) = call(
        &setup.kas,
        "POST",
        &format!("/projects/{}/cluster_agents/{}/tokens", setup.project_id, other["id"]),
        Some(json!({"name": "t"})),
    )
    .await;
    let port = glagent_test_support::free_port();
    let config = url_configuration(&setup, json!({"url": format!("grpc://127.0.0.1:{port}")})).await;
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = write(dir.path(), "api-jwt", config["public_key"].as_str().unwrap());
    let _agent = receptive_agent(
        other_token["token"].as_str().unwrap(),
        port,
        vec!["--api-jwt-file".into(), jwt_file],
    );
    let words = format!("presented a token of another agent (id {})", other["id"]);
    until(Duration::from_secs(10), &words, async || {
        setup.kas.log().contains(&words)
    })
    .await;
    assert!(!connected(&setup).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_dialing_kas_s_agent_port_over_grpcs_and_grpc_work_as_on_wss() {
    for cleartext in [false, true] {
        let agent_port = glagent_test_support::free_port();
        let mut env = vec![("KAS_AGENT_LISTEN".to_string(), format!("127.0.0.1:{agent_port}"))];
        if cleartext {
            env.push(("KAS_AGENT_LISTEN_CLEARTEXT".into(), "true".into()));
        }
        let setup = Setup::with_options(KasOptions {
            env,
            ..Default::default()
        })
        .await;
        let config = format!(
            "user_access:\n  access_as:\n    agent: {{}}\n  projects:\n    - id: {}\n",
            setup.project_path
        );
        assert!(setup.write_config(&config).await.is_success());
        let scheme = if cleartext { "grpc" } else { "grpcs" };
        let mut options = setup.agent_options();
        options.kas_address = format!("{scheme}://127.0.0.1:{agent_port}");
        options.kubeconfig = Some(KubeEnv::shared().kubeconfig_path());
        let mut agent = Agentk::start(&agentk(), options);
        agent.wait_ready(Duration::from_secs(20)).await;
        assert_eq!(setup.connections().await.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let pat = member(&setup, "gina", 30, &["k8s_proxy"]).await;
        let kc = kubeconfig(&setup, &pat, dir.path());
        let ns = KubeEnv::shared().namespace(scheme).await;
        ok(
            kubectl(KUBECTLS[1], &kc, &["-n", &ns, "get", "configmaps"], None),
            scheme,
        );
        let seen = watch_sees(&kc, &ns, "over-grpc", &kc).await;
        assert!(seen.contains("configmap/over-grpc"), "{scheme}: {seen}");
    }
}
