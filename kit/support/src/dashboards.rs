//! The Grafana dashboards in `dashboards/`: every panel's queries and the template variables, so
//! a test can run each query against a real Prometheus the way Grafana would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Query {
    /// The panel's title.
    pub panel: String,
    /// The target's refId.
    pub ref_id: String,
    /// The PromQL, with template variables unsubstituted.
    pub expr: String,
}

/// A template variable of type `query`.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Name (`lan`, `node`).
    pub name: String,
    /// Its `label_values(selector, label)` query.
    pub query: String,
    /// The regex it stands for when "All" is selected.
    pub all_value: Option<String>,
}

impl Variable {
    /// `(selector, label)` of a `label_values(selector, label)` query.
    pub fn label_values(&self) -> Option<(String, String)> {
        let inner = self
            .query
            .trim()
            .strip_prefix("label_values(")?
            .strip_suffix(')')?;
        let (selector, label) = inner.rsplit_once(',')?;
        Some((selector.trim().to_string(), label.trim().to_string()))
    }
}

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Its file.
    pub file: PathBuf,
    /// Its title.
    pub title: String,
    /// Its uid.
    pub uid: String,
    /// Query variables, in order (later ones may refer to earlier ones).
    pub variables: Vec<Variable>,
    /// Every panel query (rows' nested panels included).
    pub queries: Vec<Query>,
    /// Panels (not rows) without any query.
    pub empty_panels: Vec<String>,
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn collect(panels: &[Value], queries: &mut Vec<Query>, empty: &mut Vec<String>) {
    for p in panels {
        let title = str_of(p, "title");
        if str_of(p, "type") == "row" {
            if let Some(nested) = p.get("panels").and_then(Value::as_array) {
                collect(nested, queries, empty);
            }
            continue;
        }
        let mut any = false;
        for t in p
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let expr = str_of(t, "expr");
            if expr.is_empty() {
                continue;
            }
            any = true;
            queries.push(Query {
                panel: title.clone(),
                ref_id: str_of(t, "refId"),
                expr,
            });
        }
        if !any {
            empty.push(title);
        }
    }
}

impl Dashboard {
    /// Parses one dashboard JSON file.
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        let mut variables = Vec::new();
        for t in v
            .pointer("/templating/list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if str_of(t, "type") != "query" {
                continue;
            }
            let query = match t.get("query") {
                Some(Value::String(s)) => s.clone(),
                Some(q) => str_of(q, "query"),
                None => String::new(),
            };
            variables.push(Variable {
                name: str_of(t, "name"),
                query,
                all_value: t.get("allValue").and_then(Value::as_str).map(String::from),
            });
        }
        let mut queries = Vec::new();
        let mut empty_panels = Vec::new();
        collect(
            v.get("panels")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice),
            &mut queries,
            &mut empty_panels,
        );
        Ok(Dashboard {
            file: file.to_path_buf(),
            title: str_of(&v, "title"),
            uid: str_of(&v, "uid"),
            variables,
            queries,
            empty_panels,
        })
    }

    /// Every `*.json` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no dashboards in {}", dir.display());
        }
        files.iter().map(|f| Dashboard::load(f)).collect()
    }
}

/// Grafana's built-in interval variables, as the test substitutes them: a window wide enough for
/// several scrapes at any interval the kit uses.
pub fn builtins() -> BTreeMap<String, String> {
    [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "5m"),
        ("__range_s", "300"),
        ("__interval_ms", "15000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Replaces `$name`, `${name}` and `[[name]]` with `values[name]`; longest names first so
/// `$__range_s` is not read as `$__range` + `_s`.
pub fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for n in names {
        let v = &values[n];
        out = out
            .replace(&format!("${{{n}}}"), v)
            .replace(&format!("[[{n}]]"), v);
        // `$name` only where the next character cannot continue a name.
        let pat = format!("${n}");
        let mut s = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&pat) {
            let after = &rest[i + pat.len()..];
            let continues = after
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            s.push_str(&rest[..i]);
            s.push_str(if continues { &pat } else { v });
            rest = after;
        }
        s.push_str(rest);
        out = s;
    }
    out
}

/// The `butter_*` metric names an expression refers to (histogram suffixes kept).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("butter_") {
        let start = i + off;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary && !out.iter().any(|n| n == &expr[start..end]) {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{dashboards_dir, repo_root};

    #[test]
    fn substitution_respects_name_boundaries() {
        let mut v = builtins();
        v.insert("lan".into(), ".*".into());
        v.insert("node".into(), "10.0.0.1:7100".into());
        let e = r#"rate(x{lan=~"$lan", instance=~"${node}"}[$__rate_interval]) $__range_s $lane"#;
        assert_eq!(
            substitute(e, &v),
            r#"rate(x{lan=~".*", instance=~"10.0.0.1:7100"}[1m]) 300 $lane"#
        );
    }

    #[test]
    fn metric_names_are_found() {
        assert_eq!(
            metric_names("sum(butter_a_total{x=\"butter_no\"}) / rate(butter_b_bucket[1m])"),
            vec!["butter_a_total", "butter_no", "butter_b_bucket"]
        );
    }

    /// Fast checks on the shipped dashboards; the compose tier runs every query for real.
    #[test]
    fn shipped_dashboards_have_lan_and_node_variables_and_only_panels_with_queries() {
        let boards = Dashboard::load_dir(&dashboards_dir(&repo_root())).unwrap();
        assert!(boards.len() >= 3);
        let mut uids = std::collections::BTreeSet::new();
        for b in &boards {
            assert!(uids.insert(b.uid.clone()), "duplicate uid {}", b.uid);
            let names: Vec<&str> = b.variables.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, ["lan", "node"], "{}", b.title);
            for v in &b.variables {
                assert!(v.label_values().is_some(), "{}: {}", b.title, v.query);
            }
            assert!(
                b.empty_panels.is_empty(),
                "{}: {:?}",
                b.title,
                b.empty_panels
            );
            assert!(!b.queries.is_empty(), "{}", b.title);
            for q in &b.queries {
                assert!(
                    q.expr.contains("$lan") && q.expr.contains("$node"),
                    "{} / {}: every query follows the LAN and node selectors: {}",
                    b.title,
                    q.panel,
                    q.expr
                );
                assert!(!metric_names(&q.expr).is_empty() || q.expr.contains("up{"));
            }
        }
    }
}
