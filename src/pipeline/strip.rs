//! Hygiene ([`crate::hygiene`]): the client headers the upstream must not see are dropped,
//! in every spelling; the overrides a route lets through are judged like the request line.
//! After routing, because what a route opts into differs; before everything else, because
//! every later stage must see only what the upstream will.

use super::{route_request, Answer, Pipeline, Request, Routed};
use crate::config::RouteConfig;
use crate::normalize::NormalizedTarget;

/// Drops what the upstream must not see; `route` is None for the gateway's own endpoints
/// (strict).
pub(super) fn strip_headers(p: &Pipeline<'_>, r: &mut Request<'_>, route: Option<usize>) {
    let route = route.map(|i| &p.rt.config.routes[i]);
    let dropped = crate::hygiene::headers_to_drop(
        &r.headers,
        &p.rt.header_rules,
        route,
        r.judged.peer_trusted,
    );
    if dropped.is_empty() {
        return;
    }
    let headers = r.headers.to_mut();
    for name in &dropped {
        headers.remove(name);
    }
    r.judged.remove_headers = dropped;
}

/// Takes the route's view of a routed request: the path it judged, and the method or path
/// an opted-in override makes the app act on instead.
pub(super) fn judge_overrides<'a>(
    p: &Pipeline<'a>,
    r: &mut Request<'_>,
    route: usize,
    target: NormalizedTarget,
) -> Result<&'a RouteConfig, Answer> {
    let config = &p.rt.config.routes[route];
    r.judged.route = Some(route);
    r.judged.path = target.path;
    let facts = r.facts;
    if config.overrides.is_empty() && facts.query.is_none() {
        return Ok(config);
    }
    let refuse = |r: &Request<'_>, reason| p.refuse_early(r, 400, reason, reason);
    let overrides = crate::hygiene::overrides(facts.method, facts.query, &r.headers, config)
        .map_err(|refused| refuse(r, refused.0))?;
    r.judged.judged_method = overrides.method;
    if let Some((header, value)) = overrides.path {
        // The app serves this path instead: it is normalized and judged like a target, and
        // must stay on the route whose upstream will serve it.
        let judged = match route_request(p.rt, &r.judged.host, value.as_bytes()) {
            Ok(Routed::Route(i, target)) if i == route => target,
            Ok(_) => return Err(refuse(r, "override_leaves_route")),
            Err((status, reason)) => return Err(p.refuse_early(r, status, reason, reason)),
        };
        let value = crate::headers::value(judged.to_request_target())
            .ok_or_else(|| refuse(r, "bad_override"))?;
        r.headers.to_mut().insert(header.clone(), value.clone());
        r.judged.set_override = Some((header, value));
        r.judged.path = judged.path;
    }
    Ok(config)
}
