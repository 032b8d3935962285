//! OpenTelemetry end to end: the real gateway exports to an OTLP/HTTP receiver started here,
//! which decodes the protobuf it is sent; the span trees are checked against what the echo
//! upstream received in `traceparent`. Also: a client's malformed `traceparent` never
//! reaches the upstream as sent, and `[tracing]` errors name their line.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::keys::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = include_str!("../policies/crm.toml");

/// The OTLP messages as the receiver decodes them (from opentelemetry-proto's
/// `trace.proto`, `common.proto`, `resource.proto`, `trace_service.proto`).
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any::Value", tags = "1, 2, 3")]
        pub value: Option<any::Value>,
    }
    pub mod any {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            S(String),
            #[prost(bool, tag = "2")]
            B(bool),
            #[prost(int64, tag = "3")]
            I(i64),
        }
    }
}

/// A span as received, ids in hex, attribute values as text.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    trace_state: String,
    name: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
    error: bool,
    start: u64,
    end: u64,
}

#[derive(Default)]
struct Received {
    spans: Vec<Got>,
    resource: BTreeMap<String, String>,
    posts: usize,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn attrs(kvs: &[otlp::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(otlp::any::Value::S(s)) => s,
                Some(otlp::any::Value::B(b)) => b.to_string(),
                Some(otlp::any::Value::I(i)) => i.to_string(),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// An OTLP/HTTP receiver on a loopback port: `POST /v1/traces` with a protobuf body.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Received::default()));
        let shared = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &shared).await;
                });
            }
        });
        Receiver { port, got, task }
    }

    /// An OTLP/gRPC receiver: HTTP/2 without TLS (prior knowledge), as a collector's 4317.
    async fn start_grpc() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Received::default()));
        let shared = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| grpc_export(req, shared.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Receiver { port, got, task }
    }

    /// Waits (at most 10 s) until `done` holds for the spans received so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.got.lock().unwrap().spans.clone();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "no {what} in {spans:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads HTTP/1.1 requests off one connection, decodes each body, answers 200.
async fn serve(mut stream: tokio::net::TcpStream, got: &Mutex<Received>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for _ in 0..1000 {
        let (head_len, path, length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let length = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                break (n, req.path.unwrap_or("").to_string(), length);
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_len + length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..head_len + length).skip(head_len).collect();
        assert_eq!(path, "/v1/traces");
        record(got, &body);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
    Ok(())
}

/// Decodes one `ExportTraceServiceRequest` into `got`, and checks it against the OTLP
/// schema's own generated types (opentelemetry-proto), which share no code with the
/// gateway's exporter: same spans, same ids and parents, same names and kinds, the
/// resource's `service.name` where the schema puts it.
fn record(got: &Mutex<Received>, body: &[u8]) {
    let request = <otlp::ExportTraceServiceRequest as prost::Message>::decode(body)
        .expect("an ExportTraceServiceRequest");
    let official = <opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as prost::Message>::decode(body)
        .expect("an ExportTraceServiceRequest by the OTLP schema");
    let ours: Vec<(String, String, String, String, i32)> = request
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
        .map(|s| {
            (
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.name.clone(),
                s.kind,
            )
        })
        .collect();
    let theirs: Vec<(String, String, String, String, i32)> = official
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
        .map(|s| {
            (
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.name.clone(),
                s.kind,
            )
        })
        .collect();
    assert_eq!(ours, theirs, "the OTLP schema reads the spans otherwise");
    for rs in &official.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"));
        assert!(service.is_some(), "no service.name in the resource");
        for span in rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()) {
            assert_eq!(span.trace_id.len(), 16);
            assert_eq!(span.span_id.len(), 8);
            assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        }
    }
    {
        let mut got = got.lock().unwrap();
        got.posts += 1;
        for rs in request.resource_spans {
            if let Some(r) = &rs.resource {
                got.resource = attrs(&r.attributes);
            }
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.spans.push(Got {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        trace_state: s.trace_state.clone(),
                        name: s.name.clone(),
                        kind: s.kind,
                        attrs: attrs(&s.attributes),
                        error: s.status.as_ref().is_some_and(|st| st.code == 2),
                        start: s.start_time_unix_nano,
                        end: s.end_time_unix_nano,
                    });
                }
            }
        }
    }
}

