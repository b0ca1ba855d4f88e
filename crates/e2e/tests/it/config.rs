//! Live configuration: pushes reach every replica at once, broken files
//! keep the last good configuration, and the log level follows the file.

use std::process::Command;
use std::time::{Duration, Instant};

use glagent_test_support::agentk::Agentk;

use crate::{Setup, agentk, until};

#[tokio::test]
async fn a_push_reaches_every_replica_within_a_second() {
    let setup = Setup::new().await;
    let mut replicas = Vec::new();
    for i in 0..2 {
        let mut options = setup.agent_options();
        options.pod_name = Some(format!("agentk-{i}"));
        replicas.push(Agentk::start(&agentk(), options));
    }
    for agent in &mut replicas {
        agent.wait_ready(Duration::from_secs(20)).await;
    }
    until(Duration::from_secs(5), "two connections", async || {
        setup.connections().await.len() == 2
    })
    .await;

    // Through the Files API.
    let mut latencies = Vec::new();
    for round in 0..5 {
        let pushed = Instant::now();
        assert!(
            setup
                .write_config(&format!(
                    "observability:\n  logging:\n    level: info\n# round {round}\n"
                ))
                .await
                .is_success()
        );
        let head = setup.head().await;
        for agent in &replicas {
            until(Duration::from_secs(1), "the new commit on every replica", async || {
                agent.config_commit().await.as_deref() == Some(head.as_str())
            })
            .await;
        }
        latencies.push(pushed.elapsed());
    }

    // Through a real git push.
    let work = tempfile::tempdir().unwrap();
    let remote = format!(
        "https://root:{}@127.0.0.1:{}/{}.git",
        setup.kas.root_token, setup.kas.port, setup.project_path
    );
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(work.path())
            .env("GIT_SSL_CAINFO", setup.kas.ca_file())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    git(&["clone", "-q", &remote, "repo"]);
    let repo = work.path().join("repo");
    std::fs::write(
        repo.join(".gitlab/agents/edge/config.yaml"),
        "observability:\n  logging:\n    level: warn\n",
    )
    .unwrap();
    let in_repo = |args: &[&str]| {
        let mut all = vec!["-C", "repo"];
        all.extend_from_slice(args);
        git(&all)
    };
    in_repo(&["commit", "-qam", "via git"]);
    let pushed = Instant::now();
    in_repo(&["push", "-q", "origin", "main"]);
    let head = in_repo(&["rev-parse", "HEAD"]);
    for agent in &replicas {
        until(
            Duration::from_secs(1),
            "the pushed commit on every replica",
            async || agent.config_commit().await.as_deref() == Some(head.as_str()),
        )
        .await;
    }
    latencies.push(pushed.elapsed());
    latencies.sort();
    println!(
        "config push to 2 replicas: min {:?}, median {:?}, max {:?} over {} pushes",
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_configuration() {
    let setup = Setup::new().await;
    assert!(
        setup
            .write_config("observability:\n  logging:\n    level: debug\n")
            .await
            .is_success()
    );
    let good = setup.head().await;
    let mut agent = setup.start_agent();
    agent.wait_ready(Duration::from_secs(20)).await;
    until(Duration::from_secs(2), "the good configuration", async || {
        agent.config_commit().await.as_deref() == Some(good.as_str())
    })
    .await;
    until(Duration::from_secs(2), "debug logging", async || {
        agent.log().contains("debug logging is on")
    })
    .await;

    assert!(
        setup
            .write_config("observability:\n  logging:\n    level: loud\n")
            .await
            .is_success()
    );
    until(Duration::from_secs(2), "the rejection", async || {
        agent.metric("agentk_configuration_rejections_total").await.as_deref() == Some("1")
    })
    .await;
    assert_eq!(agent.config_commit().await.as_deref(), Some(good.as_str()));
    let log = agent.log();
    assert!(log.contains("keeping the last good configuration"), "{log}");
    assert!(log.contains("loud"), "{log}");
    assert!(setup.kas.log().contains("agent configuration is invalid"));
    assert!(agent.is_ready().await, "a broken file must not make the agent unready");

    // Back to a valid file at level warn: debug lines stop.
    assert!(
        setup
            .write_config("observability:\n  logging:\n    level: warn\n")
            .await
            .is_success()
    );
    let fixed = setup.head().await;
    until(Duration::from_secs(2), "the fixed configuration", async || {
        agent.config_commit().await.as_deref() == Some(fixed.as_str())
    })
    .await;
    let before = agent.log().len();
    assert!(
        setup
            .write_config("observability:\n  logging:\n    level: warn\n# again\n")
            .await
            .is_success()
    );
    let again = setup.head().await;
    until(Duration::from_secs(2), "another update", async || {
        agent.config_commit().await.as_deref() == Some(again.as_str())
    })
    .await;
    let after = agent.log()[before..].to_string();
    assert!(
        !after.contains("configuration applied"),
        "info lines must stop at level warn:\n{after}"
    );
}
