//! Request hygiene: what of the client's request the upstream may see.
//!
//! An upstream trusts the gateway, so anything it receives forged, disguised or unjudged is
//! a way around the gateway, even where the gateway itself never reads it. CGI, PHP, WSGI
//! and Rack fold `_` (and, in Apache's CGI, any odd character) into `-`, so
//! `X_Auth_Request_User` is `X-Auth-Request-User` to them; Symfony, Laravel, Rails and
//! IIS perform the method or path an override header names, not the one the policy saw.
//! So every client header is looked at once, under the name such a server would read:
//! protected names go in every spelling, other odd names go unless the route opts in
//! (nginx's `underscores_in_headers`), forwarding headers come only from trusted proxies,
//! and override headers reach the upstream only on a route that opts in, where the policy
//! judges what they say.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};

use crate::config::RouteConfig;
use crate::headers::{Override, METHOD_OVERRIDES, METHOD_PARAMETER, PATH_OVERRIDES};

/// Every header with this prefix is the gateway's to set (spec §3).
const IDENTITY_PREFIX: &str = "x-auth-request-";
/// The signed assertion and any future gateway-owned header.
const GATEWAY_PREFIX: &str = "x-gatehouse-";

/// Headers that say who the client is or how it reached the gateway. The gateway sets
/// `X-Forwarded-For/-Proto/-Host`, `X-Real-IP` and `X-Request-Id` itself
/// (`src/forwarded.rs`); the rest only a trusted proxy may send.
fn is_forwarding_name(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || matches!(
            name,
            "forwarded"
                | "x-forwarded"
                | "forwarded-for"
                | "x-real-ip"
                | "x-request-id"
                | "x-client-ip"
                | "true-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "x-cluster-client-ip"
                | "x-original-forwarded-for"
                | "x-envoy-external-address"
                | "x-envoy-original-path"
                | "x-original-host"
                | "x-host"
                | "front-end-https"
                | "x-url-scheme"
        )
}

fn is_override_name(name: &str) -> bool {
    METHOD_OVERRIDES.contains(&name) || PATH_OVERRIDES.contains(&name)
}

/// The header names of one config that no client may send, compiled once.
#[derive(Debug, Default)]
pub struct HeaderRules {
    /// `[headers] claims` names, in the form a folding server reads them.
    claim_headers: Vec<String>,
}

impl HeaderRules {
    pub fn new(claim_headers: &[HeaderName]) -> Self {
        HeaderRules {
            claim_headers: claim_headers
                .iter()
                .map(|h| folded(h.as_str()).into_owned())
                .collect(),
        }
    }

    /// Names only the gateway sets, in any spelling.
    fn is_identity(&self, folded: &str) -> bool {
        folded.starts_with(IDENTITY_PREFIX)
            || folded.starts_with(GATEWAY_PREFIX)
            || self.claim_headers.iter().any(|c| c == folded)
    }
}

/// A header name as a server that folds odd characters reads it: every byte that is not a
/// letter or digit becomes `-` (names are lower case already).
fn folded(name: &str) -> Cow<'_, str> {
    if is_plain(name) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    b as char
                } else {
                    '-'
                }
            })
            .collect(),
    )
}

/// Letters, digits and `-`: the names every server reads the same way.
fn is_plain(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether header `name` (lower case, as the client sent it) must not reach the upstream.
fn must_drop(
    name: &str,
    rules: &HeaderRules,
    route: Option<&RouteConfig>,
    peer_trusted: bool,
) -> bool {
    let plain = is_plain(name);
    let folded = folded(name);
    if rules.is_identity(&folded) {
        return true;
    }
    if is_forwarding_name(&folded) {
        // Only a trusted proxy says how the client came, and only in the usual spelling.
        return !(plain && peer_trusted);
    }
    if is_override_name(&folded) {
        let opted_in = route.is_some_and(|r| {
            r.overrides
                .iter()
                .any(|o| o.header().is_some_and(|h| h.as_str() == name))
        });
        return !(plain && opted_in);
    }
    if plain {
        return false;
    }
    // Odd names: `_` only where the route opts in, anything else never (nginx's
    // `underscores_in_headers` and `ignore_invalid_headers`).
    let underscores = route.is_some_and(|r| r.underscores_in_headers);
    !(underscores
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
}

/// The client headers the upstream must not see; `route` is None for the gateway's own
/// endpoints (strict). Allocates nothing when nothing is dropped.
pub fn headers_to_drop(
    headers: &HeaderMap,
    rules: &HeaderRules,
    route: Option<&RouteConfig>,
    peer_trusted: bool,
) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| must_drop(name.as_str(), rules, route, peer_trusted))
        .cloned()
        .collect()
}