/// One gRPC `TraceService/Export` call: the length-prefixed message decoded, answered with
/// status 0 (a trailers-only answer).
async fn grpc_export(
    req: hyper::Request<hyper::body::Incoming>,
    got: Arc<Mutex<Received>>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    assert_eq!(
        req.uri().path(),
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert_eq!(req.headers()["content-type"], "application/grpc");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body[0], 0, "not compressed");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(body.len(), 5 + length, "one message");
    record(&got, &body[5..]);
    let answer = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", "0")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    Ok(answer)
}

struct Setup {
    gw: Gateway,
    app: TestServer,
    _jwks: TestServer,
    key: TestKey,
    issuer: String,
}

impl Setup {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.key.sign(&json!({
            "iss": self.issuer, "aud": "crm-api", "sub": sub, "exp": now() + 600,
            "email": format!("{sub}@example.com"), "email_verified": true, "groups": groups,
        }))
    }
}

/// A bearer route with the crm policy, an echo upstream, and `tracing` as the [tracing]
/// section (none when empty).
async fn setup(tracing: &str) -> Setup {
    setup_with(tracing, "").await
}

async fn setup_with(tracing: &str, server_extra: &str) -> Setup {
    setup_full(tracing, server_extra, "").await
}

/// `route_extra` goes into the route's table, and may end it to add sections.
async fn setup_full(tracing: &str, server_extra: &str, route_extra: &str) -> Setup {
    let key = TestKey::rsa("k1", Algorithm::RS256);
    let body = jwks(&[&key]);
    let jwks_server =
        TestServer::start(Arc::new(move |_req: &Request| Reply::json(200, &body))).await;
    let issuer = format!("http://{}", jwks_server.addr);
    let app = EchoServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/crm.toml"), POLICY).unwrap();
    let config = format!(
        r#"{}{}
{tracing}

[[bearer]]
issuer = "{issuer}"
audiences = ["crm-api"]
jwks_uri = "{issuer}/jwks"

[[route]]
name = "crm"
path = "/"
upstream = "app"
auth = ["bearer"]
policy = "policies/crm.toml"
{route_extra}
"#,
        base_config(server_extra),
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start_in(dir, &config);
    Setup {
        gw,
        app,
        _jwks: jwks_server,
        key,
        issuer,
    }
}

fn traced(receiver: &Receiver) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nservice_name = \"gw-under-test\"\nresource_attributes = {{ \"deployment.environment\" = \"test\" }}\nbatch_delay = \"100ms\"\n",
        receiver.port
    )
}

