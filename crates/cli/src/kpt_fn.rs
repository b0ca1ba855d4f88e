//! `glagent kpt-fn render-agent`: the exec function of the kpt package
//! (deploy/kpt/gitlab-agent). It reads a kpt ResourceList on stdin, drops
//! the objects it generated last time, and adds the agent's objects built
//! from the package's setters, named and shaped like the Helm chart's
//! defaults.

use std::io::Read;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::{Value, json};

const MARK: &str = "glagent.dev/generated-by";
const PATH: &str = "config.kubernetes.io/path";

fn fullname(name: &str) -> String {
    let full = if name.contains("gitlab-agent") {
        name.to_string()
    } else {
        format!("{name}-gitlab-agent")
    };
    full.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn meta(name: &str, namespace: Option<&str>, file: &str, labels: &Value) -> Value {
    let mut metadata = json!({
        "name": name,
        "labels": labels,
        "annotations": {MARK: "kpt-fn", PATH: file},
    });
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    metadata
}

/// The agent's objects for the given setters.
pub fn objects(setters: &Value) -> Result<Vec<Value>> {
    let get = |key: &str| setters[key].as_str().unwrap_or_default().trim().to_string();
    let ns = get("namespace");
    let name = get("name");
    anyhow::ensure!(
        !ns.is_empty() && !name.is_empty(),
        "setters.yaml must set namespace and name"
    );
    let kas = get("kas-address");
    anyhow::ensure!(
        kas.starts_with("wss://") || kas.starts_with("ws://"),
        "setters.yaml: kas-address must be a wss:// URL, got {kas:?}"
    );
    let token_file = get("token-file");
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the agent token from {token_file:?} (setters.yaml token-file)"))?;
    let token = token.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!token.is_empty(), "the token file {token_file} is empty");
    let ca = match get("kas-ca-file") {
        path if path.is_empty() => None,
        path => Some(std::fs::read_to_string(&path).with_context(|| format!("reading kas-ca-file {path}"))?),
    };
    let version = get("agent-version");
    let image = format!("{}:{}", get("image-repository"), version);
    let role = match get("cluster-role") {
        r if r.is_empty() => "cluster-admin".to_string(),
        r => r,
    };
    let full = fullname(&name);
    let selector = json!({"app.kubernetes.io/name": "gitlab-agent", "app.kubernetes.io/instance": name});
    let mut labels = selector.clone();
    labels["app.kubernetes.io/version"] = json!(version);
    labels["app.kubernetes.io/managed-by"] = json!("kpt");
    let agent = "generated/agent.yaml";
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let mut args = vec![
        json!("--kas-address"),
        json!(kas),
        json!("--token-file"),
        json!("/etc/agentk/secrets/token"),
    ];
    let mut mounts = vec![json!({"name": "token", "mountPath": "/etc/agentk/secrets", "readOnly": true})];
    let mut volumes = vec![json!({"name": "token", "secret": {"secretName": format!("{full}-token")}})];
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(&ns, None, agent, &labels)}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&full, Some(&ns), agent, &labels)}),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(&format!("{full}-token"), Some(&ns), "generated/secret.yaml", &labels),
            "data": {"token": b64(token)},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(&format!("{full}-{ns}"), None, agent, &labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": full, "namespace": ns}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": meta(&format!("{full}-leader-election"), Some(&ns), agent, &labels),
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta(&format!("{full}-leader-election"), Some(&ns), agent, &labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{full}-leader-election")},
            "subjects": [{"kind": "ServiceAccount", "name": full, "namespace": ns}],
        }),
    ];
    if let Some(ca) = &ca {
        objects.push(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(&format!("{full}-ca"), Some(&ns), agent, &labels),
            "data": {"ca.crt": ca},
        }));
        args.extend([json!("--kas-ca-cert-file"), json!("/etc/agentk/config/ca.crt")]);
        mounts.push(json!({"name": "kas-ca", "mountPath": "/etc/agentk/config", "readOnly": true}));
        volumes.push(json!({"name": "kas-ca", "configMap": {"name": format!("{full}-ca")}}));
    }
    args.extend([
        json!("--observability-listen-address"),
        json!(":8080"),
        json!("--log-format"),
        json!("json"),
    ]);
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&full, Some(&ns), agent, &labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector, "annotations": {"checksum/token": glagent_core::secret::digest(token)}},
                "spec": {
                    "serviceAccountName": full,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "agent",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        "env": [
                            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "SERVICE_ACCOUNT_NAME", "valueFrom": field("spec.serviceAccountName")},
                        ],
                        "ports": [{"name": "observability", "containerPort": 8080}],
                        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "observability"}, "initialDelaySeconds": 5, "periodSeconds": 10},
                        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "observability"}, "periodSeconds": 5},
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }));
    Ok(objects)
}

/// stdin ResourceList -> stdout ResourceList.
pub fn render_agent() -> Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let mut list: Value = serde_saphyr::from_str(&input).context("reading the ResourceList from kpt")?;
    let setters = list["functionConfig"]["data"].clone();
    let generated = objects(&setters)?;
    let mut items: Vec<Value> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|item| item["metadata"]["annotations"][MARK].is_null())
        .collect();
    // kpt needs the position of each object within its file.
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for mut object in generated {
        let file = object["metadata"]["annotations"][PATH]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let index = counts.entry(file.clone()).or_default();
        let annotations = &mut object["metadata"]["annotations"];
        annotations["config.kubernetes.io/index"] = json!(index.to_string());
        annotations["internal.config.kubernetes.io/index"] = json!(index.to_string());
        annotations["internal.config.kubernetes.io/path"] = json!(file);
        *index += 1;
        items.push(object);
    }
    list["items"] = Value::Array(items);
    print!("{}", serde_saphyr::to_string(&list)?);
    Ok(())
}
