//! Prometheus metrics (prefix `gatehouse_`). Label values come from config names and status
//! codes only, never from request data, so cardinality stays bounded.

use std::sync::OnceLock;

use crate::identity::AuthMethod;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub upstream_errors_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub upstream_healthy_servers: IntGaugeVec,
    pub rejected_requests_total: IntCounterVec,
    pub dropped_request_headers_total: IntCounter,
    pub auth_decisions_total: IntCounterVec,
    pub jwks_refresh_total: IntCounterVec,
    pub token_cache_total: IntCounterVec,
    pub token_cache_hits: IntCounter,
    pub token_cache_misses: IntCounter,
    pub rate_limited_total: IntCounterVec,
    pub rate_limit_store_errors_total: IntCounterVec,
    pub rate_limit_keys: prometheus::IntGauge,
    pub auth_lockouts_total: IntCounter,
    pub logins_total: IntCounterVec,
    pub token_refresh_total: IntCounterVec,
    /// Userinfo requests at login and refresh, by IdP and result (`success` or why not).
    pub userinfo_requests_total: IntCounterVec,
    /// DPoP proofs checked, by result (`valid` or why not).
    pub dpop_proofs_total: IntCounterVec,
    pub sessions_active: prometheus::IntGauge,
    pub logouts_total: IntCounterVec,
    pub session_store_degraded: prometheus::IntGauge,
    pub session_store_errors_total: IntCounter,
    /// Answers of the fronts that decide for another proxy (`forward_auth`, `ext_authz`).
    pub front_answers_total: IntCounterVec,
    /// Sessions ended through the session admin API, by scope (`session`, `user`).
    pub admin_session_revocations_total: IntCounterVec,
    /// Admin requests refused for a missing or wrong token.
    pub admin_unauthorized_total: IntCounter,
}

