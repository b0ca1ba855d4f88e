//! The chart in deploy/helm/gitlab-agent, offline: `helm lint --strict` and
//! `helm template` with helm v3 and v4 over every documented combination of
//! values, each rendering validated against the Kubernetes 1.33 schemas.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::helm::{CHART, helm};

/// `helm template` with `sets`, validated against Kubernetes 1.33 schemas;
/// returns the objects as JSON.
fn render(helm_version: u8, sets: &[&str], dir: &Path) -> Vec<serde_json::Value> {
    let mut command = Command::new(helm(helm_version));
    command.args(["template", "rel", CHART, "--namespace", "agents"]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, &output.stdout).unwrap();
    let python = PathBuf::from(std::env::var("GLAGENT_PYTHON").expect("GLAGENT_PYTHON: run scripts/test.sh"));
    let validate = python.with_file_name("kubernetes-validate");
    let check = Command::new(validate)
        .args(["-k", "1.33.0", "--strict", "--quiet"])
        .arg(&rendered)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{sets:?} does not validate:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let json = Command::new(&python)
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(&rendered)
        .output()
        .unwrap();
    serde_json::from_slice(&json.stdout).unwrap()
}

fn kinds(objects: &[serde_json::Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_chart_lints_and_renders_every_documented_combination() {
    let chart = CHART;
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "config.token=glagent-xyz",
        "config.kasAddress=wss://kas.example.com/-/kubernetes-agent/",
    ];
    for version in [3, 4] {
        let lint = Command::new(helm(version))
            .args(["lint", "--strict", chart])
            .args(base.iter().flat_map(|s| ["--set", s]))
            .output()
            .unwrap();
        assert!(
            lint.status.success(),
            "helm{version} lint: {}",
            String::from_utf8_lossy(&lint.stdout)
        );

        let with = |extra: &[&str]| {
            let sets: Vec<&str> = base.iter().chain(extra).copied().collect();
            render(version, &sets, dir.path())
        };
        // Defaults.
        let objects = with(&[]);
        assert_eq!(
            kinds(&objects),
            [
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "Secret",
                "ServiceAccount"
            ]
        );
        let deployment = find(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.windows(2)
                .any(|w| w == ["--kas-address", "wss://kas.example.com/-/kubernetes-agent/"]),
            "{args:?}"
        );
        assert!(
            args.windows(2)
                .any(|w| w == ["--token-file", "/etc/agentk/secrets/token"])
        );
        assert!(
            args.windows(2).any(|w| w == ["--log-format", "json"]),
            "agentk logs JSON lines by default: {args:?}"
        );
        assert_eq!(
            container["image"], "registry.example.com/glagent/agentk:0.1.0",
            "tag defaults to appVersion"
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/liveness");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readiness");
        let env: Vec<&str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["POD_NAMESPACE", "POD_NAME", "SERVICE_ACCOUNT_NAME"]);
        assert_eq!(find(&objects, "ClusterRoleBinding")["roleRef"]["name"], "cluster-admin");
        let checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/token"].clone();
        let rotated = render(version, &["config.token=glagent-other", base[1]], dir.path());
        assert_ne!(
            find(&rotated, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/token"],
            checksum,
            "a new token rolls the pods"
        );

        let objects = with(&["config.secretName=my-token"]);
        assert_eq!(
            kinds(&objects),
            [
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "ServiceAccount"
            ]
        );
        assert_eq!(
            find(&objects, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
            "my-token"
        );

        let objects = with(&["rbac.useExistingRole=view"]);
        assert_eq!(find(&objects, "ClusterRoleBinding")["roleRef"]["name"], "view");

        let objects = with(&["rbac.create=false"]);
        assert_eq!(kinds(&objects), ["Deployment", "Secret", "ServiceAccount"]);

        let objects = with(&["serviceAccount.create=false", "serviceAccount.name=existing"]);
        assert_eq!(
            kinds(&objects),
            ["ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Secret"]
        );
        assert_eq!(
            find(&objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
            "existing"
        );
        assert_eq!(find(&objects, "ClusterRoleBinding")["subjects"][0]["name"], "existing");

        let objects = with(&["config.kasCaCert=-----BEGIN CERTIFICATE-----"]);
        assert_eq!(
            kinds(&objects),
            [
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Role",
                "RoleBinding",
                "Secret",
                "ServiceAccount"
            ]
        );
        let args = find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("/etc/agentk/config/ca.crt"), "{args}");

        let objects = with(&[
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=http://proxy:3128",
            "extraEnv[1].name=NO_PROXY",
            "extraEnv[1].value=.svc",
        ]);
        let env = find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains("HTTPS_PROXY") && env.contains("http://proxy:3128") && env.contains("NO_PROXY"),
            "{env}"
        );

        // A receptive agent: the listener's arguments, the key Secret
        // (`api-jwt`, holding the base64 text) and the Service 8182 -> 8082.
        let receptive = render(
            version,
            &[
                "config.token=glagent-xyz",
                "config.receptive.enabled=true",
                "config.api.jwtPublicKey=cHVibGljLWtleQ==",
            ],
            dir.path(),
        );
        assert_eq!(
            kinds(&receptive),
            [
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "Secret",
                "Secret",
                "Service",
                "ServiceAccount"
            ]
        );
        let deployment = find(&receptive, "Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(!args.contains(&"--kas-address"), "{args:?}");
        let joined = args.join(" ");
        assert!(
            joined.contains("--api-listen-address :8082 --api-jwt-file /etc/agentk/api/api-jwt"),
            "{joined}"
        );
        let key = receptive
            .iter()
            .find(|o| o["metadata"]["name"] == "rel-gitlab-agent-api-jwt")
            .expect("the api-jwt Secret");
        assert_eq!(
            key["data"]["api-jwt"], "Y0hWaWJHbGpMV3RsZVE9PQ==",
            "the file holds the base64 text"
        );
        let mounts = container["volumeMounts"].to_string();
        assert!(mounts.contains("/etc/agentk/api"), "{mounts}");
        let service = find(&receptive, "Service");
        assert_eq!(service["spec"]["ports"][0]["port"], 8182, "{service}");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "api", "{service}");
        let ports = container["ports"].to_string();
        assert!(ports.contains("\"containerPort\":8082"), "{ports}");

        // TLS and mTLS for the listener.
        let mtls = render(
            version,
            &[
                "config.token=glagent-xyz",
                "config.receptive.enabled=true",
                "config.api.tls.enabled=true",
                "config.api.tls.secretName=agent-tls",
                "config.api.mtls.enabled=true",
                "config.api.mtls.clientCaCert=-----BEGIN CERTIFICATE-----",
            ],
            dir.path(),
        );
        let args = find(&mtls, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        for expected in [
            "--api-cert-file\",\"/etc/agentk/api-tls/tls.crt",
            "--api-key-file\",\"/etc/agentk/api-tls/tls.key",
            "--api-mtls\",\"--api-client-ca-cert-file\",\"/etc/agentk/api-client-ca/ca.crt",
        ] {
            assert!(args.contains(expected), "{expected} in {args}");
        }
        assert!(!args.contains("--api-jwt-file"), "{args}");

        // Each missing or inconsistent value is named, with the fix.
        for (sets, words) in [
            (
                vec!["config.receptive.enabled=true"],
                "config.api.jwtPublicKey is required for a receptive agent",
            ),
            (
                vec![
                    "config.receptive.enabled=true",
                    "config.api.jwtPublicKey=k",
                    "config.api.listenAddress=:9000",
                ],
                "config.api.listenAddress (:9000) must listen on service.internalPort (8082)",
            ),
            (
                vec!["config.receptive.enabled=true", "config.api.mtls.enabled=true"],
                "config.api.mtls.enabled needs config.api.tls.enabled",
            ),
            (
                vec![
                    "config.receptive.enabled=true",
                    "config.api.jwtPublicKey=k",
                    "config.api.tls.enabled=true",
                ],
                "config.api.tls.secretName is required",
            ),
            (
                vec![
                    "config.kasAddress=wss://kas/",
                    "config.observability.logging.format=yaml",
                ],
                "config.observability.logging.format (yaml) must be json or text",
            ),
        ] {
            let failed = Command::new(helm(version))
                .args(["template", "x", chart, "--set", "config.token=t"])
                .args(sets.iter().flat_map(|s| ["--set", s]))
                .output()
                .unwrap();
            assert!(!failed.status.success(), "{sets:?}");
            let stderr = String::from_utf8_lossy(&failed.stderr);
            assert!(stderr.contains(words), "{sets:?}: {stderr}");
        }

        // Two releases never collide.
        let other = Command::new(helm(version))
            .args(["template", "other", chart])
            .args(base.iter().flat_map(|s| ["--set", s]))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&other.stdout).contains("name: other-gitlab-agent"));

        // A missing token is a clear error.
        let missing = Command::new(helm(version))
            .args(["template", "x", chart, "--set", base[1]])
            .output()
            .unwrap();
        assert!(!missing.status.success());
        assert!(String::from_utf8_lossy(&missing.stderr).contains("config.token is required"));
    }
}
