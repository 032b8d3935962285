//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for bearer routes: the document at
//! `/.well-known/oauth-protected-resource<resource path>`, and the `resource_metadata`
//! parameter of the `WWW-Authenticate: Bearer` challenges that point clients (MCP clients
//! among them) to it, so they learn which authorization servers issue tokens for a route.
//!
//! The resource of a route is its URL as clients reach it: `server.public_url`'s origin when
//! the request's host is that URL's, else the scheme (TLS, or a trusted proxy's
//! `X-Forwarded-Proto`) and the host and port the client sent; then the route's path.

use http::{Method, StatusCode};

use super::{Answer, Pipeline, Request};
use crate::config::RouteConfig;
use crate::gateway::Runtime;
use crate::identity::AuthMethod;

/// The well-known path (RFC 9728 §3); a resource's path follows it.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The well-known path is the gateway's (never proxied) on hosts a bearer route serves;
/// elsewhere an app may serve its own.
pub(super) fn owns(rt: &Runtime, host: &str, path: &str) -> bool {
    let under = path
        .strip_prefix(WELL_KNOWN)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    under
        && rt
            .config
            .routes
            .iter()
            .any(|route| takes_bearer(route) && route.host.as_deref().is_none_or(|h| h == host))
}

fn takes_bearer(route: &RouteConfig) -> bool {
    route.auth.contains(&AuthMethod::Bearer)
}

/// The metadata document for the well-known `path` (already owned, see [`owns`]): the
/// resource named by what follows the well-known prefix, when a bearer route serves it;
/// 404 otherwise.
pub(super) fn answer(p: &Pipeline<'_>, r: &Request<'_>, path: &str) -> Answer {
    let method = r.facts.method;
    // Browser clients (MCP inspectors) fetch it cross-origin, some with their own headers.
    let cors = |answer: Answer| answer.header("access-control-allow-origin", "*".to_string());
    if method == Method::OPTIONS {
        return cors(Answer::content(StatusCode::NO_CONTENT, None))
            .header(
                "access-control-allow-methods",
                "GET, HEAD, OPTIONS".to_string(),
            )
            .header("access-control-allow-headers", "*".to_string())
            .header("access-control-max-age", "600".to_string());
    }
    if method != Method::GET && method != Method::HEAD {
        return Answer::refused(405, "method_not_allowed", false)
            .header("allow", "GET, HEAD, OPTIONS".to_string());
    }
    let resource_path = path.strip_prefix(WELL_KNOWN).unwrap_or_default();
    let lookup_path = if resource_path.is_empty() {
        "/"
    } else {
        resource_path
    };
    let rt = p.rt;
    let route = rt
        .routes
        .lookup(&rt.config.routes, &r.judged.host, lookup_path)
        .map(|i| &rt.config.routes[i])
        .filter(|route| takes_bearer(route));
    let Some(route) = route else {
        return Answer::refused(404, "no_resource_metadata", false);
    };
    let document = document(rt, route, &format!("{}{resource_path}", origin(p, r)));
    cors(Answer::json(StatusCode::OK, &document))
}

/// The metadata of `resource` (RFC 9728 §2): what gatehouse knows of it.
fn document(rt: &Runtime, route: &RouteConfig, resource: &str) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "resource": resource,
        "resource_name": route.name,
        // Tokens are read from the Authorization header only (never the query or a form).
        "bearer_methods_supported": ["header"],
    });
    let issuers: Vec<&str> = rt.config.bearer.iter().map(|b| b.issuer.as_str()).collect();
    if !issuers.is_empty() {
        doc["authorization_servers"] = serde_json::json!(issuers);
    }
    doc
}

/// ` resource_metadata="<url>"` for the Bearer challenges of a bearer route (RFC 9728
/// §5.1), with its leading comma; empty on other routes.
pub(super) fn challenge_param(p: &Pipeline<'_>, r: &Request<'_>, route: &RouteConfig) -> String {
    if !takes_bearer(route) {
        return String::new();
    }
    let path = if route.path == "/" { "" } else { &route.path };
    format!(", resource_metadata=\"{}{WELL_KNOWN}{path}\"", origin(p, r))
}

/// `scheme://host[:port]` of the request as its client reached it.
pub(super) fn origin(p: &Pipeline<'_>, r: &Request<'_>) -> String {
    let host = r.judged.host.as_str();
    if let Some(public) = p.rt.config.server.public_url.as_deref() {
        if let Ok(url) = url::Url::parse(public) {
            if url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host)) {
                return url.origin().ascii_serialization();
            }
        }
    }
    let https =
        r.facts.tls || (r.judged.peer_trusted && crate::forwarded::says_https(r.facts.headers));
    let scheme = if https { "https" } else { "http" };
    // The authority was admitted as a host with an optional numeric port.
    let port = r.facts.authority.map_or("", |authority| {
        let after_host = match authority.rfind(']') {
            Some(end) => &authority[end + 1..],
            None => authority.rfind(':').map_or("", |i| &authority[i..]),
        };
        after_host.trim()
    });
    format!("{scheme}://{host}{port}")
}
