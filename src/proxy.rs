//! The Pingora `ProxyHttp` implementation. It only sequences the stages; each stage lives
//! in its own module. The life of a request, top to bottom:
//!
//! 1. `request_filter`: snapshot the config, strip forged identity headers, find the client
//!    and request id, check the host, normalize the path, pick the route, answer CORS
//!    preflights, authenticate (routes are `auth = ["none"]` until the auth issues land).
//! 2. `upstream_peer`: a healthy server of the route's upstream, another one on retry.
//! 3. `upstream_request_filter`: the exact path that was judged, plus forwarding headers.
//! 4. `response_filter`: request id, security and CORS headers.
//! 5. `fail_to_proxy` / `logging`: generic error pages, metrics, the access log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::authn::{claim_at, AuthFailure, Identity};
use crate::authz::{Policy, PolicyRequest};
use crate::config::{AuthMethod, RateLimitConfig, RouteConfig};
use crate::endpoints::SessionOutcome;
use crate::gateway::{Gateway, InFlight, Runtime};
use crate::metrics::NO_ROUTE;
use crate::normalize::{normalize_target, NormalizeOptions};
use crate::ratelimit::{self, gcra::Decision, Outcome};
use crate::respond::{self, ErrorPage};
use crate::{cors, forwarded, hygiene};

pub struct GatehouseProxy {
    pub gateway: Arc<Gateway>,
}

/// Per-request state shared by the stages.
pub struct RequestCtx {
    pub(crate) started: Instant,
    pub(crate) _in_flight: InFlight,
    pub(crate) runtime: Option<Arc<Runtime>>,
    pub(crate) request_id: String,
    pub(crate) route: Option<usize>,
    pub(crate) peer: Option<IpAddr>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) peer_trusted: bool,
    pub(crate) tls: bool,
    pub(crate) html: bool,
    pub(crate) host: String,
    /// The normalized path: what routing (and policy) judged, and what goes upstream.
    pub(crate) path: String,
    /// The target to send upstream when it differs from what the client sent.
    pub(crate) rewrite: Option<Uri>,
    pub(crate) origin: Option<String>,
    /// Servers that already failed this request, so a retry picks another.
    pub(crate) tried: Vec<SocketAddr>,
    pub(crate) current_server: Option<SocketAddr>,
    /// Why the gateway refused the request itself, for the access log.
    pub(crate) refusal: Option<&'static str>,
    pub(crate) identity: Option<Arc<Identity>>,
    /// Client headers hygiene dropped (counted once, when the request is logged).
    pub(crate) dropped_headers: usize,
    /// The method an opted-in override names: what the app performs and the policy judges.
    pub(crate) judged_method: Option<http::Method>,
    /// `RateLimit-Policy` and `RateLimit` for the response, when configured.
    pub(crate) rate_headers: Option<(String, String)>,
    /// A request for one of the gateway's own endpoints: the path after the prefix.
    pub(crate) reserved: Option<String>,
    /// `/_gatehouse/auth`: judge the forwarded request, answer instead of proxying.
    pub(crate) forward_auth: bool,
    /// `/_gatehouse/auth?redirect=true` (Traefik, Caddy): browser navigations get the login
    /// redirect instead of a 401, since those proxies pass the answer to the client.
    pub(crate) forward_auth_redirect: bool,
    /// The browser session that authenticated the request.
    pub(crate) session: Option<Arc<crate::session::Session>>,
}

impl RequestCtx {
    pub(crate) fn route<'a>(&self, runtime: &'a Runtime) -> Option<&'a RouteConfig> {
        self.route.map(|i| &runtime.config.routes[i])
    }

    fn route_label(&self) -> &str {
        match (&self.runtime, self.route) {
            (Some(rt), Some(i)) => &rt.config.routes[i].name,
            _ => NO_ROUTE,
        }
    }
}

/// A request the gateway answers itself instead of proxying.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

impl Refusal {
    pub(crate) fn new(status: u16, reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
        }
    }
}

