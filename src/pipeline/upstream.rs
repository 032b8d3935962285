//! The last stage, run by the fronts: the headers an allowed request carries. The proxy
//! front applies them to every attempt at the upstream (a retry starts from a fresh copy of
//! the client's request); forward-auth returns the identity headers for its proxy to pass on.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Judged;
use crate::config::RouteConfig;
use crate::forwarded;
use crate::gateway::Runtime;
use crate::identity::{AuthMethod, Identity};

/// The signed identity assertion (`[headers] assertion`).
pub const ASSERTION: HeaderName = HeaderName::from_static("x-gatehouse-assertion");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// How the request reached the gateway, as the front knows it.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The socket peer; None on a Unix socket.
    pub peer: Option<IpAddr>,
    pub tls: bool,
}

/// Everything the upstream request gets from the gateway, and loses: the gateway's cookies
/// and the consumed credential go, identity and forwarding headers come.
pub fn set_upstream_headers(
    headers: &mut HeaderMap,
    rt: &Runtime,
    judged: &Judged,
    conn: Connection,
) {
    if !headers.contains_key(http::header::HOST) {
        // HTTP/2 and absolute-form requests carry the host in the authority.
        if let Some(host) = crate::headers::value(judged.host.as_str()) {
            headers.insert(http::header::HOST, host);
        }
    }
    if let Some(login) = &rt.login {
        strip_gateway_cookies(headers, &login.cookies);
    }
    if let Some(route) = judged.route.map(|i| &rt.config.routes[i]) {
        strip_consumed_credentials(headers, route);
        if let (Some(identity), Some(signer)) = (&judged.identity, &rt.signer) {
            if let Some(value) = signer.assertion(identity, &route.name) {
                headers.insert(ASSERTION, value);
            }
        }
        if let (true, Some(s), Some(login)) = (route.pass_access_token, &judged.session, &rt.login)
        {
            if let Some(token) = login.access_token(s) {
                if let Some(v) = crate::headers::value(format!("Bearer {token}")) {
                    headers.insert(http::header::AUTHORIZATION, v);
                }
            }
        }
    }
    if let Some(identity) = &judged.identity {
        set_identity_headers(headers, identity, &rt.config.headers.claims);
    }
    if let (Some(peer), Some(client_ip)) = (conn.peer, judged.client_ip) {
        forwarded::set_forwarding_headers(
            headers,
            &forwarded::Forwarding {
                peer,
                peer_trusted: judged.peer_trusted,
                client_ip,
                scheme: if conn.tls { "https" } else { "http" },
                host: &judged.host,
                request_id: &judged.request_id,
            },
        );
    }
}

/// The identity headers (and the assertion) of an allowed request, as forward-auth answers
/// them.
pub fn identity_headers(rt: &Runtime, judged: &Judged) -> Vec<(HeaderName, String)> {
    let Some(identity) = &judged.identity else {
        return Vec::new();
    };
    let mut headers = HeaderMap::new();
    set_identity_headers(&mut headers, identity, &rt.config.headers.claims);
    if let (Some(signer), Some(route)) = (&rt.signer, judged.route) {
        if let Some(v) = signer.assertion(identity, &rt.config.routes[route].name) {
            headers.insert(ASSERTION, v);
        }
    }
    headers
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.to_str().ok()?.to_string())))
        .collect()
}

/// The credential the gateway checked stays with the gateway, unless the route passes the
/// access token on.
const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");

fn strip_consumed_credentials(headers: &mut HeaderMap, route: &RouteConfig) {
    // Read as authentication reads it; the bytes, so a long token is not validated again.
    let scheme_is = |headers: &HeaderMap, scheme: &str| {
        headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| crate::authn::scheme_value(v.as_bytes(), scheme).is_some())
    };
    if route.auth.contains(&AuthMethod::Bearer) {
        if !route.pass_access_token && (scheme_is(headers, "bearer") || scheme_is(headers, "dpop"))
        {
            headers.remove(http::header::AUTHORIZATION);
        }
        // A DPoP proof is for the gateway's one check: single use, never the app's.
        headers.remove(DPOP);
    }
    if route.auth.contains(&AuthMethod::ApiKey) {
        headers.remove(X_API_KEY);
        if scheme_is(headers, "apikey") {
            headers.remove(http::header::AUTHORIZATION);
        }
    }
}

