use glagent_core::access::AccessLevel;
use glagent_core::agent_config::{AgentConfig, parse_config};
use glagent_proto::{AgentInfo, KubernetesVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;

const AT: &str = "2026-01-02T03:04:05.678Z";

fn config() -> AgentConfig {
    let yaml = "user_access:\n  access_as:\n    agent: {}\n  projects:\n    - id: top/app\n\
                ci_access:\n  projects:\n    - id: top/app\n      default_namespace: apps\n      \
                access_as:\n        impersonate:\n          username: deployer\n          groups: [ops]\n";
    parse_config("config.yaml", yaml.as_bytes()).unwrap()
}

fn agent() -> Agent {
    Agent {
        config_project: ConfigProject {
            created_at: AT.into(),
            description: "".into(),
            id: 7,
            name: "cluster-config".into(),
            name_with_namespace: "top / cluster-config".into(),
            path: "cluster-config".into(),
            path_with_namespace: "top/cluster-config".into(),
        },
        created_at: AT.into(),
        created_by_user_id: Some(1),
        id: 3,
        is_receptive: false,
        name: "edge".into(),
    }
}

fn connection() -> Connection {
    Connection {
        agent_id: 3,
        connected_at: AT.into(),
        connection_id: 42,
        token_id: 5,
        metadata: Some(AgentInfo {
            connection_id: 42,
            version: "1.3.0".into(),
            commit: "abc".into(),
            pod_namespace: "gitlab-agent".into(),
            pod_name: "edge-0".into(),
            kubernetes_version: Some(KubernetesVersion {
                major: "1".into(),
                minor: "33".into(),
                git_version: "v1.33.0".into(),
                platform: "linux/amd64".into(),
            }),
        }),
        warnings: vec![
            ConnectionWarning::Version {
                message: "update the agent".into(),
            },
            ConnectionWarning::MixedVersions {
                message: "different versions".into(),
            },
        ],
    }
}

fn user(private: bool) -> User {
    User {
        avatar_url: None,
        bot: false,
        created_at: AT.into(),
        email: private.then(|| "root@example.com".into()),
        id: 1,
        is_admin: private.then_some(true),
        locked: false,
        name: "Root".into(),
        state: "active".into(),
        username: "root".into(),
        web_url: "https://kas.test/root".into(),
    }
}

fn agent_token(last_used_at: Option<Option<String>>) -> AgentToken {
    AgentToken {
        agent_id: 3,
        created_at: AT.into(),
        created_by_user_id: Some(1),
        description: None,
        id: 9,
        last_used_at,
        name: "ci".into(),
        status: AgentTokenStatus::Active,
    }
}

fn configuration(valid: bool) -> AgentConfiguration {
    AgentConfiguration {
        agent_id: 3,
        branch: "main".into(),
        commit_id: Some("f".repeat(40)),
        config: valid.then(config),
        error: (!valid).then(|| ConfigurationError {
            column: Some(1),
            line: Some(2),
            message: "config.yaml: line 2, column 1: unknown field `bogus`".into(),
        }),
        file_exists: true,
        path: ".gitlab/agents/edge/config.yaml".into(),
        valid,
    }
}

fn allowed_agents() -> AllowedAgents {
    let entry = config().ci_access.unwrap().projects.remove(0);
    AllowedAgents {
        allowed_agents: vec![
            AllowedAgent {
                config_project: Id { id: 7 },
                configuration: AllowedAgentConfiguration {
                    access_as: entry.access_as,
                    default_namespace: entry.default_namespace,
                },
                id: 3,
            },
            AllowedAgent {
                config_project: Id { id: 7 },
                configuration: AllowedAgentConfiguration::default(),
                id: 4,
            },
        ],
        environment: Some(JobEnvironment {
            slug: "production".into(),
            tier: Some("production".into()),
        }),
        job: Id { id: 100 },
        pipeline: Id { id: 10 },
        project: JobProject {
            groups: vec![Id { id: 2 }],
            id: 7,
        },
        user: JobUser {
            id: 1,
            username: "root".into(),
        },
    }
}

fn namespace() -> Namespace {
    Namespace {
        full_path: "top".into(),
        id: 2,
        kind: NamespaceKind::Group,
        name: "Top".into(),
        parent_id: None,
        path: "top".into(),
        web_url: "https://kas.test/top".into(),
    }
}

/// Serializes, checks the keys come out sorted (as kas has always sent
/// them), and deserializes again.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let text = serde_json::to_string(value).unwrap();
    let sorted = serde_json::to_value(value).unwrap().to_string();
    assert_eq!(text, sorted, "keys out of order");
    assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value, "{text}");
}

