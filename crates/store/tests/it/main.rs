//! The store suite, run once against SQLite and once against PostgreSQL.

use glagent_core::access::AccessLevel;
use glagent_core::secret;
use glagent_store::*;

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kas.sqlite3").display());
    let store = Store::connect(&url).await.unwrap();
    (dir, store)
}

async fn postgres() -> Store {
    Store::connect(&glagent_test_support::postgres::fresh_database().await)
        .await
        .unwrap()
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() {
                let (_dir, store) = super::sqlite().await;
                assert_eq!(store.backend(), glagent_store::Backend::Sqlite);
                super::$name(store).await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() {
                let store = super::postgres().await;
                assert_eq!(store.backend(), glagent_store::Backend::Postgres);
                super::$name(store).await;
            })*
        }
    };
}

both_backends!(
    users_and_tokens,
    namespaces_projects_members,
    agents_and_token_limit,
    deleting_a_group_deletes_everything_below,
    pushes_are_recorded,
    agent_routes_expire_and_are_withdrawn,
    environments_are_saved_and_unlinked_from_deleted_agents,
    an_agent_has_at_most_one_url_configuration,
    one_replica_holds_each_receptive_agent_until_it_stops_renewing,
    passwords_and_web_sessions,
    agent_activity_keeps_the_newest_and_reports_a_repeated_error_once,
    revocations_are_read_in_order_after_a_cursor,
    audit_events_are_kept_in_batches_read_newest_first_and_forgotten_after_retention,
    concurrent_token_creations_never_pass_the_limit,
);

async fn user(store: &Store, name: &str) -> User {
    store
        .create_user(&NewUser {
            username: name.into(),
            name: name.into(),
            email: format!("{name}@example.com"),
            is_admin: false,
        })
        .await
        .unwrap()
}

async fn group(store: &Store, path: &str, parent: Option<&Namespace>) -> Namespace {
    let full_path = match parent {
        Some(p) => format!("{}/{path}", p.full_path),
        None => path.to_string(),
    };
    store
        .create_namespace(&NewNamespace {
            kind: NamespaceKind::Group,
            name: path.into(),
            path: path.into(),
            full_path,
            parent_id: parent.map(|p| p.id),
            owner_id: None,
            description: String::new(),
        })
        .await
        .unwrap()
}

async fn project(store: &Store, ns: &Namespace, path: &str, creator: i64) -> Project {
    store
        .create_project(&NewProject {
            namespace_id: ns.id,
            name: path.into(),
            path: path.into(),
            full_path: format!("{}/{path}", ns.full_path),
            description: String::new(),
            default_branch: "main".into(),
            creator_id: creator,
        })
        .await
        .unwrap()
}

async fn users_and_tokens(store: Store) {
    let alice = user(&store, "alice").await;
    let duplicate = store
        .create_user(&NewUser {
            username: "alice".into(),
            name: "x".into(),
            email: String::new(),
            is_admin: false,
        })
        .await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
    let token = secret::new_personal_access_token();
    store
        .create_personal_access_token(&NewPersonalAccessToken {
            user_id: alice.id,
            name: "t".into(),
            scopes: vec!["api".into(), "k8s_proxy".into()],
            token_digest: token.digest(),
            expires_at: None,
        })
        .await
        .unwrap();
    let found = store.personal_access_token_by_digest(&token.digest()).await.unwrap();
    assert_eq!(found.user_id, alice.id);
    assert!(found.has_scope("k8s_proxy") && !found.has_scope("read_api"));
    assert!(found.last_used_at.is_none());
    store.touch_personal_access_token(found.id).await.unwrap();
    let found = store.personal_access_token_by_digest(&token.digest()).await.unwrap();
    assert!(found.last_used_at.is_some());
    assert!(matches!(
        store
            .personal_access_token_by_digest(&secret::digest("glpat-unknown"))
            .await,
        Err(StoreError::NotFound)
    ));
    let page = store.list_users(Page { page: 1, per_page: 10 }).await.unwrap();
    assert_eq!(page.total, 1);
}