/// The upstream's `traceparent`: (trace id, span id, flags).
fn upstream_traceparent(e: &Echoed) -> (String, String, String) {
    let all = e.all("traceparent");
    assert_eq!(all.len(), 1, "one traceparent upstream: {all:?}");
    let parts: Vec<&str> = all[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{all:?}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    assert!(all[0]
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn of_trace<'a>(spans: &'a [Got], trace: &str) -> Vec<&'a Got> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

fn named<'a>(spans: &[&'a Got], name: &str) -> &'a Got {
    let found: Vec<&&Got> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_denied_and_continued_requests_export_their_span_trees() {
    let receiver = Receiver::start().await;
    // The test client stands for a trusted proxy: its trace is continued.
    let s = setup_with(&traced(&receiver), "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let bob = s.token("bob", &["sales"]);
    let auth = format!("Authorization: Bearer {bob}\r\n");

    // Allowed: one trace, the request span its root, the stages and the upstream its
    // children; the upstream was told the upstream span.
    let allowed = s.gw.get("/customers/7", &auth);
    assert_eq!(allowed.status, 200, "{}", s.gw.log());
    let (trace, upstream_span, flags) = upstream_traceparent(&allowed.echoed());
    assert_eq!(flags, "01");
    let spans = receiver
        .wait_for("allowed trace", |all| {
            all.iter().any(|g| g.trace_id == trace && g.kind == SERVER)
        })
        .await;
    let tree = of_trace(&spans, &trace);
    let root = named(&tree, "GET crm");
    assert_eq!(root.kind, SERVER);
    assert_eq!(root.parent, "", "a new trace: the request span is the root");
    assert_eq!(root.attrs["http.request.method"], "GET");
    assert_eq!(root.attrs["http.response.status_code"], "200");
    assert_eq!(root.attrs["url.path"], "/customers/7");
    assert_eq!(root.attrs["gatehouse.route"], "crm");
    assert_eq!(
        root.attrs["gatehouse.request_id"],
        allowed.header("x-request-id").unwrap()
    );
    assert!(!root.error);
    for name in ["route", "authenticate", "policy", "rate_limit", "upstream"] {
        let span = named(&tree, name);
        assert_eq!(
            span.parent, root.span_id,
            "{name} is a child of the request"
        );
        assert!(
            span.start >= root.start && span.end <= root.end,
            "{name} within the request"
        );
    }
    assert_eq!(tree.len(), 6, "{tree:#?}");
    let upstream = named(&tree, "upstream");
    assert_eq!(upstream.kind, CLIENT);
    assert_eq!(
        upstream.span_id, upstream_span,
        "the upstream's traceparent names the exported upstream span"
    );
    assert_eq!(upstream.attrs["server.address"], s.app.addr.to_string());
    let authn = named(&tree, "authenticate");
    assert_eq!(authn.attrs["gatehouse.auth.method"], "bearer");
    assert_eq!(authn.attrs["gatehouse.auth.cache_hit"], "false");
    let policy = named(&tree, "policy");
    assert_eq!(policy.attrs["gatehouse.policy.rule"], "read");
    assert_eq!(policy.attrs["gatehouse.policy.decision"], "allow");
    assert_eq!(named(&tree, "route").attrs["url.path"], "/customers/7");

    // The same token again: from the cache.
    let again = s.gw.get("/customers/8", &auth);
    let (trace2, _, _) = upstream_traceparent(&again.echoed());
    assert_ne!(
        trace2, trace,
        "each request without a parent is a new trace"
    );
    let spans = receiver
        .wait_for("second trace", |all| {
            all.iter().any(|g| g.trace_id == trace2 && g.kind == SERVER)
        })
        .await;
    let tree = of_trace(&spans, &trace2);
    assert_eq!(
        named(&tree, "authenticate").attrs["gatehouse.auth.cache_hit"],
        "true"
    );

    // Denied by the policy: the deciding rule, no upstream span, nothing upstream.
    let hits = s.app.hit_count();
    let denied = s.gw.get("/admin/users", &auth);
    assert_eq!(denied.status, 403);
    assert_eq!(s.app.hit_count(), hits, "the denied request never arrived");
    let request_id = denied.header("x-request-id").unwrap().to_string();
    let spans = receiver
        .wait_for("denied trace", |all| {
            all.iter()
                .any(|g| g.attrs.get("gatehouse.request_id") == Some(&request_id))
        })
        .await;
    let root = spans
        .iter()
        .find(|g| g.attrs.get("gatehouse.request_id") == Some(&request_id))
        .unwrap();
    assert_eq!(root.attrs["http.response.status_code"], "403");
    assert_eq!(root.attrs["gatehouse.refusal"], "policy_denied");
    let tree = of_trace(&spans, &root.trace_id);
    let policy = named(&tree, "policy");
    assert_eq!(policy.parent, root.span_id);
    assert_eq!(policy.attrs["gatehouse.policy.rule"], "admin area");
    assert_eq!(policy.attrs["gatehouse.policy.decision"], "deny");
    assert!(policy.error, "the stage that refused ends in error");
    assert!(tree
        .iter()
        .all(|g| g.name != "upstream" && g.name != "rate_limit"));

    // Unauthenticated: the authenticate stage refuses.
    let anonymous = s.gw.get("/customers/7", "");
    assert_eq!(anonymous.status, 401);
    let request_id = anonymous.header("x-request-id").unwrap().to_string();
    let spans = receiver
        .wait_for("401 trace", |all| {
            all.iter()
                .any(|g| g.attrs.get("gatehouse.request_id") == Some(&request_id))
        })
        .await;
    let root = spans
        .iter()
        .find(|g| g.attrs.get("gatehouse.request_id") == Some(&request_id))
        .unwrap();
    let tree = of_trace(&spans, &root.trace_id);
    let authn = named(&tree, "authenticate");
    assert!(authn.error);
    assert_eq!(authn.attrs["gatehouse.auth.method"], "none");
    assert!(tree.iter().all(|g| g.name != "policy"));

    // A key the JWKS does not hold yet: the refetch the bearer check awaits is a client
    // span under the authenticate stage.
    let stranger = TestKey::rsa("k2", Algorithm::RS256).sign(&json!({
        "iss": s.issuer, "aud": "crm-api", "sub": "eve", "exp": now() + 600,
    }));
    let refetched = s.gw.get(
        "/customers/7",
        &format!("Authorization: Bearer {stranger}\r\n"),
    );
    assert_eq!(refetched.status, 401);
    let request_id = refetched.header("x-request-id").unwrap().to_string();
    let spans = receiver
        .wait_for("refetch trace", |all| {
            all.iter()
                .any(|g| g.attrs.get("gatehouse.request_id") == Some(&request_id))
        })
        .await;
    let root = spans
        .iter()
        .find(|g| g.attrs.get("gatehouse.request_id") == Some(&request_id))
        .unwrap();
    let tree = of_trace(&spans, &root.trace_id);
    let authn = named(&tree, "authenticate");
    let fetch = named(&tree, "jwks_fetch");
    assert_eq!(
        fetch.parent, authn.span_id,
        "the refetch is the stage's child"
    );
    assert_eq!(fetch.kind, CLIENT);
    assert_eq!(fetch.attrs["url.full"], format!("{}/jwks", s.issuer));
    assert_eq!(authn.attrs["gatehouse.auth.cache_hit"], "false");

    // A client's trace continues: same trace id, the request span a child of the client's
    // span, a new span id upstream, tracestate passed on.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let continued = s.gw.get(
        "/customers/9",
        &format!(
            "{auth}traceparent: 00-{client_trace}-{client_span}-01\r\ntracestate: vendor=abc\r\n"
        ),
    );
    let echoed = continued.echoed();
    let (trace, upstream_span, flags) = upstream_traceparent(&echoed);
    assert_eq!(trace, client_trace);
    assert_ne!(upstream_span, client_span, "a new span id upstream");
    assert_eq!(flags, "01");
    assert_eq!(echoed.all("tracestate"), vec!["vendor=abc"]);
    let spans = receiver
        .wait_for("continued trace", |all| {
            all.iter()
                .any(|g| g.trace_id == client_trace && g.kind == SERVER)
        })
        .await;
    let tree = of_trace(&spans, client_trace);
    let root = named(&tree, "GET crm");
    assert_eq!(
        root.parent, client_span,
        "the request span is the client span's child"
    );
    assert_eq!(root.trace_state, "vendor=abc");
    assert_eq!(named(&tree, "upstream").span_id, upstream_span);
    assert_eq!(named(&tree, "upstream").parent, root.span_id);

    // A client that does not sample: propagated with flag 00, never exported.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = s.gw.get(
        "/customers/10",
        &format!("{auth}traceparent: 00-{unsampled_trace}-b7ad6b7169203331-00\r\n"),
    );
    let (trace, _, flags) = upstream_traceparent(&unsampled.echoed());
    assert_eq!((trace.as_str(), flags.as_str()), (unsampled_trace, "00"));
    // A later sampled request flushes after it; the unsampled one is still absent.
    let marker = s.gw.get("/customers/11", &auth);
    let (marker_trace, _, _) = upstream_traceparent(&marker.echoed());
    let spans = receiver
        .wait_for("marker trace", |all| {
            all.iter()
                .any(|g| g.trace_id == marker_trace && g.kind == SERVER)
        })
        .await;
    assert!(of_trace(&spans, unsampled_trace).is_empty());

    // The resource, and the outbound JWKS fetch at start (a trace of its own).
    let got = receiver.got.lock().unwrap();
    assert_eq!(got.resource["service.name"], "gw-under-test");
    assert_eq!(got.resource["deployment.environment"], "test");
    let jwks = got
        .spans
        .iter()
        .find(|g| g.name == "jwks_fetch")
        .expect("the JWKS fetch is traced");
    assert_eq!(jwks.kind, CLIENT);
    assert_eq!(jwks.attrs["url.full"], format!("{}/jwks", s.issuer));
    drop(got);

    // Trace ids in the access and audit lines.
    let log = s.gw.log();
    assert!(
        log.lines().any(|l| l.contains("gatehouse::access")
            && l.contains(&format!("\"trace_id\":\"{client_trace}\""))),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("gatehouse::audit")
            && l.contains(&format!("\"trace_id\":\"{client_trace}\""))),
        "{log}"
    );
}

