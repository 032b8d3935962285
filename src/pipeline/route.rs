//! Normalization and routing: the target is normalized once, strictly (or with the opt-outs
//! of the one route a lenient reading leads to), and the route table picks the `[[route]]`.
//! Every later stage judges this path, and the upstream receives it.

use http::Uri;

use super::{ext_authz_target, resource_metadata, Answer, Front, Pipeline, Request};
use crate::gateway::Runtime;
use crate::normalize::{normalize_target, NormalizeOptions, NormalizedTarget};

/// Where a normalized target leads.
#[derive(Debug)]
pub enum Routed {
    /// Index into `config.routes`, and the target as that route judges it.
    Route(usize, NormalizedTarget),
    /// Under `server.reserved_prefix`, or the protected resource metadata of a host with
    /// bearer routes: the gateway's own (normalized strictly).
    Reserved(NormalizedTarget),
}

impl Routed {
    pub fn route(&self) -> Option<usize> {
        match self {
            Routed::Route(route, _) => Some(*route),
            Routed::Reserved(_) => None,
        }
    }
}

/// Routes the request whose path-and-query starts at `path_start` of its target; sets the
/// rewrite when the target the upstream gets differs from the one the client sent.
pub(super) fn route(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    path_start: usize,
) -> Result<Routed, Answer> {
    let facts = r.facts;
    let forward_auth = matches!(facts.front, Front::ForwardAuth { .. });
    // An absolute-form target without a path means `/`.
    let raw = match &facts.target[path_start..] {
        b"" if path_start > 0 => b"/",
        raw => raw,
    };
    let prefix = p.rt.config.server.reserved_prefix.as_str();
    if facts.front == Front::Proxy && path_start == 0 && ext_authz_target(raw, prefix).is_some() {
        // Envoy's question: the original path after the prefix is judged by the ext_authz
        // front, as it was sent; normalizing it here could resolve it out of the prefix.
        return Ok(Routed::Reserved(NormalizedTarget {
            path: format!("{prefix}/ext-authz"),
            upstream: None,
            query: None,
        }));
    }
    let routed = match route_request(p.rt, &r.judged.host, raw) {
        // A proxy asking about the gateway's own paths sends them to the gateway instead.
        Ok(Routed::Reserved(_)) if facts.front != Front::Proxy => {
            return Err(p.refuse_early(r, 404, "reserved_path", "no_route"))
        }
        Ok(routed) => routed,
        Err((status, reason)) => return Err(p.refuse_early(r, status, reason, "no_route")),
    };
    if let Routed::Route(_, target) = &routed {
        let target = target.to_request_target();
        // Most requests are already normal: then the client's target goes upstream as is.
        if forward_auth || path_start > 0 || target.as_bytes() != raw {
            match target.parse::<Uri>() {
                Ok(uri) => r.judged.rewrite = Some(uri),
                Err(_) => {
                    return Err(p.refuse_early(
                        r,
                        400,
                        "unparsable_path",
                        "forward_auth_bad_target",
                    ))
                }
            }
        }
    }
    Ok(routed)
}

/// Normalizes `raw` strictly, or with a route's own opt-outs when that route is the one
/// the lenient reading leads to; the refusal is a status and a reason.
pub fn route_request(rt: &Runtime, host: &str, raw: &[u8]) -> Result<Routed, (u16, &'static str)> {
    let routes = &rt.config.routes;
    match normalize_target(raw, NormalizeOptions::default()) {
        Ok(target) => {
            let prefix = rt.config.server.reserved_prefix.as_str();
            if target.path.starts_with(prefix)
                && matches!(target.path.as_bytes().get(prefix.len()), None | Some(b'/'))
            {
                return Ok(Routed::Reserved(target));
            }
            if resource_metadata::owns(rt, host, &target.path) {
                return Ok(Routed::Reserved(target));
            }
            let route = rt
                .routes
                .lookup(routes, host, &target.path)
                .ok_or((404, "no_route"))?;
            Ok(Routed::Route(route, target))
        }
        Err(strict_error) => {
            for (i, route) in routes.iter().enumerate() {
                if route.path_checks == NormalizeOptions::default() {
                    continue;
                }
                if let Ok(target) = normalize_target(raw, route.path_checks) {
                    // A lenient reading never takes the gateway's own metadata upstream.
                    if resource_metadata::owns(rt, host, &target.path) {
                        continue;
                    }
                    if rt.routes.lookup(routes, host, &target.path) == Some(i) {
                        return Ok(Routed::Route(i, target));
                    }
                }
            }
            Err((400, strict_error.reason()))
        }
    }
}

/// A Host header or authority as a host name: lower-case, without port or trailing dot;
/// None for anything that is not a plain host (user info, a path, a bad port).
pub fn host_without_port(value: &str) -> Option<String> {
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
}
