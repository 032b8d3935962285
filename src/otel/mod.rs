//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when `[tracing] otlp_endpoint`
//! is set (`docs/tracing.md`).
//!
//! No tracing crate layer is involved: a request that is traced carries one
//! [`RequestTrace`] (boxed, in [`crate::pipeline::Judged`]) that collects its finished spans,
//! and hands them to the exporter thread when the request is logged. With tracing off, the
//! process-wide tracer is never set: a request has no trace object and every stage pays one
//! `Option` check.
//!
//! Outbound calls (OIDC discovery, JWKS, token endpoint, introspection) find their parent
//! span through a task-local the pipeline sets around the stage that awaits them; calls made
//! outside a request (key refresh, discovery at start) are traces of their own.

mod export;
pub mod propagation;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use crate::config::TracingConfig;
pub use propagation::{SpanId, TraceId, Traceparent};

/// The tracer of this process: set once at start when `otlp_endpoint` is configured.
static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Tracing is on (one atomic load).
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Starts the exporter; later calls (and calls with tracing off) do nothing.
pub fn init(config: &TracingConfig) -> Result<(), String> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(());
    };
    if TRACER.get().is_some() {
        return Ok(());
    }
    let sender = export::start(endpoint, config)?;
    let _ = TRACER.set(Tracer {
        threshold: ratio_threshold(config.sampling_ratio),
        sender,
    });
    Ok(())
}

struct Tracer {
    /// A new trace is sampled when its id's last 63 bits are below this.
    threshold: u64,
    sender: export::Sender,
}

/// `sampling_ratio` as a bound on the last 63 bits of a trace id (as OpenTelemetry's
/// `TraceIdRatioBased` sampler compares them).
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * (1u64 << 63) as f64) as u64
    }
}

impl Tracer {
    fn samples(&self, trace_id: &TraceId) -> bool {
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&trace_id.0[8..]);
        (u64::from_be_bytes(tail) >> 1) < self.threshold
    }
}

/// Nanoseconds since the Unix epoch, as OTLP wants timestamps.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    Static(&'static str),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Static(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub span_id: SpanId,
    /// Zero for a root span.
    pub parent: SpanId,
    pub name: String,
    pub kind: SpanKind,
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub error: bool,
}

/// The spans of one trace, as the exporter receives them.
#[derive(Debug)]
pub struct Finished {
    pub trace_id: TraceId,
    pub trace_state: String,
    pub spans: Vec<SpanData>,
}

/// The trace of one request: its ids, the spans finished so far, and the attributes the
/// next stage span ends with.
#[derive(Debug)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The request's (server) span.
    pub span_id: SpanId,
    /// The client's span when it sent a valid `traceparent`.
    pub parent: SpanId,
    /// Exported (and said so to the upstream) or only propagated.
    pub sampled: bool,
    /// The client's `tracestate`, passed on unchanged with a valid `traceparent`.
    pub trace_state: Option<HeaderValue>,
    /// The span of the upstream call, named in the upstream's `traceparent`.
    pub upstream_span: SpanId,
    pub upstream_start: u64,
    pub start: u64,
    spans: Vec<SpanData>,
    pending: Vec<(&'static str, Value)>,
}

/// Where a stage span began: None when the request is not sampled (nothing is recorded).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub span_id: SpanId,
    pub start: u64,
}

impl RequestTrace {
    /// A trace for a request with these headers, when tracing is on: a trusted peer's valid
    /// `traceparent` is continued (its sampled flag decides), else a new trace begins (and
    /// the client's `traceparent` and `tracestate` go no further).
    pub fn start(headers: &HeaderMap, continue_incoming: bool) -> Option<Box<RequestTrace>> {
        let tracer = TRACER.get()?;
        let incoming = propagation::incoming(headers).filter(|_| continue_incoming);
        let (trace_id, parent, sampled, trace_state) = match incoming {
            Some((tp, state)) => (tp.trace_id, tp.span_id, tp.sampled(), state),
            None => {
                let id = TraceId::random();
                (id, SpanId::ZERO, tracer.samples(&id), None)
            }
        };
        Some(Box::new(RequestTrace {
            trace_id,
            span_id: SpanId::random(),
            parent,
            sampled,
            trace_state,
            upstream_span: SpanId::random(),
            upstream_start: 0,
            start: now(),
            spans: Vec::new(),
            pending: Vec::new(),
        }))
    }

