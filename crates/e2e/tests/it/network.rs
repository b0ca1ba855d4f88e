//! Proxies and broken networks.

use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::connect_proxy::ConnectProxy;

use crate::{Setup, agentk, until};

#[tokio::test]
async fn through_a_connect_proxy_and_around_it() {
    let setup = Setup::new().await;
    let proxy = ConnectProxy::start().await;

    let mut options = setup.agent_options();
    options.env = vec![("HTTPS_PROXY".into(), proxy.url())];
    let mut proxied = Agentk::start(&agentk(), options);
    proxied.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(proxy.tunnels(), 1, "the agent must go through the proxy");
    drop(proxied);

    let mut options = setup.agent_options();
    options.env = vec![
        ("https_proxy".into(), proxy.url()),
        ("NO_PROXY".into(), "localhost,127.0.0.1".into()),
    ];
    let mut direct = Agentk::start(&agentk(), options);
    direct.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(proxy.tunnels(), 1, "NO_PROXY must bypass the proxy");
    drop(direct);

    proxy.set_refuse(true);
    let mut options = setup.agent_options();
    options.env = vec![("HTTPS_PROXY".into(), proxy.url())];
    let refused = Agentk::start(&agentk(), options);
    until(Duration::from_secs(10), "a proxy refusal in the log", async || {
        refused.log().contains("refused to open a tunnel")
    })
    .await;
    assert!(refused.log().contains("403 Forbidden"), "{}", refused.log());
}

/// Cuts the network for 30 s; the agent notices, reconnects when the
/// network is back, and holds no more memory or tasks than before.
#[tokio::test]
async fn a_network_cut_ends_in_a_reconnect_without_growth() {
    let setup = Setup::new().await;
    let proxy = ConnectProxy::start().await;
    let mut options = setup.agent_options();
    options.env = vec![("HTTPS_PROXY".into(), proxy.url())];
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = agent.rss_kib().unwrap();
    let tasks_before: u64 = agent.metric("agentk_tokio_alive_tasks").await.unwrap().parse().unwrap();

    proxy.set_cut(true);
    let noticed = until(Duration::from_secs(60), "the agent to notice the cut", async || {
        !agent.is_connected().await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(noticed)).await;
    proxy.set_cut(false);
    let back = until(Duration::from_secs(45), "the agent to reconnect", async || {
        agent.is_ready().await
    })
    .await;
    until(
        Duration::from_secs(60),
        "kas to forget the dead connection",
        async || setup.connections().await.len() == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = agent.rss_kib().unwrap();
    let tasks_after: u64 = agent.metric("agentk_tokio_alive_tasks").await.unwrap().parse().unwrap();
    println!(
        "network cut: noticed after {noticed:?}, reconnected {back:?} after the network came back; \
         RSS {rss_before} KiB -> {rss_after} KiB; tasks {tasks_before} -> {tasks_after}"
    );
    assert!(proxy.tunnels() >= 2, "the agent reconnects through the proxy");
    assert!(
        tasks_after <= tasks_before,
        "tasks grew from {tasks_before} to {tasks_after}"
    );
    assert!(
        rss_after <= rss_before + 2048,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