/// The gateway's own cookies (session id, login binding) never reach the upstream. Runs
/// on every request of a login-enabled config, so the common cases allocate nothing.
pub fn strip_gateway_cookies(headers: &mut HeaderMap, cookies: &crate::login::Cookies) {
    let is_ours = |pair: &[u8]| {
        let pair = pair.trim_ascii();
        let name = memchr::memchr(b'=', pair).map_or(pair, |at| &pair[..at]);
        // Trimmed as the cookie crate trims the name it reads the session from.
        cookies.is_ours(name.trim_ascii_end())
    };
    let (mut ours, mut others) = (false, false);
    for value in headers.get_all(http::header::COOKIE) {
        for pair in cookie_pairs(value.as_bytes()) {
            if is_ours(pair) {
                ours = true;
            } else if !pair.trim_ascii().is_empty() {
                others = true;
            }
        }
    }
    if !ours {
        return;
    }
    let kept: Vec<Vec<u8>> = if others {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| cookie_pairs(v.as_bytes()))
            .filter(|pair| !is_ours(pair) && !pair.trim_ascii().is_empty())
            .map(|pair| pair.trim_ascii().to_vec())
            .collect()
    } else {
        Vec::new()
    };
    headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
            headers.insert(http::header::COOKIE, value);
        }
    }
}

/// A `Cookie` value's pieces between semicolons (as `split` on `;` gives them), found with
/// memchr: this runs on every request of a login-enabled config.
fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let v = rest?;
        match memchr::memchr(b';', v) {
            Some(at) => {
                rest = Some(&v[at + 1..]);
                Some(&v[..at])
            }
            None => {
                rest = None;
                Some(v)
            }
        }
    })
}

/// The identity headers of spec §3; a value that cannot be a header value is left out.
pub fn set_identity_headers(
    headers: &mut HeaderMap,
    identity: &Identity,
    claims: &[(HeaderName, String)],
) {
    for (name, value) in identity.header_values() {
        headers.insert(name, value.clone());
    }
    for (header, path) in claims {
        let value = match crate::identity::claim_at(&identity.claims, path) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(","),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        match crate::headers::value(value) {
            Some(v) => {
                headers.insert(header, v);
            }
            None => {
                tracing::debug!(header = %header, "claim value is not a valid header value; left out")
            }
        }
    }
}

#[cfg(test)]
mod cookie_pair_tests {
    #[test]
    fn pairs_are_what_split_gives() {
        for value in [
            "",
            ";",
            "a",
            "a=1",
            "a=1;",
            ";a=1",
            "a=1; b=2",
            "a=1;;b=2; ",
            " ; ;",
        ] {
            let ours: Vec<&[u8]> = super::cookie_pairs(value.as_bytes()).collect();
            let split: Vec<&[u8]> = value.as_bytes().split(|&b| b == b';').collect();
            assert_eq!(ours, split, "{value:?}");
        }
    }

    /// Whatever spelling the session is read from is stripped: the cookie crate trims the
    /// name around `=`, so the stripper does too.
    #[test]
    fn the_cookie_the_session_is_read_from_never_reaches_the_upstream() {
        let config = crate::config::SessionConfig::memory_for_tests();
        let jar = crate::login::Cookies::new(&config, false);
        for value in [
            "gatehouse =abc; a=1",
            "a=1; gatehouse\t= abc",
            "gatehouse=\"abc\";a=1",
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::COOKIE, value.parse().unwrap());
            assert_eq!(
                crate::login::cookie_value(&headers, "gatehouse"),
                Some("abc")
            );
            super::strip_gateway_cookies(&mut headers, &jar);
            assert_eq!(
                crate::login::cookie_value(&headers, "gatehouse"),
                None,
                "{value:?}"
            );
            assert_eq!(headers[http::header::COOKIE], "a=1", "{value:?}");
        }
    }
}
