//! Upgraded connections (exec) through kas and agentk: kubectl's exec
//! reaches the real API server through the tunnel and, with a (stand-in)
//! kubelet behind it, runs as the user kas imposes; bytes of an upgraded
//! connection round-trip both ways, with the agent's credentials and the
//! imposed identity on the request that reaches the cluster.

use std::time::Duration;

use glagent_test_support::agentk::Agentk;
use glagent_test_support::kube::KubeEnv;

use crate::support::kubelet::pod_on_a_stand_in_kubelet;
use crate::support::upgrade_echo::{echo_kubeconfig, upgrade_echo_server, upgrade_round_trip};
use crate::support::{Fixture, KUBECTLS, as_admin, kubectl, member, ok};
use crate::{Setup, agentk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_reaches_the_real_api_server_through_the_tunnel() {
    let f = Fixture::start(Some("agent"), "exec-no-host", "ezra").await;
    // A real upgrade request (kubectl exec) reaches the real API server
    // through the tunnel and its answer comes back. No kubelet runs here,
    // so the pod stays unscheduled and the API server refuses the exec.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  containers:\n  - name: main\n    image: busybox\n";
    ok(
        kubectl(
            KUBECTLS[1],
            &KubeEnv::shared().kubeconfig_path(),
            &["-n", &f.ns, "apply", "-f", "-"],
            Some(pod),
        ),
        "pod",
    );
    for bin in KUBECTLS {
        let (ran, _, stderr) = f.kubectl_in_ns(bin, &["exec", "sleeper", "--", "true"], None);
        assert!(!ran);
        assert!(stderr.contains("does not have a host assigned"), "{bin}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_runs_as_the_imposed_user_through_the_real_api_server() {
    let Fixture {
        setup,
        agent: _agent,
        ns,
        pat: _pat,
        kc,
        dir: _dir,
    } = Fixture::start(Some("user"), "exec", "xena").await;
    let kubelet = pod_on_a_stand_in_kubelet(&ns).await;
    // The exec runs as the user kas imposes: refused by the API server until
    // RBAC lets the project's developers exec.
    let refused = kubectl(
        KUBECTLS[1],
        &kc,
        &["-n", &ns, "exec", "shell", "--", "echo", "no"],
        None,
    );
    assert!(!refused.0, "{refused:?}");
    assert!(refused.2.contains("User \"gitlab:user:xena\""), "{}", refused.2);
    let developers = format!("--group=gitlab:project_role:{}:developer", setup.project_id);
    as_admin(
        &ns,
        &[
            "create",
            "role",
            "exec",
            "--verb=get,create",
            "--resource=pods,pods/exec",
        ],
    );
    as_admin(&ns, &["create", "rolebinding", "exec", "--role=exec", &developers]);
    let exec = || {
        kubectl(
            KUBECTLS[1],
            &kc,
            &["-n", &ns, "exec", "shell", "--", "echo", "hello", "from the kubelet"],
            None,
        )
    };
    let mut last = exec();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !last.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = exec();
    }
    assert_eq!(last.1, "hello from the kubelet\n", "stderr: {}", last.2);
    let served = kubelet.paths.lock().unwrap().clone();
    assert!(
        served
            .iter()
            .any(|p| p.starts_with(&format!("/exec/{ns}/shell/main?")) && p.contains("command=echo")),
        "the API server's request to the kubelet: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_carry_bytes_both_ways() {
    let setup = Setup::new().await;
    let config = format!(
        "user_access:\n  access_as:\n    user: {{}}\n  projects:\n    - id: {}\n",
        setup.project_path
    );
    assert!(setup.write_config(&config).await.is_success());
    let (port, head) = upgrade_echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = setup.agent_options();
    options.kubeconfig = Some(echo_kubeconfig(port, dir.path()));
    let mut agent = Agentk::start(&agentk(), options);
    agent.wait_ready(Duration::from_secs(20)).await;
    let pat = member(&setup, "eve", 30, &["k8s_proxy"]).await;

    upgrade_round_trip(&setup.kas, setup.agent_id, &pat).await;
    let head = head.await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("post /api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true http/1.1"),
        "{head}"
    );
    assert!(
        head.contains("authorization: bearer agent-sa-token"),
        "the agent's own credentials: {head}"
    );
    assert!(head.contains("impersonate-user: gitlab:user:eve"), "{head}");
    assert!(
        !head.contains(&pat.to_ascii_lowercase()),
        "the user's token must not reach the cluster"
    );
}
