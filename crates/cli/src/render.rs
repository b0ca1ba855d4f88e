//! Tables for people.

use glagent_api_types::{Agent, AuditEvent, Connection};

/// One line per agent: name, id, status, versions, warnings.
pub fn agent_table(rows: &[(Agent, Vec<Connection>)]) -> String {
    let mut lines = vec![[
        "NAME".to_string(),
        "ID".into(),
        "STATUS".into(),
        "VERSION".into(),
        "WARNINGS".into(),
    ]];
    for (agent, connections) in rows {
        let status = match connections.len() {
            0 => "not connected".to_string(),
            1 => "connected".to_string(),
            n => format!("connected ({n} pods)"),
        };
        let mut versions: Vec<&str> = connections
            .iter()
            .filter_map(|c| c.metadata.as_ref())
            .map(|info| info.version.as_str())
            .collect();
        versions.sort_unstable();
        versions.dedup();
        let mut warnings: Vec<&str> = connections
            .iter()
            .flat_map(|c| &c.warnings)
            .map(|w| w.message())
            .collect();
        warnings.sort();
        warnings.dedup();
        lines.push([
            agent.name.clone(),
            agent.id.to_string(),
            status,
            if versions.is_empty() {
                "-".into()
            } else {
                versions.join(", ")
            },
            if warnings.is_empty() {
                "-".into()
            } else {
                warnings.join("; ")
            },
        ]);
    }
    table(&lines)
}

/// One line per proxied request, newest first: when, who, as whom, what,
/// the status and how long it took.
pub fn audit_table(events: &[AuditEvent]) -> String {
    let mut lines = vec![[
        "STARTED".to_string(),
        "USER".into(),
        "VIA".into(),
        "AS".into(),
        "VERB".into(),
        "STATUS".into(),
        "DURATION".into(),
        "PATH".into(),
    ]];
    for event in events {
        let via = match &event.ci_job {
            Some(job) => format!(
                "ci_job {} (pipeline {}, project {})",
                job.id, job.pipeline_id, job.project_id
            ),
            None => event.credential.clone(),
        };
        lines.push([
            event.started_at.clone(),
            event.user.username.clone(),
            via,
            event.impersonated_as.clone().unwrap_or_else(|| "agent".into()),
            event.verb.clone(),
            event.status.to_string(),
            format!("{:.1} ms", event.duration_ms),
            event.path.clone(),
        ]);
    }
    table(&lines)
}

/// Columns padded to their widest cell; the last one as it is.
fn table<const N: usize>(lines: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            if i + 1 < N {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use glagent_api_types::{AgentInfo, ConfigProject, ConnectionWarning};
    use glagent_core::version::{mixed_versions_warning, version_warning};

    fn agent(name: &str, id: i64) -> Agent {
        Agent {
            config_project: ConfigProject {
                created_at: String::new(),
                description: String::new(),
                id: 1,
                name: "cluster-config".into(),
                name_with_namespace: "root / cluster-config".into(),
                path: "cluster-config".into(),
                path_with_namespace: "root/cluster-config".into(),
            },
            created_at: String::new(),
            created_by_user_id: Some(1),
            id,
            is_receptive: false,
            name: name.into(),
        }
    }

    fn connection(version: &str, kas: &str, mixed: Option<String>) -> Connection {
        let version_warning = version_warning(version, kas).map(|message| ConnectionWarning::Version { message });
        let mixed = mixed.map(|message| ConnectionWarning::MixedVersions { message });
        Connection {
            agent_id: 1,
            connected_at: String::new(),
            connection_id: 1,
            token_id: 1,
            metadata: Some(AgentInfo {
                version: version.into(),
                ..AgentInfo::default()
            }),
            warnings: version_warning.into_iter().chain(mixed).collect(),
        }
    }

    #[test]
    fn shows_status_and_warnings_for_each_case() {
        let kas = "1.5.0";
        let cases = [
            ("equal", vec!["1.5.2"], None),
            ("older-minor", vec!["1.4.0"], None),
            ("newer-minor", vec!["1.6.0"], None),
            ("two-behind", vec!["1.3.0"], Some("update the agent to 1.5")),
            ("two-ahead", vec!["1.7.0"], Some("newer than kas")),
            ("other-major", vec!["2.5.0"], Some("not compatible")),
            (
                "mixed",
                vec!["1.5.0", "1.4.0"],
                Some("different versions (1.4.0, 1.5.0)"),
            ),
        ];
        let mut rows = Vec::new();
        for (name, versions, _) in &cases {
            let mixed = mixed_versions_warning(versions);
            let connections = versions.iter().map(|v| connection(v, kas, mixed.clone())).collect();
            rows.push((agent(name, rows.len() as i64 + 1), connections));
        }
        rows.push((agent("idle", 99), vec![]));
        let table = agent_table(&rows);
        for (name, _, warning) in &cases {
            let line = table.lines().find(|l| l.starts_with(name)).unwrap();
            match warning {
                None => assert!(line.trim_end().ends_with('-'), "{line}"),
                Some(text) => assert!(line.contains(text), "{line}"),
            }
        }
        assert!(
            table
                .lines()
                .find(|l| l.starts_with("mixed"))
                .unwrap()
                .contains("connected (2 pods)")
        );
        assert!(
            table
                .lines()
                .find(|l| l.starts_with("idle"))
                .unwrap()
                .contains("not connected")
        );
    }
}
