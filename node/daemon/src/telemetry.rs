//! Logging and tracing setup: text or JSON logs, and optional OTLP span export.
//!
//! Every span the filter lets through goes to the log writer (stderr) and, when
//! `log.otlp_endpoint` is set, to an OpenTelemetry collector over OTLP/HTTP (protobuf). The
//! exporter uses hyper's plain-HTTP client and a batch span processor running on the daemon's tokio
//! runtime; there is no gRPC and no TLS stack, so point it at a collector on a trusted network
//! (typically an agent on the same host or pod).

use std::sync::mpsc;
use std::time::Duration;

use axum::http::Uri;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long one export request may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long dropping the guard waits for the last spans to leave: the whole daemon shutdown must
/// fit in 5 s, and the node itself may take up to 3 s of that.
const FLUSH_DEADLINE: Duration = Duration::from_secs(1);
/// The OTLP/HTTP path for spans, appended to a base endpoint.
const TRACES_PATH: &str = "/v1/traces";

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
    ///
    /// A base URL gets `/v1/traces` appended; a URL already ending in `/v1/traces` is used as is.
    /// Only `http://` is supported.
    pub otlp_endpoint: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
            otlp_endpoint: String::new(),
        }
    }
}

/// A `[log]` value that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `log.level` is not a tracing filter.
    #[error("log.level: {source}; try `info` or `butter=debug,info`")]
    Level {
        /// The filter parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// `log.otlp_endpoint` is not a usable OTLP/HTTP URL.
    #[error("log.otlp_endpoint: {reason} (got `{value}`; expected e.g. `http://127.0.0.1:4318`)")]
    OtlpEndpoint {
        /// The configured value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl LogConfig {
    /// Checks the filter and the OTLP endpoint without installing anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        EnvFilter::try_new(&self.level).map_err(|source| ConfigError::Level { source })?;
        self.traces_endpoint()?;
        Ok(())
    }

    /// The full URL spans are POSTed to, or `None` when export is off.
    pub fn traces_endpoint(&self) -> Result<Option<String>, ConfigError> {
        let value = self.otlp_endpoint.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let invalid = |reason: &str| ConfigError::OtlpEndpoint {
            value: value.to_string(),
            reason: reason.into(),
        };
        let uri: Uri = value
            .parse()
            .map_err(|e| invalid(&format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported (this build has no TLS client for OTLP); use http://",
                ));
            }
            Some(_) => return Err(invalid("the scheme must be http")),
            None => return Err(invalid("missing scheme; write http://host:port")),
        }
        let Some(authority) = uri.authority() else {
            return Err(invalid("missing host"));
        };
        if authority.host().is_empty() {
            return Err(invalid("missing host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string is not allowed"));
        }
        let path = uri.path().trim_end_matches('/');
        let path = if path.ends_with(TRACES_PATH) {
            path.to_string()
        } else {
            format!("{path}{TRACES_PATH}")
        };
        Ok(Some(format!("http://{authority}{path}")))
    }
}

/// Keeps the span exporter alive; flushes pending spans and shuts the exporter down when dropped.
///
/// Drop it last, after the node span has closed, so that span is exported too.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The batch processor's task runs on the tokio runtime while `shutdown` blocks waiting for
        // it, so block a helper thread rather than (possibly) a runtime worker, and give up after a
        // deadline so an unreachable collector cannot stall the daemon's exit.
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("otlp-shutdown".into())
            .spawn(move || {
                let _ = done_tx.send(provider.shutdown_with_timeout(FLUSH_DEADLINE));
            });
        if spawned.is_err() {
            eprintln!(
                "warning: cannot start the span exporter's shutdown thread; pending spans are lost"
            );
            return;
        }
        match done_rx.recv_timeout(FLUSH_DEADLINE + Duration::from_millis(100)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: span export shutdown: {e}"),
            Err(_) => eprintln!(
                "warning: span export did not finish within {FLUSH_DEADLINE:?}; pending spans are lost"
            ),
        }
    }
}

/// Installs the global subscriber: the log writer, and the OTLP span exporter when
/// `cfg.otlp_endpoint` is set. `service` becomes the `service.name` resource attribute.
///
/// Must be called inside the tokio runtime (the exporter's batch task is spawned on it).
pub fn init(cfg: &LogConfig, service: &str) -> anyhow::Result<TelemetryGuard> {
    cfg.validate()?;
    let filter = EnvFilter::try_new(&cfg.level).map_err(|source| ConfigError::Level { source })?;
    let provider = match cfg.traces_endpoint()? {
        Some(endpoint) => Some(tracer_provider(&endpoint, service)?),
        None => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_string())));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let fmt_layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Text => registry.with(fmt_layer).try_init(),
        LogFormat::Json => registry.with(fmt_layer.json()).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))?;
    Ok(TelemetryGuard { provider })
}

/// An OTLP/HTTP (protobuf) span pipeline: exporter → batch processor on tokio → provider.
fn tracer_provider(endpoint: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("log.otlp_endpoint: cannot build the span exporter: {e}"))?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(value: &str) -> Result<Option<String>, ConfigError> {
        LogConfig {
            otlp_endpoint: value.into(),
            ..LogConfig::default()
        }
        .traces_endpoint()
    }

    fn url(value: &str) -> String {
        endpoint(value).expect(value).expect(value)
    }

    #[test]
    fn empty_endpoint_means_off() {
        assert_eq!(endpoint("").expect("empty"), None);
        assert_eq!(endpoint("  ").expect("blank"), None);
    }

    #[test]
    fn base_endpoint_gets_the_traces_path() {
        assert_eq!(
            url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(url("http://c/otlp"), "http://c/otlp/v1/traces");
        assert_eq!(url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn invalid_endpoints_name_the_key() {
        for bad in [
            "collector:4318",
            "127.0.0.1:4318",
            "https://c:4318",
            "ftp://c",
            "http://",
            "not a url",
            "http://c?x=1",
        ] {
            let err = endpoint(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.starts_with("log.otlp_endpoint: "), "{bad}: {msg}");
            assert!(msg.contains(bad), "{bad}: {msg}");
        }
    }

    #[test]
    fn bad_level_names_the_key() {
        let cfg = LogConfig {
            level: "info,=[".into(),
            ..LogConfig::default()
        };
        assert!(
            cfg.validate()
                .expect_err("bad filter")
                .to_string()
                .starts_with("log.level: ")
        );
    }
}
