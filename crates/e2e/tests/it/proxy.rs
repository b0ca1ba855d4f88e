//! kubectl through kas's Kubernetes API proxy and agentk to the real
//! kube-apiserver, with `access_as: agent`: requests carry the agent's own
//! credentials (here the cluster administrator's), so these tests need no
//! RBAC set-up. One behaviour a test, each with every kubectl in
//! [`KUBECTLS`] (1.27 and 1.33); what kas imposes on the identity is in
//! `user_access`, watches in `streaming`, exec in `upgrades`.

use serde_json::Value;

use crate::support::{Fixture, KUBECTLS, as_admin, kubectl, ok};

/// The proxy fixture with `access_as: agent`.
async fn as_the_agent(ns_prefix: &str, username: &str) -> Fixture {
    Fixture::start(Some("agent"), ns_prefix, username).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_kubectl_versions_reach_the_real_api_server() {
    let f = as_the_agent("proxy-version", "vera").await;
    for bin in KUBECTLS {
        let version: Value =
            serde_json::from_str(&ok(kubectl(bin, &f.kc, &["version", "-o", "json"], None), "version")).unwrap();
        let minor = bin.rsplit('.').next().unwrap();
        assert!(
            version["clientVersion"]["minor"]
                .as_str()
                .is_some_and(|m| m.starts_with(minor)),
            "{bin} is kubectl 1.{minor}: {version}"
        );
        assert_eq!(version["serverVersion"]["gitVersion"], "v1.20.2", "{bin}: {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_and_lists_through_the_proxy() {
    let f = as_the_agent("proxy-get", "dora").await;
    as_admin(&f.ns, &["create", "configmap", "listed"]);
    for bin in KUBECTLS {
        ok(kubectl(bin, &f.kc, &["get", "namespace", &f.ns], None), "get namespace");
        let listed = ok(
            f.kubectl_in_ns(bin, &["get", "configmaps", "-o", "name"], None),
            "list configmaps",
        );
        assert!(listed.lines().any(|l| l == "configmap/listed"), "{bin}: {listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_applies_and_patches_through_the_proxy() {
    let f = as_the_agent("proxy-write", "dorian").await;
    for (i, bin) in KUBECTLS.iter().enumerate() {
        let name = format!("cm-{i}");
        ok(
            f.kubectl_in_ns(bin, &["create", "configmap", &name, "--from-literal=a=1"], None),
            "create",
        );
        let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"2\"\n");
        ok(f.kubectl_in_ns(bin, &["apply", "-f", "-"], Some(&manifest)), "apply");
        ok(
            f.kubectl_in_ns(
                bin,
                &[
                    "patch",
                    "configmap",
                    &name,
                    "--type=merge",
                    "-p",
                    r#"{"data":{"b":"3"}}"#,
                ],
                None,
            ),
            "patch",
        );
        let ssa = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-{i}\ndata:\n  s: \"1\"\n");
        ok(
            f.kubectl_in_ns(
                bin,
                &["apply", "--server-side", "--field-manager=glagent-test", "-f", "-"],
                Some(&ssa),
            ),
            "server-side apply",
        );
        let data = ok(
            f.kubectl_in_ns(
                bin,
                &["get", "configmap", &name, "-o", "jsonpath={.data.a}{.data.b}"],
                None,
            ),
            "get",
        );
        assert_eq!(data, "23");
        let applied = ok(
            f.kubectl_in_ns(
                bin,
                &["get", "configmap", &format!("ssa-{i}"), "-o", "jsonpath={.data.s}"],
                None,
            ),
            "get the server-side applied object",
        );
        assert_eq!(applied, "1", "{bin}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_answers_for_the_agent() {
    let f = as_the_agent("proxy-can-i", "dana").await;
    for bin in KUBECTLS {
        assert_eq!(
            ok(
                kubectl(
                    bin,
                    &f.kc,
                    &["auth", "can-i", "create", "configmaps", "-n", &f.ns],
                    None
                ),
                "can-i"
            )
            .trim(),
            "yes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_deletes_through_the_proxy() {
    let f = as_the_agent("proxy-delete", "dirk").await;
    for (i, bin) in KUBECTLS.iter().enumerate() {
        let name = format!("cm-{i}");
        ok(
            f.kubectl_in_ns(bin, &["create", "configmap", &name, "--from-literal=a=1"], None),
            "create",
        );
        ok(f.kubectl_in_ns(bin, &["delete", "configmap", &name], None), "delete");
        let (found, _, stderr) = f.kubectl_in_ns(bin, &["get", "configmap", &name], None);
        assert!(!found, "{bin}: {name} is still there");
        assert!(stderr.contains("NotFound"), "{bin}: {stderr}");
    }
}
