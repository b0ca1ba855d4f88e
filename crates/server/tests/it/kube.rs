//! The real kube-apiserver harness, used from this crate's tests.

use glagent_test_support::kube::KubeEnv;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

#[tokio::test]
async fn harness_serves_a_real_api() {
    let env = KubeEnv::shared();
    let namespace = env.namespace("harness").await;
    let client = env.client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "20"));
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent-token"},
        "stringData": {"token": "glagent-example"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let read = secrets.get("agent-token").await.unwrap();
    let data = read.data.unwrap();
    assert_eq!(data["token"].0, b"glagent-example");
}