/// `protocol = "grpc"`: the same spans reach a gRPC receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_a_grpc_receiver() {
    let receiver = Receiver::start_grpc().await;
    let tracing = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nprotocol = \"grpc\"\nbatch_delay = \"100ms\"\n",
        receiver.port
    );
    let s = setup(&tracing).await;
    let auth = format!("Authorization: Bearer {}\r\n", s.token("bob", &["sales"]));
    let r = s.gw.get("/customers/7", &auth);
    assert_eq!(r.status, 200, "{}", s.gw.log());
    let (trace, upstream_span, _) = upstream_traceparent(&r.echoed());
    let spans = receiver
        .wait_for("gRPC-exported trace", |all| {
            all.iter().any(|g| g.trace_id == trace && g.kind == SERVER)
        })
        .await;
    let tree = of_trace(&spans, &trace);
    let root = named(&tree, "GET crm");
    assert_eq!(named(&tree, "upstream").span_id, upstream_span);
    assert_eq!(named(&tree, "policy").parent, root.span_id);
    assert_eq!(
        receiver.got.lock().unwrap().resource["service.name"],
        "gatehouse"
    );
}

/// A trusted proxy's forward-auth question: the forwarded request's stages are children
/// of the question's request span, one trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_decisions_are_part_of_the_questions_trace() {
    let receiver = Receiver::start().await;
    let s = setup_with(&traced(&receiver), "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let bob = s.token("bob", &["sales"]);
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let asked = s.gw.get(
        "/_gatehouse/auth",
        &format!(
            "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /admin/users\r\nX-Forwarded-Host: 127.0.0.1\r\nAuthorization: Bearer {bob}\r\ntraceparent: 00-{client_trace}-b7ad6b7169203331-01\r\n"
        ),
    );
    assert_eq!(asked.status, 403, "{}", asked.body);
    let spans = receiver
        .wait_for("forward-auth trace", |all| {
            all.iter()
                .any(|g| g.trace_id == client_trace && g.kind == SERVER)
        })
        .await;
    let tree = of_trace(&spans, client_trace);
    let root = named(&tree, "GET crm");
    assert_eq!(root.parent, "b7ad6b7169203331");
    assert_eq!(root.attrs["gatehouse.route"], "crm");
    assert_eq!(root.attrs["url.path"], "/admin/users");
    assert_eq!(root.attrs["http.response.status_code"], "403");
    let policy = named(&tree, "policy");
    assert_eq!(policy.parent, root.span_id);
    assert_eq!(policy.attrs["gatehouse.policy.rule"], "admin area");
    assert_eq!(named(&tree, "authenticate").parent, root.span_id);
    assert!(tree.iter().all(|g| g.name != "upstream"));
}