impl GatehouseProxy {
    /// Everything that may refuse a request before it is proxied, in order.
    fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<(), Refusal> {
        let config = &rt.config;
        // `delete` is not judged as another method than the `DELETE` a framework performs.
        if !hygiene::is_canonical_method(session.req_header().method.as_str()) {
            return Err(Refusal::new(400, "bad_method"));
        }
        let (host, path_start) = target_parts(session.req_header())?;
        if !config.server.allowed_hosts.is_empty() && !config.server.allowed_hosts.contains(&host) {
            return Err(Refusal::new(421, "host_not_allowed"));
        }
        ctx.host = host;

        let raw = match &session.req_header().raw_path()[path_start..] {
            b"" => b"/",
            raw => raw,
        };
        let (route, normalized) = match route_request(rt, &ctx.host, raw)? {
            Routed::Route(route, normalized) => (route, normalized),
            // The gateway's own endpoints are never proxied, whatever route covers them.
            Routed::Reserved(target) => {
                let prefix = config.server.reserved_prefix.as_str();
                ctx.dropped_headers += hygiene::strip_request_headers(
                    session.req_header_mut(),
                    &rt.header_rules,
                    None,
                    ctx.peer_trusted,
                );
                match target.path.strip_prefix(prefix) {
                    Some(rest) if rest.starts_with('/') => {
                        ctx.reserved = Some(rest.to_string());
                        ctx.path = target.path;
                        return Ok(());
                    }
                    _ => return Err(Refusal::new(404, "reserved_path")),
                }
            }
        };
        let target = normalized.to_request_target();
        // Most requests are already normal: then the client's target goes upstream as is.
        if path_start > 0 || target.as_bytes() != raw {
            ctx.rewrite = Some(
                target
                    .parse::<Uri>()
                    .map_err(|_| Refusal::new(400, "unparsable_path"))?,
            );
        }
        judge_routed_request(session.req_header_mut(), ctx, rt, route, normalized.path)?;
        ctx.origin = session
            .req_header()
            .headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(())
    }
}

/// Takes the route's view of a routed request: strips what the upstream must not see and
/// judges the overrides the route lets through (the method or path the app will act on).
pub(crate) fn judge_routed_request(
    req: &mut RequestHeader,
    ctx: &mut RequestCtx,
    rt: &Runtime,
    route: usize,
    path: String,
) -> Result<(), Refusal> {
    let config = &rt.config.routes[route];
    ctx.dropped_headers +=
        hygiene::strip_request_headers(req, &rt.header_rules, Some(config), ctx.peer_trusted);
    ctx.route = Some(route);
    ctx.path = path;
    if config.overrides.is_empty() && req.uri.query().is_none() {
        return Ok(());
    }
    let overrides =
        hygiene::overrides(req, config).map_err(|refused| Refusal::new(400, refused.0))?;
    ctx.judged_method = overrides.method;
    if let Some((header, value)) = overrides.path {
        // The app serves this path instead: it is normalized and judged like a target, and
        // must stay on the route whose upstream will serve it.
        let judged = match route_request(rt, &ctx.host, value.as_bytes()) {
            Ok(Routed::Route(i, target)) if i == route => target,
            Ok(_) => return Err(Refusal::new(400, "override_leaves_route")),
            Err(refusal) => return Err(refusal),
        };
        let value = crate::headers::value(judged.to_request_target())
            .ok_or(Refusal::new(400, "bad_override"))?;
        req.insert_header(header, value)
            .map_err(|_| Refusal::new(400, "bad_override"))?;
        ctx.path = judged.path;
    }
    Ok(())
}

/// The host (lower-case, no port) of a request in origin or absolute form, and where its
/// path-and-query starts in the raw target.
fn target_parts(req: &RequestHeader) -> Result<(String, usize), Refusal> {
    let raw = req.raw_path();
    let (authority, path_start): (Option<&str>, usize) = if raw.first() == Some(&b'/') {
        (req.uri.authority().map(|a| a.as_str()), 0)
    } else if let Some(rest) = strip_scheme(raw) {
        // Absolute form: its authority replaces the Host header (RFC 9112 §3.2.2).
        let split = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let authority =
            std::str::from_utf8(&rest[..split]).map_err(|_| Refusal::new(400, "bad_target"))?;
        if rest.get(split) == Some(&b'?') {
            return Err(Refusal::new(400, "bad_target"));
        }
        // Without a path the target means `/` (supplied by the caller); the rewrite sends it.
        (Some(authority), raw.len() - rest.len() + split)
    } else {
        return Err(Refusal::new(400, "bad_target"));
    };
    let host_value = match authority {
        Some(a) => a,
        None => req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(Refusal::new(400, "missing_host"))?,
    };
    let host = host_without_port(host_value).ok_or(Refusal::new(400, "bad_host"))?;
    Ok((host, path_start))
}

