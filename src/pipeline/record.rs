//! Every authentication and authorization decision is counted
//! (`gatehouse_auth_decisions_total`) and, with `log.audit`, written as one audit line that
//! never holds a credential.

use super::{Pipeline, Request};
use crate::identity::AuthMethod;
use crate::metrics::NO_ROUTE;
use crate::otel::LogTraceId;

pub(super) fn decision(
    p: &Pipeline<'_>,
    r: &Request<'_>,
    method: AuthMethod,
    decision: &str,
    reason: &str,
    subject: Option<&str>,
) {
    let rt = p.rt;
    let judged = &r.judged;
    let route = judged
        .route
        .map_or(NO_ROUTE, |i| rt.config.routes[i].name.as_str());
    match rt.route_metrics.get(judged.route.unwrap_or(usize::MAX)) {
        Some(m) if decision == "allow" && reason == "authenticated" => {
            m.authenticated(p.metrics, method)
        }
        _ => p
            .metrics
            .auth_decisions_total
            .with_label_values(&[route, method.as_str(), decision, reason])
            .inc(),
    }
    if rt.config.log.audit {
        tracing::info!(
            target: "gatehouse::audit",
            request_id = %judged.request_id,
            trace_id = %LogTraceId(judged.trace.as_deref()),
            front = r.facts.front.label(),
            route,
            subject = subject.unwrap_or(""),
            auth_method = method.as_str(),
            method = %r.facts.method,
            path = %judged.path,
            decision,
            reason,
            client_ip = %judged.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            "auth decision"
        );
    }
}
