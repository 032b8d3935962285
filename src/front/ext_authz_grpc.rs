//! The Envoy `ext_authz` front, gRPC mode: `envoy.service.auth.v3.Authorization/Check` on
//! `[ext_authz] grpc_listen`. Envoy's `CheckRequest` names the request it holds (method,
//! host, path with query, headers, the downstream client's address); it goes through the
//! same pipeline as a proxied request, as the HTTP mode's does ([`super::ext_authz_http`],
//! whose decision this front shares). An allowed request is answered `OkHttpResponse` with
//! the headers to set and the names to remove; any other answer is a `DeniedHttpResponse`
//! carrying the status, headers and body the proxy would send the client.
//!
//! Only peers in `server.trusted_proxies` are answered (`PERMISSION_DENIED` otherwise): the
//! question names a client address and headers that gatehouse believes. With
//! `[ext_authz.grpc_tls]` the listener speaks TLS (openssl, as the public TLS listeners), and
//! with its `client_ca` only a client certificate that CA signed gets through the handshake.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use envoy_types::ext_authz::v3::pb::{
    Address, Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue as PbHeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::ssl::{self, AlpnError, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use pingora::tls::tokio_ssl::SslStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ext_authz_http::{self, Decision, Edits};
use crate::config::GrpcTlsConfig;
use crate::gateway::{Gateway, Runtime};
use crate::pipeline::{Answer, Body, Front, Judged, Pipeline, RequestFacts};
use crate::{forwarded, respond};

/// gRPC status codes of a `CheckResponse` (google.rpc.Code).
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How long a TLS handshake may take, and how many may run at once.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKES: usize = 64;

/// The listener, bound when the server is assembled (so a taken address or a bad
/// certificate fails the start), served once Pingora runs its background services.
pub struct GrpcListener {
    pub gateway: Arc<Gateway>,
    addr: SocketAddr,
    /// None in a graceful upgrade until the previous process lets go of the address.
    listener: Mutex<Option<std::net::TcpListener>>,
    tls: Option<SslAcceptor>,
}

impl GrpcListener {
    /// The listener on `addr`, bound now; in a graceful upgrade (`upgrade`) bound once the
    /// previous process, which Pingora does not hand this socket over from, has closed it.
    pub fn bind(
        gateway: Arc<Gateway>,
        addr: SocketAddr,
        tls: Option<&GrpcTlsConfig>,
        upgrade: bool,
    ) -> Result<GrpcListener, String> {
        let tls = tls
            .map(acceptor)
            .transpose()
            .map_err(|e| format!("ext_authz.grpc_tls: {e}"))?;
        let listener = if upgrade {
            None
        } else {
            Some(bind_now(addr).map_err(|e| format!("ext_authz.grpc_listen {addr}: {e}"))?)
        };
        Ok(GrpcListener {
            gateway,
            addr,
            listener: Mutex::new(listener),
            tls,
        })
    }

    /// Binds once the address is free (the previous process stops listening when its
    /// shutdown begins); None on shutdown or another error.
    async fn bind_when_free(&self, shutdown: &mut ShutdownWatch) -> Option<std::net::TcpListener> {
        let mut waited = false;
        loop {
            match bind_now(self.addr) {
                Ok(listener) => return Some(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if !waited {
                        tracing::info!(addr = %self.addr, "waiting for the previous process to release ext_authz.grpc_listen");
                        waited = true;
                    }
                }
                Err(e) => {
                    tracing::error!(addr = %self.addr, error = %e, "cannot listen on ext_authz.grpc_listen");
                    return None;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return None,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

fn bind_now(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The TLS side of the listener: HTTP/2 by ALPN, and the client CA when one is configured.
fn acceptor(tls: &GrpcTlsConfig) -> Result<SslAcceptor, pingora::tls::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_certificate_chain_file(&tls.cert)?;
    builder.set_private_key_file(&tls.key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    // gRPC is HTTP/2 only; a client that offers no ALPN still gets through.
    builder.set_alpn_select_callback(|_, offered| {
        ssl::select_next_proto(b"\x02h2", offered).ok_or(AlpnError::NOACK)
    });
    if let Some(ca) = &tls.client_ca {
        builder.set_ca_file(ca)?;
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(builder.build())
}

/// A TLS connection, as tonic serves it: the TCP peer is the remote address of its requests.
struct TlsConnection(Pin<Box<SslStream<TcpStream>>>);

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

/// Accepts TCP connections and hands those whose handshake succeeds to tonic, until tonic
/// stops listening. Handshakes run beside the accept loop, bounded in number and time.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: SslAcceptor,
    ready: tokio::sync::mpsc::Sender<std::io::Result<TlsConnection>>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors and the like: wait, rather than spin.
                tracing::warn!(error = %e, "ext_authz gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let peer = tcp.peer_addr().ok();
            let Ok(stream) = ssl::Ssl::new(acceptor.context()).and_then(|s| SslStream::new(s, tcp))
            else {
                return;
            };
            let mut stream = Box::pin(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.as_mut().accept()).await {
                Ok(Ok(())) => {
                    let _ = ready.send(Ok(TlsConnection(stream))).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = ?peer, error = %e, "ext_authz gRPC TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = ?peer, "ext_authz gRPC TLS handshake timed out"),
            }
        });
    }
}

#[async_trait]
impl BackgroundService for GrpcListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
        let listener = match taken {
            Some(listener) => listener,
            None => match self.bind_when_free(&mut shutdown).await {
                Some(listener) => listener,
                None => return,
            },
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "ext_authz gRPC listener unusable");
                return;
            }
        };
        let service = AuthorizationServer::new(Check {
            gateway: self.gateway.clone(),
        });
        // On shutdown tonic stops accepting and lets the checks in flight finish.
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        let server = tonic::transport::Server::builder();
        let served = match &self.tls {
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                server
                    .serve_with_incoming_shutdown(service, incoming, stopped)
                    .await
            }
            Some(acceptor) => {
                let (ready, connections) = tokio::sync::mpsc::channel(HANDSHAKES);
                tokio::spawn(accept_tls(listener, acceptor.clone(), ready));
                // tonic's own stream adapter (tokio-stream), re-exported for generated code.
                let incoming =
                    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(connections);
                server
                    .serve_with_incoming_shutdown(service, incoming, stopped)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "ext_authz gRPC listener failed");
        }
    }
}

/// The `Authorization` service.
pub struct Check {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl Authorization for Check {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let _in_flight = self.gateway.request_started();
        let rt = self.gateway.snapshot();
        let peer = request.remote_addr().map(|a| a.ip());
        let trusted = &rt.config.server.trusted_proxies;
        if !peer.is_some_and(|p| forwarded::is_trusted(p, trusted)) {
            tracing::warn!(peer = ?peer, "ext_authz gRPC check from a peer not in server.trusted_proxies; refused");
            self.gateway
                .metrics
                .rejected_requests_total
                .with_label_values(&["ext_authz_untrusted"])
                .inc();
            return Err(tonic::Status::permission_denied(
                "not a trusted proxy of this gateway",
            ));
        }
        let pipeline = Pipeline {
            rt: &rt,
            metrics: &self.gateway.metrics,
        };
        let check = request.into_inner();
        let mut judged = Judged::default();
        let (response, status) = match Asked::read(&check) {
            Ok(asked) => decide(pipeline, &asked, peer, &mut judged).await,
            Err(reason) => {
                // The pipeline never ran: the refusal still names a request id.
                judged.request_id = forwarded::new_request_id();
                let answer = Answer::refused(400, reason, false);
                let status = answer.status.as_u16();
                (denied(&rt, &judged, false, answer), status)
            }
        };
        self.record(&rt, &judged, &check, status, started);
        if let Some(trace) = judged.trace.take() {
            let route = judged.route.map_or(crate::metrics::NO_ROUTE, |i| {
                rt.config.routes[i].name.as_str()
            });
            trace.finish(&crate::otel::Summary {
                front: "ext_authz_grpc",
                method: http_request(&check).map_or("", |h| h.method.as_str()),
                route,
                path: &judged.path,
                status,
                request_id: &judged.request_id,
                client_ip: judged.client_ip,
                refusal: None,
                upstream_server: None,
                upstream_error: false,
            });
        }
        Ok(tonic::Response::new(response))
    }
}

impl Check {
    /// The proxy's metrics and access log line, and the front's answer count.
    fn record(
        &self,
        rt: &Runtime,
        judged: &Judged,
        check: &CheckRequest,
        status: u16,
        started: Instant,
    ) {
        let metrics = &self.gateway.metrics;
        metrics
            .front_answers_total
            .with_label_values(&[Front::ExtAuthz.label(), &status.to_string()])
            .inc();
        if !judged.remove_headers.is_empty() {
            metrics
                .dropped_request_headers_total
                .inc_by(judged.remove_headers.len() as u64);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let index = judged.route.unwrap_or(rt.route_metrics.len() - 1);
        if let Some(m) = rt.route_metrics.get(index) {
            m.observe(metrics, status, elapsed);
        }
        if rt.config.log.access_log {
            let route = judged.route.map_or(crate::metrics::NO_ROUTE, |i| {
                rt.config.routes[i].name.as_str()
            });
            let method = http_request(check).map_or("", |h| h.method.as_str());
            tracing::info!(
                target: "gatehouse::access",
                request_id = %judged.request_id,
                trace_id = %crate::otel::LogTraceId(judged.trace.as_deref()),
                client_ip = %judged.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                method = %method,
                host = %judged.host,
                // the normalized path, never the query (it may carry secrets)
                path = %judged.path,
                route = %route,
                status,
                duration_ms = elapsed * 1000.0,
                front = "ext_authz_grpc",
                "request"
            );
        }
    }
}

/// The request of a `CheckRequest`'s attributes.
fn http_request(
    check: &CheckRequest,
) -> Option<&envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest> {
    check.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// The request Envoy asks about, as gatehouse reads it: the headers as the pipeline sees
/// them (Envoy's, with `host` and the client address Envoy reports as `X-Forwarded-For`).
#[derive(Debug)]
pub struct Asked {
    pub method: Method,
    /// Path and query as Envoy received them (no decoding).
    pub target: String,
    pub authority: String,
    pub headers: HeaderMap,
}

impl Asked {
    /// Reads the question; the refusal reason (400) of one that names no request.
    pub fn read(check: &CheckRequest) -> Result<Asked, &'static str> {
        let http = http_request(check).ok_or("ext_authz_no_request")?;
        let method =
            Method::from_bytes(http.method.as_bytes()).map_err(|_| "ext_authz_bad_method")?;
        let mut headers = HeaderMap::new();
        // `headers` (merged, UTF-8), or `header_map` with `encode_raw_headers` (one entry a
        // value, raw bytes).
        let raw = http.header_map.as_ref().map(|m| &m.headers);
        let pairs: Box<dyn Iterator<Item = (&str, &[u8])>> = match raw {
            Some(list) if http.headers.is_empty() => Box::new(list.iter().map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value[..]
                };
                (h.key.as_str(), value)
            })),
            _ => Box::new(http.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
        };
        for (name, value) in pairs {
            // `:authority`, `:path`, `:method` are read from their own fields.
            if name.starts_with(':') {
                continue;
            }
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| "ext_authz_bad_header")?;
            let value = HeaderValue::from_bytes(value).map_err(|_| "ext_authz_bad_header")?;
            headers.append(name, value);
        }
        if !headers.contains_key(http::header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&http.host) {
                headers.insert(http::header::HOST, host);
            }
        }
        if !headers.contains_key(&forwarded::X_REQUEST_ID) {
            if let Ok(id) = HeaderValue::from_str(&http.id) {
                if !http.id.is_empty() {
                    headers.insert(forwarded::X_REQUEST_ID, id);
                }
            }
        }
        // The client is whom Envoy names (its downstream peer, after its own
        // X-Forwarded-For handling), not an entry the client wrote.
        if let Some(client) = source_ip(check) {
            if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        Ok(Asked {
            method,
            target: http.path.clone(),
            authority: http.host.clone(),
            headers,
        })
    }
}