fn strip_scheme(raw: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], &b"https://"[..]] {
        if raw.len() > scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&raw[scheme.len()..]);
        }
    }
    None
}

pub(crate) fn host_without_port(value: &str) -> Option<String> {
    let value = value.trim();
    if value.contains(['@', '/', ' ']) {
        return None;
    }
    let host = if value.starts_with('[') {
        let end = value.find(']')?;
        let rest = &value[end + 1..];
        let port_ok = rest
            .strip_prefix(':')
            .is_some_and(|port| port.parse::<u16>().is_ok());
        if !(rest.is_empty() || port_ok) {
            return None;
        }
        &value[..=end]
    } else {
        match value.rsplit_once(':') {
            Some((h, port)) => {
                port.parse::<u16>().ok()?;
                h
            }
            None => value,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    crate::config::valid_host(&host).then_some(host)
}

/// Normalizes the path strictly, or with a route's own opt-outs when that route is the one
/// the lenient reading leads to; returns the route and the path it judged.
pub(crate) enum Routed {
    Route(usize, crate::normalize::NormalizedTarget),
    /// Under `server.reserved_prefix`: the gateway's own (normalized strictly).
    Reserved(crate::normalize::NormalizedTarget),
}

pub(crate) fn route_request(rt: &Runtime, host: &str, raw: &[u8]) -> Result<Routed, Refusal> {
    let routes = &rt.config.routes;
    match normalize_target(raw, NormalizeOptions::default()) {
        Ok(target) => {
            let prefix = rt.config.server.reserved_prefix.as_str();
            if target.path.starts_with(prefix)
                && matches!(target.path.as_bytes().get(prefix.len()), None | Some(b'/'))
            {
                return Ok(Routed::Reserved(target));
            }
            let route = rt
                .routes
                .lookup(routes, host, &target.path)
                .ok_or(Refusal::new(404, "no_route"))?;
            Ok(Routed::Route(route, target))
        }
        Err(strict_error) => {
            for (i, route) in routes.iter().enumerate() {
                if route.path_checks == NormalizeOptions::default() {
                    continue;
                }
                if let Ok(target) = normalize_target(raw, route.path_checks) {
                    if rt.routes.lookup(routes, host, &target.path) == Some(i) {
                        return Ok(Routed::Route(i, target));
                    }
                }
            }
            Err(Refusal::new(400, strict_error.reason()))
        }
    }
}

#[async_trait]
impl ProxyHttp for GatehouseProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            _in_flight: self.gateway.request_started(),
            runtime: None,
            request_id: String::new(),
            route: None,
            peer: None,
            client_ip: None,
            peer_trusted: false,
            tls: false,
            html: false,
            host: String::new(),
            path: String::new(),
            rewrite: None,
            origin: None,
            tried: Vec::new(),
            current_server: None,
            refusal: None,
            identity: None,
            judged_method: None,
            dropped_headers: 0,
            rate_headers: None,
            reserved: None,
            forward_auth: false,
            forward_auth_redirect: false,
            session: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.gateway.snapshot();
        ctx.runtime = Some(rt.clone());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = &rt.config.server.trusted_proxies;
        if let Some(peer) = ctx.peer {
            ctx.peer_trusted = forwarded::is_trusted(peer, trusted);
            ctx.client_ip = Some(forwarded::client_ip(
                peer,
                &session.req_header().headers,
                trusted,
            ));
        }
        let proxied_id = session
            .req_header()
            .headers
            .get(&forwarded::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| ctx.peer_trusted && forwarded::acceptable_request_id(id));
        ctx.request_id = match proxied_id {
            Some(id) => id.to_string(),
            None => forwarded::new_request_id(),
        };
        ctx.html = respond::wants_html(session.req_header());

        if let Err(refusal) = self.admit(session, ctx, &rt) {
            ctx.refusal = Some(refusal.reason);
            // The body of a refused request is not read; never reuse the connection after it.
            session.set_keepalive(None);
            if ctx.route.is_none() {
                self.gateway
                    .metrics
                    .rejected_requests_total
                    .with_label_values(&[refusal.reason])
                    .inc();
            }
            if refusal.reason == "reserved_path"
                && self.reserved_limit_exceeded(session, ctx, &rt).await?
            {
                return Ok(true);
            }
            self.error_page(session, ctx, &rt, refusal.status, &[])
                .await?;
            return Ok(true);
        }

        if ctx.reserved.is_some() {
            // Forward-auth is asked by the proxy for every request, userinfo and the JWKS are
            // cheap reads, back-channel logouts come from the IdP in bursts (and are signed);
            // the others (login, callback, logout) are limited per client IP.
            let unlimited = matches!(
                ctx.reserved.as_deref(),
                Some("/auth" | "/userinfo" | "/jwks.json" | "/backchannel-logout")
            );
            if !unlimited && self.reserved_limit_exceeded(session, ctx, &rt).await? {
                return Ok(true);
            }
            if Box::pin(self.gateway_endpoint(session, ctx, &rt)).await? {
                return Ok(true);
            }
        }
        let Some(route) = ctx.route(&rt) else {
            return Error::e_explain(ErrorType::InternalError, "admitted request without a route");
        };
        if let Some(cors_config) = route.cors.as_ref().filter(|_| !ctx.forward_auth) {
            if cors::is_preflight(session.req_header()) {
                let sec = &rt.config.security_headers;
                match cors::preflight(cors_config, session.req_header()) {
                    Some(headers) => {
                        respond::send_empty(
                            session,
                            StatusCode::NO_CONTENT,
                            &headers,
                            sec,
                            ctx.tls,
                            &ctx.request_id,
                        )
                        .await?;
                    }
                    None => {
                        ctx.refusal = Some("cors_preflight_refused");
                        self.error_page(session, ctx, &rt, StatusCode::FORBIDDEN, &[])
                            .await?;
                    }
                }
                return Ok(true);
            }
        }

        if !route.auth.contains(&AuthMethod::None) {
            if let Some(left) = ctx.client_ip.and_then(|ip| rt.auth_failures.locked(ip)) {
                let method = route.auth.first().copied().unwrap_or(AuthMethod::None);
                self.record_decision(
                    session,
                    ctx,
                    &rt,
                    method,
                    "rate_limited",
                    "auth_lockout",
                    None,
                );
                ctx.refusal = Some("auth_lockout");
                ctx.html = false;
                session.set_keepalive(None);
                let headers = [("retry-after", left.to_string())];
                self.error_page(session, ctx, &rt, StatusCode::TOO_MANY_REQUESTS, &headers)
                    .await?;
                return Ok(true);
            }
            // The session step lives in its own (boxed) future: routes without sessions do
            // not carry its size.
            let session_step = if route.auth.contains(&AuthMethod::Session) {
                Box::pin(self.authenticate_session(session, ctx, &rt, route)).await?
            } else {
                SessionOutcome::NotApplicable
            };
            let outcome = match session_step {
                SessionOutcome::Answered => return Ok(true),
                SessionOutcome::Authenticated(identity) => Ok((AuthMethod::Session, identity)),
                SessionOutcome::NotApplicable => {
                    rt.auth
                        .authenticate(&route.auth, session.req_header())
                        .await
                }
            };
            match outcome {
                Ok((method, identity)) => {
                    self.record_decision(
                        session,
                        ctx,
                        &rt,
                        method,
                        "allow",
                        "authenticated",
                        Some(&identity.subject),
                    );
                    ctx.identity = Some(identity);
                }
                Err((method, failure)) => {
                    self.record_decision(
                        session,
                        ctx,
                        &rt,
                        method,
                        "unauthenticated",
                        failure.reason(),
                        None,
                    );
                    if matches!(failure, AuthFailure::Invalid(_) | AuthFailure::Malformed(_)) {
                        self.count_auth_failure(ctx, &rt);
                    }
                    ctx.refusal = Some(failure.reason());
                    if route.auth.contains(&AuthMethod::Session)
                        && failure == AuthFailure::Missing
                        && Box::pin(self.start_login_redirect(session, ctx, &rt, route)).await?
                    {
                        return Ok(true);
                    }
                    // API clients get JSON, whatever their Accept header says (spec §7).
                    ctx.html = false;
                    session.set_keepalive(None);
                    let (status, challenge) = auth_answer(&route.auth, failure);
                    self.error_page(session, ctx, &rt, status, &challenge)
                        .await?;
                    return Ok(true);
                }
            }
        }
        if let Some(policy) = route.policy.clone() {
            if self.authorize(session, ctx, &rt, &policy).await? {
                return Ok(true);
            }
        }
        if self.enforce_rate_limits(session, ctx, &rt).await? {
            return Ok(true);
        }
        if ctx.forward_auth {
            Box::pin(self.forward_auth_allow(session, ctx, &rt)).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
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
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Every attempt (Pingora retries with a fresh copy of the client's header) carries
        // the judged target.
        if let Some(target) = &ctx.rewrite {
            upstream_request.set_uri(target.clone());
        }
        crate::headers::edit_request(upstream_request, |headers| {
            set_upstream_headers(headers, ctx)
        })
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rt) = ctx.runtime.clone() else {
            return Ok(());
        };
        crate::headers::edit_response(upstream_response, |headers| {
            if let Some(id) = crate::headers::value(ctx.request_id.as_str()) {
                headers.insert(forwarded::X_REQUEST_ID, id);
            }
            if let Some((policy, state)) = ctx.rate_headers.take() {
                for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
                    if let Some(v) = crate::headers::value(value) {
                        headers.insert(name, v);
                    }
                }
            }
            if let Some(route) = ctx.route(&rt) {
                if route.security_headers {
                    rt.security_headers.apply(headers, ctx.tls);
                }
                if let Some(cors_config) = &route.cors {
                    cors::decorate_response(cors_config, ctx.origin.as_deref(), headers);
                }
            }
        })
    }

    /// What Pingora's own error lines say about a request: never the query or headers,
    /// which may carry tokens.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        format!(
            "{} {} route={} request_id={}",
            session.req_header().method,
            if ctx.path.is_empty() { "-" } else { &ctx.path },
            ctx.route_label(),
            ctx.request_id
        )
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(rt), Some(route)) = (&ctx.runtime, ctx.route) {
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
        ctx: &mut RequestCtx,
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
            if let (Some(rt), Some(route)) = (&ctx.runtime, ctx.route) {
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
                if let Err(write_error) = self.error_page(session, ctx, &rt, status, &[]).await {
                    tracing::debug!(error = %write_error, "could not send the error page");
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if ctx.dropped_headers > 0 {
            self.gateway
                .metrics
                .dropped_request_headers_total
                .inc_by(ctx.dropped_headers as u64);
        }
        let elapsed = ctx.started.elapsed().as_secs_f64();
        if let Some(rt) = &ctx.runtime {
            let index = ctx.route.unwrap_or(rt.route_metrics.len() - 1);
            if let Some(m) = rt.route_metrics.get(index) {
                m.observe(&self.gateway.metrics, status, elapsed);
            }
        }
        let route = ctx.route_label();
        let access_log = ctx
            .runtime
            .as_ref()
            .is_none_or(|rt| rt.config.log.access_log);
        if access_log {
            let req = session.req_header();
            tracing::info!(
                target: "gatehouse::access",
                request_id = %ctx.request_id,
                client_ip = %ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                method = %req.method,
                host = %ctx.host,
                // the normalized path, never the query (it may carry secrets)
                path = %ctx.path,
                route = %route,
                status,
                duration_ms = elapsed * 1000.0,
                upstream_server = %ctx.current_server.map(|a| a.to_string()).unwrap_or_default(),
                refusal = ctx.refusal.unwrap_or(""),
                error = %e.map(|e| e.etype().as_str()).unwrap_or(""),
                "request"
            );
        }
    }
}

/// The status and `WWW-Authenticate` challenge of an authentication failure (RFC 6750 §3).
fn auth_answer(
    methods: &[AuthMethod],
    failure: AuthFailure,
) -> (StatusCode, Vec<(&'static str, String)>) {
    // Browser-session routes answer scripts with a Bearer challenge too (spec §7).
    let bearer = methods.contains(&AuthMethod::Bearer) || methods.contains(&AuthMethod::Session);
    let challenge = |error: Option<(&str, &str)>| -> Vec<(&'static str, String)> {
        let value = match (bearer, error) {
            (true, Some((code, description))) => {
                format!("Bearer realm=\"gatehouse\", error=\"{code}\", error_description=\"{description}\"")
            }
            (true, None) => "Bearer realm=\"gatehouse\"".to_string(),
            (false, _) => "ApiKey realm=\"gatehouse\"".to_string(),
        };
        vec![("www-authenticate", value)]
    };
    match failure {
        AuthFailure::Missing => (StatusCode::UNAUTHORIZED, challenge(None)),
        AuthFailure::Malformed(_) => (
            StatusCode::BAD_REQUEST,
            challenge(Some((
                "invalid_request",
                "The request carries a malformed credential",
            ))),
        ),
        AuthFailure::Invalid(_) => (
            StatusCode::UNAUTHORIZED,
            challenge(Some((
                "invalid_token",
                "The access token is invalid or expired",
            ))),
        ),
        AuthFailure::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            vec![("retry-after", "5".to_string())],
        ),
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Everything the upstream request gets from the gateway, and loses: the gateway's cookies
/// and the consumed credential go, identity and forwarding headers come.
fn set_upstream_headers(headers: &mut HeaderMap, ctx: &RequestCtx) {
    if !headers.contains_key(http::header::HOST) {
        // HTTP/2 and absolute-form requests carry the host in the authority.
        if let Some(host) = crate::headers::value(ctx.host.as_str()) {
            headers.insert(http::header::HOST, host);
        }
    }
    if let Some(rt) = &ctx.runtime {
        if let Some(login) = &rt.login {
            strip_gateway_cookies(headers, &login.cookies);
        }
        if let Some(route) = ctx.route(rt) {
            strip_consumed_credentials(headers, route);
            if let (Some(identity), Some(signer)) = (&ctx.identity, &rt.signer) {
                if let Some(value) = signer.assertion(identity, &route.name) {
                    headers.insert(crate::endpoints::ASSERTION, value);
                }
            }
            if let (true, Some(s), Some(login)) = (route.pass_access_token, &ctx.session, &rt.login)
            {
                if let Some(token) = login.access_token(s) {
                    if let Some(v) = crate::headers::value(format!("Bearer {token}")) {
                        headers.insert(http::header::AUTHORIZATION, v);
                    }
                }
            }
        }
        if let Some(identity) = &ctx.identity {
            set_identity_headers(headers, identity, &rt.config.headers.claims);
        }
    }
    if let (Some(peer), Some(client_ip)) = (ctx.peer, ctx.client_ip) {
        forwarded::set_forwarding_headers(
            headers,
            &forwarded::Forwarding {
                peer,
                peer_trusted: ctx.peer_trusted,
                client_ip,
                scheme: if ctx.tls { "https" } else { "http" },
                host: &ctx.host,
                request_id: &ctx.request_id,
            },
        );
    }
}

/// The credential the gateway checked stays with the gateway, unless the route passes the
/// access token on.
fn strip_consumed_credentials(headers: &mut HeaderMap, route: &RouteConfig) {
    let scheme_is = |headers: &HeaderMap, scheme: &str| {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(' ').next())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    };
    if route.auth.contains(&AuthMethod::Bearer)
        && !route.pass_access_token
        && scheme_is(headers, "bearer")
    {
        headers.remove(http::header::AUTHORIZATION);
    }
    if route.auth.contains(&AuthMethod::ApiKey) {
        headers.remove(X_API_KEY);
        if scheme_is(headers, "apikey") {
            headers.remove(http::header::AUTHORIZATION);
        }
    }
}

/// The gateway's own cookies (session id, login binding) never reach the upstream. Runs
/// on every request of a login-enabled config, so the common cases allocate nothing.
pub(crate) fn strip_gateway_cookies(headers: &mut HeaderMap, cookies: &crate::login::Cookies) {
    let is_ours = |pair: &[u8]| {
        let pair = pair.trim_ascii();
        cookies.is_ours(pair.split(|&b| b == b'=').next().unwrap_or_default())
    };
    let (mut ours, mut others) = (false, false);
    for value in headers.get_all(http::header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            if is_ours(pair) {
                ours = true;
            } else if !pair.trim_ascii().is_empty() {
                others = true;
            }
        }
    }
    if !ours {
        return;
    }
    let kept: Vec<Vec<u8>> = if others {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .filter(|pair| !is_ours(pair) && !pair.trim_ascii().is_empty())
            .map(|pair| pair.trim_ascii().to_vec())
            .collect()
    } else {
        Vec::new()
    };
    headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
            headers.insert(http::header::COOKIE, value);
        }
    }
}

