//! The decision about one request, with no Pingora in it.
//!
//! A front reads the facts of a request into [`RequestFacts`]: the reverse proxy from its
//! Pingora session ([`crate::front::proxy`]), the forward-auth endpoint from the
//! `X-Forwarded-*` headers of a trusted proxy ([`crate::front::forward_auth`]), Envoy's
//! HTTP ext_authz from the original request it passes on ([`crate::front::ext_authz_http`]).
//! [`Pipeline::decide`] runs the stages below, in order, and makes the decision: what they
//! learned ([`Judged`]: route, judged path, identity, headers to remove, ...) and the
//! [`Verdict`]: let it through, answer it, or hand it to one of the gateway's own
//! endpoints. The front applies it. `docs/architecture.md` draws the whole path.
//!
//! Metrics and audit lines of decisions are recorded here, whichever front asked.

mod admit;
mod answer;
mod authenticate;
mod authorize;
mod client;
mod endpoint;
mod lockout;
mod preflight;
mod rate_limit;
mod record;
mod resource_metadata;
mod route;
mod strip;
pub mod upstream;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::gateway::Runtime;
use crate::identity::{AuthMethod, Identity};
use crate::metrics::Metrics;
use crate::otel::{self, RequestTrace};

pub use answer::{Answer, Body};
pub use endpoint::{ext_authz_target, Endpoint};
pub use route::{host_without_port, route_request, Routed};

/// Which front asked. Fronts differ in how they read a request and what they do with an
/// allowed one, not in what is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The reverse proxy: an allowed request goes upstream.
    Proxy,
    /// `/_gatehouse/auth` (nginx `auth_request`, Traefik, Caddy): an allowed request is
    /// answered 200 with the identity headers. Every refusal before authentication is a 403
    /// (nginx understands only 2xx, 401 and 403 there), and there is no CORS preflight.
    /// `redirect` (`?redirect=true`): browser navigations get the login redirect instead of
    /// a 401, since Traefik and Caddy pass the answer on to the browser.
    ForwardAuth { redirect: bool },
    /// `/_gatehouse/ext-authz` + the original path (Envoy's HTTP `ext_authz` filter): an
    /// allowed request is answered 200 with the edits Envoy makes to it (identity headers
    /// to set, forged ones to remove); any other answer goes to the client as it is, so
    /// the statuses, the login redirect and the CORS preflight are the proxy's.
    ExtAuthz,
}

impl Front {
    /// The front's name in audit lines.
    pub fn label(self) -> &'static str {
        match self {
            Front::Proxy => "proxy",
            Front::ForwardAuth { .. } => "forward_auth",
            Front::ExtAuthz => "ext_authz",
        }
    }
}

/// What a front knows about a request, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub front: Front,
    pub method: &'a Method,
    /// The request target as sent: origin form, or (proxy) absolute form.
    pub target: &'a [u8],
    /// The host with its port as the front found it: HTTP/2's `:authority`, else `Host`
    /// (forward-auth: `X-Forwarded-Host`, else `Host`). An absolute-form target's wins.
    pub authority: Option<&'a str>,
    /// The query of the target, as the client's URI holds it.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The socket peer; None on a Unix socket.
    pub peer: Option<IpAddr>,
    /// The client reached this front over TLS (the proxy's TLS listener); a trusted proxy
    /// says so in `X-Forwarded-Proto`. Names the resource in protected resource metadata.
    pub tls: bool,
    /// The id of a request that already has one (forward-auth runs inside a proxied request).
    pub request_id: Option<&'a str>,
}

