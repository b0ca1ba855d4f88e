//! kas's services against a real SQLite store: the role rules that need
//! the namespace tree, and the configuration at HEAD from real git.

use glagent_core::access::AccessLevel;
use glagent_core::agent_config::parse_config;
use glagent_git::{Author, FileChange, FileCommit, Repos};
use glagent_services::Services;
use glagent_services::access::user_access_roles;
use glagent_services::urls::Urls;
use glagent_services::users::create_user;
use glagent_store::{MemberSource, NamespaceKind, NewNamespace, NewProject, Store};

async fn services(dir: &std::path::Path) -> Services {
    let url = format!("sqlite://{}?mode=rwc", dir.join("kas.sqlite3").display());
    let store = Store::connect(&url).await.unwrap();
    let repos = Repos::new(dir.join("repositories")).unwrap();
    let sealer = glagent_services::sealed::Sealer::open_dir(&dir.join("secrets")).unwrap();
    let urls = Urls::new(url::Url::parse("https://kas.test").unwrap(), None);
    Services::new(store, repos, urls, sealer, Default::default())
}

async fn group(services: &Services, path: &str, parent: Option<i64>) -> i64 {
    let full_path = match parent {
        Some(id) => format!("{}/{path}", services.store.namespace(id).await.unwrap().full_path),
        None => path.to_string(),
    };
    services
        .store
        .create_namespace(&NewNamespace {
            kind: NamespaceKind::Group,
            name: path.into(),
            path: path.into(),
            full_path,
            parent_id: parent,
            owner_id: None,
            description: String::new(),
        })
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn roles_are_inherited_down_the_namespace_tree_and_the_highest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let store = &services.store;
    let alice = create_user(store, "alice", "Alice", "", false).await.unwrap();
    let admin = create_user(store, "admin", "Admin", "", true).await.unwrap();
    let top = group(&services, "top", None).await;
    let sub = group(&services, "sub", Some(top)).await;
    let other = group(&services, "other", None).await;
    let project = store
        .create_project(&NewProject {
            namespace_id: sub,
            name: "app".into(),
            path: "app".into(),
            full_path: "top/sub/app".into(),
            description: String::new(),
            default_branch: "main".into(),
            creator_id: admin.id,
        })
        .await
        .unwrap();

    assert_eq!(services.project_access(&alice, &project).await.unwrap(), None);
    store
        .upsert_member(MemberSource::Namespace(top), alice.id, AccessLevel::Reporter)
        .await
        .unwrap();
    assert_eq!(
        services.namespace_access(&alice, sub).await.unwrap(),
        Some(AccessLevel::Reporter)
    );
    assert_eq!(
        services.project_access(&alice, &project).await.unwrap(),
        Some(AccessLevel::Reporter),
        "a member of a group has its role in the subgroups' projects"
    );
    store
        .upsert_member(MemberSource::Project(project.id), alice.id, AccessLevel::Developer)
        .await
        .unwrap();
    assert_eq!(
        services.project_access(&alice, &project).await.unwrap(),
        Some(AccessLevel::Developer)
    );
    store
        .upsert_member(MemberSource::Namespace(sub), alice.id, AccessLevel::Maintainer)
        .await
        .unwrap();
    assert_eq!(
        services.project_access(&alice, &project).await.unwrap(),
        Some(AccessLevel::Maintainer),
        "the highest of direct and inherited roles"
    );
    assert_eq!(services.namespace_access(&alice, other).await.unwrap(), None);
    assert_eq!(
        services.namespace_access(&admin, other).await.unwrap(),
        Some(AccessLevel::Owner)
    );
    let personal = store.user_namespace(alice.id).await.unwrap();
    assert_eq!(
        services.namespace_access(&alice, personal.id).await.unwrap(),
        Some(AccessLevel::Owner),
        "owners of personal namespaces"
    );

    // The places an agent's user_access lists, with the caller's role in each.
    let config = parse_config(
        "config.yaml",
        b"user_access:\n  projects: [{id: top/sub/app}, {id: nowhere/missing}]\n  groups: [{id: top}, {id: other}, {id: alice}]\n",
    )
    .unwrap();
    let roles = user_access_roles(store, &alice, config.user_access.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(roles.projects, [(project.id, AccessLevel::Maintainer)]);
    assert_eq!(
        roles.groups,
        [(top, AccessLevel::Reporter)],
        "no role in `other`; `alice` is a user namespace, not a group"
    );
}

#[tokio::test]
async fn the_configuration_at_head_follows_the_default_branch() {
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let store = &services.store;
    let root = create_user(store, "root", "Root", "", true).await.unwrap();
    let ns = store.user_namespace(root.id).await.unwrap();
    let project = store
        .create_project(&NewProject {
            namespace_id: ns.id,
            name: "config".into(),
            path: "config".into(),
            full_path: "root/config".into(),
            description: String::new(),
            default_branch: "main".into(),
            creator_id: root.id,
        })
        .await
        .unwrap();
    services.repos.create(project.id, "main").await.unwrap();
    let agent = store.create_agent(project.id, "edge", root.id).await.unwrap();

    let head = services.configs.at_head(&project, &agent).await.unwrap();
    assert_eq!((head.commit_id.as_deref(), head.file_exists), (None, false));
    assert_eq!(
        head.parsed.unwrap(),
        Default::default(),
        "no branch yet: the default configuration"
    );

    let mut pushes = services.events.pushes();
    let author = Author {
        name: "Root".into(),
        email: "root@test".into(),
    };
    for (content, valid) in [
        ("user_access: {projects: [{id: root/config}]}\n", true),
        ("user_access: [\n", false),
    ] {
        let change = services.change_repository(project.id).await;
        let update = change
            .repos()
            .commit_file(
                project.id,
                FileCommit {
                    branch: "main",
                    start_branch: None,
                    path: ".gitlab/agents/edge/config.yaml",
                    change: if valid {
                        FileChange::Create(content.as_bytes().to_vec())
                    } else {
                        FileChange::Update(content.as_bytes().to_vec())
                    },
                    message: "config",
                    author: &author,
                },
            )
            .await
            .unwrap();
        change.finish(Some(root.id), std::slice::from_ref(&update)).await;
        let pushed = pushes.recv().await.unwrap();
        assert_eq!(
            (pushed.project_id, pushed.after_sha.as_str()),
            (project.id, update.after.as_str())
        );

        let head = services.configs.at_head(&project, &agent).await.unwrap();
        assert_eq!(head.commit_id.as_deref(), Some(update.after.as_str()));
        assert!(head.file_exists);
        assert_eq!(head.parsed.is_ok(), valid, "{content}");
        let current = services.configs.current(&project, &agent).await;
        match valid {
            true => assert!(current.unwrap().user_access.is_some()),
            // The push emptied the cache: the broken file is seen at once.
            false => assert!(
                current
                    .unwrap_err()
                    .to_string()
                    .contains("the agent configuration is invalid")
            ),
        }
    }
}

fn audit_event(agent_id: i64, n: i64) -> glagent_store::NewAuditEvent {
    glagent_store::NewAuditEvent {
        agent_id,
        started_at: glagent_store::Timestamp::now(),
        credential: "personal_access_token".into(),
        user_id: 1,
        username: "root".into(),
        project_id: None,
        pipeline_id: None,
        job_id: None,
        impersonated: None,
        verb: "get".into(),
        path: format!("/api/v1/namespaces/default/configmaps/c{n}"),
        status: 200,
        duration_us: 1000,
    }
}

async fn audited(store: &Store, agent_id: i64) -> i64 {
    let page = glagent_store::Page { page: 1, per_page: 1 };
    store.audit_events(agent_id, page).await.unwrap().total
}

#[tokio::test]
async fn the_audit_log_gathers_a_trickle_for_a_second_writes_a_full_batch_at_once_and_the_rest_on_stop() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let services = services(dir.path()).await;
    let store = services.store.clone();
    let audit = std::sync::Arc::new(glagent_services::audit::AuditLog::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn({
        let (audit, store) = (audit.clone(), store.clone());
        async move {
            let stopped = async {
                let _ = stopped.await;
            };
            audit.write_until(store, Duration::from_secs(86_400), stopped).await;
        }
    });
    let until = async |count: i64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while audited(&store, 7).await < count {
            assert!(Instant::now() < deadline, "{count} audit events stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // One request: gathered with whatever follows for up to a second.
    let first = Instant::now();
    audit.record(audit_event(7, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audited(&store, 7).await, 0, "an event is gathered, not written alone");
    until(1).await;
    assert!(
        first.elapsed() >= Duration::from_millis(900),
        "written after {:?}",
        first.elapsed()
    );

    // A batch's worth waiting is written without waiting out the second.
    let burst = Instant::now();
    audit.record(audit_event(7, 1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in 2..=600 {
        audit.record(audit_event(7, n));
    }
    until(601).await;
    assert!(
        burst.elapsed() < Duration::from_millis(900),
        "600 events took {:?}",
        burst.elapsed()
    );

    // On stop, what waits is written before the writer ends.
    for n in 601..604 {
        audit.record(audit_event(7, n));
    }
    stop.send(()).unwrap();
    writer.await.unwrap();
    assert_eq!(audited(&store, 7).await, 604);
}
