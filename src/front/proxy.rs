//! The reverse-proxy front: Pingora's `ProxyHttp`. It reads the facts of a request, asks the
//! [pipeline](crate::pipeline), and applies the decision; the life of a request:
//!
//! 1. `request_filter`: snapshot the config, decide, drop the headers hygiene named; answer,
//!    serve one of the gateway's endpoints (forward-auth and ext_authz: decide again, for the
//!    request asked about), or go on to proxy.
//! 2. `upstream_peer`: a healthy server of the route's upstream, another one on retry.
//! 3. `upstream_request_filter`: the judged target, identity and forwarding headers, on every
//!    attempt.
//! 4. `response_filter`: request id, rate-limit, security and CORS headers.
//! 5. `fail_to_proxy` / `logging`: generic error pages, metrics, the access log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::{ext_authz_http, forward_auth};
use crate::config::{RouteConfig, SecurityHeadersConfig};
use crate::endpoints::{self, EndpointRequest};
use crate::gateway::{Gateway, InFlight, Runtime};
use crate::metrics::NO_ROUTE;
use crate::otel::propagation::{TRACEPARENT, TRACESTATE};
use crate::otel::{self, LogTraceId, Summary};
use crate::pipeline::upstream::{self, Connection};
use crate::pipeline::{Answer, Body, Endpoint, Front, Judged, Pipeline, RequestFacts, Verdict};
use crate::{cors, forwarded, respond};

pub struct GatehouseProxy {
    pub gateway: Arc<Gateway>,
}

/// Per-request state of the front.
pub struct RequestCtx {
    started: Instant,
    _in_flight: InFlight,
    runtime: Option<Arc<Runtime>>,
    conn: Connection,
    /// What the pipeline made of the request.
    judged: Judged,
    /// The client reached the gateway over HTTPS: its own TLS, or a trusted proxy's
    /// `X-Forwarded-Proto: https` (a load balancer terminating TLS): HSTS is sent then.
    https: bool,
    /// Why the gateway answered the request itself, for the access log.
    refusal: Option<&'static str>,
    /// Client headers hygiene dropped (counted once, when the request is logged).
    dropped_headers: usize,
    /// Servers that already failed this request, so a retry picks another.
    tried: Vec<SocketAddr>,
    current_server: Option<SocketAddr>,
}

impl RequestCtx {
    fn route<'a>(&self, runtime: &'a Runtime) -> Option<&'a RouteConfig> {
        self.judged.route.map(|i| &runtime.config.routes[i])
    }

    fn route_label(&self) -> &str {
        match (&self.runtime, self.judged.route) {
            (Some(rt), Some(i)) => &rt.config.routes[i].name,
            _ => NO_ROUTE,
        }
    }
}

/// The facts of a request as Pingora parsed it.
pub fn facts<'a>(req: &'a RequestHeader, peer: Option<IpAddr>) -> RequestFacts<'a> {
    let host_header = || {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    };
    RequestFacts {
        front: Front::Proxy,
        method: &req.method,
        target: req.raw_path(),
        authority: req.uri.authority().map(|a| a.as_str()).or_else(host_header),
        query: req.uri.query(),
        headers: &req.headers,
        peer,
        tls: false,
        request_id: None,
    }
}