/// A Redis rate-limit store's check is a client span under the rate-limit stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rate_limit_check_is_the_stages_child() {
    let receiver = Receiver::start().await;
    let redis = common::redis::Redis::start();
    let s = setup_full(
        &traced(&receiver),
        "",
        &format!(
            "rate_limit = [\"per-ip\"]\n\n[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = \"100/minute\"\n\n[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )
    .await;
    let auth = format!("Authorization: Bearer {}\r\n", s.token("bob", &["sales"]));
    let r = s.gw.get("/customers/7", &auth);
    assert_eq!(r.status, 200, "{}", s.gw.log());
    let (trace, _, _) = upstream_traceparent(&r.echoed());
    let spans = receiver
        .wait_for("rate-limited trace", |all| {
            all.iter().any(|g| g.trace_id == trace && g.kind == SERVER)
        })
        .await;
    let tree = of_trace(&spans, &trace);
    let stage = named(&tree, "rate_limit");
    let check = named(&tree, "redis");
    assert_eq!(check.parent, stage.span_id);
    assert_eq!(check.kind, CLIENT);
    assert_eq!(check.attrs["db.system.name"], "redis");
    assert_eq!(check.attrs["db.operation.name"], "EVALSHA");
    assert!(!check.error);
}

/// Malformed trace context from a client never reaches the upstream as it was sent: the
/// gateway starts a trace of its own, and drops the `tracestate` that came with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_never_reaches_the_upstream() {
    let receiver = Receiver::start().await;
    let s = setup(&traced(&receiver)).await;
    let auth = format!("Authorization: Bearer {}\r\n", s.token("bob", &["sales"]));
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let hostile = [
        format!("traceparent: {}\r\n", good.to_uppercase()),
        "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n".to_string(),
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01\r\n".to_string(),
        "traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n".to_string(),
        format!("traceparent: {good}-extra\r\n"),
        format!("traceparent: {good}, {good}\r\n"),
        format!("traceparent: {good}\r\ntraceparent: {good}\r\n"),
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1\r\n".to_string(),
        "traceparent: <script>alert(1)</script>\r\n".to_string(),
        format!("traceparent: {}\r\n", "0".repeat(4000)),
    ];
    for bad in &hostile {
        let r = s.gw.get(
            "/customers/7",
            &format!("{auth}{bad}tracestate: evil=1\r\n"),
        );
        assert_eq!(r.status, 200, "{bad:?}: {}", r.body);
        let echoed = r.echoed();
        let sent: Vec<&str> = bad
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("traceparent: "))
            .collect();
        let (trace, _, _) = upstream_traceparent(&echoed);
        for value in echoed.all("traceparent") {
            assert!(!sent.contains(&value), "{bad:?} passed as sent");
        }
        assert_ne!(
            trace, "4bf92f3577b34da6a3ce929d0e0e4736",
            "{bad:?} was continued"
        );
        assert!(
            echoed.all("tracestate").is_empty(),
            "{bad:?}: tracestate passed"
        );
    }
}

