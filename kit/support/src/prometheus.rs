//! Debian's `prometheus` on the host, scraping the node containers by address.
//!
//! The `monitoring` profile's images cannot be pulled where no registry is reachable, but the
//! host reaches every bridge network, so a host Prometheus scrapes the same `/metrics` with the
//! same labels as the shipped config (`job="butter"`, `lan`, `role`, `instance` = `ip:7100`,
//! plus `container`). The config is written as JSON, which is YAML.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::Container;
use crate::http;

/// One scrape target.
#[derive(Debug, Clone)]
pub struct Target {
    /// `ip:7100`.
    pub addr: SocketAddr,
    /// LAN label.
    pub lan: String,
    /// `node` or `gateway`.
    pub role: String,
    /// Container label (`lan-a-1`, `gw-a`).
    pub container: String,
}

impl Target {
    /// The target for a node container (None if it has no LAN address).
    pub fn of(c: &Container) -> Option<Target> {
        Some(Target {
            addr: c.http()?,
            lan: c.lan.clone(),
            role: c.role.as_str().to_string(),
            container: c.label(),
        })
    }
}

/// Where `butter-chaos run` serves its fault series by default (job `chaos`).
pub const CHAOS_METRICS: &str = "127.0.0.1:9465";

/// The host Prometheus config for `targets`, scraped every `interval`, and the chaos driver's
/// fault series at `chaos` (for the dashboards' "Chaos faults" annotation).
pub fn config(targets: &[Target], interval: Duration, chaos: SocketAddr) -> Value {
    let groups: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "targets": [t.addr.to_string()],
                "labels": {"lan": t.lan, "role": t.role, "container": t.container},
            })
        })
        .collect();
    let secs = format!("{}ms", interval.as_millis());
    json!({
        "global": {"scrape_interval": secs, "scrape_timeout": secs, "evaluation_interval": secs},
        "scrape_configs": [{
            "job_name": "butter",
            "metrics_path": "/metrics",
            "static_configs": groups,
        }, {
            "job_name": "chaos",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [chaos.to_string()]}],
        }],
    })
}

/// `promtool check config FILE`.
pub fn promtool_check(path: &Path) -> Result<String> {
    let out = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(path)
        .output()
        .context("running promtool (Debian package `prometheus`)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool check config {}: {}", path.display(), text.trim());
    }
    Ok(text)
}

/// One sample of an instant query: its labels and value (as Prometheus prints it).
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    /// Labels.
    pub metric: std::collections::BTreeMap<String, String>,
    /// `[time, "value"]`.
    pub value: (f64, String),
}

/// A Prometheus process on the host; killed and its data removed on drop.
#[derive(Debug)]
pub struct HostPrometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl HostPrometheus {
    /// Starts `prometheus` scraping `targets` every `interval` (and the chaos driver at its
    /// default address), listening on `127.0.0.1:port` (0 = any free port), and waits until it
    /// is ready.
    pub fn start(targets: &[Target], interval: Duration, port: u16) -> Result<Self> {
        let chaos = CHAOS_METRICS.parse().context("chaos metrics address")?;
        Self::start_with_chaos(targets, interval, port, chaos)
    }

    /// [`HostPrometheus::start`], scraping the chaos driver at `chaos`.
    pub fn start_with_chaos(
        targets: &[Target],
        interval: Duration,
        port: u16,
        chaos: SocketAddr,
    ) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("butter-kit-prom-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data"))?;
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            serde_json::to_vec_pretty(&config(targets, interval, chaos))?,
        )?;
        let port = if port == 0 { free_port()? } else { port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        let p = HostPrometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http::get(addr, "/-/ready", Duration::from_secs(1)).is_ok_and(|r| r.status == 200) {
            if Instant::now() > deadline {
                bail!("prometheus not ready within 20 s; log: {}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(p)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn api<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            status: String,
            data: Option<T>,
            error: Option<String>,
        }
        let r = http::get(self.addr, path, Duration::from_secs(10))?;
        let e: Envelope<T> = serde_json::from_slice(&r.body)
            .with_context(|| format!("prometheus {path}: {}", r.text()))?;
        match (e.status.as_str(), e.data) {
            ("success", Some(d)) => Ok(d),
            _ => bail!("prometheus {path}: {}", e.error.unwrap_or_else(|| r.text())),
        }
    }

    /// An instant query.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        #[derive(Deserialize)]
        struct Data {
            #[serde(rename = "resultType")]
            kind: String,
            result: Value,
        }
        let d: Data = self.api(&format!("/api/v1/query?query={}", http::encode(expr)))?;
        match d.kind.as_str() {
            "vector" => Ok(serde_json::from_value(d.result)?),
            "scalar" => {
                let value: (f64, String) = serde_json::from_value(d.result)?;
                Ok(vec![Sample {
                    metric: Default::default(),
                    value,
                }])
            }
            other => bail!("unexpected result type {other} for {expr}"),
        }
    }

    /// Values of `label` over the series matching `selector` (Grafana's `label_values`).
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>> {
        self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            http::encode(selector)
        ))
    }

    /// Waits until every target has been scraped successfully at least `scrapes` times.
    pub fn wait_scraped(&self, targets: usize, scrapes: u32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let expr = format!(
            "count(count_over_time(up{{job=\"butter\"}}[10m]) >= {scrapes} and on(instance) up == 1)"
        );
        loop {
            let n = self
                .query(&expr)
                .ok()
                .and_then(|s| s.first().and_then(|s| s.value.1.parse::<f64>().ok()))
                .unwrap_or(0.0);
            if n >= targets as f64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {n} of {targets} targets scraped {scrapes} times within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for HostPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_passes_promtool() {
        if Command::new("promtool").arg("--version").output().is_err() {
            eprintln!("SKIPPED: promtool not installed (apt-get install prometheus)");
            return;
        }
        let t = Target {
            addr: "10.210.1.130:7100".parse().unwrap(),
            lan: "lan-a".into(),
            role: "node".into(),
            container: "lan-a-1".into(),
        };
        let path = std::env::temp_dir().join(format!("butter-kit-cfg-{}.yml", std::process::id()));
        std::fs::write(
            &path,
            serde_json::to_vec(&config(
                &[t],
                Duration::from_secs(1),
                CHAOS_METRICS.parse().unwrap(),
            ))
            .unwrap(),
        )
        .unwrap();
        let r = promtool_check(&path);
        let _ = std::fs::remove_file(&path);
        r.unwrap();
    }
}