    /// The beginning of a span under the request span; None when nothing is recorded.
    pub fn mark(&self) -> Option<Mark> {
        self.sampled.then(|| Mark {
            span_id: SpanId::random(),
            start: now(),
        })
    }

    /// An attribute of the stage span that ends next.
    pub fn attr(&mut self, key: &'static str, value: impl Into<Value>) {
        if self.sampled {
            self.pending.push((key, value.into()));
        }
    }

    /// Ends a stage span begun at `mark`, with the attributes noted since.
    pub fn end(&mut self, mark: Option<Mark>, name: &'static str, error: bool) {
        let Some(mark) = mark else { return };
        let attributes = std::mem::take(&mut self.pending);
        self.spans.push(SpanData {
            span_id: mark.span_id,
            parent: self.span_id,
            name: name.to_string(),
            kind: SpanKind::Internal,
            start: mark.start,
            end: now(),
            attributes,
            error,
        });
    }

    /// Where outbound calls awaited under `mark` hang their spans.
    pub fn scope(&self, mark: Option<Mark>) -> Option<Scope> {
        mark.map(|m| Scope {
            trace_id: self.trace_id,
            parent: m.span_id,
            cache_hit: Cell::new(None),
        })
    }

    /// The `traceparent` the upstream receives: this trace, the upstream span.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        Traceparent {
            trace_id: self.trace_id,
            span_id: self.upstream_span,
            flags: u8::from(self.sampled),
        }
        .header_value()
    }

    /// Where outbound calls made by the gateway's own endpoints (login) hang their spans.
    pub fn request_scope(&self) -> Option<Scope> {
        self.sampled.then(|| Scope {
            trace_id: self.trace_id,
            parent: self.span_id,
            cache_hit: Cell::new(None),
        })
    }

    /// Ends the upstream span (when the upstream was asked) and the request span, and
    /// hands the trace to the exporter.
    pub fn finish(mut self, s: &Summary<'_>) {
        if !self.sampled {
            return;
        }
        let Some(tracer) = TRACER.get() else { return };
        let end = now();
        let error = s.status >= 500 || s.status == 0;
        if self.upstream_start != 0 {
            let mut attributes = vec![];
            if let Some(server) = s.upstream_server {
                attributes.push(("server.address", Value::Str(server.to_string())));
            }
            self.spans.push(SpanData {
                span_id: self.upstream_span,
                parent: self.span_id,
                name: "upstream".to_string(),
                kind: SpanKind::Client,
                start: self.upstream_start,
                end,
                attributes,
                error: s.upstream_error,
            });
        }
        let mut attributes = vec![
            ("http.request.method", Value::Str(s.method.to_string())),
            ("url.path", Value::Str(s.path.to_string())),
            ("gatehouse.route", Value::Str(s.route.to_string())),
            ("http.response.status_code", Value::Int(i64::from(s.status))),
            ("gatehouse.request_id", Value::Str(s.request_id.to_string())),
            ("gatehouse.front", Value::Static(s.front)),
        ];
        if let Some(ip) = s.client_ip {
            attributes.push(("client.address", Value::Str(ip.to_string())));
        }
        if let Some(refusal) = s.refusal {
            attributes.push(("gatehouse.refusal", Value::Static(refusal)));
        }
        let mut spans = std::mem::take(&mut self.spans);
        spans.push(SpanData {
            span_id: self.span_id,
            parent: self.parent,
            name: format!("{} {}", s.method, s.route),
            kind: SpanKind::Server,
            start: self.start,
            end,
            attributes,
            error,
        });
        tracer.sender.send(Finished {
            trace_id: self.trace_id,
            trace_state: self
                .trace_state
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            spans,
        });
    }
}