/// A method as the request line or an override names it: standard methods in upper case
/// only (`delete` is refused, not judged as another method), like nginx's parser.
pub fn is_canonical_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= 32
        && method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Why an override cannot be judged: the request is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideRefused(pub &'static str);

/// What a route's opted-in overrides ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub method: Option<http::Method>,
    /// The raw value of the path override and the header it came in.
    pub path: Option<(HeaderName, String)>,
}

/// The overrides of a request the route lets through (stripping removed the others already);
/// refuses a POST's `_method` the route does not let through, an override in another case,
/// and two overrides of one kind.
pub fn overrides(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    route: &RouteConfig,
) -> Result<Overrides, OverrideRefused> {
    let mut found = Overrides::default();
    let method_parameter = method_parameter(method, query)?;
    if method_parameter.is_some() && !route.overrides.contains(&Override::MethodParameter) {
        return Err(OverrideRefused("method_override_parameter"));
    }
    let mut methods: Vec<&str> = method_parameter.into_iter().collect();
    let mut texts: Vec<String> = Vec::new();
    for o in &route.overrides {
        let Some(header) = o.header() else { continue };
        for value in headers.get_all(header) {
            let text = value
                .to_str()
                .map_err(|_| OverrideRefused("bad_override"))?;
            match o {
                Override::Method(_) => texts.push(text.to_string()),
                Override::Path(h) => {
                    if found.path.is_some() {
                        return Err(OverrideRefused("repeated_override"));
                    }
                    found.path = Some((h.clone(), text.to_string()));
                }
                Override::MethodParameter => {}
            }
        }
    }
    methods.extend(texts.iter().map(String::as_str));
    if let Some(first) = methods.first() {
        if methods.iter().any(|m| m != first) {
            return Err(OverrideRefused("repeated_override"));
        }
        if !is_canonical_method(first) {
            return Err(OverrideRefused("bad_override_method"));
        }
        found.method = Some(
            http::Method::from_bytes(first.as_bytes())
                .map_err(|_| OverrideRefused("bad_override_method"))?,
        );
    }
    Ok(found)
}

/// The `_method` of a POST's query, as PHP reads the key (`.`, space and `[` count as `_`).
fn method_parameter(
    method: &Method,
    query: Option<&str>,
) -> Result<Option<&'static str>, OverrideRefused> {
    if method != Method::POST {
        return Ok(None);
    }
    let Some(query) = query else {
        return Ok(None);
    };
    // Cheap first look: every spelling of the key ends in "method", maybe escaped.
    let lower = query.to_ascii_lowercase();
    if !lower.contains("method") && !lower.contains("%6d") {
        return Ok(None);
    }
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let key: String = key
            .chars()
            .map(|c| if matches!(c, '.' | ' ' | '[') { '_' } else { c })
            .collect();
        if key == METHOD_PARAMETER {
            return Ok(Some(leak_method(&value)?));
        }
    }
    Ok(None)
}