#[test]
fn an_agent_is_sent_exactly_as_gitlab_shows_it() {
    assert_eq!(
        serde_json::to_string(&agent()).unwrap(),
        r#"{"config_project":{"created_at":"2026-01-02T03:04:05.678Z","description":"","id":7,"name":"cluster-config","name_with_namespace":"top / cluster-config","path":"cluster-config","path_with_namespace":"top/cluster-config"},"created_at":"2026-01-02T03:04:05.678Z","created_by_user_id":1,"id":3,"is_receptive":false,"name":"edge"}"#
    );
}

#[test]
fn a_connection_is_sent_with_sorted_metadata_and_tagged_warnings() {
    assert_eq!(
        serde_json::to_string(&connection()).unwrap(),
        r#"{"agent_id":3,"connected_at":"2026-01-02T03:04:05.678Z","connection_id":42,"metadata":{"commit":"abc","connection_id":42,"kubernetes_version":{"git_version":"v1.33.0","major":"1","minor":"33","platform":"linux/amd64"},"pod_name":"edge-0","pod_namespace":"gitlab-agent","version":"1.3.0"},"token_id":5,"warnings":[{"version":{"message":"update the agent"}},{"mixed_versions":{"message":"different versions"}}]}"#
    );
    let idle = Connection {
        metadata: None,
        warnings: vec![],
        ..connection()
    };
    assert_eq!(
        serde_json::to_value(&idle).unwrap(),
        json!({"agent_id": 3, "connected_at": AT, "connection_id": 42, "metadata": null, "token_id": 5, "warnings": []})
    );
}

#[test]
fn private_user_fields_and_a_tokens_last_use_are_absent_unless_shown() {
    let public = serde_json::to_value(user(false)).unwrap();
    assert!(
        public.get("email").is_none() && public.get("is_admin").is_none(),
        "{public}"
    );
    let private = serde_json::to_value(user(true)).unwrap();
    assert_eq!(
        (&private["email"], &private["is_admin"]),
        (&json!("root@example.com"), &json!(true))
    );

    let listed = serde_json::to_value(agent_token(None)).unwrap();
    assert!(listed.get("last_used_at").is_none(), "{listed}");
    let never_used = serde_json::to_value(agent_token(Some(None))).unwrap();
    assert_eq!(never_used.get("last_used_at"), Some(&json!(null)));
    for last_used_at in [None, Some(None), Some(Some(AT.to_string()))] {
        round_trip(&agent_token(last_used_at));
    }
}