/// What the stages learned about a request. Fronts apply it to an allowed request, and log
/// it whatever the verdict. The front owns it (the proxy keeps it in its per-request
/// context), so it is written in place, never moved.
#[derive(Debug, Default)]
pub struct Judged {
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    /// The peer is in `server.trusted_proxies`: its forwarding headers are believed.
    pub peer_trusted: bool,
    /// A browser navigation: error pages in HTML, not JSON.
    pub html: bool,
    /// Lower-case, without port; empty until the host was admitted.
    pub host: String,
    /// The normalized path: what routing and the policy judged, and what goes upstream.
    pub path: String,
    /// Index into `config.routes`.
    pub route: Option<usize>,
    /// Client headers the upstream must not see (hygiene), to remove from the request.
    pub remove_headers: Vec<HeaderName>,
    /// An opted-in path override, its value replaced by the target it was judged as.
    pub set_override: Option<(HeaderName, HeaderValue)>,
    /// The target to send upstream when it differs from what the client sent (forward-auth:
    /// always, the target the forwarded request was judged as).
    pub rewrite: Option<Uri>,
    /// The method an opted-in override names: what the app performs and the policy judges.
    pub judged_method: Option<Method>,
    pub identity: Option<Arc<Identity>>,
    /// The browser session that authenticated the request (for `pass_access_token`).
    pub session: Option<Arc<crate::session::Session>>,
    /// `RateLimit-Policy` and `RateLimit` for the response, when configured.
    pub rate_headers: Option<(String, String)>,
    /// The request's trace, when tracing is on (`[tracing]`); None costs nothing.
    pub trace: Option<Box<RequestTrace>>,
}

impl Judged {
    /// The authentication method of the identity, `none` without one.
    pub fn auth_method(&self) -> AuthMethod {
        self.identity
            .as_ref()
            .map_or(AuthMethod::None, |i| i.method)
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Let it through with [`Judged`]'s target, identity and headers: the proxy forwards it,
    /// forward-auth says yes.
    Allow,
    /// The gateway answers it itself.
    Answer(Answer),
    /// One of the gateway's own endpoints serves it (the proxy front dispatches it).
    Endpoint(Endpoint),
}

/// The stages' view of the gateway: one config snapshot and the process's metrics.
#[derive(Clone, Copy)]
pub struct Pipeline<'a> {
    pub rt: &'a Runtime,
    pub metrics: &'a Metrics,
}

impl From<Answer> for Verdict {
    fn from(answer: Answer) -> Verdict {
        Verdict::Answer(answer)
    }
}

/// One request on its way through the stages.
struct Request<'a> {
    facts: &'a RequestFacts<'a>,
    /// The headers as the upstream will see them: the front's own until hygiene drops one.
    headers: Cow<'a, HeaderMap>,
    judged: &'a mut Judged,
}

impl Request<'_> {
    /// The start of a stage span; None (and nothing recorded) unless the request is sampled.
    #[inline]
    fn mark(&self) -> Option<otel::Mark> {
        self.judged.trace.as_deref().and_then(RequestTrace::mark)
    }

    /// Ends the stage span begun at `mark`.
    #[inline]
    fn end(&mut self, mark: Option<otel::Mark>, name: &'static str, error: bool) {
        if let Some(t) = self.judged.trace.as_deref_mut() {
            t.end(mark, name, error);
        }
    }
}

