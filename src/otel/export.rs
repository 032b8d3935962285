//! The OTLP/HTTP exporter: one thread of its own batches finished spans and POSTs them as
//! `ExportTraceServiceRequest` protobuf to `/v1/traces`, so a slow collector never holds a
//! request; when its queue is full, spans are dropped (and counted in a warning).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;

use super::{Finished, SpanKind, Value};
use crate::config::{OtlpProtocol, TracingConfig};

/// Traces waiting for the exporter; beyond this, new ones are dropped.
const QUEUE: usize = 2048;
/// Spans per export request at most.
const MAX_BATCH: usize = 512;
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Sender {
    tx: mpsc::Sender<Finished>,
    dropped: Arc<AtomicU64>,
}

impl Sender {
    pub fn send(&self, finished: Finished) {
        if self.tx.try_send(finished).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the exporter thread.
pub fn start(endpoint: &str, config: &TracingConfig) -> Result<Sender, String> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let grpc = config.protocol == OtlpProtocol::Grpc;
    let mut client = reqwest::Client::builder().timeout(EXPORT_TIMEOUT);
    if grpc {
        client = client.http2_prior_knowledge();
    }
    let client = client
        .build()
        .map_err(|e| format!("tracing: cannot build the OTLP client: {e}"))?;
    let url = match grpc {
        true => format!("{}/{GRPC_EXPORT}", endpoint.trim_end_matches('/')),
        false => endpoint.to_string(),
    };
    let exporter = Exporter {
        grpc,
        url,
        client,
        resource: resource(config),
        delay: config.batch_delay,
        dropped: dropped.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tracing: cannot start the exporter: {e}"))?;
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(exporter.run(rx)))
        .map_err(|e| format!("tracing: cannot start the exporter: {e}"))?;
    Ok(Sender { tx, dropped })
}

/// The OTLP trace service's method, as gRPC names it.
const GRPC_EXPORT: &str = "opentelemetry.proto.collector.trace.v1.TraceService/Export";

struct Exporter {
    grpc: bool,
    url: String,
    client: reqwest::Client,
    resource: Resource,
    delay: Duration,
    dropped: Arc<AtomicU64>,
}

impl Exporter {
    async fn run(self, mut rx: mpsc::Receiver<Finished>) {
        let mut batch: Vec<Finished> = Vec::new();
        let mut spans = 0;
        loop {
            // Wait for the first trace of a batch, then at most `delay` for more.
            let Some(first) = rx.recv().await else { return };
            spans += first.spans.len();
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.delay;
            while spans < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(f)) => {
                        spans += f.spans.len();
                        batch.push(f);
                    }
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
            self.export(std::mem::take(&mut batch)).await;
            spans = 0;
        }
    }

    async fn export(&self, batch: Vec<Finished>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "tracing: traces dropped, the exporter's queue was full"
            );
        }
        let body = encode(&self.resource, batch);
        let request = match self.grpc {
            // One uncompressed length-prefixed message (gRPC over HTTP/2).
            true => {
                let mut framed = Vec::with_capacity(body.len() + 5);
                framed.push(0);
                framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
                framed.extend_from_slice(&body);
                self.client
                    .post(&self.url)
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .header(http::header::TE, "trailers")
                    .body(framed)
            }
            false => self
                .client
                .post(&self.url)
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body),
        };
        match request.send().await {
            // A refusal in gRPC comes as a trailers-only answer: its status among the headers.
            Ok(resp) if resp.status().is_success() => {
                let status = resp.headers().get("grpc-status").map(|v| v.as_bytes());
                if self.grpc && status.is_some_and(|s| s != b"0") {
                    let status = String::from_utf8_lossy(status.unwrap_or_default()).into_owned();
                    tracing::warn!(grpc_status = %status, "tracing: the OTLP endpoint refused spans");
                }
            }
            Ok(resp) => {
                tracing::warn!(
                    status = resp.status().as_u16(),
                    "tracing: the OTLP endpoint refused spans"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "tracing: cannot reach the OTLP endpoint")
            }
        }
    }
}

fn resource(config: &TracingConfig) -> Resource {
    Resource {
        attributes: super::resource(config)
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k,
                value: Some(AnyValue {
                    value: Some(any_value::Value::String(v)),
                }),
            })
            .collect(),
        dropped_attributes_count: 0,
    }
}

fn encode(resource: &Resource, batch: Vec<Finished>) -> Vec<u8> {
    let spans = batch
        .into_iter()
        .flat_map(|f| {
            let trace_id = f.trace_id.0.to_vec();
            let trace_state = f.trace_state;
            f.spans.into_iter().map(move |s| Span {
                trace_id: trace_id.clone(),
                span_id: s.span_id.0.to_vec(),
                trace_state: trace_state.clone(),
                parent_span_id: if s.parent.is_zero() {
                    Vec::new()
                } else {
                    s.parent.0.to_vec()
                },
                name: s.name,
                kind: match s.kind {
                    SpanKind::Internal => 1,
                    SpanKind::Server => 2,
                    SpanKind::Client => 3,
                },
                start_time_unix_nano: s.start,
                end_time_unix_nano: s.end.max(s.start),
                attributes: s
                    .attributes
                    .into_iter()
                    .map(|(k, v)| KeyValue {
                        key: k.to_string(),
                        value: Some(AnyValue {
                            value: Some(match v {
                                Value::Str(s) => any_value::Value::String(s),
                                Value::Static(s) => any_value::Value::String(s.to_string()),
                                Value::Int(i) => any_value::Value::Int(i),
                                Value::Bool(b) => any_value::Value::Bool(b),
                            }),
                        }),
                    })
                    .collect(),
                status: Some(Status {
                    message: String::new(),
                    // STATUS_CODE_ERROR, or UNSET (the server decides what is an error).
                    code: if s.error { 2 } else { 0 },
                }),
                // W3C trace flags: sampled (every exported span is).
                flags: 1,
            })
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "gatehouse".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

// The OTLP messages (opentelemetry-proto, `collector/trace/v1`, `trace/v1`, `common/v1`,
// `resource/v1`), only the fields written here.

#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
    #[prost(string, tag = "3")]
    schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
struct InstrumentationScope {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    flags: u32,
}

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, tag = "2")]
    message: String,
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3")]
    value: Option<any_value::Value>,
}

mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
    }
}