/// The `route` label of requests that matched no route.
pub const NO_ROUTE: &str = "-";

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_requests_total",
                "Requests answered, by route and status.",
            ),
            &["route", "status"],
        )
        .expect("static metric definition");
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_request_duration_seconds",
                "Time from request to the end of the response, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .expect("static metric definition");
        let upstream_errors_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_errors_total",
                "Failures talking to an upstream (connect, timeout, reset), by upstream and kind.",
            ),
            &["upstream", "kind"],
        )
        .expect("static metric definition");
        let config_reloads_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_config_reloads_total",
                "Config reloads, by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new("gatehouse_build_info", "The running version."),
            &["version"],
        )
        .expect("static metric definition");
        let upstream_healthy_servers = IntGaugeVec::new(
            Opts::new(
                "gatehouse_upstream_healthy_servers",
                "Servers of an upstream that pass their health check.",
            ),
            &["upstream"],
        )
        .expect("static metric definition");
        let rejected_requests_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_rejected_requests_total",
                "Requests refused before routing (bad path, unknown host), by reason.",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let dropped_request_headers_total = IntCounter::new(
            "gatehouse_dropped_request_headers_total",
            "Client headers the upstream did not receive: identity, forwarding and override headers in any spelling, and names with underscores or odd characters.",
        )
        .expect("static metric definition");
        let auth_decisions_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_auth_decisions_total",
                "Authentication and authorization decisions, by route, auth method, decision and reason.",
            ),
            &["route", "method", "decision", "reason"],
        )
        .expect("static metric definition");
        let jwks_refresh_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_jwks_refresh_total",
                "JWKS fetches, by issuer and result.",
            ),
            &["issuer", "result"],
        )
        .expect("static metric definition");
        let token_cache_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_token_cache_total",
                "Validated-token cache lookups, by result (hit, miss).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let rate_limited_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_rate_limited_total",
                "Requests refused by a rate limit, by route and limit.",
            ),
            &["route", "limit"],
        )
        .expect("static metric definition");
        let rate_limit_store_errors_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_rate_limit_store_errors_total",
                "Rate-limit checks the store could not answer (then on_error decides), by store.",
            ),
            &["store"],
        )
        .expect("static metric definition");
        let rate_limit_keys = prometheus::IntGauge::new(
            "gatehouse_rate_limit_keys",
            "Keys held by the in-memory rate-limit store.",
        )
        .expect("static metric definition");
        let auth_lockouts_total = IntCounter::new(
            "gatehouse_auth_lockouts_total",
            "Client IPs locked out for repeated authentication failures.",
        )
        .expect("static metric definition");
        let logins_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_logins_total",
                "Browser logins finished at the callback, by IdP and result (success or the failure cause).",
            ),
            &["idp", "result"],
        )
        .expect("static metric definition");
        let token_refresh_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_token_refresh_total",
                "Access-token refreshes with the refresh token, by IdP and result.",
            ),
            &["idp", "result"],
        )
        .expect("static metric definition");
        let userinfo_requests_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_userinfo_requests_total",
                "Userinfo endpoint requests at login and token refresh, by IdP and result.",
            ),
            &["idp", "result"],
        )
        .expect("static metric definition");
        let dpop_proofs_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_dpop_proofs_total",
                "DPoP proofs of bound bearer tokens checked, by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let sessions_active = prometheus::IntGauge::new(
            "gatehouse_sessions_active",
            "Live browser sessions in the session store.",
        )
        .expect("static metric definition");
        let logouts_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_logouts_total",
                "Sessions ended by logout, by kind (rp, everywhere, backchannel).",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let session_store_degraded = prometheus::IntGauge::new(
            "gatehouse_session_store_degraded",
            "1 while Redis is unreachable and sessions are kept in memory (session.fallback = \"memory\").",
        )
        .expect("static metric definition");
        let session_store_errors_total = IntCounter::new(
            "gatehouse_session_store_errors_total",
            "Session store operations that failed (store unreachable or corrupt entry).",
        )
        .expect("static metric definition");
        let front_answers_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_front_answers_total",
                "Answers to proxies asking about their requests, by front (forward_auth, ext_authz) and status.",
            ),
            &["front", "status"],
        )
        .expect("static metric definition");
        let admin_session_revocations_total = IntCounterVec::new(
            Opts::new(
                "gatehouse_admin_session_revocations_total",
                "Sessions ended through the admin API, by scope (session: one by its id hash; user: all of an issuer's subject).",
            ),
            &["scope"],
        )
        .expect("static metric definition");
        let admin_unauthorized_total = IntCounter::new(
            "gatehouse_admin_unauthorized_total",
            "Admin listener requests refused with 401 (no token, or not the admin token).",
        )
        .expect("static metric definition");
        for scope in ["session", "user"] {
            admin_session_revocations_total.with_label_values(&[scope]);
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Present from the start, so alerts on them need no `absent()` guard.
        for result in ["success", "failure"] {
            config_reloads_total.with_label_values(&[result]);
        }
        for c in [
            Box::new(requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration_seconds.clone()),
            Box::new(upstream_errors_total.clone()),
            Box::new(config_reloads_total.clone()),
            Box::new(build_info),
            Box::new(upstream_healthy_servers.clone()),
            Box::new(rejected_requests_total.clone()),
            Box::new(dropped_request_headers_total.clone()),
            Box::new(auth_decisions_total.clone()),
            Box::new(jwks_refresh_total.clone()),
            Box::new(token_cache_total.clone()),
            Box::new(rate_limited_total.clone()),
            Box::new(rate_limit_store_errors_total.clone()),
            Box::new(rate_limit_keys.clone()),
            Box::new(auth_lockouts_total.clone()),
            Box::new(logins_total.clone()),
            Box::new(token_refresh_total.clone()),
            Box::new(userinfo_requests_total.clone()),
            Box::new(dpop_proofs_total.clone()),
            Box::new(sessions_active.clone()),
            Box::new(logouts_total.clone()),
            Box::new(session_store_degraded.clone()),
            Box::new(session_store_errors_total.clone()),
            Box::new(front_answers_total.clone()),
            Box::new(admin_session_revocations_total.clone()),
            Box::new(admin_unauthorized_total.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests_total,
            request_duration_seconds,
            upstream_errors_total,
            config_reloads_total,
            upstream_healthy_servers,
            rejected_requests_total,
            dropped_request_headers_total,
            auth_decisions_total,
            jwks_refresh_total,
            token_cache_hits: token_cache_total.with_label_values(&["hit"]),
            token_cache_misses: token_cache_total.with_label_values(&["miss"]),
            token_cache_total,
            rate_limited_total,
            rate_limit_store_errors_total,
            rate_limit_keys,
            auth_lockouts_total,
            logins_total,
            token_refresh_total,
            userinfo_requests_total,
            dpop_proofs_total,
            sessions_active,
            logouts_total,
            session_store_degraded,
            session_store_errors_total,
            front_answers_total,
            admin_session_revocations_total,
            admin_unauthorized_total,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families; an empty page is the fallback.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            buf.clear();
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-request metrics of one route, with their label lookups done once, not per request.
pub struct RouteMetrics {
    route: String,
    duration: Histogram,
    /// `gatehouse_requests_total` by status 100..=599, filled on first use.
    by_status: Box<[OnceLock<IntCounter>]>,
    /// `gatehouse_auth_decisions_total{decision="allow",reason="authenticated"}` by method.
    authenticated: [OnceLock<IntCounter>; 4],
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        RouteMetrics {
            route: route.to_string(),
            duration: metrics.request_duration_seconds.with_label_values(&[route]),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            authenticated: Default::default(),
        }
    }

    /// Counts a successful authentication: the hot path of every protected request.
    pub fn authenticated(&self, metrics: &Metrics, method: AuthMethod) {
        self.authenticated[method as usize]
            .get_or_init(|| {
                metrics.auth_decisions_total.with_label_values(&[
                    self.route.as_str(),
                    method.as_str(),
                    "allow",
                    "authenticated",
                ])
            })
            .inc();
    }

    pub fn observe(&self, metrics: &Metrics, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        match self.by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot
                .get_or_init(|| {
                    metrics
                        .requests_total
                        .with_label_values(&[self.route.as_str(), &status.to_string()])
                })
                .inc(),
            // 0 (no response written) and anything odd
            None => metrics
                .requests_total
                .with_label_values(&[self.route.as_str(), &status.to_string()])
                .inc(),
        }
    }
}
