//! Authorization ([`crate::authz`]): the route's policy judges the identity, the judged
//! method and the normalized path (the one the upstream receives). A denial is a 403; in
//! report-only mode it is counted and the request passes.

use http::StatusCode;

use super::{record, resource_metadata, Answer, Pipeline, Request};
use crate::authz::PolicyRequest;
use crate::config::RouteConfig;
use crate::identity::AuthMethod;

pub(super) fn authorize(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    route: &RouteConfig,
) -> Result<(), Answer> {
    let Some(policy) = &route.policy else {
        return Ok(());
    };
    let judged = &r.judged;
    let identity = judged.identity.as_deref();
    let decision = policy.decide(
        &PolicyRequest {
            method: judged.judged_method.as_ref().unwrap_or(r.facts.method),
            path: &judged.path,
            host: &judged.host,
            query: r.facts.query.unwrap_or(""),
            headers: &r.headers,
            client_ip: judged.client_ip,
            now: None,
        },
        identity,
    );
    let outcome = match (decision.allow, policy.report_only) {
        (true, _) => "allow",
        (false, true) => "deny_report_only",
        (false, false) => "deny",
    };
    let subject = identity.map(|i| i.subject.as_str());
    record::decision(
        p,
        r,
        judged.auth_method(),
        outcome,
        decision.reason(),
        subject,
    );
    if let Some(t) = r.judged.trace.as_deref_mut().filter(|t| t.sampled) {
        t.attr("gatehouse.policy.rule", decision.reason().to_string());
        t.attr("gatehouse.policy.decision", outcome);
    }
    let judged = &r.judged;
    if outcome != "deny" {
        return Ok(());
    }
    let mut answer = Answer::error(StatusCode::FORBIDDEN, judged.html)
        .refusing("policy_denied")
        .closing();
    if route.auth.contains(&AuthMethod::Bearer) {
        let metadata = resource_metadata::challenge_param(p, r, route);
        answer = answer.header(
            "www-authenticate",
            format!("Bearer realm=\"gatehouse\", error=\"insufficient_scope\"{metadata}"),
        );
    }
    Err(answer)
}