async fn namespaces_projects_members(store: Store) {
    let alice = user(&store, "alice").await;
    let top = group(&store, "top", None).await;
    let sub = group(&store, "sub", Some(&top)).await;
    assert_eq!(sub.full_path, "top/sub");
    assert_eq!(store.namespace_by_full_path("top/sub").await.unwrap().id, sub.id);
    let p = project(&store, &sub, "app", alice.id).await;
    assert_eq!(store.project_by_full_path("top/sub/app").await.unwrap().id, p.id);
    store
        .upsert_member(MemberSource::Namespace(top.id), alice.id, AccessLevel::Developer)
        .await
        .unwrap();
    store
        .upsert_member(MemberSource::Namespace(top.id), alice.id, AccessLevel::Maintainer)
        .await
        .unwrap();
    let members = store.members(MemberSource::Namespace(top.id)).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].access_level, AccessLevel::Maintainer);
    assert!(
        store
            .member(MemberSource::Project(p.id), alice.id)
            .await
            .unwrap()
            .is_none()
    );
    store
        .remove_member(MemberSource::Namespace(top.id), alice.id)
        .await
        .unwrap();
    assert!(matches!(
        store.remove_member(MemberSource::Namespace(top.id), alice.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn agents_and_token_limit(store: Store) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", None).await;
    let p = project(&store, &g, "p", alice.id).await;
    let agent = store.create_agent(p.id, "prod", alice.id).await.unwrap();
    assert!(matches!(
        store.create_agent(p.id, "prod", alice.id).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ids = Vec::new();
    for i in 0..2 {
        let token = secret::new_agent_token();
        let created = store
            .create_agent_token(&NewAgentToken {
                agent_id: agent.id,
                name: format!("t{i}"),
                description: None,
                token_digest: token.digest(),
                created_by: alice.id,
            })
            .await
            .unwrap();
        ids.push((created.id, token));
    }
    let third = store
        .create_agent_token(&NewAgentToken {
            agent_id: agent.id,
            name: "t3".into(),
            description: None,
            token_digest: secret::new_agent_token().digest(),
            created_by: alice.id,
        })
        .await;
    assert!(matches!(third, Err(StoreError::Limit(_))), "{third:?}");
    // New tokens are undelivered until their answer is sent or they are
    // used; only undelivered ones older than the cutoff are forgotten.
    let delivered = |id: i64| {
        let store = store.clone();
        async move { store.active_agent_token(agent.id, id).await.unwrap().delivered }
    };
    assert!(!delivered(ids[0].0).await && !delivered(ids[1].0).await);
    let (first_id, first_digest) = (ids[0].0, ids[0].1.digest());
    let (found_token, found_agent) = store.agent_by_token_digest(&first_digest).await.unwrap();
    assert_eq!((found_token.id, found_agent.id), (first_id, agent.id));
    assert!(delivered(first_id).await, "a token used is a token delivered");
    assert!(
        store
            .forget_undelivered_agent_tokens(Timestamp::before_now(std::time::Duration::from_secs(60)))
            .await
            .unwrap()
            .is_empty(),
        "a token created just now is still being sent"
    );
    let forgotten = store
        .forget_undelivered_agent_tokens(Timestamp::from_now(std::time::Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(forgotten.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[1].0]);
    assert!(matches!(
        store.agent_by_token_digest(&ids[1].1.digest()).await,
        Err(StoreError::NotFound)
    ));
    let again = secret::new_agent_token();
    let second = store
        .create_agent_token(&NewAgentToken {
            agent_id: agent.id,
            name: "t2-again".into(),
            description: None,
            token_digest: again.digest(),
            created_by: alice.id,
        })
        .await
        .unwrap();
    store.agent_token_delivered(second.id).await.unwrap();
    assert!(delivered(second.id).await);
    ids[1] = (second.id, again);
    store.revoke_agent_token(agent.id, first_id).await.unwrap();
    assert!(matches!(
        store.active_agent_token(agent.id, first_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.agent_by_token_digest(&first_digest).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .active_agent_tokens(agent.id, Page::default())
            .await
            .unwrap()
            .total,
        1
    );
    // A revoked token frees a slot.
    store
        .create_agent_token(&NewAgentToken {
            agent_id: agent.id,
            name: "t4".into(),
            description: Some("d".into()),
            token_digest: secret::new_agent_token().digest(),
            created_by: alice.id,
        })
        .await
        .unwrap();
    store.delete_agent(p.id, agent.id).await.unwrap();
    assert!(matches!(
        store.agent_by_token_digest(&ids[1].1.digest()).await,
        Err(StoreError::NotFound)
    ));
}

async fn deleting_a_group_deletes_everything_below(store: Store) {
    let alice = user(&store, "alice").await;
    let top = group(&store, "top", None).await;
    let sub = group(&store, "sub", Some(&top)).await;
    let p = project(&store, &sub, "app", alice.id).await;
    store
        .upsert_member(MemberSource::Project(p.id), alice.id, AccessLevel::Developer)
        .await
        .unwrap();
    let agent = store.create_agent(p.id, "a", alice.id).await.unwrap();
    store.delete_namespace(top.id).await.unwrap();
    assert!(matches!(store.project(p.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.namespace(sub.id).await, Err(StoreError::NotFound)));
    assert!(matches!(store.agent(p.id, agent.id).await, Err(StoreError::NotFound)));
    assert!(store.members(MemberSource::Project(p.id)).await.unwrap().is_empty());
}

async fn pushes_are_recorded(store: Store) {
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", None).await;
    let p = project(&store, &g, "p", alice.id).await;
    store
        .record_push(&NewPushEvent {
            project_id: p.id,
            ref_name: "refs/heads/main".into(),
            before_sha: "0".repeat(40),
            after_sha: "a".repeat(40),
            user_id: Some(alice.id),
        })
        .await
        .unwrap();
    let events = store.push_events(p.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].after_sha, "a".repeat(40));
}

async fn agent_routes_expire_and_are_withdrawn(store: Store) {
    use std::time::Duration;
    let alice = user(&store, "alice").await;
    let g = group(&store, "g", None).await;
    let p = project(&store, &g, "p", alice.id).await;
    let agent = store.create_agent(p.id, "a", alice.id).await.unwrap();
    let later = Timestamp::from_now(Duration::from_secs(30));
    store
        .put_agent_route(agent.id, "r1", "http://a:1", later)
        .await
        .unwrap();
    store
        .put_agent_route(agent.id, "r2", "http://b:1", later)
        .await
        .unwrap();
    // A refresh moves the URL and the expiry, it adds no row.
    store
        .put_agent_route(agent.id, "r2", "http://b:2", later)
        .await
        .unwrap();
    assert_eq!(store.agent_routes(agent.id, "r1").await.unwrap(), ["http://b:2"]);
    assert_eq!(
        store.agent_routes(agent.id, "r3").await.unwrap(),
        ["http://a:1", "http://b:2"]
    );
    // Expired rows are not routes.
    let past = Timestamp::now();
    store.put_agent_route(agent.id, "r2", "http://b:2", past).await.unwrap();
    assert_eq!(store.agent_routes(agent.id, "r3").await.unwrap(), ["http://a:1"]);
    store.delete_agent_routes("r1", Some(agent.id)).await.unwrap();
    assert!(store.agent_routes(agent.id, "r3").await.unwrap().is_empty());
    store
        .put_agent_route(agent.id, "r1", "http://a:1", later)
        .await
        .unwrap();
    store.delete_agent_routes("r1", None).await.unwrap();
    assert!(store.agent_routes(agent.id, "r3").await.unwrap().is_empty());
    // A refresh extends this replica's routes and forgets long-dead ones.
    store.put_agent_route(agent.id, "r1", "http://a:1", past).await.unwrap();
    let long_ago: Timestamp = "2000-01-01T00:00:00.000Z".parse().unwrap();
    store
        .put_agent_route(agent.id, "dead", "http://d:1", long_ago)
        .await
        .unwrap();
    let refreshed = store.refresh_agent_routes("r1", later, Timestamp::now()).await.unwrap();
    assert_eq!(refreshed, 1);
    assert_eq!(store.agent_routes(agent.id, "r3").await.unwrap(), ["http://a:1"]);
    let dead_rows = store.refresh_agent_routes("dead", later, long_ago).await.unwrap();
    assert_eq!(dead_rows, 0, "the dead replica's route was deleted");
    // Deleting the agent deletes its routes.
    store
        .put_agent_route(agent.id, "r1", "http://a:1", later)
        .await
        .unwrap();
    store.delete_agent(p.id, agent.id).await.unwrap();
    assert!(store.agent_routes(agent.id, "r3").await.unwrap().is_empty());
}

async fn environments_are_saved_and_unlinked_from_deleted_agents(store: Store) {
    let owner = user(&store, "env-owner").await;
    let ns = group(&store, "envs", None).await;
    let project = project(&store, &ns, "app", owner.id).await;
    let agent = store.create_agent(project.id, "edge", owner.id).await.unwrap();
    let new = NewEnvironment {
        project_id: project.id,
        name: "review/x".into(),
        slug: "review-x-abcdef".into(),
        external_url: Some("https://x.example.com".into()),
        description: None,
        tier: Tier::Development,
        auto_stop_setting: "always".into(),
        cluster_agent_id: Some(agent.id),
        kubernetes_namespace: Some("review-x".into()),
        more_namespaces: vec!["review-x-db".into(), "review-x-cache".into()],
        flux_resource_path: None,
    };
    let created = store.create_environment(&new).await.unwrap();
    assert_eq!(
        (created.state, created.tier),
        (EnvironmentState::Available, Tier::Development)
    );
    assert_eq!(created.cluster_agent_id, Some(agent.id));
    assert_eq!(created.more_namespaces, ["review-x-db", "review-x-cache"]);
    match store.create_environment(&new).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("already been taken"), "{message}"),
        other => panic!("a second environment of the same name: {other:?}"),
    }

    let mut stopped = created.clone();
    stopped.state = EnvironmentState::Stopped;
    stopped.external_url = None;
    stopped.more_namespaces = vec!["review-x-db".into()];
    let saved = store.save_environment(&stopped).await.unwrap();
    assert_eq!(saved.more_namespaces, ["review-x-db"]);
    assert_eq!(
        (saved.state, saved.external_url.as_deref()),
        (EnvironmentState::Stopped, None)
    );
    assert_eq!(saved.name, "review/x", "names never change");
    assert!(saved.updated_at >= created.updated_at);

    store.delete_agent(project.id, agent.id).await.unwrap();
    let unlinked = store.environment(project.id, created.id).await.unwrap();
    assert_eq!(unlinked.cluster_agent_id, None, "deleting the agent unlinks it");
    assert_eq!(store.environments(project.id).await.unwrap().len(), 1);
    store.delete_environment(project.id, created.id).await.unwrap();
    assert!(matches!(
        store.environment(project.id, created.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_environment(project.id, created.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn an_agent_has_at_most_one_url_configuration(store: Store) {
    let owner = user(&store, "receptive-owner").await;
    let ns = group(&store, "receptive", None).await;
    let project = project(&store, &ns, "config", owner.id).await;
    let agent = store.create_agent(project.id, "edge", owner.id).await.unwrap();
    assert_eq!(store.agent_by_name(project.id, "edge").await.unwrap().id, agent.id);
    assert!(matches!(
        store.agent_by_name(project.id, "other").await,
        Err(StoreError::NotFound)
    ));
    assert!(store.url_configuration(agent.id).await.unwrap().is_none());
    let new = NewUrlConfiguration {
        agent_id: agent.id,
        url: "grpcs://agent:8082".into(),
        ca_cert: None,
        tls_host: Some("agent.internal".into()),
        client_cert: None,
        client_key_sealed: None,
        public_key: Some("cHVibGlj".into()),
        private_key_sealed: Some("c2VhbGVk".into()),
        created_by_user_id: owner.id,
    };
    let created = store.create_url_configuration(&new).await.unwrap();
    assert_eq!(store.receptive_agent_ids(project.id).await.unwrap(), [agent.id]);
    assert_eq!(created.tls_host.as_deref(), Some("agent.internal"));
    match store.create_url_configuration(&new).await {
        Err(StoreError::Conflict(message)) => assert_eq!(message, "URL configuration already exists for this agent"),
        other => panic!("a second URL configuration: {other:?}"),
    }
    let all = store.url_configurations().await.unwrap();
    assert_eq!(all.iter().map(|c| c.agent_id).collect::<Vec<_>>(), [agent.id]);
    assert!(matches!(
        store.delete_url_configuration(agent.id, created.id + 1).await,
        Err(StoreError::NotFound)
    ));
    store.create_agent(project.id, "other", owner.id).await.unwrap();
    store.delete_agent(project.id, agent.id).await.unwrap();
    assert!(
        store.url_configurations().await.unwrap().is_empty(),
        "deleted with its agent"
    );
}

async fn one_replica_holds_each_receptive_agent_until_it_stops_renewing(store: Store) {
    let owner = user(&store, "holder-owner").await;
    let ns = group(&store, "holders", None).await;
    let project = project(&store, &ns, "config", owner.id).await;
    let mut agents = Vec::new();
    for name in ["edge-a", "edge-b"] {
        let agent = store.create_agent(project.id, name, owner.id).await.unwrap();
        store
            .create_url_configuration(&NewUrlConfiguration {
                agent_id: agent.id,
                url: "grpc://agent:8082".into(),
                ca_cert: None,
                tls_host: None,
                client_cert: None,
                client_key_sealed: None,
                public_key: Some("cHVibGlj".into()),
                private_key_sealed: Some("c2VhbGVk".into()),
                created_by_user_id: owner.id,
            })
            .await
            .unwrap();
        agents.push(agent.id);
    }
    let later = || Timestamp::from_now(std::time::Duration::from_secs(30));
    assert_eq!(store.hold_receptive_agents("r1", later()).await.unwrap(), agents);
    assert!(
        store.hold_receptive_agents("r2", later()).await.unwrap().is_empty(),
        "held by a live replica"
    );
    assert_eq!(
        store.hold_receptive_agents("r1", later()).await.unwrap(),
        agents,
        "renewed"
    );
    // r1 stops renewing: its rows expire and r2 takes them.
    store
        .hold_receptive_agents("r1", Timestamp::before_now(std::time::Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(store.hold_receptive_agents("r2", later()).await.unwrap(), agents);
    assert!(store.hold_receptive_agents("r1", later()).await.unwrap().is_empty());
    // A released agent is free at once; a deleted configuration is held by no one.
    store.release_receptive_agents("r2").await.unwrap();
    let config = store.url_configuration(agents[0]).await.unwrap().unwrap();
    store.delete_url_configuration(agents[0], config.id).await.unwrap();
    assert_eq!(store.hold_receptive_agents("r1", later()).await.unwrap(), [agents[1]]);
}

async fn passwords_and_web_sessions(store: Store) {
    let alice = user(&store, "alice-web").await;
    assert_eq!(store.user_with_password_digest("alice-web").await.unwrap().1, None);
    store
        .set_password_digest(alice.id, Some("pbkdf2-sha256$1$c2FsdA$aGFzaA"))
        .await
        .unwrap();
    let (found, digest) = store.user_with_password_digest("alice-web").await.unwrap();
    assert_eq!(
        (found.id, digest.as_deref()),
        (alice.id, Some("pbkdf2-sha256$1$c2FsdA$aGFzaA"))
    );
    assert!(matches!(
        store.set_password_digest(alice.id + 1000, None).await,
        Err(StoreError::NotFound)
    ));

    let later = Timestamp::from_now(std::time::Duration::from_secs(3600));
    store.create_web_session("digest-a", alice.id, later).await.unwrap();
    store
        .create_web_session(
            "digest-old",
            alice.id,
            Timestamp::before_now(std::time::Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(store.web_session_user("digest-a").await.unwrap().id, alice.id);
    assert!(
        matches!(store.web_session_user("digest-old").await, Err(StoreError::NotFound)),
        "expired"
    );
    store.delete_web_session("digest-a").await.unwrap();
    assert!(
        matches!(store.web_session_user("digest-a").await, Err(StoreError::NotFound)),
        "signed out"
    );
}

async fn agent_activity_keeps_the_newest_and_reports_a_repeated_error_once(store: Store) {
    let alice = user(&store, "alice-activity").await;
    let g = group(&store, "activity", None).await;
    let p = project(&store, &g, "p", alice.id).await;
    let agent = store.create_agent(p.id, "a", alice.id).await.unwrap();
    let extra = 5;
    for i in 0..Store::AGENT_EVENTS_KEPT + extra {
        store
            .record_agent_event(agent.id, AgentEventKind::Connected, &format!("connection {i}"))
            .await
            .unwrap();
    }
    let events = store.agent_events(agent.id, 1000).await.unwrap();
    assert_eq!(
        events.len() as i64,
        Store::AGENT_EVENTS_KEPT,
        "the oldest are forgotten"
    );
    assert_eq!(
        events[0].detail,
        format!("connection {}", Store::AGENT_EVENTS_KEPT + extra - 1)
    );
    assert_eq!(events.last().unwrap().detail, format!("connection {extra}"));
    assert_eq!(events[0].kind, AgentEventKind::Connected);

    for detail in ["line 2 column 3: bad", "line 2 column 3: bad", "line 4 column 1: worse"] {
        store
            .record_agent_event_once(agent.id, AgentEventKind::ConfigError, detail)
            .await
            .unwrap();
    }
    let errors: Vec<String> = store
        .agent_events(agent.id, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == AgentEventKind::ConfigError)
        .map(|e| e.detail)
        .collect();
    assert_eq!(errors, ["line 4 column 1: worse", "line 2 column 3: bad"]);

    store.delete_agent(p.id, agent.id).await.unwrap();
    store
        .record_agent_event(agent.id, AgentEventKind::Disconnected, "after deletion")
        .await
        .unwrap();
    assert!(store.agent_events(agent.id, 10).await.unwrap().is_empty());
}

async fn revocations_are_read_in_order_after_a_cursor(store: Store) {
    let alice = user(&store, "alice-revocations").await;
    let g = group(&store, "revocations", None).await;
    let p = project(&store, &g, "p", alice.id).await;
    let agent = store.create_agent(p.id, "a", alice.id).await.unwrap();
    let other = store.create_agent(p.id, "b", alice.id).await.unwrap();
    let token = store
        .create_agent_token(&NewAgentToken {
            agent_id: agent.id,
            name: "t".into(),
            description: None,
            token_digest: secret::new_agent_token().digest(),
            created_by: alice.id,
        })
        .await
        .unwrap();
    let start = store.latest_revocation().await.unwrap();
    store.touch_agent_tokens(&[token.id]).await.unwrap();
    assert!(
        store
            .active_agent_token(agent.id, token.id)
            .await
            .unwrap()
            .last_used_at
            .is_some()
    );
    store.revoke_agent_token(agent.id, token.id).await.unwrap();
    store.delete_agent(p.id, other.id).await.unwrap();
    let seen = store.revocations_after(start).await.unwrap();
    assert_eq!(
        seen.iter().map(|r| (r.token_id, r.agent_id)).collect::<Vec<_>>(),
        [(Some(token.id), None), (None, Some(other.id))]
    );
    assert!(store.revocations_after(seen[1].id).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .forget_revocations_older_than(std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(store.revocations_after(start).await.unwrap().is_empty());
}

async fn concurrent_token_creations_never_pass_the_limit(store: Store) {
    let alice = user(&store, "alice-concurrent").await;
    let g = group(&store, "concurrent", None).await;
    let p = project(&store, &g, "p", alice.id).await;
    let agent = store.create_agent(p.id, "a", alice.id).await.unwrap();
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_agent_token(&NewAgentToken {
                        agent_id: agent.id,
                        name: format!("t{i}"),
                        description: None,
                        token_digest: secret::new_agent_token().digest(),
                        created_by: alice.id,
                    })
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::Limit(_)) => {}
            Err(other) => panic!("a concurrent creation failed instead of waiting its turn: {other:?}"),
        }
    }
    assert_eq!(created, 2, "exactly the limit");
    let active = store
        .active_agent_tokens(agent.id, Page { page: 1, per_page: 100 })
        .await
        .unwrap();
    assert_eq!(active.total, 2);
}

async fn audit_events_are_kept_in_batches_read_newest_first_and_forgotten_after_retention(store: Store) {
    let event = |agent_id: i64, verb: &str, started_at: Timestamp| NewAuditEvent {
        agent_id,
        started_at,
        credential: "ci_job".into(),
        user_id: 7,
        username: "wendy".into(),
        project_id: Some(3),
        pipeline_id: Some(4),
        job_id: Some(5),
        impersonated: Some("gitlab:ci_job:5".into()),
        verb: verb.into(),
        path: "/api/v1/namespaces/default/pods".into(),
        status: 200,
        duration_us: 1234,
    };
    let old = Timestamp::before_now(std::time::Duration::from_secs(40 * 86_400));
    let batch = [
        event(901, "list", old),
        event(901, "watch", Timestamp::now()),
        event(902, "get", Timestamp::now()),
    ];
    store.record_audit_events(&batch).await.unwrap();
    let page = store.audit_events(901, Page::default()).await.unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(page.items[0].event, batch[1], "newest first, every field kept");
    assert_eq!(page.items[1].event, batch[0]);
    let forgotten = store
        .forget_audit_events_before(Timestamp::before_now(std::time::Duration::from_secs(30 * 86_400)))
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert_eq!(store.audit_events(901, Page::default()).await.unwrap().total, 1);
    assert_eq!(store.audit_events(902, Page::default()).await.unwrap().total, 1);
    // More rows than one statement holds: each row keeps its own values.
    let many: Vec<NewAuditEvent> = (0..23)
        .map(|i| NewAuditEvent {
            path: format!("/api/v1/namespaces/n{i}/pods"),
            duration_us: i,
            ..event(903, "get", Timestamp::now())
        })
        .collect();
    store.record_audit_events(&many).await.unwrap();
    let page = store.audit_events(903, Page::default()).await.unwrap();
    assert_eq!(page.total, 23);
    assert!(!page.items.is_empty());
    for item in &page.items {
        assert_eq!(item.event, many[item.event.duration_us as usize]);
    }
}
