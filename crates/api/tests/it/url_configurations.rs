//! Receptive agents' URL configurations: GitLab's shapes, messages and
//! roles, and private keys that are stored sealed, never in usable form.

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};

use super::{Api, message};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnRl\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIN3b5m4fPrlNRmTrSeXm0D8lNNfQ2rgz8m+yYpH9L0Sb\n-----END PRIVATE KEY-----\n";

/// A project with an agent; the agent's path.
async fn agent(api: &Api) -> (i64, String) {
    let (_, _, project) = api
        .call("POST", "/api/v4/projects", Some(json!({"name": "config"})))
        .await;
    let id = project["id"].as_i64().unwrap();
    let (_, _, agent) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{id}/cluster_agents"),
            Some(json!({"name": "edge"})),
        )
        .await;
    (id, format!("/api/v4/projects/{id}/cluster_agents/{}", agent["id"]))
}

#[tokio::test]
async fn a_url_configuration_makes_the_agent_receptive_with_a_key_only_kas_can_use() {
    let api = Api::new().await;
    let (_, agent) = agent(&api).await;
    let configs = format!("{agent}/url_configurations");
    let (status, _, config) = api
        .call(
            "POST",
            &configs,
            Some(json!({"url": "grpcs://agent.internal:8082", "ca_cert": CERT, "tls_host": "agent.internal"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["url"], "grpcs://agent.internal:8082");
    assert_eq!(config["tls_host"], "agent.internal");
    assert_eq!(
        B64.decode(config["ca_cert"].as_str().unwrap()).unwrap(),
        CERT.as_bytes(),
        "base64 as GitLab sends it"
    );
    assert_eq!(config["client_cert"], Value::Null);
    let public = B64.decode(config["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(public.len(), 32, "a raw Ed25519 public key");
    let (_, _, shown) = api.call("GET", &agent, None).await;
    assert_eq!(shown["is_receptive"], true);
    let list = agent.rsplit_once('/').unwrap().0;
    let (_, _, agents) = api.call("GET", list, None).await;
    assert_eq!(agents[0]["is_receptive"], true, "{agents}");

    let (status, _, listed) = api.call("GET", &configs, None).await;
    assert_eq!((status, listed.clone()), (StatusCode::OK, json!([config.clone()])));
    let one = format!("{configs}/{}", config["id"]);
    let (_, _, got) = api.call("GET", &one, None).await;
    assert_eq!(got, config);
    let (status, _, _) = api.call("GET", &format!("{configs}/999"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, again) = api
        .call("POST", &configs, Some(json!({"url": "grpc://elsewhere:8082"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        message(&again),
        "400 Bad request - URL configuration already exists for this agent"
    );

    // The database holds the private key sealed: it opens with this data
    // directory's key and this agent's context only, and then signs for
    // the public key shown.
    let agent_id = config["agent_id"].as_i64().unwrap();
    let stored = api.services.store.url_configuration(agent_id).await.unwrap().unwrap();
    let sealed = stored.private_key_sealed.unwrap();
    let context = format!("url_configuration:agent:{agent_id}");
    let pkcs8 = api.services.sealer.open(&sealed, &context).unwrap();
    assert!(!sealed.contains(&B64.encode(&pkcs8)), "not stored in the clear");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let signature = pair.sign(b"claims");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(b"claims", signature.as_ref())
        .unwrap();
    assert!(api.services.sealer.open(&sealed, "url_configuration:agent:0").is_err());
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = glagent_services::sealed::Sealer::open_dir(elsewhere.path()).unwrap();
    assert!(
        stranger.open(&sealed, &context).is_err(),
        "a dump without the data directory's key is no use"
    );
    assert!(api.dir.path().join("secrets/sealing.key").exists());

    let (status, _, _) = api.call("DELETE", &one, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, shown) = api.call("GET", &agent, None).await;
    assert_eq!(shown["is_receptive"], false, "a normal agent again");
    let (status, _, _) = api.call("DELETE", &one, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mtls_configurations_take_a_client_certificate_and_key_instead_of_a_key_pair() {
    let api = Api::new().await;
    let (_, agent) = agent(&api).await;
    let configs = format!("{agent}/url_configurations");
    let (status, _, config) = api
        .call(
            "POST",
            &configs,
            Some(json!({"url": "grpcs://agent:8082", "client_cert": B64.encode(CERT), "client_key": B64.encode(KEY)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["public_key"], Value::Null);
    assert_eq!(
        B64.decode(config["client_cert"].as_str().unwrap()).unwrap(),
        CERT.as_bytes()
    );
    assert!(config.get("client_key").is_none(), "the key is never shown");
    let stored = api
        .services
        .store
        .url_configuration(config["agent_id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.client_key_sealed.unwrap().contains("PRIVATE KEY"));
    assert!(stored.private_key_sealed.is_none());
}

#[tokio::test]
async fn bad_configurations_say_what_is_wrong_and_change_nothing() {
    let api = Api::new().await;
    let (_, agent) = agent(&api).await;
    let configs = format!("{agent}/url_configurations");
    for (body, expected) in [
        (json!({}), "url is missing"),
        (json!({"url": "wss://agent/-/kubernetes-agent/"}), "must be grpc://"),
        (
            json!({"url": "grpcs://agent", "ca_cert": "not a certificate"}),
            "ca_cert is neither PEM",
        ),
        (
            json!({"url": "grpcs://agent", "ca_cert": "-----BEGIN X-----\n!!\n-----END X-----"}),
            "ca_cert holds no PEM certificate",
        ),
        (
            json!({"url": "grpcs://agent", "client_cert": CERT}),
            "client_cert and client_key go together",
        ),
        (
            json!({"url": "grpcs://agent", "client_cert": CERT, "client_key": CERT}),
            "client_key holds no PEM private key",
        ),
        (
            json!({"url": "grpcs://agent", "tls_host": "bad host"}),
            "is not a host name",
        ),
    ] {
        let (status, _, answer) = api.call("POST", &configs, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(message(&answer).contains(expected), "{body}: {answer}");
    }
    let (_, _, listed) = api.call("GET", &configs, None).await;
    assert_eq!(listed, json!([]));
    let (_, _, shown) = api.call("GET", &agent, None).await;
    assert_eq!(shown["is_receptive"], false);
}

#[tokio::test]
async fn url_configurations_need_maintainers_and_the_instance_switch() {
    let api = Api::new().await;
    let (project, agent) = agent(&api).await;
    let configs = format!("{agent}/url_configurations");
    let bob = api.user("bob").await;
    api.token(bob, "glpat-bob", &["api"], None).await;
    let (status, _, _) = api
        .call(
            "POST",
            &format!("/api/v4/projects/{project}/members"),
            Some(json!({"user_id": bob, "access_level": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = api
        .call_as("glpat-bob", "POST", &configs, Some(json!({"url": "grpc://agent:8082"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "developers may not");
    let (status, _, _) = api
        .call(
            "GET",
            &format!("/api/v4/projects/{project}/cluster_agents/999/url_configurations"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let off = Api::with_settings(glagent_services::Settings {
        receptive_agents: false,
        ..Default::default()
    })
    .await;
    let (_, agent) = super::url_configurations::agent(&off).await;
    for method in ["GET", "POST"] {
        let (status, _, _) = off
            .call(
                method,
                &format!("{agent}/url_configurations"),
                Some(json!({"url": "grpc://a:1"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} while receptive agents are off");
    }
}