/// Without `[tracing]` the gateway does not touch trace context (as Envoy and nginx
/// without tracing): the client's headers reach the upstream as they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_passes_trace_headers_untouched() {
    let s = setup("").await;
    let auth = format!("Authorization: Bearer {}\r\n", s.token("bob", &["sales"]));
    let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echoed =
        s.gw.get(
            "/customers/7",
            &format!("{auth}traceparent: {value}\r\ntracestate: a=b\r\n"),
        )
        .echoed();
    assert_eq!(echoed.all("traceparent"), vec![value]);
    assert_eq!(echoed.all("tracestate"), vec!["a=b"]);
    let plain = s.gw.get("/customers/7", &auth).echoed();
    assert!(plain.all("traceparent").is_empty(), "none made up when off");
    let log = s.gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("gatehouse::access") && l.contains("\"trace_id\":\"\"")),
        "{log}"
    );
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (
        out.status.success(),
        text.replace(&format!("{}/", dir.path().display()), ""),
    )
}

#[test]
fn tracing_config_errors_name_their_line() {
    let base = "[server]\nlisten = [\"127.0.0.1:18080\"]\n\n[upstream.app]\nservers = [\"127.0.0.1:18081\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n\n[tracing]\n";
    let good = format!("{base}otlp_endpoint = \"http://127.0.0.1:4318\"\nsampling_ratio = 0.5\n");
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
    // A collector's base URL gets OTLP/HTTP's path; defaults are shown.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), &good).unwrap();
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["config", "show", "-c"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(
        shown["tracing"],
        json!({
            "otlp_endpoint": "http://127.0.0.1:4318/v1/traces", "protocol": "http/protobuf", "sampling_ratio": 0.5,
            "service_name": "gatehouse", "resource_attributes": {}, "batch_delay": "5s",
        })
    );
    let cases = [
        ("otlp_endpoint = \"not a url\"", "gateway.toml:14:17: tracing.otlp_endpoint \"not a url\" is not a URL"),
        ("otlp_endpoint = \"ftp://collector:4318\"", "gateway.toml:14:17: tracing.otlp_endpoint \"ftp://collector:4318\" must be an http:// or https:// URL"),
        ("otlp_endpoint = \"http://u:p@collector:4318\"", "must not hold credentials"),
        ("sampling_ratio = 1.5", "gateway.toml:14:18: tracing.sampling_ratio must be between 0 and 1, not 1.5"),
        ("sampling_ratio = -0.1", "gateway.toml:14:18: tracing.sampling_ratio must be between 0 and 1"),
        ("protocol = \"http/json\"", "gateway.toml:14:12: tracing.protocol must be \"http/protobuf\" or \"grpc\""),
        ("protocol = \"grpc\"\notlp_endpoint = \"https://collector:4317\"", "gateway.toml:15:17: tracing.otlp_endpoint \"https://collector:4317\" must be an http:// URL with protocol \"grpc\""),
        ("protocol = \"grpc\"\notlp_endpoint = \"http://collector:4317/v1/traces\"", "must have no path with protocol \"grpc\""),
        ("service_name = \"\"", "gateway.toml:14:16: tracing.service_name is empty"),
        ("batch_delay = \"0s\"", "gateway.toml:14:15: tracing.batch_delay must be more than 0s"),
        ("resource_attributes = { \"service.name\" = \"x\" }", "gateway.toml:14:25: tracing.resource_attributes: set service.name with tracing.service_name"),
        ("otlp = \"x\"", "gateway.toml:14:1: unknown field `otlp`"),
    ];
    for (line, expected) in cases {
        let (ok, out) = check(&format!("{base}{line}\n"));
        assert!(!ok, "{line} passed");
        assert!(out.contains(expected), "{line}: {out}");
    }
}

/// Pingora re-sends the client's header on a retry: the upstream that finally answers
/// still gets the gateway's `traceparent`, once, in the client's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_carries_the_traceparent_to_the_upstream_that_answers() {
    let receiver = Receiver::start().await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    // A second upstream whose first server refuses connections: round robin sends every
    // other request there first, and Pingora retries it on the live one.
    let probe = EchoServer::echo("probe").await;
    let s = setup_full(
        &traced(&receiver),
        "trusted_proxies = [\"127.0.0.1/32\"]",
        &format!(
            "\n[upstream.flaky]\nservers = [\"{dead}\", \"{}\"]\n\n[[route]]\nname = \"flaky\"\npath = \"/flaky/\"\nupstream = \"flaky\"\nauth = [\"none\"]\n",
            probe.addr
        ),
    )
    .await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut sent = Vec::new();
    for i in 0..4 {
        let r = s.gw.get(
            &format!("/flaky/{i}"),
            &format!("traceparent: 00-{client_trace}-00f067aa0ba902b7-01\r\n"),
        );
        assert_eq!(r.status, 200, "{r:?}\n{}", s.gw.log());
        let (trace, span, flags) = upstream_traceparent(&r.echoed());
        assert_eq!(trace, client_trace);
        assert_eq!(flags, "01");
        sent.push(span);
    }
    let metrics = s.gw.admin("/metrics").body;
    assert!(
        metrics.contains(
            "gatehouse_upstream_errors_total{kind=\"connect_refused\",upstream=\"flaky\"}"
        ),
        "no request was retried: {metrics}"
    );
    let spans = receiver
        .wait_for("four upstream spans", |spans| {
            spans.iter().filter(|s| s.name == "upstream").count() >= 4
        })
        .await;
    for span in &sent {
        assert!(
            spans
                .iter()
                .any(|s| s.name == "upstream" && &s.span_id == span),
            "the upstream's parent {span} is no exported upstream span: {spans:#?}"
        );
    }
}