/// The standard methods, so a `_method` value can be returned without allocating.
fn leak_method(value: &str) -> Result<&'static str, OverrideRefused> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .find(|m| **m == value)
        .copied()
        .ok_or(OverrideRefused("bad_override_method"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(underscores: bool, overrides: &[&str]) -> RouteConfig {
        let mut r = crate::config::RouteConfig::example("r", "/");
        r.underscores_in_headers = underscores;
        r.overrides = overrides
            .iter()
            .filter_map(|o| Override::parse(o))
            .collect();
        r
    }

    fn left(headers: &[(&str, &str)], route: Option<&RouteConfig>, trusted: bool) -> Vec<String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
            map.append(name, v.parse().unwrap());
        }
        let rules = HeaderRules::new(&[HeaderName::from_static("x-department")]);
        for name in headers_to_drop(&map, &rules, route, trusted) {
            map.remove(name);
        }
        let mut names: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        names.dedup();
        names
    }

    #[test]
    fn protected_names_go_in_every_spelling() {
        let forged = [
            ("X-Auth-Request-User", "a"),
            ("x-auth-request-email", "a"),
            ("X_Auth_Request_User", "a"),
            ("X-Auth-Request_Groups", "a"),
            ("X.Auth.Request.User", "a"),
            ("X_Gatehouse_Assertion", "a"),
            ("X-Gatehouse-Assertion", "a"),
            ("X-Department", "a"),
            ("X_Department", "a"),
            ("X_Forwarded_For", "a"),
            ("X_Real_IP", "a"),
            ("X_HTTP_Method_Override", "a"),
            ("X-Other", "keep"),
        ];
        let open = route(true, &["X-HTTP-Method-Override"]);
        for r in [None, Some(&open)] {
            assert_eq!(left(&forged, r, true), ["x-other"], "{r:?}");
        }
        assert_eq!(
            left(&[("x-http-method-override", "PUT")], Some(&open), false),
            ["x-http-method-override"]
        );
    }

    #[test]
    fn odd_names_need_the_route_and_forwarding_needs_trust() {
        let headers = [
            ("X_Custom", "1"),
            ("X.Dotted", "1"),
            ("X-Forwarded-Prefix", "/admin"),
            ("True-Client-IP", "1.2.3.4"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Original-URL", "/admin"),
        ];
        assert!(left(&headers, None, false).is_empty());
        assert_eq!(left(&headers, Some(&route(true, &[])), false), ["x_custom"]);
        let mut trusted = left(&headers, None, true);
        trusted.sort();
        assert_eq!(
            trusted,
            ["forwarded", "true-client-ip", "x-forwarded-prefix"]
        );
    }

    #[test]
    fn methods_are_upper_case_tokens() {
        for ok in ["GET", "DELETE", "M-SEARCH", "PROPFIND"] {
            assert!(is_canonical_method(ok), "{ok}");
        }
        for bad in ["get", "Delete", "dELETE", "", "GET1", "G ET"] {
            assert!(!is_canonical_method(bad), "{bad}");
        }
    }

    #[test]
    fn overrides_are_judged_only_where_opted_in() {
        let overrides = |(method, target, headers): (&str, &str, HeaderMap), route| {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let query = target.split_once('?').map(|(_, q)| q);
            overrides(&method, query, &headers, route)
        };
        let req = |method, target, pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
                headers.append(name, v.parse().unwrap());
            }
            (method, target, headers)
        };
        let strict = route(false, &[]);
        let open = route(
            false,
            &["X-HTTP-Method-Override", "_method", "X-Original-URL"],
        );
        for target in [
            "/c?_method=DELETE",
            "/c?a=1&_method=PUT",
            "/c?%5Fmethod=DELETE",
            "/c?.method=DELETE",
            "/c?_%6Dethod=DELETE",
        ] {
            assert_eq!(
                overrides(req("POST", target, &[]), &strict),
                Err(OverrideRefused("method_override_parameter")),
                "{target}"
            );
        }
        assert_eq!(
            overrides(req("GET", "/c?_method=DELETE", &[]), &strict),
            Ok(Overrides::default())
        );
        assert_eq!(
            overrides(req("POST", "/c?_method=DELETE", &[]), &open)
                .unwrap()
                .method,
            Some(http::Method::DELETE)
        );
        let h = |v| [("X-HTTP-Method-Override", v)];
        assert_eq!(
            overrides(req("POST", "/c", &h("PATCH")), &open)
                .unwrap()
                .method,
            Some(http::Method::PATCH)
        );
        assert_eq!(
            overrides(req("POST", "/c", &h("delete")), &open),
            Err(OverrideRefused("bad_override_method"))
        );
        assert_eq!(
            overrides(req("POST", "/c?_method=PUT", &h("DELETE")), &open),
            Err(OverrideRefused("repeated_override"))
        );
        assert_eq!(
            overrides(req("GET", "/c", &[("X-Original-URL", "/x")]), &open)
                .unwrap()
                .path,
            Some((HeaderName::from_static("x-original-url"), "/x".into()))
        );
    }
}