/// The identity headers of spec §3; a value that cannot be a header value is left out.
pub(crate) fn set_identity_headers(
    headers: &mut HeaderMap,
    identity: &Identity,
    claims: &[(HeaderName, String)],
) {
    for (name, value) in identity.header_values() {
        headers.insert(name, value.clone());
    }
    for (header, path) in claims {
        let value = match claim_at(&identity.claims, path) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(","),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        match crate::headers::value(value) {
            Some(v) => {
                headers.insert(header, v);
            }
            None => {
                tracing::debug!(header = %header, "claim value is not a valid header value; left out")
            }
        }
    }
}

impl GatehouseProxy {
    /// The route's policy decides on the normalized path, the one the upstream receives;
    /// answers 403 and returns true on a denial (report-only mode: counts it and lets it pass).
    async fn authorize(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        policy: &Policy,
    ) -> Result<bool> {
        let req = session.req_header();
        let decision = policy.decide(
            &PolicyRequest {
                method: ctx.judged_method.as_ref().unwrap_or(&req.method),
                path: &ctx.path,
                host: &ctx.host,
                query: req.uri.query().unwrap_or(""),
                headers: &req.headers,
                client_ip: ctx.client_ip,
                now: chrono::Utc::now().fixed_offset(),
            },
            ctx.identity.as_deref(),
        );
        let method = ctx.identity.as_ref().map_or(AuthMethod::None, |i| i.method);
        let subject = ctx.identity.as_ref().map(|i| i.subject.clone());
        let outcome = match (decision.allow, policy.report_only) {
            (true, _) => "allow",
            (false, true) => "deny_report_only",
            (false, false) => "deny",
        };
        self.record_decision(
            session,
            ctx,
            rt,
            method,
            outcome,
            decision.reason(),
            subject.as_deref(),
        );
        if outcome != "deny" {
            return Ok(false);
        }
        ctx.refusal = Some("policy_denied");
        session.set_keepalive(None);
        let bearer_route = ctx
            .route(rt)
            .is_some_and(|r| r.auth.contains(&AuthMethod::Bearer));
        let challenge = if bearer_route {
            vec![(
                "www-authenticate",
                "Bearer realm=\"gatehouse\", error=\"insufficient_scope\"".to_string(),
            )]
        } else {
            Vec::new()
        };
        self.error_page(session, ctx, rt, StatusCode::FORBIDDEN, &challenge)
            .await?;
        Ok(true)
    }