/// A client that is not a trusted proxy picks neither the trace id (of the log lines and
/// the export) nor the sampling: its `traceparent` and `tracestate` start a new trace and
/// go no further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_clients_trace_is_not_continued() {
    let receiver = Receiver::start().await;
    let s = setup(&traced(&receiver)).await;
    let auth = format!("Authorization: Bearer {}\r\n", s.token("bob", &["sales"]));
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let echoed = s
        .gw
        .get(
            "/customers/7",
            &format!("{auth}traceparent: 00-{client_trace}-00f067aa0ba902b7-00\r\ntracestate: vendor=abc\r\n"),
        )
        .echoed();
    let (trace, _, flags) = upstream_traceparent(&echoed);
    assert_ne!(trace, client_trace, "the client's trace id was taken");
    assert_eq!(
        flags, "01",
        "the client's unsampled flag decided (ratio 1 samples all)"
    );
    assert!(
        echoed.all("tracestate").is_empty(),
        "{:?}",
        echoed.all("tracestate")
    );
    let spans = receiver
        .wait_for("the request's own trace", |all| {
            all.iter().any(|g| g.trace_id == trace)
        })
        .await;
    assert!(spans.iter().all(|g| g.trace_id != client_trace));
    let log = s.gw.log();
    assert!(
        !log.contains(client_trace),
        "the client's trace id is in the log"
    );
}