impl Asked {
    /// The facts of the asked request; `peer` is the gRPC peer (Envoy).
    pub fn facts(&self, peer: Option<IpAddr>) -> RequestFacts<'_> {
        RequestFacts {
            front: Front::ExtAuthz,
            method: &self.method,
            target: self.target.as_bytes(),
            authority: Some(self.authority.as_str()),
            query: self.target.split_once('?').map(|(_, q)| q),
            headers: &self.headers,
            peer,
            // Envoy's connection says nothing of the client's: X-Forwarded-Proto does.
            tls: false,
            request_id: None,
        }
    }
}

/// `attributes.source.address` when it is an IP socket address.
fn source_ip(check: &CheckRequest) -> Option<IpAddr> {
    let address = check
        .attributes
        .as_ref()?
        .source
        .as_ref()?
        .address
        .as_ref()?
        .address
        .as_ref()?;
    match address {
        Address::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}

/// Runs the pipeline on the asked request; Envoy's answer and the status it stands for.
async fn decide(
    pipeline: Pipeline<'_>,
    asked: &Asked,
    peer: Option<IpAddr>,
    judged: &mut Judged,
) -> (CheckResponse, u16) {
    let verdict = pipeline.decide(&asked.facts(peer), judged).await;
    let https = judged.peer_trusted && forwarded::says_https(&asked.headers);
    match ext_authz_http::decision(pipeline.rt, judged, verdict, &asked.headers) {
        Decision::Allow(edits) => (allowed(edits), 200),
        Decision::Deny(answer) => {
            let status = answer.status.as_u16();
            (denied(pipeline.rt, judged, https, answer), status)
        }
    }
}

/// `OkHttpResponse`: the headers to set (replacing the client's), the names to remove, the
/// rate-limit headers for the client's response.
pub(crate) fn allowed(edits: Edits) -> CheckResponse {
    let mut ok = OkHttpResponse {
        headers_to_remove: edits.remove,
        ..Default::default()
    };
    for (name, value) in edits.set {
        ok.headers.push(overwrite(name.as_str(), value));
    }
    if let Some((policy, state)) = edits.rate_headers {
        ok.response_headers_to_add
            .push(overwrite("ratelimit-policy", policy));
        ok.response_headers_to_add
            .push(overwrite("ratelimit", state));
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        ..Default::default()
    }
}

/// `DeniedHttpResponse`: what the proxy front would write to the client (the status, the
/// gateway's page or document, its headers and the security headers of gateway pages).
fn denied(rt: &Runtime, judged: &Judged, https: bool, answer: Answer) -> CheckResponse {
    let request_id = judged.request_id.as_str();
    let sec = &rt.config.security_headers;
    let mut security = HeaderMap::new();
    rt.security_headers.apply(&mut security, https);
    let mut headers: Vec<(&str, String)> = Vec::with_capacity(12);
    let body = match &answer.body {
        Body::Error { html } => {
            let page = respond::ErrorPage {
                status: answer.status,
                request_id,
                html: *html,
            };
            headers.push(("content-type", page.content_type().to_string()));
            page.body()
        }
        Body::Content(content) => {
            if let Some((content_type, _)) = content {
                headers.push(("content-type", (*content_type).to_string()));
            }
            content
                .as_ref()
                .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        }
    };
    headers.push(("cache-control", "no-store".to_string()));
    // A page's own policy replaces the default one (two would both apply).
    if !answer
        .headers
        .iter()
        .any(|(n, _)| *n == "content-security-policy")
    {
        headers.push((
            "content-security-policy",
            sec.content_security_policy.clone(),
        ));
    }
    headers.extend(
        security
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?.to_string()))),
    );
    headers.push(("x-request-id", request_id.to_string()));
    headers.extend(answer.headers.iter().map(|(n, v)| (*n, v.clone())));
    headers.extend(answer.named.iter().map(|(n, v)| (n.as_str(), v.clone())));

    let mut denied = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: envoy_status(answer.status),
        }),
        body,
        ..Default::default()
    };
    for (i, (name, value)) in headers.iter().enumerate() {
        let repeated = headers[..i].iter().any(|(n, _)| n == name);
        denied.headers.push(if repeated {
            // A second Set-Cookie is added, never written over the first; `append` (not
            // only `append_action`) so that Envoys before append_action do the same.
            appended(name, value.clone())
        } else {
            overwrite(name, value.clone())
        });
    }
    let code = if answer.status == StatusCode::UNAUTHORIZED {
        UNAUTHENTICATED
    } else {
        PERMISSION_DENIED
    };
    CheckResponse {
        status: Some(rpc::Status {
            code,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..Default::default()
    }
}

/// Envoy's status enum holds every status gatehouse answers with; anything else is a 403,
/// as Envoy's own default.
fn envoy_status(status: StatusCode) -> i32 {
    let code = i32::from(status.as_u16());
    match HttpStatusCode::try_from(code) {
        Ok(HttpStatusCode::Empty) | Err(_) => HttpStatusCode::Forbidden as i32,
        Ok(known) => known as i32,
    }
}

/// A header set on the request (or response), replacing any value it had.
fn overwrite(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.to_string(),
            value,
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A further value of a header already set.
#[allow(deprecated)]
fn appended(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        append: Some(BoolValue { value: true }),
        append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
        ..overwrite(name, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        address, HeaderMap as PbHeaderMap, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

    fn check(headers: &[(&str, &str)], source: Option<&str>) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: source.map(|ip| Peer {
                    address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: ip.to_string(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        host: "app.test".into(),
                        path: "/a?b=1".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_client_is_the_source_envoy_names() {
        let asked = Asked::read(&check(
            &[
                (":authority", "app.test"),
                ("x-forwarded-for", "192.0.2.1, 198.51.100.7"),
            ],
            Some("198.51.100.7"),
        ))
        .unwrap();
        assert_eq!(asked.headers["x-forwarded-for"], "198.51.100.7");
        assert_eq!(asked.headers["host"], "app.test");
        assert!(!asked.headers.keys().any(|k| k.as_str().starts_with(':')));
        assert_eq!(asked.target, "/a?b=1");
        // Without a socket address, the X-Forwarded-For Envoy set stays (as in HTTP mode).
        let asked = Asked::read(&check(&[("x-forwarded-for", "198.51.100.7")], None)).unwrap();
        assert_eq!(asked.headers["x-forwarded-for"], "198.51.100.7");
    }

    #[test]
    fn raw_headers_are_read_when_envoy_sends_them() {
        let mut c = check(&[], Some("198.51.100.7"));
        let http = c
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.header_map = Some(PbHeaderMap {
            headers: vec![
                PbHeaderValue {
                    key: "cookie".into(),
                    value: String::new(),
                    raw_value: b"a=1".to_vec(),
                },
                PbHeaderValue {
                    key: "cookie".into(),
                    value: String::new(),
                    raw_value: b"b=2".to_vec(),
                },
            ],
        });
        let asked = Asked::read(&c).unwrap();
        let cookies: Vec<_> = asked.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    #[test]
    fn questions_that_name_no_request_are_refused() {
        assert_eq!(
            Asked::read(&CheckRequest::default()).unwrap_err(),
            "ext_authz_no_request"
        );
        for bad in [("bad name", "x"), ("x-ok", "line\nbreak")] {
            assert_eq!(
                Asked::read(&check(&[bad], None)).unwrap_err(),
                "ext_authz_bad_header"
            );
        }
        let mut c = check(&[], None);
        if let Some(h) = c
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            h.method = "GE T".into();
        }
        assert_eq!(Asked::read(&c).unwrap_err(), "ext_authz_bad_method");
    }

    #[test]
    fn statuses_map_onto_envoys_enum() {
        for code in [204, 302, 400, 401, 403, 404, 421, 429, 503] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(envoy_status(status), i32::from(code));
        }
        assert_eq!(envoy_status(StatusCode::from_u16(299).unwrap()), 403);
    }
}
