//! The daemon's configuration: TOML file < environment < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::telemetry::{LogConfig, LogFormat};

/// The whole config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[node]`: the embedded node's settings.
    pub node: butter::Config,
    /// `[http]`: the API and metrics listener.
    pub http: HttpConfig,
    /// `[log]`: logging and tracing.
    pub log: LogConfig,
}

/// The `[http]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP listener (/metrics, /health, /ready, /peers, /status). Default
    /// `127.0.0.1:7100`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
        }
    }
}

/// Flags of `butter-node run`; each also reads a `BUTTER_*` environment variable.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunArgs {
    /// TOML config file (see `butter-node config` for every key and its default).
    #[arg(long, short, env = "BUTTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// QUIC listen address.
    #[arg(long, env = "BUTTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address for /metrics, /health, /ready, /peers, /status.
    #[arg(long, env = "BUTTER_HTTP")]
    pub http: Option<SocketAddr>,
    /// Data directory (identity key, stored items). Without it the identity is ephemeral.
    #[arg(long, env = "BUTTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Private network mode: the network CA certificate (see `butter-node ca`).
    #[arg(long, env = "BUTTER_NETWORK_CA")]
    pub network_ca: Option<PathBuf>,
    /// Bootstrap peer `host:port` (repeat, or comma-separate in BUTTER_BOOTSTRAP).
    #[arg(long, env = "BUTTER_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Network id; nodes of other networks are ignored.
    #[arg(long, env = "BUTTER_NETWORK")]
    pub network: Option<String>,
    /// Site label for diversity (default: the node's subnet).
    #[arg(long, env = "BUTTER_SITE")]
    pub site: Option<String>,
    /// Turn LAN multicast discovery off.
    #[arg(long, env = "BUTTER_NO_MULTICAST", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub no_multicast: bool,
    /// Multicast group and port.
    #[arg(long, env = "BUTTER_MULTICAST_GROUP")]
    pub multicast_group: Option<SocketAddr>,
    /// Be ready with no peers (a deliberately single node).
    #[arg(long, env = "BUTTER_ALONE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub alone: bool,
    /// Log format.
    #[arg(long, env = "BUTTER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `butter=debug,info`.
    #[arg(long, env = "BUTTER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// OTLP/HTTP endpoint for span export, e.g. `http://127.0.0.1:4318`.
    #[arg(long, env = "BUTTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(#[from] butter::config::ConfigError),
}

/// Parses a config file's text.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, LoadError> {
    toml::from_str(text).map_err(|e| LoadError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().to_string(),
    })
}

/// Loads the file (if any) and applies environment and flags on top, then validates.
pub fn load(args: &RunArgs) -> Result<FileConfig, LoadError> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
            parse(path, &text)?
        }
        None => FileConfig::default(),
    };
    if let Some(v) = args.listen {
        cfg.node.listen = v;
    }
    if let Some(v) = args.http {
        cfg.http.listen = v;
    }
    if let Some(v) = &args.data_dir {
        cfg.node.data_dir = Some(v.clone());
    }
    if let Some(v) = &args.network_ca {
        cfg.node.network_ca = Some(v.clone());
    }
    if !args.bootstrap.is_empty() {
        cfg.node.bootstrap = args
            .bootstrap
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string())
            .collect();
    }
    if let Some(v) = &args.network {
        cfg.node.network = v.clone();
    }
    if let Some(v) = &args.site {
        cfg.node.site = v.clone();
    }
    if args.no_multicast {
        cfg.node.multicast.enabled = false;
    }
    if let Some(v) = args.multicast_group {
        cfg.node.multicast.group = v;
    }
    if args.alone {
        cfg.node.alone = true;
    }
    if let Some(v) = args.log_format {
        cfg.log.format = v;
    }
    if let Some(v) = &args.log_level {
        cfg.log.level = v.clone();
    }
    if let Some(v) = &args.otlp_endpoint {
        cfg.log.otlp_endpoint = v.clone();
    }
    cfg.node.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let text = r#"
            [node]
            listen = "127.0.0.1:7001"
            bootstrap = ["a:7000", "b.example:7000"]
            network = "lab"
            [node.multicast]
            enabled = false
            [node.limits]
            request_timeout = 2.5
            [http]
            listen = "127.0.0.1:7101"
            [log]
            format = "json"
        "#;
        let cfg = parse(Path::new("x.toml"), text).unwrap();
        assert_eq!(cfg.node.network, "lab");
        assert_eq!(
            cfg.node.limits.request_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert!(!cfg.node.multicast.enabled);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(Path::new("x.toml"), "[node]\nlisten_addr = \"1.2.3.4:5\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("listen_addr"), "{msg}");
        assert!(msg.contains("x.toml"), "{msg}");
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[node]\nnetwork = \"file\"\n").unwrap();
        let args = RunArgs {
            config: Some(path),
            network: Some("flag".into()),
            ..RunArgs::default()
        };
        assert_eq!(load(&args).unwrap().node.network, "flag");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let args = RunArgs {
            bootstrap: vec!["no-port".into()],
            ..RunArgs::default()
        };
        let msg = load(&args).unwrap_err().to_string();
        assert!(msg.contains("bootstrap"), "{msg}");
    }
}