/// What the request span says about a request that ended.
pub struct Summary<'a> {
    pub front: &'static str,
    pub method: &'a str,
    /// The route's name, or `-`.
    pub route: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// 0 when no answer was written.
    pub status: u16,
    pub request_id: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub refusal: Option<&'static str>,
    pub upstream_server: Option<std::net::SocketAddr>,
    pub upstream_error: bool,
}

/// The hex trace id of a request for log lines; nothing when it has no trace.
pub struct LogTraceId<'a>(pub Option<&'a RequestTrace>);

impl fmt::Display for LogTraceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{}", t.trace_id),
            None => Ok(()),
        }
    }
}

/// The parent of outbound calls made while a stage awaits them.
#[derive(Debug)]
pub struct Scope {
    trace_id: TraceId,
    parent: SpanId,
    /// Set by the bearer check: the token was found in the cache.
    pub cache_hit: Cell<Option<bool>>,
}

tokio::task_local! {
    static CURRENT: Scope;
}

/// Runs `fut` with `scope` as the parent of its outbound calls; the scope comes back with
/// what it learned.
pub async fn within<T>(scope: Scope, fut: impl Future<Output = T>) -> (T, Option<Scope>) {
    let mut scoped = std::pin::pin!(CURRENT.scope(scope, fut));
    let value = (&mut scoped).await;
    (value, scoped.as_mut().take_value())
}

/// The bearer check says whether the token came from its cache.
pub fn note_cache_hit(hit: bool) {
    if enabled() {
        let _ = CURRENT.try_with(|s| s.cache_hit.set(Some(hit)));
    }
}

/// Runs an outbound call as a client span `name` (a child of the stage awaiting it, or a
/// trace of its own); `url` is recorded without userinfo, query or fragment.
pub async fn outbound<T, E>(
    name: &'static str,
    url: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !enabled() {
        return fut.await;
    }
    let attributes = || vec![("url.full", Value::Str(loggable(url)))];
    client_span(name, attributes, true, fut).await
}

/// Runs one Redis command as a client span of the stage awaiting it (never a trace of its
/// own: background Redis work is not traced).
pub async fn redis<T, E>(
    operation: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !enabled() {
        return fut.await;
    }
    let attributes = || {
        vec![
            ("db.system.name", Value::Static("redis")),
            ("db.operation.name", Value::Static(operation)),
        ]
    };
    client_span("redis", attributes, false, fut).await
}

async fn client_span<T, E>(
    name: &'static str,
    attributes: impl FnOnce() -> Vec<(&'static str, Value)>,
    may_be_root: bool,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(tracer) = TRACER.get() else {
        return fut.await;
    };
    let parent = CURRENT.try_with(|s| (s.trace_id, s.parent)).ok();
    let (trace_id, parent) = match parent {
        Some(p) => p,
        None if may_be_root => {
            let id = TraceId::random();
            if !tracer.samples(&id) {
                return fut.await;
            }
            (id, SpanId::ZERO)
        }
        None => return fut.await,
    };
    let start = now();
    let result = fut.await;
    let span = SpanData {
        span_id: SpanId::random(),
        parent,
        name: name.to_string(),
        kind: SpanKind::Client,
        start,
        end: now(),
        attributes: attributes(),
        error: result.is_err(),
    };
    tracer.sender.send(Finished {
        trace_id,
        trace_state: String::new(),
        spans: vec![span],
    });
    result
}

/// A URL without userinfo, query or fragment (they can hold secrets).
fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_string(),
    }
}

/// The resource of every exported span: `service.name` and the configured attributes.
fn resource(config: &TracingConfig) -> BTreeMap<String, String> {
    let mut attributes = config.resource_attributes.clone();
    attributes.insert("service.name".to_string(), config.service_name.clone());
    attributes
        .entry("telemetry.sdk.name".to_string())
        .or_insert_with(|| "gatehouse".to_string());
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_threshold_bounds() {
        assert_eq!(ratio_threshold(0.0), 0);
        assert_eq!(ratio_threshold(1.0), u64::MAX);
        let half = ratio_threshold(0.5);
        assert_eq!(half, 1u64 << 62);
    }
}
