//! Rate limits ([`crate::ratelimit`]): every limit of the route must allow the request,
//! counted by client IP, subject, API key, header or route. Last of the stages, so only
//! requests that would be served count; a refusal is a 429 with `Retry-After` and the
//! `RateLimit` headers (a 503 when the store is down and `on_error = "fail_closed"`).

use http::StatusCode;

use super::{record, Answer, Pipeline, Request};
use crate::config::{RateLimitConfig, RouteConfig};
use crate::metrics::NO_ROUTE;
use crate::ratelimit::{self, gcra, Outcome};

pub(super) async fn enforce(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    route: &RouteConfig,
) -> Result<(), Answer> {
    if route.rate_limits.is_empty() {
        return Ok(());
    }
    let rt = p.rt;
    // `RateLimit-Policy` and `RateLimit`, one item per limit that counted the request.
    // Room for one or two items without growing: `"per-ip";q=100;w=60`.
    let mut policy = String::with_capacity(64);
    let mut state = String::with_capacity(64);
    let mut refused: Option<(&RateLimitConfig, gcra::Decision)> = None;
    for &i in &route.rate_limits {
        let limit = &rt.config.rate_limits[i];
        let identity = r.judged.identity.as_deref();
        let Some(key) =
            ratelimit::limit_key(limit, &route.name, r.judged.client_ip, identity, &r.headers)
        else {
            continue;
        };
        match rt.limiter.check(limit, &key).await {
            Outcome::Decided(d) => {
                ratelimit::push_policy_item(&mut policy, limit);
                ratelimit::push_state_item(&mut state, limit, &d);
                if !d.allowed {
                    // Later limits are not consulted, so they do not count a refused request.
                    refused = Some((limit, d));
                    break;
                }
            }
            Outcome::StoreError => {
                p.metrics
                    .rate_limit_store_errors_total
                    .with_label_values(&[rt.limiter.store_label()])
                    .inc();
                if !rt.limiter.config.fail_open {
                    return Err(
                        Answer::error(StatusCode::SERVICE_UNAVAILABLE, r.judged.html)
                            .refusing("rate_limit_store_unavailable")
                            .closing()
                            .header("retry-after", "1".to_string()),
                    );
                }
            }
        }
    }
    if let Some((limit, decision)) = refused {
        p.metrics
            .rate_limited_total
            .with_label_values(&[route.name.as_str(), limit.name.as_str()])
            .inc();
        let subject = r.judged.identity.as_ref().map(|i| i.subject.as_str());
        record::decision(
            p,
            r,
            r.judged.auth_method(),
            "rate_limited",
            &limit.name,
            subject,
        );
        return Err(Answer::error(StatusCode::TOO_MANY_REQUESTS, r.judged.html)
            .refusing("rate_limited")
            .closing()
            .header("retry-after", retry_after(&decision))
            .header("ratelimit-policy", policy)
            .header("ratelimit", state));
    }
    if rt.limiter.config.response_headers && !policy.is_empty() {
        r.judged.rate_headers = Some((policy, state));
    }
    Ok(())
}

/// The per-client-IP limit of the gateway's own endpoints (login and callback floods): the
/// 429 when it is exceeded. `close`: the connection is not reused after it.
pub(super) async fn reserved(p: &Pipeline<'_>, r: &Request<'_>, close: bool) -> Option<Answer> {
    let ip = r.judged.client_ip?;
    let limit = &p.rt.config.reserved_limit;
    let key = ratelimit::limit_key(limit, "", Some(ip), None, &r.headers).unwrap_or_default();
    match p.rt.limiter.check(limit, &key).await {
        Outcome::Decided(d) if !d.allowed => {
            p.metrics
                .rate_limited_total
                .with_label_values(&[NO_ROUTE, limit.name.as_str()])
                .inc();
            let mut answer = Answer::error(StatusCode::TOO_MANY_REQUESTS, r.judged.html)
                .refusing("rate_limited")
                .header("retry-after", retry_after(&d))
                .header("ratelimit-policy", ratelimit::policy_item(limit))
                .header("ratelimit", ratelimit::state_item(limit, &d));
            answer.close = close;
            Some(answer)
        }
        _ => None,
    }
}

fn retry_after(d: &gcra::Decision) -> String {
    ratelimit::ceil_secs(d.retry_after).max(1).to_string()
}
