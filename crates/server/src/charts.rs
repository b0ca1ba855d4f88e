//! kas as a Helm chart repository: `<external-url>/-/charts/index.yaml`
//! and the packaged `gitlab-agent` chart, so that `helm repo add` works
//! against the user's own kas with no internet.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use glagent_services::urls::Urls;

/// The chart repository's routes.
pub fn router(urls: Urls) -> axum::Router {
    axum::Router::new()
        .route("/-/charts/index.yaml", get(index))
        .route("/-/charts/{file}", get(file))
        .with_state(urls)
}

include!(concat!(env!("OUT_DIR"), "/chart_files.rs"));

/// The chart's version, from its Chart.yaml.
pub fn chart_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| field("version").unwrap_or_else(|| "0.0.0".into()))
}

fn field(name: &str) -> Option<String> {
    let (_, chart) = CHART_FILES.iter().find(|(path, _)| *path == "Chart.yaml")?;
    let text = std::str::from_utf8(chart).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().trim_matches('"').to_string())
}

/// The packaged chart (`gitlab-agent-<version>.tgz`), built once and the
/// same bytes every time (fixed times and owners), so its digest is stable.
pub fn package() -> &'static [u8] {
    static PACKAGE: OnceLock<Vec<u8>> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut archive = tar::Builder::new(encoder);
        for (path, bytes) in CHART_FILES {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_cksum();
            archive
                .append_data(&mut header, format!("gitlab-agent/{path}"), *bytes)
                .expect("writing to memory");
        }
        archive
            .into_inner()
            .and_then(|gz| gz.finish())
            .expect("writing to memory")
    })
}

fn package_name() -> String {
    format!("gitlab-agent-{}.tgz", chart_version())
}

async fn index(State(urls): State<Urls>) -> Response {
    let digest = glagent_core::secret::digest_bytes(package());
    let app_version = field("appVersion").unwrap_or_default();
    let description = field("description").unwrap_or_default();
    let index = format!(
        "apiVersion: v1\nentries:\n  gitlab-agent:\n  - apiVersion: v2\n    name: gitlab-agent\n    version: {version}\n    appVersion: \"{app_version}\"\n    description: \"{description}\"\n    type: application\n    digest: {digest}\n    created: \"2026-01-01T00:00:00Z\"\n    urls:\n    - {charts}/{file}\ngenerated: \"2026-01-01T00:00:00Z\"\n",
        version = chart_version(),
        charts = urls.charts(),
        file = package_name(),
    );
    ([(header::CONTENT_TYPE, "application/yaml")], index).into_response()
}

async fn file(Path(name): Path<String>) -> Response {
    if name == package_name() {
        ([(header::CONTENT_TYPE, "application/gzip")], package()).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("no chart {name}: this repository has {}\n", package_name()),
        )
            .into_response()
    }
}