impl Pipeline<'_> {
    /// Runs every stage on one request: what they learn goes into `judged` (a new one, as
    /// `Judged::default()` makes it), what to do is returned.
    pub async fn decide(&self, facts: &RequestFacts<'_>, judged: &mut Judged) -> Verdict {
        // A front that already traces the request (forward-auth inside a proxied one) keeps
        // its trace; with tracing off this is one load of the (unset) tracer.
        if judged.trace.is_none() && otel::enabled() {
            // Only a trusted proxy's trace is continued: a client's would pick the trace id
            // of the log lines and override the sampling ratio.
            let trusted = facts.peer.is_some_and(|peer| {
                crate::forwarded::is_trusted(peer, &self.rt.config.server.trusted_proxies)
            });
            judged.trace = RequestTrace::start(facts.headers, trusted);
        }
        let mut r = Request {
            facts,
            headers: Cow::Borrowed(facts.headers),
            judged,
        };
        match self.stages(&mut r).await {
            Ok(()) => Verdict::Allow,
            Err(verdict) => verdict,
        }
    }

    /// The life of a request, in order; the first stage that answers ends it. With tracing
    /// on, each stage is a span of the request's trace.
    async fn stages(&self, r: &mut Request<'_>) -> Result<(), Verdict> {
        // First: every answer and log line after it names the client and the request id.
        client::identify(self, r);
        let mark = r.mark();
        // Method and host before the path: nothing more is read of a request not for us.
        let path_start = admit::admit(self, r).inspect_err(|_| r.end(mark, "route", true))?;
        // One normalized path decides the route, the policy, and what goes upstream.
        let routed =
            route::route(self, r, path_start).inspect_err(|_| r.end(mark, "route", true))?;
        // What the upstream may see depends on the route; every stage after sees only that.
        strip::strip_headers(self, r, routed.route());
        let route = match routed {
            // The method or path an opted-in override names is what the app acts on: judged.
            Routed::Route(route, target) => strip::judge_overrides(self, r, route, target)
                .inspect_err(|_| r.end(mark, "route", true))?,
            // The gateway's own endpoints are never proxied, whatever route covers them.
            Routed::Reserved(target) => {
                r.end(mark, "route", false);
                return Err(endpoint::dispatch(self, r, target).await);
            }
        };
        if let Some(t) = r.judged.trace.as_deref_mut().filter(|t| t.sampled) {
            t.attr("gatehouse.route", route.name.clone());
            t.attr("url.path", r.judged.path.clone());
        }
        r.end(mark, "route", false);
        // A preflight carries no credentials: answered before authentication (Fetch standard).
        preflight::answer(self, r, route)?;
        if !route.auth.contains(&AuthMethod::None) {
            let mark = r.mark();
            // A locked-out client's credentials are not even looked at.
            lockout::check(self, r, route).inspect_err(|_| r.end(mark, "authenticate", true))?;
            // Session, bearer token or API key, as the route lists them; browsers may be sent
            // to log in. Outbound calls it awaits (JWKS, introspection) are its children.
            // Untraced, the stage is awaited as it is: wrapping would move its future.
            let (result, scope) = match r.judged.trace.as_deref().and_then(|t| t.scope(mark)) {
                None => (authenticate::authenticate(self, r, route).await, None),
                Some(scope) => {
                    let traced = authenticate::authenticate(self, r, route);
                    Box::pin(otel::within(scope, traced)).await
                }
            };
            if let Some(t) = r.judged.trace.as_deref_mut() {
                t.attr(
                    "gatehouse.auth.method",
                    r.judged
                        .identity
                        .as_ref()
                        .map_or("none", |i| i.method.as_str()),
                );
                if let Some(hit) = scope.and_then(|s| s.cache_hit.get()) {
                    t.attr("gatehouse.auth.cache_hit", hit);
                }
                if let Err(answer) = &result {
                    t.attr("gatehouse.refusal", answer.refusal.unwrap_or(""));
                }
            }
            r.end(mark, "authenticate", result.is_err());
            result?;
        }
        // Who (now known) may do what (the judged method and path).
        let mark = r.mark();
        let result = authorize::authorize(self, r, route);
        r.end(mark, "policy", result.is_err());
        result?;
        // Last: only requests that would be served count against a limit.
        let mark = r.mark();
        // A Redis store's check is the stage's child.
        let result = match r.judged.trace.as_deref().and_then(|t| t.scope(mark)) {
            None => rate_limit::enforce(self, r, route).await,
            Some(scope) => {
                let traced = rate_limit::enforce(self, r, route);
                Box::pin(otel::within(scope, traced)).await.0
            }
        };
        r.end(mark, "rate_limit", result.is_err());
        result?;
        // The identity headers are set by the front, on every attempt at the upstream.
        Ok(())
    }

    /// A refusal before authentication: the request's body is not read, so the connection
    /// is not reused. Forward-auth refuses with 403 (nginx passes on only 2xx, 401 and 403
    /// from it), under `forward_auth_reason`.
    fn refuse_early(
        &self,
        r: &Request<'_>,
        status: u16,
        reason: &'static str,
        forward_auth_reason: &'static str,
    ) -> Answer {
        if let Front::ForwardAuth { .. } = r.facts.front {
            return Answer::refused(403, forward_auth_reason, false);
        }
        if r.judged.route.is_none() {
            self.metrics
                .rejected_requests_total
                .with_label_values(&[reason])
                .inc();
        }
        Answer::refused(status, reason, r.judged.html)
    }
}