#[async_trait]
impl ProxyHttp for GatehouseProxy {
    /// Boxed: Pingora moves the future that holds the context (twice per request), and the
    /// context is several hundred bytes.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx {
            started: Instant::now(),
            _in_flight: self.gateway.request_started(),
            runtime: None,
            conn: Connection {
                peer: None,
                tls: false,
            },
            judged: Judged::default(),
            https: false,
            refusal: None,
            dropped_headers: 0,
            tried: Vec::new(),
            current_server: None,
        })
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let rt = self.gateway.snapshot();
        ctx.runtime = Some(rt.clone());
        ctx.conn = Connection {
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        };
        let pipeline = Pipeline {
            rt: &rt,
            metrics: &self.gateway.metrics,
        };
        let facts = RequestFacts {
            tls: ctx.conn.tls,
            ..facts(session.req_header(), ctx.conn.peer)
        };
        let verdict = pipeline.decide(&facts, &mut ctx.judged).await;
        ctx.https = ctx.conn.tls
            || (ctx.judged.peer_trusted && forwarded::says_https(&session.req_header().headers));
        // A question (Envoy's, a forward-auth proxy's) carries the original request's
        // headers: its own front judges them (ingress-nginx names the request in
        // X-Original-URL, an override name to the proxy), so they stay as they came.
        let question = matches!(
            verdict,
            Verdict::Endpoint(Endpoint::ExtAuthz | Endpoint::ForwardAuth)
        );
        if !question {
            apply_hygiene(session.req_header_mut(), ctx);
        }
        let answer = match verdict {
            Verdict::Allow => return Ok(false),
            Verdict::Answer(answer) => answer,
            Verdict::Endpoint(Endpoint::ExtAuthz) => {
                let answer = Box::pin(self.ext_authz(session, ctx, pipeline)).await;
                self.count_front_answer(Front::ExtAuthz, &answer);
                answer
            }
            // The forwarded request goes through the pipeline again, as its own front's.
            Verdict::Endpoint(Endpoint::ForwardAuth) => {
                let answer = Box::pin(self.forward_auth(session, ctx, pipeline)).await;
                self.count_front_answer(Front::ForwardAuth { redirect: false }, &answer);
                answer
            }
            Verdict::Endpoint(endpoint) => {
                let mut req = Downstream(session);
                // The login's calls to the IdP are children of the request's span.
                let scope = ctx.judged.trace.as_deref().and_then(|t| t.request_scope());
                let serve = endpoints::serve(pipeline, &ctx.judged, endpoint, &mut req);
                match scope {
                    None => Box::pin(serve).await,
                    Some(scope) => Box::pin(otel::within(scope, serve)).await.0,
                }
            }
        };
        self.send(session, ctx, &rt, answer).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let rt = ctx
            .runtime
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no config snapshot"))?;
        let route = ctx
            .route(&rt)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request without a route"))?;
        let pool = rt
            .pools
            .get(&route.upstream)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(502), "upstream missing"))?;
        let addr = pool.select(&ctx.tried).ok_or_else(|| {
            self.gateway
                .metrics
                .upstream_errors_total
                .with_label_values(&[&route.upstream, "no_healthy_server"])
                .inc();
            Error::explain(ErrorType::HTTPStatus(502), "no healthy upstream server")
        })?;
        ctx.current_server = Some(addr);
        Ok(Box::new(pool.peer(addr)))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Every attempt (Pingora retries with a fresh copy of the client's header) carries
        // the judged target.
        if let Some(target) = &ctx.judged.rewrite {
            upstream_request.set_uri(target.clone());
        }
        // Traced: the upstream continues this trace under the gateway's upstream span; the
        // client's own trace headers (valid or not) never pass as they came. Untraced: they
        // pass untouched, as through Envoy or nginx without tracing.
        if let Some(trace) = ctx.judged.trace.as_deref_mut() {
            if trace.upstream_start == 0 {
                trace.upstream_start = otel::now();
            }
            upstream_request.remove_header(&TRACEPARENT);
            upstream_request.remove_header(&TRACESTATE);
            upstream_request.insert_header(TRACEPARENT, trace.upstream_traceparent())?;
            if let Some(state) = &trace.trace_state {
                upstream_request.insert_header(TRACESTATE, state.clone())?;
            }
        }
        let Some(rt) = &ctx.runtime else {
            return Ok(());
        };
        super::edit::edit_request(upstream_request, |headers| {
            upstream::set_upstream_headers(headers, rt, &ctx.judged, ctx.conn)
        })
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(rt) = ctx.runtime.clone() else {
            return Ok(());
        };
        let origin = session
            .req_header()
            .headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        super::edit::edit_response(upstream_response, |headers| {
            if let Some(id) = crate::headers::value(ctx.judged.request_id.as_str()) {
                headers.insert(forwarded::X_REQUEST_ID, id);
            }
            if let Some((policy, state)) = ctx.judged.rate_headers.take() {
                for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
                    if let Some(v) = crate::headers::value(value) {
                        headers.insert(name, v);
                    }
                }
            }
            if let Some(route) = ctx.route(&rt) {
                if route.security_headers {
                    rt.security_headers.apply(headers, ctx.https);
                }
                if let Some(cors_config) = &route.cors {
                    cors::decorate_response(cors_config, origin, headers);
                }
            }
        })
    }

    /// What Pingora's own error lines say about a request: never the query or headers,
    /// which may carry tokens.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let path = &ctx.judged.path;
        format!(
            "{} {} route={} request_id={}",
            session.req_header().method,
            if path.is_empty() { "-" } else { path },
            ctx.route_label(),
            ctx.judged.request_id
        )
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(rt), Some(route)) = (&ctx.runtime, ctx.judged.route) {
            let upstream = &rt.config.routes[route].upstream;
            self.gateway
                .metrics
                .upstream_errors_total
                .with_label_values(&[upstream, connect_error_kind(&e)])
                .inc();
            // Nothing reached the server yet, so trying another one is always safe.
            if let Some(addr) = ctx.current_server.take() {
                ctx.tried.push(addr);
            }
            let servers = rt.pools.get(upstream).map_or(0, |p| p.config.servers.len());
            if ctx.tried.len() < servers.clamp(1, 3) {
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if e.esource() == &ErrorSource::Upstream {
            if let (Some(rt), Some(route)) = (&ctx.runtime, ctx.judged.route) {
                if !matches!(
                    e.etype(),
                    ErrorType::ConnectTimedout
                        | ErrorType::ConnectRefused
                        | ErrorType::ConnectNoRoute
                        | ErrorType::ConnectError
                ) {
                    let kind = if code == 504 { "timeout" } else { "response" };
                    self.gateway
                        .metrics
                        .upstream_errors_total
                        .with_label_values(&[&rt.config.routes[route].upstream, kind])
                        .inc();
                }
            }
        }
        if code > 0 && session.response_written().is_none() {
            let rt = ctx
                .runtime
                .clone()
                .unwrap_or_else(|| self.gateway.snapshot());
            if let Ok(status) = StatusCode::from_u16(code) {
                let page = Answer::error(status, ctx.judged.html);
                if let Err(write_error) = self.write(session, ctx, &rt, &page).await {
                    tracing::debug!(error = %write_error, "could not send the error page");
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if ctx.dropped_headers > 0 {
            self.gateway
                .metrics
                .dropped_request_headers_total
                .inc_by(ctx.dropped_headers as u64);
        }
        let elapsed = ctx.started.elapsed().as_secs_f64();
        if let Some(rt) = &ctx.runtime {
            let index = ctx.judged.route.unwrap_or(rt.route_metrics.len() - 1);
            if let Some(m) = rt.route_metrics.get(index) {
                m.observe(&self.gateway.metrics, status, elapsed);
            }
        }
        let trace = ctx.judged.trace.take();
        let route = ctx.route_label();
        let access_log = ctx
            .runtime
            .as_ref()
            .is_none_or(|rt| rt.config.log.access_log);
        if access_log {
            let req = session.req_header();
            let judged = &ctx.judged;
            tracing::info!(
                target: "gatehouse::access",
                request_id = %judged.request_id,
                trace_id = %LogTraceId(trace.as_deref()),
                client_ip = %judged.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                method = %req.method,
                host = %judged.host,
                // the normalized path, never the query (it may carry secrets)
                path = %judged.path,
                route = %route,
                status,
                duration_ms = elapsed * 1000.0,
                upstream_server = %ctx.current_server.map(|a| a.to_string()).unwrap_or_default(),
                refusal = ctx.refusal.unwrap_or(""),
                error = %e.map(|e| e.etype().as_str()).unwrap_or(""),
                "request"
            );
        }
        if let Some(trace) = trace {
            let judged = &ctx.judged;
            let method = session.req_header().method.as_str();
            trace.finish(&Summary {
                front: Front::Proxy.label(),
                method,
                route,
                path: &judged.path,
                status,
                request_id: &judged.request_id,
                client_ip: judged.client_ip,
                refusal: ctx.refusal,
                upstream_server: ctx.current_server,
                upstream_error: e.is_some_and(|e| e.esource() == &ErrorSource::Upstream),
            });
        }
    }
}

/// The client headers hygiene dropped never reach the upstream (or the gateway's
/// endpoints); an opted-in path override carries the target it was judged as.
fn apply_hygiene(req: &mut RequestHeader, ctx: &mut RequestCtx) {
    ctx.dropped_headers += ctx.judged.remove_headers.len();
    for name in &ctx.judged.remove_headers {
        req.remove_header(name);
    }
    if let Some((name, value)) = ctx.judged.set_override.clone() {
        // A `HeaderName` and a `HeaderValue` always make a header.
        let _ = req.insert_header(name, value);
    }
}

impl GatehouseProxy {
    /// `/_gatehouse/auth`: the forward-auth front decides about the forwarded request.
    async fn forward_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        pipeline: Pipeline<'_>,
    ) -> Answer {
        let req = session.req_header();
        let forwarded =
            match forward_auth::read(&ctx.judged, ctx.conn.peer, req.uri.query(), &req.headers) {
                Ok(forwarded) => forwarded,
                Err(answer) => return answer,
            };
        let facts = forwarded.facts(&req.headers, ctx.conn.peer, &ctx.judged.request_id);
        // The decision about the forwarded request is part of this request's trace.
        let mut judged = Judged {
            trace: ctx.judged.trace.take(),
            ..Judged::default()
        };
        let verdict = pipeline.decide(&facts, &mut judged).await;
        if judged.route.is_none() {
            ctx.judged.trace = judged.trace.take();
        }
        let method = forwarded.method.clone();
        ctx.dropped_headers += judged.remove_headers.len();
        if judged.route.is_some() {
            // From here on (the log line, Pingora's error lines) the request is the
            // forwarded one.
            let req = session.req_header_mut();
            req.set_method(method);
            if let Some(uri) = judged.rewrite.take() {
                req.set_uri(uri);
            }
            let answer = forward_auth::answer(pipeline.rt, &mut judged, verdict);
            ctx.judged = judged;
            return answer;
        }
        forward_auth::answer(pipeline.rt, &mut judged, verdict)
    }

    /// `/_gatehouse/ext-authz/...`: the ext_authz front decides about the request Envoy
    /// holds.
    async fn ext_authz(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        pipeline: Pipeline<'_>,
    ) -> Answer {
        let prefix = pipeline.rt.config.server.reserved_prefix.as_str();
        let req = session.req_header();
        // The decision about Envoy's request is part of this request's trace.
        let trace = ctx.judged.trace.take();
        let facts = match ext_authz_http::facts(
            &ctx.judged,
            &req.method,
            req.raw_path(),
            &req.headers,
            ctx.conn.peer,
            prefix,
        ) {
            Ok(facts) => facts,
            Err(answer) => {
                ctx.judged.trace = trace;
                return answer;
            }
        };
        let mut judged = Judged {
            trace,
            ..Judged::default()
        };
        let verdict = pipeline.decide(&facts, &mut judged).await;
        if judged.route.is_none() {
            ctx.judged.trace = judged.trace.take();
        }
        let mut answer = ext_authz_http::answer(pipeline.rt, &mut judged, verdict, &req.headers);
        // Envoy's questions carry no body: its connection serves the next one, whatever the
        // answer to this one.
        if ext_authz_http::bodyless(&req.headers) {
            answer.close = false;
        }
        ctx.dropped_headers += judged.remove_headers.len();
        if judged.route.is_some() {
            // From here on (the log line, Pingora's error lines) the request is the original.
            if let Some(uri) = judged.rewrite.take() {
                session.req_header_mut().set_uri(uri);
            }
            ctx.judged = judged;
        }
        answer
    }

    /// `gatehouse_front_answers_total`: what a front asked by another proxy answered.
    fn count_front_answer(&self, front: Front, answer: &Answer) {
        self.gateway
            .metrics
            .front_answers_total
            .with_label_values(&[front.label(), answer.status.as_str()])
            .inc();
    }

    /// Writes an answer: the connection is not reused after a refusal whose body was not
    /// read; the refusal goes to the access log.
    async fn send(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        answer: Answer,
    ) -> Result<()> {
        if answer.close {
            session.set_keepalive(None);
        }
        if answer.refusal.is_some() {
            ctx.refusal = answer.refusal;
        }
        self.write(session, ctx, rt, &answer).await
    }

    async fn write(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        answer: &Answer,
    ) -> Result<()> {
        let head_only = session.req_header().method == Method::HEAD;
        let sec = &rt.config.security_headers;
        let request_id = ctx.judged.request_id.as_str();
        let (resp, body) = match &answer.body {
            Body::Error { html } => {
                let page = respond::ErrorPage {
                    status: answer.status,
                    request_id,
                    html: *html,
                };
                let body = page.body();
                let mut resp = ResponseHeader::build(answer.status, Some(8))?;
                resp.insert_header("content-type", page.content_type())?;
                resp.insert_header("content-length", body.len().to_string())?;
                gateway_page_headers(&mut resp, sec, ctx.https, request_id)?;
                for (name, value) in &answer.headers {
                    resp.insert_header(*name, value)?;
                }
                (resp, Some(body.into_bytes()))
            }
            Body::Content(content) => {
                let extra = answer.headers.len() + answer.named.len();
                let mut resp = ResponseHeader::build(answer.status, Some(extra + 10))?;
                let len = content.as_ref().map_or(0, |(_, b)| b.len());
                resp.insert_header("content-length", len.to_string())?;
                if let Some((content_type, _)) = content {
                    resp.insert_header("content-type", *content_type)?;
                }
                gateway_page_headers(&mut resp, sec, ctx.https, request_id)?;
                for (name, value) in &answer.headers {
                    if *name == "content-security-policy" {
                        // A page's own policy replaces the default one (two would both apply).
                        resp.insert_header(*name, value)?;
                    } else {
                        resp.append_header(*name, value)?;
                    }
                }
                for (name, value) in &answer.named {
                    resp.append_header(name.clone(), value)?;
                }
                let body = content
                    .as_ref()
                    .map(|(_, b)| b.clone())
                    .filter(|b| !b.is_empty());
                (resp, body)
            }
        };
        let body = body.filter(|_| !head_only);
        session
            .write_response_header(Box::new(resp), body.is_none())
            .await?;
        if let Some(body) = body {
            session
                .write_response_body(Some(Bytes::from(body)), true)
                .await?;
        }
        Ok(())
    }
}

/// The security headers on a response the gateway generates itself.
fn gateway_page_headers(
    resp: &mut ResponseHeader,
    sec: &SecurityHeadersConfig,
    tls: bool,
    request_id: &str,
) -> Result<()> {
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("content-security-policy", &sec.content_security_policy)?;
    super::edit::edit_response(resp, |headers| {
        respond::SecurityHeaders::new(sec).apply(headers, tls)
    })?;
    resp.insert_header("x-request-id", request_id)?;
    Ok(())
}

/// A request the gateway's endpoints serve, read from the Pingora session.
struct Downstream<'a>(&'a mut Session);

#[async_trait]
impl EndpointRequest for Downstream<'_> {
    fn method(&self) -> &Method {
        &self.0.req_header().method
    }

    fn query(&self) -> Option<&str> {
        self.0.req_header().uri.query()
    }

    fn headers(&self) -> &HeaderMap {
        &self.0.req_header().headers
    }

    async fn body_chunk(&mut self) -> Result<Option<Bytes>, ()> {
        self.0.read_request_body().await.map_err(drop)
    }
}

fn connect_error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::TLSHandshakeTimedout => "tls",
        _ => "connect",
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