    /// A failed authentication from this client; too many lock it out for a while.
    pub(crate) fn count_auth_failure(&self, ctx: &RequestCtx, rt: &Runtime) {
        let Some(ip) = ctx.client_ip else { return };
        if rt.auth_failures.record_failure(ip) {
            self.gateway.metrics.auth_lockouts_total.inc();
            tracing::warn!(
                client_ip = %ip,
                cooldown_s = rt.auth_failures.cooldown().as_secs(),
                "client locked out after repeated authentication failures"
            );
        }
    }

    /// Every rate limit of the route must allow the request; answers 429 (or 503 when the
    /// store is down and `on_error = "fail_closed"`) and returns true when one does not.
    async fn enforce_rate_limits(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<bool> {
        let Some(route_index) = ctx.route else {
            return Ok(false);
        };
        let route = &rt.config.routes[route_index];
        if route.rate_limits.is_empty() {
            return Ok(false);
        }
        let mut policy = Vec::with_capacity(route.rate_limits.len());
        let mut state = Vec::with_capacity(route.rate_limits.len());
        let mut refused: Option<(&RateLimitConfig, Decision)> = None;
        for &i in &route.rate_limits {
            let limit = &rt.config.rate_limits[i];
            let identity = ctx.identity.as_deref();
            let Some(key) = ratelimit::limit_key(
                limit,
                &route.name,
                ctx.client_ip,
                identity,
                session.req_header(),
            ) else {
                continue;
            };
            match rt.limiter.check(limit, &key).await {
                Outcome::Decided(d) => {
                    policy.push(ratelimit::policy_item(limit));
                    state.push(ratelimit::state_item(limit, &d));
                    if !d.allowed {
                        // Later limits are not consulted, so they do not count a refused request.
                        refused = Some((limit, d));
                        break;
                    }
                }
                Outcome::StoreError => {
                    self.gateway
                        .metrics
                        .rate_limit_store_errors_total
                        .with_label_values(&[rt.limiter.store_label()])
                        .inc();
                    if !rt.limiter.config.fail_open {
                        ctx.refusal = Some("rate_limit_store_unavailable");
                        session.set_keepalive(None);
                        let headers = [("retry-after", "1".to_string())];
                        self.error_page(
                            session,
                            ctx,
                            rt,
                            StatusCode::SERVICE_UNAVAILABLE,
                            &headers,
                        )
                        .await?;
                        return Ok(true);
                    }
                }
            }
        }
        if let Some((limit, decision)) = refused {
            self.gateway
                .metrics
                .rate_limited_total
                .with_label_values(&[route.name.as_str(), limit.name.as_str()])
                .inc();
            let method = ctx.identity.as_ref().map_or(AuthMethod::None, |i| i.method);
            let subject = ctx.identity.as_ref().map(|i| i.subject.clone());
            self.record_decision(
                session,
                ctx,
                rt,
                method,
                "rate_limited",
                &limit.name,
                subject.as_deref(),
            );
            ctx.refusal = Some("rate_limited");
            session.set_keepalive(None);
            let headers = [
                (
                    "retry-after",
                    ratelimit::ceil_secs(decision.retry_after)
                        .max(1)
                        .to_string(),
                ),
                ("ratelimit-policy", policy.join(", ")),
                ("ratelimit", state.join(", ")),
            ];
            self.error_page(session, ctx, rt, StatusCode::TOO_MANY_REQUESTS, &headers)
                .await?;
            return Ok(true);
        }
        if rt.limiter.config.response_headers && !policy.is_empty() {
            ctx.rate_headers = Some((policy.join(", "), state.join(", ")));
        }
        Ok(false)
    }

    /// The gateway's own endpoints are limited per client IP (login and callback floods).
    pub(crate) async fn reserved_limit_exceeded(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<bool> {
        let Some(ip) = ctx.client_ip else {
            return Ok(false);
        };
        let limit = &rt.config.reserved_limit;
        let key = ratelimit::limit_key(limit, "", Some(ip), None, session.req_header())
            .unwrap_or_default();
        match rt.limiter.check(limit, &key).await {
            Outcome::Decided(d) if !d.allowed => {
                self.gateway
                    .metrics
                    .rate_limited_total
                    .with_label_values(&[crate::metrics::NO_ROUTE, limit.name.as_str()])
                    .inc();
                ctx.refusal = Some("rate_limited");
                let headers = [
                    (
                        "retry-after",
                        ratelimit::ceil_secs(d.retry_after).max(1).to_string(),
                    ),
                    ("ratelimit-policy", ratelimit::policy_item(limit)),
                    ("ratelimit", ratelimit::state_item(limit, &d)),
                ];
                self.error_page(session, ctx, rt, StatusCode::TOO_MANY_REQUESTS, &headers)
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Counts a decision and writes its audit line (never the credential itself).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_decision(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        method: AuthMethod,
        decision: &str,
        reason: &str,
        subject: Option<&str>,
    ) {
        let route = ctx.route_label();
        let cached = rt.route_metrics.get(ctx.route.unwrap_or(usize::MAX));
        match cached {
            Some(m) if decision == "allow" && reason == "authenticated" => {
                m.authenticated(&self.gateway.metrics, method)
            }
            _ => self
                .gateway
                .metrics
                .auth_decisions_total
                .with_label_values(&[route, method.as_str(), decision, reason])
                .inc(),
        }
        if rt.config.log.audit {
            tracing::info!(
                target: "gatehouse::audit",
                request_id = %ctx.request_id,
                route,
                subject = subject.unwrap_or(""),
                auth_method = method.as_str(),
                method = %session.req_header().method,
                path = %ctx.path,
                decision,
                reason,
                client_ip = %ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                "auth decision"
            );
        }
    }

    pub(crate) async fn error_page(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        status: StatusCode,
        extra: &[(&'static str, String)],
    ) -> Result<()> {
        ErrorPage {
            status,
            request_id: &ctx.request_id,
            html: ctx.html,
            tls: ctx.tls,
            security: &rt.config.security_headers,
            extra_headers: extra,
        }
        .send(session)
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(
            host_without_port("Example.COM:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_without_port("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_without_port("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_without_port("127.0.0.1").as_deref(), Some("127.0.0.1"));
        for bad in [
            "",
            "a b",
            "user@host",
            "host:port",
            "host/x",
            "[::1",
            "[::1]x",
            // a fuzzer find: a multi-byte character after the bracket panicked
            "[::1]\u{2e0}0",
            "[::1]:\u{2e0}",
        ] {
            assert_eq!(host_without_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn absolute_form_targets() {
        let req = RequestHeader::build("GET", b"http://Evil.example:81/admin?x=1", None).unwrap();
        let (host, start) = target_parts(&req).map_err(|r| r.reason).unwrap();
        assert_eq!(host, "evil.example");
        assert_eq!(&req.raw_path()[start..], b"/admin?x=1");
        let req = RequestHeader::build("GET", b"https://h.example", None).unwrap();
        let (_, start) = target_parts(&req).map_err(|r| r.reason).unwrap();
        assert_eq!(&req.raw_path()[start..], b"");
    }
}