#[test]
fn every_entity_survives_a_round_trip_with_its_keys_sorted() {
    round_trip(&agent());
    round_trip(&connection());
    round_trip(&crate::AuditEvent {
        agent_id: 3,
        ci_job: Some(crate::AuditJob {
            id: 7001,
            pipeline_id: 71,
            project_id: 4,
        }),
        credential: "ci_job".into(),
        duration_ms: 1.5,
        id: 1,
        impersonated_as: None,
        path: "/api/v1/namespaces".into(),
        started_at: AT.into(),
        status: 200,
        user: crate::AuditUser {
            id: 1,
            username: "root".into(),
        },
        verb: "list".into(),
    });
    round_trip(&user(false));
    round_trip(&user(true));
    round_trip(&configuration(true));
    round_trip(&configuration(false));
    round_trip(&allowed_agents());
    round_trip(&AllowedAgents {
        environment: None,
        ..allowed_agents()
    });
    round_trip(&Member {
        access_level: AccessLevel::Maintainer,
        avatar_url: None,
        bot: false,
        created_at: AT.into(),
        expires_at: None,
        id: 2,
        locked: false,
        name: "Bob".into(),
        state: "active".into(),
        username: "bob".into(),
        web_url: "https://kas.test/bob".into(),
    });
    round_trip(&Group {
        created_at: AT.into(),
        description: "".into(),
        full_name: "top / sub".into(),
        full_path: "top/sub".into(),
        id: 5,
        name: "Sub".into(),
        parent_id: Some(2),
        path: "sub".into(),
        visibility: Visibility::Private,
        web_url: "https://kas.test/groups/top/sub".into(),
    });
    round_trip(&Project {
        created_at: AT.into(),
        creator_id: 1,
        default_branch: "main".into(),
        description: "".into(),
        http_url_to_repo: "https://kas.test/top/app.git".into(),
        id: 7,
        name: "app".into(),
        name_with_namespace: "top / app".into(),
        namespace: namespace(),
        path: "app".into(),
        path_with_namespace: "top/app".into(),
        ssh_url_to_repo: None,
        visibility: Visibility::Private,
        web_url: "https://kas.test/top/app".into(),
    });
    round_trip(&CreatedAgentToken {
        agent_id: 3,
        created_at: AT.into(),
        created_by_user_id: Some(1),
        description: Some("for CI".into()),
        id: 9,
        install_command: "helm upgrade --install edge glagent/gitlab-agent".into(),
        name: "ci".into(),
        status: AgentTokenStatus::Revoked,
        token: "glagent-secret".into(),
    });
    round_trip(&InstallCommand {
        agent_id: 3,
        agent_version: "0.1.0".into(),
        ca_cert: None,
        chart_repository: "https://kas.test/-/charts".into(),
        command: "helm repo add glagent https://kas.test/-/charts".into(),
        kas_address: "wss://kas.test/-/kubernetes-agent/".into(),
    });
    round_trip(&PersonalAccessToken {
        active: true,
        created_at: AT.into(),
        expires_at: Some("2026-02-01".into()),
        id: 4,
        last_used_at: None,
        name: "laptop".into(),
        revoked: false,
        scopes: vec!["api".into(), "k8s_proxy".into()],
        user_id: 1,
    });
    round_trip(&CreatedPersonalAccessToken {
        active: true,
        created_at: AT.into(),
        expires_at: None,
        id: 4,
        name: "laptop".into(),
        revoked: false,
        scopes: vec!["k8s_proxy".into()],
        token: "glpat-secret".into(),
        user_id: 1,
    });
    round_trip(&Metadata {
        enterprise: false,
        kas: KasMetadata {
            enabled: true,
            external_k8s_proxy_url: "https://kas.test/-/kubernetes-agent/k8s-proxy/".into(),
            external_url: "wss://kas.test/-/kubernetes-agent/".into(),
            version: "0.1.0".into(),
        },
        revision: "unknown".into(),
        version: "0.1.0".into(),
    });
    round_trip(&Version {
        revision: "unknown".into(),
        version: "0.1.0".into(),
    });
    round_trip(&CreatedCiJob {
        expires_at: AT.into(),
        job_id: 100,
        pipeline_id: 10,
        project_id: 7,
        token: "glcbt-secret".into(),
    });
    round_trip(&RepositoryFile {
        blob_id: "b".repeat(40),
        commit_id: "c".repeat(40),
        content: "aGk=".into(),
        content_sha256: "0".repeat(64),
        encoding: "base64".into(),
        file_name: "config.yaml".into(),
        file_path: ".gitlab/agents/edge/config.yaml".into(),
        last_commit_id: "d".repeat(40),
        ref_name: "main".into(),
        size: 2,
    });
    round_trip(&CommittedFile {
        branch: "main".into(),
        file_path: "README.md".into(),
    });
    round_trip(&Message::new("404 Project Not Found"));
}

#[test]
fn gitlab_names_survive_the_rust_names() {
    let metadata = serde_json::to_value(KasMetadata {
        enabled: true,
        external_k8s_proxy_url: "p".into(),
        external_url: "u".into(),
        version: "v".into(),
    })
    .unwrap();
    assert_eq!(
        metadata,
        json!({"enabled": true, "externalK8sProxyUrl": "p", "externalUrl": "u", "version": "v"})
    );
    let file = serde_json::to_value(CommittedFile {
        branch: "main".into(),
        file_path: "a".into(),
    })
    .unwrap();
    assert_eq!(file, json!({"branch": "main", "file_path": "a"}));
    assert_eq!(serde_json::to_value(NamespaceKind::User).unwrap(), json!("user"));
    assert_eq!(serde_json::to_value(Visibility::Private).unwrap(), json!("private"));
    assert_eq!(serde_json::to_value(AccessLevel::Developer).unwrap(), json!(30));
}
