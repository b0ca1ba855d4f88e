//! The real python-gitlab client (library and `gitlab` CLI) against kas.

use std::process::Command;

use crate::start_kas;

#[tokio::test]
async fn python_gitlab_library_and_cli() {
    let python = std::env::var("GLAGENT_PYTHON")
        .expect("GLAGENT_PYTHON is not set: run the tests with scripts/test.sh, which installs python-gitlab");
    let kas = start_kas().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/python_gitlab_client.py");
    let work = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking({
        let url = kas.url.clone();
        let token = kas.root_token.clone();
        let ca = kas.ca_file();
        let work = work.path().to_path_buf();
        move || {
            Command::new(&python)
                .arg(script)
                .env("KAS_URL", url)
                .env("KAS_TOKEN", token)
                .env("KAS_CA", ca)
                .env("WORK_DIR", work)
                .output()
                .expect("running python")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python-gitlab checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all python-gitlab checks passed"), "{stdout}");
}
