//! The lockout of clients that keep presenting bad credentials
//! ([`crate::ratelimit::AuthFailures`]): checked before authentication, so that a locked-out
//! client's guesses are not even tried; counted when one fails.

use http::StatusCode;

use super::{record, Answer, Pipeline, Request};
use crate::config::RouteConfig;
use crate::identity::AuthMethod;

pub(super) fn check(p: &Pipeline<'_>, r: &Request<'_>, route: &RouteConfig) -> Result<(), Answer> {
    let Some(left) = r
        .judged
        .client_ip
        .and_then(|ip| p.rt.auth_failures.locked(ip))
    else {
        return Ok(());
    };
    let method = route.auth.first().copied().unwrap_or(AuthMethod::None);
    record::decision(p, r, method, "rate_limited", "auth_lockout", None);
    Err(Answer::error(StatusCode::TOO_MANY_REQUESTS, false)
        .refusing("auth_lockout")
        .closing()
        .header("retry-after", left.to_string()))
}

/// A failed authentication from this client; too many lock it out for a while.
pub(super) fn count_failure(p: &Pipeline<'_>, r: &Request<'_>) {
    let Some(ip) = r.judged.client_ip else { return };
    let failures = &p.rt.auth_failures;
    if failures.record_failure(ip) {
        p.metrics.auth_lockouts_total.inc();
        tracing::warn!(
            client_ip = %ip,
            cooldown_s = failures.cooldown().as_secs(),
            "client locked out after repeated authentication failures"
        );
    }
}
