//! The one reader of the Prometheus text exposition format (a node's `/metrics`): samples with
//! their labels, and the sums the tools ask for.
//!
//! Enough of the format for what `butter-node` writes: `# HELP`/`# TYPE` lines are skipped,
//! label values may hold escaped quotes, an optional timestamp after the value is ignored.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with any `_bucket`/`_sum`/`_count` suffix).
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// Value (`NaN`, `+Inf` included).
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Every sample, in page order.
    pub samples: Vec<Sample>,
}

impl Page {
    /// Parses a page; lines that are not samples (comments, blank, malformed) are skipped.
    pub fn parse(text: &str) -> Self {
        Page {
            samples: text.lines().filter_map(sample).collect(),
        }
    }

    /// The value of series `name` summed over its label sets; `None` if the page has none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.sum_where(name, |_| true)
    }

    /// The sum over series `name` whose labels pass `keep`; `None` if none does.
    pub fn sum_where(
        &self,
        name: &str,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && keep(&s.labels))
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    (!name.is_empty()).then(|| Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn label_set(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((out, after));
        }
        let (key, rest) = s.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        out.insert(key.trim().to_string(), value);
        s = &rest[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP butter_tasks x\n# TYPE butter_tasks gauge\nbutter_tasks 12\n\
        butter_tasks_total 99\nbutter_groups{state=\"cold\"} 1\n\
        butter_groups{state=\"hot\",note=\"a \\\"b\\\", c\"} 2 1700000000\n\
        butter_rtt_seconds_bucket{le=\"+Inf\"} +Inf\n";

    #[test]
    fn sums_plain_and_labelled_series_and_not_longer_names() {
        let p = Page::parse(PAGE);
        assert_eq!(p.sum("butter_tasks"), Some(12.0));
        assert_eq!(p.sum("butter_groups"), Some(3.0));
        assert_eq!(p.sum("butter_missing"), None);
        assert_eq!(
            p.sum_where("butter_groups", |l| l
                .get("state")
                .is_some_and(|s| s == "hot")),
            Some(2.0)
        );
    }

    #[test]
    fn labels_with_escapes_and_odd_values_parse() {
        let p = Page::parse(PAGE);
        let hot = &p.samples[3];
        assert_eq!(hot.labels["note"], "a \"b\", c");
        assert_eq!(p.samples[4].value, f64::INFINITY);
        assert_eq!(p.samples.len(), 5);
        assert!(Page::parse("broken{x=\"1\" 3\n").samples.is_empty());
    }
}
