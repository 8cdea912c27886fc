//! Span export through the real `butter-node` binary: a small OTLP/HTTP receiver runs inside the
//! test, a node is started with `--otlp-endpoint` pointing at it and stopped with SIGTERM, and the
//! spans it sent (the `node` span closes only at shutdown, so this also proves the flush on exit)
//! are decoded and checked.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One exported span, flattened: its name, its attributes and its resource's attributes.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    name: String,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

fn flatten(attrs: &[KeyValue]) -> HashMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// `POST /v1/traces` with an OTLP protobuf body: decode it and record the spans.
async fn traces(State(received): State<Received>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = Vec::new();
    for rs in request.resource_spans {
        let resource = flatten(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for span in ss.spans {
                spans.push(ReceivedSpan {
                    name: span.name,
                    attributes: flatten(&span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    received.lock().expect("receiver lock").extend(spans);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// Starts the receiver on 127.0.0.1:0 and returns its base URL and the span sink.
async fn start_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// `butter-node run` on loopback ports, alone, logging to `log`.
fn spawn_node(otlp_endpoint: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create log file");
    Command::new(env!("CARGO_BIN_EXE_butter-node"))
        .args(["run", "--otlp-endpoint", otlp_endpoint])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--no-multicast",
            "--alone",
        ])
        .args(["--log-level", "info"])
        // Keep the caller's environment from steering the node or the exporter.
        .env_remove("BUTTER_CONFIG")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn butter-node")
}

/// Waits (without blocking the runtime) for the child to exit, killing it after `limit`.
async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_http_receiver() {
    let (endpoint, received) = start_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("node.log");
    let mut child = spawn_node(&endpoint, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Wait until the node serves, then let it run for a moment.
    let started = Instant::now();
    while !read_log().contains("serving") {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("butter-node exited early with {status}:\n{}", read_log());
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("butter-node did not start within 20 s:\n{}", read_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success(), "kill -TERM failed");
    let stopping = Instant::now();
    let status = wait_exit(&mut child, Duration::from_secs(5)).await;
    let took = stopping.elapsed();
    let log_text = read_log();
    let status = status
        .unwrap_or_else(|| panic!("butter-node did not exit within 5 s of SIGTERM:\n{log_text}"));
    assert!(
        status.success(),
        "butter-node exited with {status} after SIGTERM:\n{log_text}"
    );
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    // Everything is exported before the process exits; allow the receiver a moment to finish
    // recording the last request.
    let deadline = Instant::now() + Duration::from_secs(1);
    let spans = loop {
        let spans = received.lock().expect("receiver lock").clone();
        if spans.iter().any(|s| s.name == "node") || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !spans.is_empty(),
        "no spans arrived at the OTLP receiver; node log:\n{log_text}"
    );
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let node = spans
        .iter()
        .find(|s| s.name == "node")
        .unwrap_or_else(|| panic!("no `node` span among {names:?}; node log:\n{log_text}"));
    assert_eq!(
        node.resource.get("service.name").map(String::as_str),
        Some("butter-node"),
        "{node:?}"
    );
    let id = node
        .attributes
        .get("id")
        .unwrap_or_else(|| panic!("`node` span has no id: {node:?}"));
    assert!(!id.is_empty(), "{node:?}");
}

#[test]
fn invalid_endpoint_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("node.log");
    let status = spawn_node("collector:4318", &log).wait().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "an invalid endpoint was accepted:\n{text}"
    );
    assert!(
        text.contains("log.otlp_endpoint"),
        "the error does not name the key:\n{text}"
    );
}
