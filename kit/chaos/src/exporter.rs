//! Faults as Prometheus series, so dashboards can show them as annotations.
//!
//! While `butter-chaos run` runs it serves `GET /metrics` (default `0.0.0.0:9465`, `--metrics`):
//!
//! - `butter_chaos_faults_total{action, target, lan}`: faults injected (a LAN-wide fault counts
//!   once per container it hit; `heal` has `target="all"`);
//! - `butter_chaos_fault_last_timestamp_seconds{action, target, lan}`: when the last one was
//!   injected (Unix seconds).
//!
//! The dashboards' "Chaos faults" annotation is `butter_chaos_fault_last_timestamp_seconds * 1000`
//! with *use series value as timestamp*, so each fault lands at the moment it was injected. The
//! shipped Prometheus config scrapes the driver at `host.docker.internal:9465` (compose) and the
//! kit's host Prometheus (`make monitor`) at `127.0.0.1:9465`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use serde_json::Value;

const LABELS: [&str; 3] = ["action", "target", "lan"];

/// The fault series and the HTTP listener serving them.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
    faults: IntCounterVec,
    last: GaugeVec,
    addr: SocketAddr,
}

/// The LAN a container label (`lan-a-2`, `gw-b`) belongs to.
pub fn lan_of(target: &str) -> String {
    if let Some(l) = target.strip_prefix("gw-") {
        return format!("lan-{l}");
    }
    let mut parts = target.splitn(3, '-');
    match (parts.next(), parts.next()) {
        (Some("lan"), Some(l)) => format!("lan-{l}"),
        _ => String::new(),
    }
}

fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

impl Exporter {
    /// Serves `/metrics` on `addr` from a background thread.
    pub fn start(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| {
            format!("cannot serve chaos metrics on {addr} (in use? pass --metrics off or another address)")
        })?;
        let addr = listener.local_addr()?;
        let faults = IntCounterVec::new(
            Opts::new(
                "butter_chaos_faults_total",
                "Faults injected by butter-chaos.",
            ),
            &LABELS,
        )?;
        let last = GaugeVec::new(
            Opts::new(
                "butter_chaos_fault_last_timestamp_seconds",
                "When the last such fault was injected (Unix seconds).",
            ),
            &LABELS,
        )?;
        let registry = Registry::new();
        registry.register(Box::new(faults.clone()))?;
        registry.register(Box::new(last.clone()))?;
        let shared = registry.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                // One request at a time is plenty for a scraper; a slow client cannot hold the
                // listener for longer than the timeouts.
                let _ = serve(conn, &render(&shared));
            }
        });
        Ok(Exporter {
            registry,
            faults,
            last,
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts a fault-log line (`event` `fault` or `heal`); other events are ignored.
    pub fn observe(&self, line: &Value) {
        let event = line.get("event").and_then(Value::as_str).unwrap_or("");
        let at = line
            .get("ts_unix_ms")
            .and_then(Value::as_u64)
            .map_or(0.0, |ms| ms as f64 / 1000.0);
        let (action, targets): (&str, Vec<&str>) = match event {
            "fault" => (
                line.get("action")
                    .and_then(Value::as_str)
                    .unwrap_or("fault"),
                line.get("targets")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default(),
            ),
            "heal" => ("heal", vec!["all"]),
            _ => return,
        };
        for t in targets {
            let lan = lan_of(t);
            let labels = [action, t, lan.as_str()];
            self.faults.with_label_values(&labels).inc();
            self.last.with_label_values(&labels).set(at);
        }
    }

    /// The exposition text, as served.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

fn serve(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    // Read the request head (bounded); any path gets the metrics.
    let mut buf = [0u8; 4096];
    let mut seen = 0;
    while seen < buf.len() {
        let n = conn.read(&mut buf[seen..])?;
        if n == 0 {
            break;
        }
        seen += n;
        if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lans_come_from_container_labels() {
        assert_eq!(lan_of("lan-a-2"), "lan-a");
        assert_eq!(lan_of("gw-c"), "lan-c");
        assert_eq!(lan_of("all"), "");
    }

    #[test]
    fn faults_are_served_as_series_with_their_time() {
        let e = Exporter::start("127.0.0.1:0".parse().unwrap()).unwrap();
        e.observe(&json!({"event": "fault", "action": "kill", "targets": ["lan-a-1", "gw-b"], "ts_unix_ms": 1_700_000_000_500u64}));
        e.observe(&json!({"event": "fault", "action": "kill", "targets": ["lan-a-1"], "ts_unix_ms": 1_700_000_001_000u64}));
        e.observe(&json!({"event": "heal", "ts_unix_ms": 1_700_000_002_000u64}));
        e.observe(&json!({"event": "sample", "ts_unix_ms": 1u64}));
        let r = butter_testbed::http::get(e.addr(), "/metrics", Duration::from_secs(2)).unwrap();
        assert_eq!(r.status, 200);
        let text = r.text();
        for line in [
            "butter_chaos_faults_total{action=\"kill\",lan=\"lan-a\",target=\"lan-a-1\"} 2",
            "butter_chaos_faults_total{action=\"kill\",lan=\"lan-b\",target=\"gw-b\"} 1",
            "butter_chaos_faults_total{action=\"heal\",lan=\"\",target=\"all\"} 1",
            "butter_chaos_fault_last_timestamp_seconds{action=\"kill\",lan=\"lan-a\",target=\"lan-a-1\"} 1700000001\n",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("sample"));
        // Valid exposition format, where promtool is installed (CI installs it).
        if let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(e.render().as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
