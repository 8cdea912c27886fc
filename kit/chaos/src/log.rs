//! The fault log: one JSON object per line, each with the wall-clock time (`ts_unix_ms`), the
//! time since the run started (`t_secs`) and the event (`event`: `seed`, `fault`, `heal`,
//! `recovered`, …), so a run can be replayed and lined up with Grafana.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An append-only JSON-lines log, shared by the steps and the sampler.
#[derive(Debug)]
pub struct FaultLog {
    out: Mutex<Option<BufWriter<File>>>,
    start: Instant,
    exporter: std::sync::OnceLock<std::sync::Arc<crate::exporter::Exporter>>,
}

impl FaultLog {
    /// Creates (truncates) `path`; `None` logs nowhere (one-shot commands without `--log`).
    pub fn create(path: Option<&Path>, start: Instant) -> Result<Self> {
        let out = match path {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            None => None,
        };
        Ok(FaultLog {
            out: Mutex::new(out),
            start,
            exporter: std::sync::OnceLock::new(),
        })
    }

    /// Appends to `path` (one-shot commands share one log across invocations).
    pub fn append(path: &Path, start: Instant) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(FaultLog {
            out: Mutex::new(Some(BufWriter::new(f))),
            start,
            exporter: std::sync::OnceLock::new(),
        })
    }

    /// Also counts every fault and heal in `exporter` (Prometheus series for annotations).
    pub fn export_to(&self, exporter: std::sync::Arc<crate::exporter::Exporter>) {
        let _ = self.exporter.set(exporter);
    }

    /// Seconds since the run started.
    pub fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Writes `{"ts_unix_ms", "t_secs", "event", ...fields}` and returns it.
    pub fn write(&self, event: &str, fields: Value) -> Value {
        let mut line = Map::new();
        line.insert("ts_unix_ms".into(), json!(unix_ms()));
        line.insert("t_secs".into(), json!((self.t() * 1000.0).round() / 1000.0));
        line.insert("event".into(), json!(event));
        if let Value::Object(f) = fields {
            line.extend(f);
        }
        let line = Value::Object(line);
        if let Some(e) = self.exporter.get() {
            e.observe(&line);
        }
        if let Ok(mut guard) = self.out.lock()
            && let Some(w) = guard.as_mut()
        {
            // The log is evidence: flush every line so a crashed run keeps what it did.
            let _ = writeln!(w, "{line}").and_then(|()| w.flush());
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_timestamps_and_fields() {
        let dir = std::env::temp_dir().join(format!("butter-chaos-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("faults.jsonl");
        let log = FaultLog::create(Some(&path), Instant::now()).unwrap();
        log.write("fault", json!({"action": "kill", "targets": ["lan-a-1"]}));
        log.write("heal", json!({}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "fault");
        assert_eq!(lines[0]["targets"][0], "lan-a-1");
        assert!(
            lines[1]["ts_unix_ms"].as_u64().unwrap() >= lines[0]["ts_unix_ms"].as_u64().unwrap()
        );
        assert!(lines[0]["t_secs"].is_number());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
