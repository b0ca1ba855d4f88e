//! Tables for people.

use serde_json::Value;

/// One line per agent: name, id, status, versions, warnings.
pub fn agent_table(rows: &[(Value, Vec<Value>)]) -> String {
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
            .filter_map(|c| c["metadata"]["version"].as_str())
            .collect();
        versions.sort_unstable();
        versions.dedup();
        let mut warnings: Vec<String> = connections
            .iter()
            .flat_map(|c| c["warnings"].as_array().cloned().unwrap_or_default())
            .filter_map(|w| {
                w.as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|v| v["message"].as_str())
                    .map(str::to_string)
            })
            .collect();
        warnings.sort();
        warnings.dedup();
        lines.push([
            agent["name"].as_str().unwrap_or_default().to_string(),
            agent["id"].to_string(),
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
    let widths: Vec<usize> = (0..4)
        .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        for (i, cell) in line.iter().enumerate() {
            if i < 4 {
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
    use glagent_core::version::{mixed_versions_warning, version_warning};
    use serde_json::json;

    fn connection(version: &str, kas: &str, mixed: Option<String>) -> Value {
        let mut warnings = Vec::new();
        if let Some(message) = version_warning(version, kas) {
            warnings.push(json!({"version": {"message": message}}));
        }
        if let Some(message) = mixed {
            warnings.push(json!({"mixed_versions": {"message": message}}));
        }
        json!({"metadata": {"version": version}, "warnings": warnings})
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
            rows.push((json!({"name": name, "id": rows.len() + 1}), connections));
        }
        rows.push((json!({"name": "idle", "id": 99}), vec![]));
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
